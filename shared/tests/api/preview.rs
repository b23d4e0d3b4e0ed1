//! The static preview: capability links, content types, sandboxing, traversal.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn the_preview_link_serves_the_site_in_a_sandbox() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app
        .json(
            "POST",
            "/v1/projects",
            Some(&t),
            json!({"name": "site", "template": "static-html"}),
        )
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let sandbox = app
        .get(&format!("/v1/projects/{p}/sandbox"), Some(&t))
        .await
        .json();
    assert_eq!(sandbox["provider"], "static");
    let url = sandbox["preview_url"].as_str().expect("url").to_owned();
    assert!(url.starts_with(&format!("/v1/projects/{p}/preview/~t.")));
    // No bearer token: the link itself is the capability; relative links keep it.
    let index = app.get(&url, None).await;
    assert_eq!(index.status, 200);
    assert_eq!(index.headers["content-type"], "text/html; charset=utf-8");
    let csp = index.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(
        csp.starts_with("sandbox ") && !csp.contains("allow-same-origin"),
        "{csp}"
    );
    let css = app.get(&format!("{url}style.css"), None).await;
    assert_eq!(
        (css.status, css.headers["content-type"].to_str().ok()),
        (200, Some("text/css; charset=utf-8"))
    );
    // With a bearer token the plain path works too.
    assert_eq!(
        app.get(&format!("/v1/projects/{p}/preview/app.js"), Some(&t))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn forged_expired_or_foreign_preview_links_are_refused() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let (eve, _, _) = app.signup("eve@example.com").await;
    let p = app
        .json(
            "POST",
            "/v1/projects",
            Some(&t),
            json!({"name": "site", "template": "static-html"}),
        )
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let url = app
        .get(&format!("/v1/projects/{p}/sandbox"), Some(&t))
        .await
        .json()["preview_url"]
        .as_str()
        .expect("url")
        .to_owned();
    let forged = url.replace(&url[url.len() - 9..url.len() - 1], "deadbeef");
    app.get(&format!("{forged}index.html"), None)
        .await
        .problem(401, "preview_token_invalid");
    app.get(&format!("/v1/projects/{p}/preview/index.html"), None)
        .await
        .problem(401, "preview_token_invalid");
    app.get(&format!("/v1/projects/{p}/preview/index.html"), Some(&eve))
        .await
        .problem(404, "not_found");
    app.get(&format!("/v1/projects/{p}/sandbox"), Some(&eve))
        .await
        .problem(404, "not_found");
    // The link of one project does not open another.
    let other = app
        .json(
            "POST",
            "/v1/projects",
            Some(&eve),
            json!({"name": "x", "template": "static-html"}),
        )
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let token_segment = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .expect("seg")
        .to_owned();
    app.get(
        &format!("/v1/projects/{other}/preview/{token_segment}/index.html"),
        None,
    )
    .await
    .problem(401, "preview_token_invalid");
    app.clock.advance_ms(13 * 3600 * 1000);
    app.get(&format!("{url}index.html"), None)
        .await
        .problem(401, "preview_token_invalid");
}

#[tokio::test]
async fn preview_paths_with_traversal_are_400() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app
        .json(
            "POST",
            "/v1/projects",
            Some(&t),
            json!({"name": "site", "template": "static-html"}),
        )
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let url = app
        .get(&format!("/v1/projects/{p}/sandbox"), Some(&t))
        .await
        .json()["preview_url"]
        .as_str()
        .expect("url")
        .to_owned();
    for bad in ["..%2F..%2Fetc%2Fpasswd", "a%5Cb", "%2e%2e/x"] {
        app.get(&format!("{url}{bad}"), None)
            .await
            .problem(400, "invalid_path");
    }
    app.get(&format!("{url}missing.html"), None)
        .await
        .problem(404, "not_found");
}
