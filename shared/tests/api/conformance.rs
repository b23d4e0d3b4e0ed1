//! The port conformance suites against the in-memory KV and real Postgres,
//! and the migrations being idempotent.

use everjust_core::db::migrate::{apply, MIGRATIONS};
use everjust_core::ports::conformance::{clock_suite, crypto_suite, kv_suite, sql_suite};

use crate::helpers::TestApp;

#[tokio::test]
async fn memory_kv_passes_the_kv_suite() {
    let app = TestApp::new().await;
    for case in kv_suite(app.ports.kv.as_ref(), "t").await {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn memory_kv_expires_entries_by_its_clock() {
    let app = TestApp::new().await;
    app.ports.kv.put("k", b"v", Some(60)).await.expect("put");
    app.clock.advance_ms(59_000);
    assert!(app.ports.kv.get("k").await.expect("get").is_some());
    app.clock.advance_ms(1_000);
    assert!(app.ports.kv.get("k").await.expect("get").is_none());
}

#[tokio::test]
async fn the_kv_rate_limiter_passes_the_rate_limit_suite() {
    let app = TestApp::new().await;
    let limiter = everjust_core::ports::ratelimit::KvRateLimiter {
        kv: app.ports.kv.clone(),
        clock: app.clock.clone(),
    };
    let cases = everjust_core::ports::ratelimit::conformance_suite(&limiter, "t").await;
    assert_eq!(cases.len(), 3);
    for case in cases {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn the_host_crypto_and_the_test_clock_pass_their_suites() {
    let app = TestApp::new().await;
    let cases = crypto_suite(app.ports.crypto.as_ref()).await;
    assert_eq!(cases.len(), 4);
    for case in cases
        .into_iter()
        .chain(clock_suite(app.ports.clock.as_ref()).await)
    {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn the_crypto_suite_fails_a_pbkdf2_that_is_not_pbkdf2() {
    struct Wrong;
    #[async_trait::async_trait(?Send)]
    impl everjust_core::ports::Crypto for Wrong {
        fn fill_random(&self, buf: &mut [u8]) {
            buf.fill(7);
        }
        async fn pbkdf2_sha256(&self, password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
            everjust_core::ports::crypto::pbkdf2_sha256_pure(password, salt, iterations + 1)
        }
    }
    let failed: Vec<&str> = crypto_suite(&Wrong)
        .await
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| c.name)
        .collect();
    assert_eq!(failed.len(), 4, "every case catches it: {failed:?}");
}

#[tokio::test]
async fn postgres_passes_the_sql_suite() {
    let app = TestApp::new().await;
    for case in sql_suite(app.ports.sql.as_ref(), "t").await {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn conformance_route_runs_both_suites_in_development() {
    let app = TestApp::new().await;
    let r = app.get("/v1/_conformance", None).await;
    assert_eq!(r.json()["ok"], true, "{}", r.json());
    let prod = TestApp::with_vars(&[("EVERJUST_ENV", "production")]).await;
    prod.get("/v1/_conformance", None)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn migrations_rerun_applies_nothing() {
    let app = TestApp::new().await;
    let applied = apply(app.ports.sql.as_ref(), MIGRATIONS)
        .await
        .expect("apply");
    assert!(applied.is_empty());
}

#[test]
fn every_migration_file_is_embedded_in_order() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("migrations dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sql"))
        .map(|n| n.trim_end_matches(".sql").to_owned())
        .collect();
    files.sort();
    let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
    assert_eq!(files, embedded);
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version, i64::try_from(i).expect("small") + 1);
    }
}
