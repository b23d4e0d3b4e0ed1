//! The port conformance suites against the in-memory KV and real Postgres,
//! and the migrations being idempotent.

use bytes::Bytes;
use everjust_core::db::migrate::{apply, MIGRATIONS};
use everjust_core::ports::conformance::{
    clock_suite, crypto_suite, http_suite, kv_suite, sql_suite,
};
use everjust_core::ports::http_client::{HttpClient, HttpError, StreamingResponse};
use serde_json::json;

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

/// The echo server of the HTTP suite, in process: what the model fake's
/// `/_fake/echo` routes answer, given to the suite as an `HttpClient`.
/// `buffer_streams` and `drop_bodies` break it the ways a platform adapter
/// could be broken.
#[derive(Default)]
struct EchoHttp {
    buffer_streams: bool,
    drop_bodies: bool,
}

impl EchoHttp {
    fn answer(&self, req: &http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let uri = req.uri();
        if uri.port_u16() == Some(1) {
            return Err(HttpError("connection refused".into()));
        }
        let what = uri
            .path()
            .strip_prefix("/_fake/echo/")
            .ok_or_else(|| HttpError(format!("no route {uri}")))?;
        let body = if self.drop_bodies {
            Bytes::new()
        } else {
            req.body().clone()
        };
        let (status, out) = if what == "request" {
            let seen = json!({
                "method": req.method().as_str(),
                "path": uri.path_and_query().map(|p| p.as_str()).unwrap_or_default(),
                "header": req.headers().get("x-conformance").and_then(|v| v.to_str().ok()),
                "body_hex": body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            });
            (201, Bytes::from(seen.to_string()))
        } else if let Some(code) = what.strip_prefix("status/") {
            (code.parse().expect("status"), Bytes::from_static(b"status"))
        } else if what == "bytes" {
            (200, Bytes::from((0..=255u8).collect::<Vec<_>>()))
        } else {
            (200, Bytes::from_static(b"chunk 0\nchunk 1\nchunk 2\n"))
        };
        let mut res = http::Response::new(out);
        *res.status_mut() = http::StatusCode::from_u16(status).expect("status");
        res.headers_mut()
            .insert("x-echo", http::HeaderValue::from_static("yes"));
        Ok(res)
    }
}

#[async_trait::async_trait(?Send)]
impl HttpClient for EchoHttp {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        self.answer(&req)
    }

    async fn send_streaming(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<StreamingResponse, HttpError> {
        use futures_util::StreamExt;
        let res = self.answer(&req)?;
        let (parts, body) = res.into_parts();
        let chunks: Vec<Result<Bytes, HttpError>> = if self.buffer_streams {
            vec![Ok(body)]
        } else {
            body.split_inclusive(|b| *b == b'\n')
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect()
        };
        Ok(StreamingResponse {
            status: parts.status,
            headers: parts.headers,
            body: futures_util::stream::iter(chunks).boxed_local(),
        })
    }
}

#[tokio::test]
async fn an_http_client_that_keeps_to_the_wire_passes_the_http_suite() {
    let cases = http_suite(&EchoHttp::default(), "http://echo.test/_fake/echo").await;
    assert_eq!(cases.len(), 5);
    for case in cases {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn the_http_suite_fails_a_client_that_buffers_streams_or_drops_bodies() {
    let failed = |cases: Vec<everjust_core::ports::conformance::Case>| {
        cases
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect::<Vec<_>>()
    };
    let buffering = EchoHttp {
        buffer_streams: true,
        ..EchoHttp::default()
    };
    assert_eq!(
        failed(http_suite(&buffering, "http://echo.test/_fake/echo").await),
        ["streamed_bodies_arrive_as_sent"]
    );
    let dropping = EchoHttp {
        drop_bodies: true,
        ..EchoHttp::default()
    };
    assert_eq!(
        failed(http_suite(&dropping, "http://echo.test/_fake/echo").await),
        ["request_and_answer_arrive_exactly"]
    );
}
