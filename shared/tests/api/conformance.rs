//! The port conformance suites against the in-memory KV and real Postgres,
//! and the migrations being idempotent.

use everjust_core::db::migrate::{apply, MIGRATIONS};
use everjust_core::ports::conformance::{kv_suite, sql_suite};

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
