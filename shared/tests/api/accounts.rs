//! Accounts: signup, login, throttling, refresh rotation, logout, tokens,
//! me, export and erasure.

use serde_json::json;

use crate::helpers::{TestApp, PASSWORD};

#[tokio::test]
async fn signup_returns_user_and_working_tokens() {
    let app = TestApp::new().await;
    let (access, _, id) = app.signup("Ada@Example.com").await;
    let me = app.get("/v1/me", Some(&access)).await;
    assert_eq!(me.status, 200);
    let j = me.json();
    assert_eq!(j["id"], id.as_str());
    assert_eq!(j["email"], "Ada@Example.com");
    assert_eq!(j["role"], "user");
    assert_eq!(j["tier"], "free");
    assert_eq!(j["limits"]["max_file_bytes"], 5 * 1024 * 1024);
}

#[tokio::test]
async fn duplicate_signup_is_a_conflict_whatever_the_case() {
    let app = TestApp::new().await;
    app.signup("ada@example.com").await;
    let r = app
        .json(
            "POST",
            "/v1/auth/signup",
            None,
            json!({"email": "ADA@example.com", "password": PASSWORD}),
        )
        .await;
    r.problem(409, "email_taken");
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn weak_passwords_and_bad_emails_are_refused_and_change_nothing() {
    let app = TestApp::new().await;
    for (email, password, code) in [
        ("a@example.com", "short", "weak_password"),
        ("a@example.com", "password123", "weak_password"),
        ("a@example.com", "Password123", "weak_password"),
        ("not-an-email", PASSWORD, "invalid_email"),
        ("a@b", PASSWORD, "invalid_email"),
    ] {
        app.json(
            "POST",
            "/v1/auth/signup",
            None,
            json!({"email": email, "password": password}),
        )
        .await
        .problem(400, code);
    }
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn malformed_bodies_get_clear_errors() {
    let app = TestApp::new().await;
    app.request(
        "POST",
        "/v1/auth/signup",
        None,
        Some("application/json"),
        "{not json",
    )
    .await
    .problem(400, "invalid_body");
    app.request(
        "POST",
        "/v1/auth/signup",
        None,
        Some("text/plain"),
        r#"{"email":"a@b.co","password":"x"}"#,
    )
    .await
    .problem(415, "unsupported_media_type");
    app.json(
        "POST",
        "/v1/auth/signup",
        None,
        json!({"email": "a@example.com"}),
    )
    .await
    .problem(400, "invalid_body");
    app.json(
        "POST",
        "/v1/auth/signup",
        None,
        json!({"email": "a@example.com", "password": PASSWORD, "role": "admin"}),
    )
    .await
    .problem(400, "invalid_body");
    let big = format!(
        r#"{{"email":"a@example.com","password":"{}"}}"#,
        "x".repeat(1024 * 1024 + 1)
    );
    app.request(
        "POST",
        "/v1/auth/signup",
        None,
        Some("application/json"),
        big,
    )
    .await
    .problem(413, "body_too_large");
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let app = TestApp::new().await;
    app.signup("ada@example.com").await;
    let wrong = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": "wrong password!"}),
        )
        .await;
    let unknown = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": "bob@example.com", "password": PASSWORD}),
        )
        .await;
    let a = wrong.problem(401, "invalid_credentials");
    let b = unknown.problem(401, "invalid_credentials");
    assert_eq!(a["detail"], b["detail"]);
    let ok = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": "ADA@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn repeated_failures_lock_the_account_until_the_window_passes() {
    let app = TestApp::new().await;
    app.signup("ada@example.com").await;
    for _ in 0..5 {
        app.json(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": "wrong password!"}),
        )
        .await
        .problem(401, "invalid_credentials");
    }
    let locked = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    locked.problem(429, "too_many_attempts");
    let retry: i64 = locked.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=900).contains(&retry), "retry-after {retry}");
    app.clock.advance_ms(15 * 60 * 1000 + 1);
    let ok = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn many_accounts_from_one_ip_hit_the_ip_limit() {
    let app = TestApp::new().await;
    for i in 0..20 {
        app.json(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": format!("u{i}@example.com"), "password": PASSWORD}),
        )
        .await
        .problem(401, "invalid_credentials");
    }
    app.json(
        "POST",
        "/v1/auth/login",
        None,
        json!({"email": "fresh@example.com", "password": PASSWORD}),
    )
    .await
    .problem(429, "too_many_attempts");
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_is_dead() {
    let app = TestApp::new().await;
    let (_, refresh, _) = app.signup("ada@example.com").await;
    let r = app
        .json(
            "POST",
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let next = r.json()["refresh_token"].as_str().expect("next").to_owned();
    assert_ne!(next, refresh);
    let access = r.json()["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    assert_eq!(app.get("/v1/me", Some(&access)).await.status, 200);
    // Reuse of the rotated token revokes the family: the newest token dies too.
    app.json(
        "POST",
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh}),
    )
    .await
    .problem(401, "refresh_token_reused");
    app.json(
        "POST",
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": next}),
    )
    .await
    .problem(401, "invalid_refresh_token");
}

#[tokio::test]
async fn forged_refresh_tokens_are_refused() {
    let app = TestApp::new().await;
    let (_, refresh, _) = app.signup("ada@example.com").await;
    let (id, _) = refresh.split_once('.').expect("id.secret");
    for bad in [
        "",
        "garbage",
        &format!("{id}.wrongsecret"),
        "rt_00000000000000000000000000.x",
    ] {
        app.json(
            "POST",
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": bad}),
        )
        .await
        .problem(401, "invalid_refresh_token");
    }
    // The genuine token still works: failed attempts changed nothing.
    assert_eq!(
        app.json(
            "POST",
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh})
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = TestApp::new().await;
    let (_, refresh, _) = app.signup("ada@example.com").await;
    assert_eq!(
        app.json(
            "POST",
            "/v1/auth/logout",
            None,
            json!({"refresh_token": refresh})
        )
        .await
        .status,
        204
    );
    app.json(
        "POST",
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh}),
    )
    .await
    .problem(401, "invalid_refresh_token");
}

#[tokio::test]
async fn bad_access_tokens_are_refused() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    let app = TestApp::new().await;
    let (access, _, id) = app.signup("ada@example.com").await;
    app.get("/v1/me", None).await.problem(401, "unauthorized");
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let payload = String::from_utf8(B64.decode(&parts[1]).expect("b64")).expect("utf8");
    parts[1] = B64.encode(payload.replace("\"user\"", "\"admin\""));
    let tampered = parts.join(".");
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(format!(r#"{{"sub":"{id}","iss":"everjust","aud":"everjust-api","role":"admin","exp":9999999999}}"#))
    );
    let hs256 = |secret: &[u8]| {
        use hmac::{Hmac, Mac};
        let signing_input = format!(
            "{}.{}",
            B64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            B64.encode(format!(r#"{{"sub":"{id}","iss":"everjust","aud":"everjust-api","role":"admin","exp":9999999999}}"#))
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            B64.encode(mac.finalize().into_bytes())
        )
    };
    let guessable = hs256(b"secret");
    let empty = hs256(b"");
    for bad in [
        tampered.as_str(),
        none.as_str(),
        guessable.as_str(),
        empty.as_str(),
        "garbage",
        "a.b.c",
        "",
    ] {
        let r = app.get("/v1/me", Some(bad)).await;
        assert_eq!(r.status, 401, "{bad} -> {}", r.json());
    }
    app.clock.advance_ms(16 * 60 * 1000);
    app.get("/v1/me", Some(&access))
        .await
        .problem(401, "invalid_token");
}

#[tokio::test]
async fn erasure_removes_every_row_and_kills_the_tokens() {
    let app = TestApp::new().await;
    let (access, refresh, _) = app.signup("ada@example.com").await;
    let (other, _, _) = app.signup("bob@example.com").await;
    let p = app.project(&access, "mine").await;
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/a.txt"),
        Some(&access),
        None,
        "hello",
    )
    .await;
    app.project(&other, "theirs").await;
    assert_eq!(
        app.request("DELETE", "/v1/me", Some(&access), None, "")
            .await
            .status,
        204
    );
    app.get("/v1/me", Some(&access))
        .await
        .problem(401, "invalid_token");
    app.json(
        "POST",
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh}),
    )
    .await
    .problem(401, "invalid_refresh_token");
    assert_eq!(app.count("users").await, 1);
    assert_eq!(app.count("projects").await, 1, "only bob's project is left");
    assert_eq!(app.count("blobs").await, 0);
    assert_eq!(app.count("refresh_tokens").await, 1);
    assert_eq!(app.get("/v1/me", Some(&other)).await.status, 200);
}

#[tokio::test]
async fn export_holds_the_users_data_and_nobody_elses() {
    let app = TestApp::new().await;
    let (access, _, id) = app.signup("ada@example.com").await;
    let (other, _, other_id) = app.signup("bob@example.com").await;
    let p = app.project(&access, "mine").await;
    app.request(
        "PUT",
        &format!("/v1/projects/{p}/files/a.txt"),
        Some(&access),
        None,
        "hello",
    )
    .await;
    let p2 = app.project(&access, "second").await;
    for path in ["b.txt", "c/d.txt"] {
        app.request(
            "PUT",
            &format!("/v1/projects/{p2}/files/{path}"),
            Some(&access),
            None,
            path,
        )
        .await;
    }
    app.project(&other, "theirs").await;
    for (inst, owner, login) in [(71, &id, "ada-gh"), (72, &other_id, "bob-gh")] {
        app.ports
            .sql
            .execute(
                "INSERT INTO github_installations (installation_id, owner_id, account_login) VALUES ($1, $2, $3)",
                &[everjust_core::ports::sql::Value::Int(inst), owner.as_str().into(), login.into()],
            )
            .await
            .expect("installation");
    }
    let r = app.get("/v1/me/export", Some(&access)).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["user"]["id"], id.as_str());
    assert_eq!(j["github_installations"].as_array().map(Vec::len), Some(1));
    assert_eq!(j["github_installations"][0]["installation_id"], 71);
    assert_eq!(j["github_installations"][0]["account_login"], "ada-gh");
    assert!(!r.body.windows(6).any(|w| w == b"bob-gh"));
    // Each project with its own files.
    let files_of = |project: &str| -> Vec<(String, String)> {
        let found = j["projects"]
            .as_array()
            .and_then(|ps| ps.iter().find(|x| x["id"] == project))
            .unwrap_or_else(|| panic!("{project} exported"));
        found["files"]
            .as_array()
            .expect("files")
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().expect("path").to_owned(),
                    f["content_base64"].as_str().expect("content").to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(j["projects"].as_array().map(Vec::len), Some(2));
    assert_eq!(files_of(&p), [("a.txt".to_owned(), "aGVsbG8=".to_owned())]);
    assert_eq!(
        files_of(&p2),
        [
            ("b.txt".to_owned(), "Yi50eHQ=".to_owned()),
            ("c/d.txt".to_owned(), "Yy9kLnR4dA==".to_owned())
        ]
    );
    let actions: Vec<&str> = j["audit"]
        .as_array()
        .expect("audit")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"file.write"), "{actions:?}");
    assert_eq!(
        actions.last(),
        Some(&"account.export"),
        "the export itself is in it: {actions:?}"
    );
    assert!(!r.body.windows(7).any(|w| w == b"bob@exa"));
}
