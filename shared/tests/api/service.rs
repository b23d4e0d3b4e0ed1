//! Service routes: health, readiness, OpenAPI, headers, methods.

use everjust_core::routes::ROUTES;

use crate::helpers::TestApp;

#[tokio::test]
async fn health_and_ready_answer() {
    let app = TestApp::new().await;
    let h = app.get("/health", None).await;
    assert_eq!((h.status, h.json()["status"].as_str()), (200, Some("ok")));
    let r = app.get("/ready", None).await;
    assert_eq!(r.json()["checks"]["postgres"], "ok");
}

#[tokio::test]
async fn ready_names_postgres_when_it_is_down() {
    let app = TestApp::new().await;
    let admin_url = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("admin");
    tokio::spawn(conn);
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&app.db],
        )
        .await
        .expect("terminate");
    let r = app.get("/ready", None).await;
    let j = r.problem(503, "not_ready");
    assert_eq!(j["failing"], serde_json::json!(["postgres"]));
    assert!(
        !r.body.windows(8).any(|w| w == b"terminat"),
        "no internals in the body"
    );
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let app = TestApp::new().await;
    let doc = app.get("/v1/openapi.json", None).await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for def in ROUTES {
        let path = def.path.replace("{*", "{");
        let op = &doc["paths"][&path][def.method.as_str().to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from OpenAPI",
            def.method,
            def.path
        );
        assert_eq!(
            op["security"].is_array(),
            def.auth,
            "{} {} security",
            def.method,
            def.path
        );
    }
}

#[tokio::test]
async fn every_response_has_security_headers_and_a_request_id() {
    let app = TestApp::new().await;
    for r in [
        app.get("/health", None).await,
        app.get("/nope", None).await,
        app.get("/v1/me", None).await,
    ] {
        for h in [
            "x-content-type-options",
            "strict-transport-security",
            "referrer-policy",
            "content-security-policy",
            "x-request-id",
        ] {
            assert!(r.headers.contains_key(h), "{h} missing");
        }
    }
    let r = app.request("GET", "/health", None, None, "").await;
    assert!(r.headers["x-request-id"]
        .to_str()
        .is_ok_and(|v| v.starts_with("req_")));
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let app = TestApp::new().await;
    app.get("/v2/nothing", None).await.problem(404, "not_found");
    let r = app.request("PUT", "/health", None, None, "").await;
    r.problem(405, "method_not_allowed");
    assert_eq!(r.headers["allow"], "GET");
}

#[tokio::test]
async fn missing_secret_answers_503_except_health() {
    let app = TestApp::with_vars(&[("JWT_SECRET", "too-short")]).await;
    assert_eq!(app.get("/health", None).await.status, 200);
    let r = app.get("/v1/me", Some("x")).await;
    let j = r.problem(503, "misconfigured");
    assert!(j["detail"]
        .as_str()
        .is_some_and(|d| d.contains("JWT_SECRET")));
}
