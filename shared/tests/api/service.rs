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
    // In-process the limiter is the KV one.
    assert_eq!(r.json()["rate_limiter"], "approximate");
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

thread_local! {
    /// The log lines written on this test's thread.
    static LOG_LINES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A log sink that keeps each line for the test of its thread (tokio's
/// current-thread runtime runs a test on its own thread) and still prints it.
fn capture_log(line: &str) {
    LOG_LINES.with(|l| l.borrow_mut().push(line.to_owned()));
    eprintln!("{line}");
}

fn access_lines() -> Vec<(String, serde_json::Value)> {
    LOG_LINES.with(|l| {
        l.borrow()
            .iter()
            .filter_map(|line| {
                let j: serde_json::Value = serde_json::from_str(line).ok()?;
                (j["event"] == "request").then(|| (line.clone(), j["fields"].clone()))
            })
            .collect()
    })
}

#[tokio::test]
async fn each_request_logs_one_access_line_with_the_route_template_and_no_secrets() {
    everjust_core::log::set_sink(capture_log);
    let app = TestApp::new().await;
    let (token, refresh, user_id) = app.signup("ada@example.com").await;
    let project = app.project(&token, "p").await;
    LOG_LINES.with(|l| l.borrow_mut().clear());
    let r = app
        .get(
            &format!("/v1/projects/{project}?access_token=sekrit"),
            Some(&token),
        )
        .await;
    assert_eq!(r.status, 200);
    let lines = access_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (line, f) = &lines[0];
    assert_eq!(f["method"], "GET");
    assert_eq!(f["route"], "/v1/projects/{id}");
    assert_eq!(f["status"], 200);
    assert_eq!(f["user_id"], user_id.as_str());
    assert_eq!(
        f["request_id"],
        r.headers["x-request-id"].to_str().expect("id")
    );
    assert!(f["duration_ms"].is_i64(), "{f}");
    for secret in [token.as_str(), refresh.as_str(), "sekrit", project.as_str()] {
        assert!(
            !line.contains(secret),
            "the access line holds {secret}: {line}"
        );
    }
    // A failed login: no caller, and nothing of the body.
    LOG_LINES.with(|l| l.borrow_mut().clear());
    let r = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            serde_json::json!({"email": "ada@example.com", "password": "wrong password"}),
        )
        .await;
    let lines = access_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].1["route"], "/v1/auth/login");
    assert_eq!(lines[0].1["status"], r.status);
    assert!(lines[0].1["user_id"].is_null());
    assert!(!lines[0].0.contains("wrong password"));
    // No route matched: still one line, without the raw path.
    LOG_LINES.with(|l| l.borrow_mut().clear());
    app.get("/v1/nothing/here-usr_123", None).await;
    let lines = access_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].1["route"].is_null());
    assert!(!lines[0].0.contains("usr_123"));
}
