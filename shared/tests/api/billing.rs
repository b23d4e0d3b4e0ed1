//! Tiers, quotas, rate limits, usage, bring-your-own keys, admin, CORS.

use std::rc::Rc;

use serde_json::json;

use crate::helpers::{ScriptedHttp, SpecRoom, TestApp};

const KEYS: &str = "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=,k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

#[tokio::test]
async fn free_tier_allows_three_projects_then_402() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    for i in 0..3 {
        app.project(&t, &format!("p{i}")).await;
    }
    let r = app
        .json("POST", "/v1/projects", Some(&t), json!({"name": "fourth"}))
        .await;
    r.problem(402, "quota_projects");
    assert_eq!(app.count("projects").await, 3);
}

#[tokio::test]
async fn requests_over_the_tier_rate_get_429_with_ratelimit_headers() {
    let app = TestApp::new().await;
    let (t, _, id) = app.signup("ada@example.com").await;
    app.ports
        .sql
        .execute(
            "UPDATE users SET limits_override = '{\"api_requests_minute\": 5}' WHERE id = $1",
            &[id.as_str().into()],
        )
        .await
        .expect("override");
    let mut last = None;
    for _ in 0..5 {
        let r = app.get("/v1/projects", Some(&t)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["ratelimit-limit"], "5");
        last = Some(r);
    }
    assert_eq!(last.expect("res").headers["ratelimit-remaining"], "0");
    let r = app.get("/v1/projects", Some(&t)).await;
    r.problem(429, "rate_limited");
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    // The window slides: after a minute and a bit the user may call again.
    app.clock.advance_ms(121_000);
    assert_eq!(app.get("/v1/projects", Some(&t)).await.status, 200);
}

#[tokio::test]
async fn me_shows_tier_and_limits() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let me = app.get("/v1/me", Some(&t)).await.json();
    assert_eq!(me["tier"], "free");
    assert_eq!(me["limits"]["projects"], 3);
    assert_eq!(me["limits"]["concurrent_runs"], 1);
    assert_eq!(me["limits"]["model_calls_day"], 1000);
    assert_eq!(me["limits"]["api_requests_minute"], 120);
}

#[tokio::test]
async fn only_admins_change_tiers_and_it_is_audited() {
    let app = TestApp::with_vars(&[("ADMIN_EMAILS", "root@example.com")]).await;
    let (admin, _, admin_id) = app.signup("Root@example.com").await;
    let (user, _, user_id) = app.signup("ada@example.com").await;
    app.get("/v1/admin/users", Some(&user))
        .await
        .problem(403, "forbidden");
    app.json(
        "PATCH",
        &format!("/v1/admin/users/{user_id}"),
        Some(&user),
        json!({"tier": "enterprise"}),
    )
    .await
    .problem(403, "forbidden");
    assert_eq!(app.get("/v1/me", Some(&user)).await.json()["tier"], "free");
    let list = app.get("/v1/admin/users", Some(&admin)).await;
    assert_eq!(list.json()["items"].as_array().map(Vec::len), Some(2));
    app.json(
        "PATCH",
        &format!("/v1/admin/users/{user_id}"),
        Some(&admin),
        json!({"tier": "gold"}),
    )
    .await
    .problem(400, "invalid_tier");
    let r = app
        .json(
            "PATCH",
            &format!("/v1/admin/users/{user_id}"),
            Some(&admin),
            json!({"tier": "pro", "limits": {"projects": 7}}),
        )
        .await;
    assert_eq!(
        (
            r.status,
            r.json()["tier"].as_str(),
            r.json()["limits"]["projects"].as_i64()
        ),
        (200, Some("pro"), Some(7))
    );
    // Overrides that could not apply are refused, and change nothing: an
    // unknown limit, a fraction, a negative count, a number past what a
    // sandbox stores, a model list that is not of names, a NUL.
    for bad in [
        json!({"limits": {"projects": 50, "concurent_runs": 2}}),
        json!({"limits": {"projects": 50, "concurrent_runs": 2.5}}),
        json!({"limits": {"projects": -1}}),
        json!({"limits": {"max_file_bytes": 1e19}}),
        json!({"limits": {"sandbox_idle_minutes": 3_000_000_000i64}}),
        json!({"limits": {"allowed_models": ["claude", 1]}}),
        json!({"limits": {"allowed_models": ["\u{0}"]}}),
        json!({"limits": []}),
    ] {
        let code = if bad.to_string().contains("\\u0000") {
            "invalid_body"
        } else {
            "invalid_limits"
        };
        app.json(
            "PATCH",
            &format!("/v1/admin/users/{user_id}"),
            Some(&admin),
            bad,
        )
        .await
        .problem(400, code);
    }
    let me = app.get("/v1/me", Some(&user)).await.json();
    assert_eq!(
        (
            me["limits"]["projects"].as_i64(),
            me["limits"]["concurrent_runs"].as_i64()
        ),
        (Some(7), Some(5)),
        "the refused overrides changed nothing"
    );
    // A negative API rate is the documented "no limit"; large byte limits fit.
    let r = app
        .json(
            "PATCH",
            &format!("/v1/admin/users/{user_id}"),
            Some(&admin),
            json!({"limits": {"projects": 7, "api_requests_minute": -1, "max_project_bytes": 10_000_000_000i64}}),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["limits"]["max_project_bytes"].as_i64()),
        (200, Some(10_000_000_000))
    );
    let audit = app.get("/v1/audit", Some(&admin)).await.json();
    assert_eq!(audit["items"][0]["action"], "admin.user_update");
    let theirs = app.get("/v1/audit", Some(&user)).await.json();
    assert_eq!(theirs["items"][0]["action"], "account.changed_by_admin");
    assert!(admin_id.starts_with("usr_"));
}

/// The admin list shows each user's cost of this month (not of earlier
/// months, and 0 for a user with none), on every page.
#[tokio::test]
async fn the_admin_list_shows_each_users_cost_this_month() {
    let app = TestApp::with_vars(&[("ADMIN_EMAILS", "root@example.com")]).await;
    let (admin, _, admin_id) = app.signup("root@example.com").await;
    let (_, _, ada) = app.signup("ada@example.com").await;
    let (_, _, bob) = app.signup("bob@example.com").await;
    let ledger = |id: &'static str, owner: &str, cost: i64, this_month: bool| {
        let sql = app.ports.sql.clone();
        let owner = owner.to_owned();
        async move {
            sql.execute(
                "INSERT INTO usage_ledger (id, owner_id, provider, model, cost_micros, created_at)
                 VALUES ($1, $2, 'anthropic', 'claude', $3,
                         CASE WHEN $4 THEN now() ELSE date_trunc('month', now()) - interval '1 day' END)",
                &[id.into(), owner.as_str().into(), cost.into(), this_month.into()],
            )
            .await
            .expect("ledger row");
        }
    };
    ledger("led_1", &ada, 1_000, true).await;
    ledger("led_2", &ada, 500, true).await;
    ledger("led_3", &ada, 700, false).await;
    ledger("led_4", &admin_id, 42, true).await;
    let expected = [(admin_id, 42), (ada, 1_500), (bob, 0)];
    for limit in [50, 1] {
        let mut seen = std::collections::HashMap::new();
        let mut path = format!("/v1/admin/users?limit={limit}");
        loop {
            let page = app.get(&path, Some(&admin)).await.json();
            for u in page["items"].as_array().expect("items") {
                seen.insert(
                    u["id"].as_str().expect("id").to_owned(),
                    u["cost_micros_this_month"].as_i64().expect("cost"),
                );
            }
            match page["next_cursor"].as_str() {
                Some(c) => path = format!("/v1/admin/users?limit={limit}&cursor={c}"),
                None => break,
            }
        }
        for (id, cost) in &expected {
            assert_eq!(seen.get(id), Some(cost), "limit {limit}: {id} in {seen:?}");
        }
        assert_eq!(seen.len(), 3);
    }
}

/// GET /v1/usage reads the ledger's daily sums (migration 0009), which its
/// triggers keep: after inserts of every kind and payer, an update and a
/// delete, the report equals this month's ledger rows summed by UTC day and
/// kind, and last month's rows stay out.
#[tokio::test]
async fn the_usage_report_is_the_ledger_summed_after_every_write() {
    let app = TestApp::new().await;
    let (t, _, owner) = app.signup("ada@example.com").await;
    let sql = app.ports.sql.clone();
    let report = || async { app.get("/v1/usage", Some(&t)).await.json() };
    // What the report must say: the ledger's own rows of this UTC month.
    let ledger = || {
        let (sql, owner) = (sql.clone(), owner.clone());
        async move {
            let rows = sql
                .query(
                    "SELECT to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day, kind,
                            count(*)::int8 AS calls, sum(input_tokens)::int8 AS input_tokens,
                            sum(output_tokens)::int8 AS output_tokens,
                            sum(cache_read_tokens)::int8 AS cache_read_tokens,
                            sum(cache_write_tokens)::int8 AS cache_write_tokens,
                            sum(cost_micros)::int8 AS cost_micros, sum(compute_seconds)::int8 AS compute_seconds
                       FROM usage_ledger
                      WHERE owner_id = $1
                        AND created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                      GROUP BY 1, 2 ORDER BY 1, 2",
                    &[owner.as_str().into()],
                )
                .await
                .expect("ledger");
            rows.iter()
                .map(|r| {
                    let n = |c: &str| r.int(c).expect(c);
                    json!({
                        "day": r.text("day").expect("day"), "kind": r.text("kind").expect("kind"),
                        "calls": n("calls"), "input_tokens": n("input_tokens"),
                        "output_tokens": n("output_tokens"), "cache_read_tokens": n("cache_read_tokens"),
                        "cache_write_tokens": n("cache_write_tokens"), "cost_micros": n("cost_micros"),
                        "compute_seconds": n("compute_seconds"),
                    })
                })
                .collect::<Vec<_>>()
        }
    };
    // (id, kind, byok, input tokens, cost, compute seconds, when)
    let last_month =
        "date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 hour'";
    for (id, kind, byok, tokens, cost, secs, when) in [
        ("led_a", "model", false, 100, 1_000, 0, "now()"),
        ("led_b", "model", false, 50, 400, 0, "now()"),
        ("led_own", "model", true, 70, 900, 0, "now()"),
        ("led_box", "sandbox", false, 0, 30, 600, "now()"),
        ("led_old", "model", false, 5_000, 9_000, 0, last_month),
    ] {
        sql.execute(
            &format!(
                "INSERT INTO usage_ledger (id, owner_id, kind, provider, model, input_tokens, output_tokens,
                                           cost_micros, compute_seconds, byok, created_at)
                 VALUES ($1, $2, $3, 'anthropic', 'claude-sonnet-4-5', $4, 1, $5, $6, $7, {when})"
            ),
            &[id.into(), owner.as_str().into(), kind.into(), tokens.into(), cost.into(), secs.into(), byok.into()],
        )
        .await
        .expect("ledger row");
    }
    let check = |when: &'static str| async move {
        let r = report().await;
        assert_eq!(r["by_day"], json!(ledger().await), "{when}");
        r
    };
    let r = check("inserted").await;
    assert_eq!(r["totals"]["model_calls"], 4, "last month's row is out");
    assert_eq!(r["totals"]["cost_micros"], 2_330);
    assert_eq!(r["totals"]["byok_cost_micros"], 900);
    assert_eq!(
        r["totals"]["billable_tokens"],
        150 + 2 + 1,
        "ours: a, b and the sandbox row"
    );
    assert_eq!(r["totals"]["compute_minutes"], 10);
    sql.execute(
        "UPDATE usage_ledger SET input_tokens = 1, cost_micros = 7 WHERE id = 'led_a'",
        &[],
    )
    .await
    .expect("update");
    let r = check("updated").await;
    assert_eq!(r["totals"]["cost_micros"], 1_337);
    sql.execute(
        "DELETE FROM usage_ledger WHERE id IN ('led_b', 'led_box')",
        &[],
    )
    .await
    .expect("delete");
    let r = check("deleted").await;
    assert_eq!(r["totals"]["model_calls"], 2);
    assert_eq!(r["totals"]["compute_minutes"], 0);
    assert!(
        r["by_day"]
            .as_array()
            .expect("by_day")
            .iter()
            .all(|d| d["kind"] == "model"),
        "a day and kind with no rows left is not reported: {}",
        r["by_day"]
    );
}

#[tokio::test]
async fn byo_key_is_validated_encrypted_and_never_returned() {
    let http = Rc::new(ScriptedHttp::default());
    let app = TestApp::build(&[("KEYS_ENCRYPTION_KEY", KEYS)], http.clone()).await;
    let (t, _, _) = app.signup("ada@example.com").await;
    http.push(
        401,
        &[],
        r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
    );
    app.json(
        "PUT",
        "/v1/keys/anthropic",
        Some(&t),
        json!({"api_key": "sk-ant-rejected-1234"}),
    )
    .await
    .problem(400, "key_rejected");
    assert_eq!(
        app.count("provider_keys").await,
        0,
        "a rejected key is not stored"
    );
    http.push(200, &[], r#"{"data":[]}"#);
    let secret = "sk-ant-api03-verysecret-WXYZ";
    let r = app
        .json(
            "PUT",
            "/v1/keys/anthropic",
            Some(&t),
            json!({"api_key": secret}),
        )
        .await;
    assert_eq!((r.status, r.json()["last4"].as_str()), (200, Some("WXYZ")));
    assert_eq!(
        http.requests.borrow()[1].0,
        "https://api.anthropic.com/v1/models"
    );
    let listed = app.get("/v1/keys", Some(&t)).await;
    assert!(!String::from_utf8_lossy(&listed.body).contains("verysecret"));
    assert_eq!(listed.json()["items"][0]["last4"], "WXYZ");
    let row = app
        .ports
        .sql
        .query("SELECT ciphertext, key_id FROM provider_keys", &[])
        .await
        .expect("row");
    let ct = row[0].bytes("ciphertext").expect("ct");
    assert!(
        !ct.windows(10).any(|w| w == b"verysecret"),
        "stored encrypted"
    );
    assert_eq!(row[0].text("key_id").expect("id"), "k2");
    let export = app.get("/v1/me/export", Some(&t)).await;
    assert!(!String::from_utf8_lossy(&export.body).contains("verysecret"));
    app.json(
        "PUT",
        "/v1/keys/gemini",
        Some(&t),
        json!({"api_key": secret}),
    )
    .await
    .problem(404, "not_found");
    assert_eq!(
        app.request("DELETE", "/v1/keys/anthropic", Some(&t), None, "")
            .await
            .status,
        204
    );
    assert_eq!(app.count("provider_keys").await, 0);
}

/// Signs Ada up with her own Anthropic key, `sk-ant-mine-1234` (its check
/// with the provider answered by `http`); her access token.
async fn signup_with_own_key(app: &TestApp, http: &ScriptedHttp) -> String {
    let (t, _, _) = app.signup("ada@example.com").await;
    http.push(200, &[], "{}");
    let r = app
        .json(
            "PUT",
            "/v1/keys/anthropic",
            Some(&t),
            json!({"api_key": "sk-ant-mine-1234"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    t
}

#[tokio::test]
async fn runs_use_the_users_own_key_and_its_usage_is_not_billed() {
    let http = Rc::new(ScriptedHttp::default());
    let app = TestApp::build(&[("KEYS_ENCRYPTION_KEY", KEYS)], http.clone()).await;
    let t = signup_with_own_key(&app, &http).await;
    let p = app.project(&t, "p").await;
    let s = app.session(&t, &p).await;
    let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    http.push(200, &[], stream);
    let r = app.send_message(&t, &s, "hello").await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (202, Some("complete")),
        "{}",
        r.json()
    );
    // The run was stored before the caller's keys were read (under the
    // server's default, here the demo); its record names the provider used.
    let run = &app
        .ports
        .sql
        .query(
            "SELECT r.provider, a.detail->>'provider' AS audited FROM runs r JOIN audit_events a ON a.detail->>'run_id' = r.id",
            &[],
        )
        .await
        .expect("run")[0];
    assert_eq!(run.text("provider").expect("provider"), "anthropic");
    assert_eq!(run.text("audited").expect("audited"), "anthropic");
    let usage = app.get("/v1/usage", Some(&t)).await.json();
    assert_eq!(usage["totals"]["tokens"], 8);
    assert_eq!(
        usage["totals"]["billable_tokens"], 0,
        "paid by the user's key"
    );
    let byok: bool = app
        .ports
        .sql
        .query("SELECT byok FROM usage_ledger", &[])
        .await
        .expect("q")[0]
        .bool("byok")
        .expect("b");
    assert!(byok);
    // The GDPR export covers chat, usage and keys (never the key itself).
    let export = app.get("/v1/me/export", Some(&t)).await;
    let doc = export.json();
    assert_eq!(
        doc["sessions"][0]["messages"][1]["content"][0]["text"],
        "hi"
    );
    assert_eq!(doc["usage"][0]["byok"], true);
    assert_eq!(doc["provider_keys"][0]["last4"], "1234");
    assert!(!String::from_utf8_lossy(&export.body).contains("sk-ant-mine"));
}

/// A run on the caller's own key hands its room the key the starting
/// request opened, so the room's first model call reads no keys (a
/// Postgres connection and a query before the first token). The key never
/// shows in the spec's `Debug`, and a run on the server's key carries none.
#[tokio::test]
async fn a_run_on_the_users_own_key_hands_its_room_the_opened_key() {
    let http = Rc::new(ScriptedHttp::default());
    let mut app = TestApp::build(&[("KEYS_ENCRYPTION_KEY", KEYS)], http.clone()).await;
    let room = Rc::new(SpecRoom::default());
    app.ports.rooms = Some(room.clone());
    let t = signup_with_own_key(&app, &http).await;
    let p = app.project(&t, "p").await;
    let s = app.session(&t, &p).await;
    let r = app.send_message(&t, &s, "hello").await;
    assert_eq!(r.status, 202, "{}", r.json());
    let (_, spec) = room.last();
    assert!(spec.byok);
    let key = spec.preload.as_ref().and_then(|p| p.own_key.as_ref());
    assert_eq!(key.map(|k| k.expose()), Some("sk-ant-mine-1234"));
    assert!(!format!("{spec:?}").contains("sk-ant-mine"), "{spec:?}");
    // The driver calls the model with it: the stored key is gone, and
    // without the preloaded one the run would have no key at all.
    app.ports
        .sql
        .execute("DELETE FROM provider_keys", &[])
        .await
        .expect("delete");
    http.push(200, &[], "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    let outcome = everjust_core::chat::inline::run_detached(&app.ports, &spec).await;
    assert_eq!(outcome.status, "complete");
    assert_eq!(
        http.api_keys.borrow().last().cloned().flatten().as_deref(),
        Some("sk-ant-mine-1234")
    );
}

#[tokio::test]
async fn a_tampered_ciphertext_is_a_clear_error_not_a_panic() {
    let http = Rc::new(ScriptedHttp::default());
    let app = TestApp::build(&[("KEYS_ENCRYPTION_KEY", KEYS)], http.clone()).await;
    let t = signup_with_own_key(&app, &http).await;
    app.ports.sql.execute("UPDATE provider_keys SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1)", &[]).await.expect("tamper");
    let p = app.project(&t, "p").await;
    let s = app.session(&t, &p).await;
    app.send_message(&t, &s, "hello")
        .await
        .problem(409, "key_unreadable");
    assert_eq!(app.count("runs").await, 0);
}

#[tokio::test]
async fn keys_sealed_under_an_old_key_are_reencrypted_on_use() {
    let http = Rc::new(ScriptedHttp::default());
    let old = TestApp::build(
        &[(
            "KEYS_ENCRYPTION_KEY",
            "k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
        )],
        http.clone(),
    )
    .await;
    let (t, _, id) = old.signup("ada@example.com").await;
    http.push(200, &[], "{}");
    old.json(
        "PUT",
        "/v1/keys/openai",
        Some(&t),
        json!({"api_key": "sk-openai-abcd"}),
    )
    .await;
    // Same database, rotated configuration: k2 is current, k1 still opens old rows.
    let rotated = everjust_core::Config::from_vars(|k| match k {
        "JWT_SECRET" => Some("test-secret-test-secret-test-secret-0123".into()),
        "KEYS_ENCRYPTION_KEY" => Some(KEYS.into()),
        _ => None,
    })
    .expect("config");
    let mut ports = old.ports.clone();
    ports.config = Rc::new(Ok(rotated));
    let ctx = everjust_core::routes::Ctx {
        ports: &ports,
        request_id: "t",
        meta: Default::default(),
        params: Default::default(),
        rate: Default::default(),
    };
    let keys = everjust_core::billing::keys::user_keys(&ctx, &id)
        .await
        .expect("open");
    assert_eq!(keys, vec![("openai", "sk-openai-abcd".to_owned())]);
    let kid = old
        .ports
        .sql
        .query("SELECT key_id FROM provider_keys", &[])
        .await
        .expect("q")[0]
        .text("key_id")
        .expect("id");
    assert_eq!(kid, "k2");
}

#[tokio::test]
async fn cors_preflight_from_an_unknown_origin_is_refused() {
    let app = TestApp::with_vars(&[("CORS_ORIGINS", "https://app.example.com")]).await;
    let pre = |origin: &'static str| {
        let app = &app;
        async move {
            let req = http::Request::builder()
                .method("OPTIONS")
                .uri("/v1/projects")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .body(bytes::Bytes::new())
                .expect("req");
            everjust_core::handle(&app.ports, req, Default::default()).await
        }
    };
    let ok = pre("https://app.example.com").await;
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let bad = pre("https://evil.example.net").await;
    assert_eq!(bad.status(), 403);
    assert!(!bad.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn runs_racing_for_the_last_unit_of_budget_overdraw_by_at_most_one_run() {
    const RUNS: usize = 4;
    let http = Rc::new(ScriptedHttp::default());
    let app = TestApp::build(
        &[
            ("ANTHROPIC_API_KEY", "sk-test"),
            ("ANTHROPIC_BASE_URL", "http://model.test"),
            ("ANTHROPIC_MODEL", "claude-sonnet-4-5"),
        ],
        http.clone(),
    )
    .await;
    let (t, _, id) = app.signup("ada@example.com").await;
    // One token of budget left, and room for every run to go at once.
    app.ports
        .sql
        .execute(
            "UPDATE users SET limits_override = '{\"model_tokens_month\": 1, \"concurrent_runs\": 10}' WHERE id = $1",
            &[id.as_str().into()],
        )
        .await
        .expect("override");
    let p = app.project(&t, "p").await;
    let mut sessions = Vec::new();
    for _ in 0..RUNS {
        let s = app.session(&t, &p).await;
        sessions.push(s);
    }
    // Every call a run makes costs 8 tokens (5 in, 3 out).
    let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    for _ in 0..RUNS {
        http.push(200, &[], stream);
    }
    let paths: Vec<String> = sessions
        .iter()
        .map(|s| format!("/v1/sessions/{s}/messages"))
        .collect();
    // Each request on a connection of its own, as in production: their
    // starts' transactions really run side by side.
    let mut apps = Vec::new();
    for _ in 0..RUNS {
        apps.push(app.on_own_connection().await);
    }
    let sends = apps
        .iter()
        .zip(&paths)
        .map(|(app, path)| app.json("POST", path, Some(&t), json!({"content": "hello"})));
    let results = futures_util::future::join_all(sends).await;
    let mut completed = 0;
    for r in &results {
        let j = r.json();
        match (r.status, j["status"].as_str()) {
            (202, Some("complete")) => completed += 1,
            // Stopped cleanly: refused at the door, or before its first call.
            (402, _) => assert_eq!(j["code"], "quota_model_tokens", "{j}"),
            (202, Some("incomplete")) => {}
            other => panic!("unexpected answer {other:?}: {j}"),
        }
    }
    let billed: i64 = app
        .ports
        .sql
        .query(
            "SELECT COALESCE(sum(input_tokens + output_tokens), 0)::int8 AS n FROM usage_ledger WHERE NOT byok",
            &[],
        )
        .await
        .expect("ledger")[0]
        .int("n")
        .expect("n");
    // The budget (1) may be overdrawn by one run's call (8 tokens), no more.
    assert!(
        billed <= 1 + 8,
        "{RUNS} racing runs billed {billed} tokens against a budget of 1"
    );
    assert_eq!(
        completed, 1,
        "the last unit of budget goes to exactly one run"
    );
}

#[tokio::test]
async fn bursts_from_many_ips_are_limited_per_ip_and_a_user_per_user_whatever_the_ip() {
    let mut app = TestApp::with_vars(&[("RATE_LIMIT_ANONYMOUS_PER_MINUTE", "3")]).await;
    // Anonymous routes: each client IP has its own budget of 3 a minute.
    async fn login(app: &TestApp) -> crate::helpers::Res {
        app.json("POST", "/v1/auth/login", None, json!({})).await
    }
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        app.ip = ip.into();
        for _ in 0..3 {
            let r = login(&app).await;
            assert_eq!(
                r.status, 400,
                "{ip}: the IP check passes, then the body is refused"
            );
            assert_eq!(r.headers["ratelimit-limit"], "3");
        }
        let r = login(&app).await;
        r.problem(429, "rate_limited");
        assert!(r.headers.contains_key("retry-after"), "{ip}");
    }
    // A signed-in user is limited per user: changing IP gives no new budget.
    app.ip = "198.51.100.9".into();
    let (t, _, id) = app.signup("bursty@example.com").await;
    app.ports
        .sql
        .execute(
            "UPDATE users SET limits_override = '{\"api_requests_minute\": 4}' WHERE id = $1",
            &[id.as_str().into()],
        )
        .await
        .expect("override");
    for n in 0..4 {
        app.ip = format!("192.0.2.{n}");
        assert_eq!(app.get("/v1/projects", Some(&t)).await.status, 200);
    }
    app.ip = "192.0.2.200".into();
    app.get("/v1/projects", Some(&t))
        .await
        .problem(429, "rate_limited");
}
