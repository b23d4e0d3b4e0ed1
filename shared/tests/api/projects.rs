//! Projects: templates, CRUD, pagination and tenant isolation.

use serde_json::json;

use crate::helpers::TestApp;

#[tokio::test]
async fn project_from_template_has_its_files_with_hashes() {
    use sha2::{Digest, Sha256};
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let r = app
        .json(
            "POST",
            "/v1/projects",
            Some(&t),
            json!({"name": "site", "template": "static-html"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().expect("id").to_owned();
    let files = app
        .get(&format!("/v1/projects/{id}/files"), Some(&t))
        .await
        .json();
    let paths: Vec<&str> = files["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths, ["app.js", "index.html", "style.css"]);
    let html = app
        .get(&format!("/v1/projects/{id}/files/index.html"), Some(&t))
        .await;
    assert_eq!(html.headers["content-type"], "text/html; charset=utf-8");
    let sha = format!("{:x}", Sha256::digest(&html.body));
    assert_eq!(files["items"][1]["sha256"], sha.as_str());
    assert_eq!(
        r.json()["total_bytes"].as_i64(),
        Some(
            files["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter_map(|f| f["size"].as_i64())
                .sum()
        )
    );
}

#[tokio::test]
async fn unknown_template_and_bad_names_are_refused() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    app.json(
        "POST",
        "/v1/projects",
        Some(&t),
        json!({"name": "x", "template": "rails"}),
    )
    .await
    .problem(400, "unknown_template");
    app.json("POST", "/v1/projects", Some(&t), json!({"name": "  "}))
        .await
        .problem(400, "invalid_name");
    app.json(
        "POST",
        "/v1/projects",
        Some(&t),
        json!({"name": "x".repeat(101)}),
    )
    .await
    .problem(400, "invalid_name");
    app.json("POST", "/v1/projects", Some(&t), json!({"name": "a\u{7}b"}))
        .await
        .problem(400, "invalid_name");
    assert_eq!(app.count("projects").await, 0);
}

#[tokio::test]
async fn sql_metacharacters_in_names_are_stored_verbatim() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let name = "x'); DROP TABLE projects; -- \"é\" %_";
    let r = app
        .json("POST", "/v1/projects", Some(&t), json!({"name": name}))
        .await;
    let id = r.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.get(&format!("/v1/projects/{id}"), Some(&t))
            .await
            .json()["name"],
        name
    );
}

#[tokio::test]
async fn pagination_walks_every_project_once() {
    let app = TestApp::new().await;
    let (t, _, id) = app.signup("ada@example.com").await;
    app.set_tier(&id, "pro").await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(app.project(&t, &format!("p{i}")).await);
    }
    let mut seen = Vec::new();
    let mut url = "/v1/projects?limit=2".to_owned();
    loop {
        let j = app.get(&url, Some(&t)).await.json();
        seen.extend(
            j["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|p| p["id"].as_str().expect("id").to_owned()),
        );
        match j["next_cursor"].as_str() {
            Some(c) => url = format!("/v1/projects?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, made);
    app.get("/v1/projects?limit=0", Some(&t))
        .await
        .problem(400, "invalid_limit");
    app.get("/v1/projects?limit=abc", Some(&t))
        .await
        .problem(400, "invalid_limit");
    app.get("/v1/projects?cursor=!!!", Some(&t))
        .await
        .problem(400, "invalid_cursor");
}

/// The list and the project are read with the caller's own lookup (one
/// round trip): what was read is shown only to a caller who is still there
/// and within the limit, and a bad token outranks a bad request.
#[tokio::test]
async fn reads_made_with_the_callers_lookup_reach_only_a_valid_caller() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "mine").await;
    app.get("/v1/projects?cursor=!!!", None)
        .await
        .problem(401, "unauthorized");
    app.get("/v1/projects?cursor=!!!", Some("garbage"))
        .await
        .problem(401, "invalid_token");
    assert_eq!(
        app.request("DELETE", "/v1/me", Some(&t), None, "")
            .await
            .status,
        204
    );
    // The token is still signed and unexpired; its user is gone.
    for path in ["/v1/projects".to_owned(), format!("/v1/projects/{p}")] {
        let res = app.get(&path, Some(&t)).await;
        assert!(
            !String::from_utf8_lossy(&res.body).contains("mine"),
            "{path} leaked the project"
        );
        res.problem(401, "invalid_token");
    }
    app.get("/v1/projects?cursor=!!!", Some(&t))
        .await
        .problem(401, "invalid_token");
}

#[tokio::test]
async fn foreign_project_is_not_found_on_every_route_and_unchanged() {
    let app = TestApp::new().await;
    let (owner, _, _) = app.signup("ada@example.com").await;
    let (intruder, _, _) = app.signup("eve@example.com").await;
    let p = app.project(&owner, "secret").await;
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/a.txt"),
        Some(&owner),
        None,
        "owner's",
    )
    .await;
    let before = app
        .get(&format!("/v1/projects/{p}"), Some(&owner))
        .await
        .json();
    let attempts = [
        app.get(&format!("/v1/projects/{p}"), Some(&intruder)).await,
        app.json(
            "PATCH",
            &format!("/v1/projects/{p}"),
            Some(&intruder),
            json!({"name": "pwned"}),
        )
        .await,
        app.request(
            "DELETE",
            &format!("/v1/projects/{p}"),
            Some(&intruder),
            None,
            "",
        )
        .await,
        app.get(&format!("/v1/projects/{p}/files"), Some(&intruder))
            .await,
        app.get(&format!("/v1/projects/{p}/files/a.txt"), Some(&intruder))
            .await,
        app.request(
            "PUT",
            &format!("/v1/projects/{p}/files/a.txt"),
            Some(&intruder),
            None,
            "pwned",
        )
        .await,
        app.request(
            "PUT",
            &format!("/v1/projects/{p}/files/new.txt"),
            Some(&intruder),
            None,
            "pwned",
        )
        .await,
        app.request(
            "DELETE",
            &format!("/v1/projects/{p}/files/a.txt"),
            Some(&intruder),
            None,
            "",
        )
        .await,
    ];
    for r in attempts {
        r.problem(404, "not_found");
    }
    assert_eq!(
        app.get(&format!("/v1/projects/{p}"), Some(&owner))
            .await
            .json(),
        before
    );
    assert_eq!(
        app.get(&format!("/v1/projects/{p}/files/a.txt"), Some(&owner))
            .await
            .body,
        "owner's"
    );
    assert_eq!(app.count("files").await, 1);
    // Missing and malformed ids answer the same.
    app.get("/v1/projects/prj_00000000000000000000000000", Some(&owner))
        .await
        .problem(404, "not_found");
    app.get("/v1/projects/nonsense", Some(&owner))
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn rename_and_delete_a_project() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "old").await;
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/a.txt"),
        Some(&t),
        None,
        "x",
    )
    .await;
    let r = app
        .json(
            "PATCH",
            &format!("/v1/projects/{p}"),
            Some(&t),
            json!({"name": "new", "description": "d"}),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.json()["name"].as_str(),
            r.json()["description"].as_str()
        ),
        (200, Some("new"), Some("d"))
    );
    app.json(
        "PATCH",
        &format!("/v1/projects/{p}"),
        Some(&t),
        json!({"owner_id": "x"}),
    )
    .await
    .problem(400, "invalid_body");
    assert_eq!(
        app.request("DELETE", &format!("/v1/projects/{p}"), Some(&t), None, "")
            .await
            .status,
        204
    );
    app.get(&format!("/v1/projects/{p}"), Some(&t))
        .await
        .problem(404, "not_found");
    assert_eq!((app.count("files").await, app.count("blobs").await), (0, 0));
}
