//! One behaviour suite per port, written once. The in-memory implementations
//! run it under `cargo test`; the platform implementations run it inside the
//! built wasm (the adapters expose it on a test-only route) from the
//! end-to-end suite.

use bytes::Bytes;

use super::clock::Clock;
use super::crypto::Crypto;
use super::http_client::HttpClient;
use super::kv::Kv;
use super::sql::{Sql, Value};

/// The outcome of one conformance case.
#[derive(Debug, serde::Serialize)]
pub struct Case {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

fn check(name: &'static str, result: Result<(), String>) -> Case {
    match result {
        Ok(()) => Case {
            name,
            ok: true,
            detail: String::new(),
        },
        Err(detail) => Case {
            name,
            ok: false,
            detail,
        },
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Runs the key-value suite under a unique `prefix` so runs never collide.
pub async fn kv_suite(kv: &dyn Kv, prefix: &str) -> Vec<Case> {
    let k = |s: &str| format!("{prefix}:{s}");
    vec![
        check(
            "missing_key_is_none",
            async {
                let v = kv.get(&k("missing")).await.map_err(|e| e.to_string())?;
                ensure!(v.is_none(), "expected None, got {v:?}");
                Ok(())
            }
            .await,
        ),
        check(
            "put_then_get_returns_the_bytes",
            async {
                let bytes = [0u8, 1, 2, 255, b'x'];
                kv.put(&k("a"), &bytes, None)
                    .await
                    .map_err(|e| e.to_string())?;
                let v = kv.get(&k("a")).await.map_err(|e| e.to_string())?;
                ensure!(v.as_deref() == Some(&bytes[..]), "got {v:?}");
                Ok(())
            }
            .await,
        ),
        check(
            "put_overwrites",
            async {
                kv.put(&k("b"), b"one", None)
                    .await
                    .map_err(|e| e.to_string())?;
                kv.put(&k("b"), b"two", Some(3600))
                    .await
                    .map_err(|e| e.to_string())?;
                let v = kv.get(&k("b")).await.map_err(|e| e.to_string())?;
                ensure!(v.as_deref() == Some(&b"two"[..]), "got {v:?}");
                Ok(())
            }
            .await,
        ),
        check(
            "entry_with_ttl_is_readable_before_expiry",
            async {
                kv.put(&k("t"), b"soon", Some(60))
                    .await
                    .map_err(|e| e.to_string())?;
                let v = kv.get(&k("t")).await.map_err(|e| e.to_string())?;
                ensure!(v.as_deref() == Some(&b"soon"[..]), "got {v:?}");
                Ok(())
            }
            .await,
        ),
        check(
            "delete_removes_and_is_idempotent",
            async {
                kv.put(&k("d"), b"x", None)
                    .await
                    .map_err(|e| e.to_string())?;
                kv.delete(&k("d")).await.map_err(|e| e.to_string())?;
                kv.delete(&k("d")).await.map_err(|e| e.to_string())?;
                let v = kv.get(&k("d")).await.map_err(|e| e.to_string())?;
                ensure!(v.is_none(), "got {v:?}");
                Ok(())
            }
            .await,
        ),
    ]
}

/// Runs the SQL executor suite in a temporary table named after `prefix`.
pub async fn sql_suite(sql: &dyn Sql, prefix: &str) -> Vec<Case> {
    let table = format!(
        "conformance_{}",
        prefix.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    let setup = sql
        .batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id int8 PRIMARY KEY, name text, data bytea, flag bool, at timestamptz DEFAULT now(), doc jsonb)"
        ))
        .await;
    let mut cases = vec![check("create_table", setup.map_err(|e| e.to_string()))];
    cases.push(check("round_trips_every_value_type", async {
        let n = sql
            .execute(
                &format!("INSERT INTO {table} (id, name, data, flag, doc) VALUES ($1, $2, $3, $4, $5::text::jsonb)"),
                &[Value::Int(1), "it's; DROP TABLE x --".into(), Value::Bytes(vec![0, 159, 255]), true.into(), r#"{"a":[1,"é"]}"#.into()],
            )
            .await
            .map_err(|e| e.to_string())?;
        ensure!(n == 1, "rows affected {n}");
        let row = sql
            .query_opt(&format!("SELECT id, name, data, flag, at AT TIME ZONE 'UTC' AS at, doc::text AS doc FROM {table} WHERE id = $1"), &[Value::Int(1)])
            .await
            .map_err(|e| e.to_string())?
            .ok_or("row missing")?;
        ensure!(row.int("id").map_err(|e| e.to_string())? == 1, "id");
        ensure!(row.text("name").map_err(|e| e.to_string())? == "it's; DROP TABLE x --", "name");
        ensure!(row.bytes("data").map_err(|e| e.to_string())? == vec![0, 159, 255], "bytes");
        ensure!(row.bool("flag").map_err(|e| e.to_string())?, "flag");
        ensure!(row.int("at").map_err(|e| e.to_string())? > 1_600_000_000_000, "timestamp in ms");
        ensure!(row.text("doc").map_err(|e| e.to_string())?.contains('é'), "jsonb as text");
        Ok(())
    }.await));
    cases.push(check(
        "null_parameters_and_columns",
        async {
            sql.execute(
                &format!("INSERT INTO {table} (id, name) VALUES ($1, $2)"),
                &[Value::Int(2), Value::Null],
            )
            .await
            .map_err(|e| e.to_string())?;
            let row = sql
                .query_opt(
                    &format!("SELECT name, data FROM {table} WHERE id = $1"),
                    &[Value::Int(2)],
                )
                .await
                .map_err(|e| e.to_string())?
                .ok_or("row missing")?;
            ensure!(
                row.opt_text("name").map_err(|e| e.to_string())?.is_none(),
                "name should be null"
            );
            ensure!(
                row.value("data").map_err(|e| e.to_string())? == &Value::Null,
                "data should be null"
            );
            Ok(())
        }
        .await,
    ));
    cases.push(check(
        "unique_violation_is_reported_as_such",
        async {
            let r = sql
                .execute(
                    &format!("INSERT INTO {table} (id) VALUES ($1)"),
                    &[Value::Int(1)],
                )
                .await;
            ensure!(
                matches!(r, Err(super::sql::SqlError::Unique(_))),
                "got {r:?}"
            );
            Ok(())
        }
        .await,
    ));
    cases.push(check(
        "rollback_discards_writes",
        async {
            let r: Result<(), super::sql::SqlError> = super::sql::transaction(sql, async || {
                sql.execute(
                    &format!("INSERT INTO {table} (id) VALUES ($1)"),
                    &[Value::Int(3)],
                )
                .await?;
                Err(super::sql::SqlError::Other("abort".into()))
            })
            .await;
            ensure!(r.is_err(), "transaction should fail");
            let rows = sql
                .query(&format!("SELECT id FROM {table} WHERE id = 3"), &[])
                .await
                .map_err(|e| e.to_string())?;
            ensure!(rows.is_empty(), "row 3 survived a rollback");
            Ok(())
        }
        .await,
    ));
    cases.push(check(
        "timestamps_round_trip_in_utc_whatever_the_session_time_zone",
        async {
            // A whole second: Spin's timestamp parameter carries seconds.
            let at = 1_700_000_123_000;
            sql.batch("SET TIME ZONE 'Asia/Kolkata'")
                .await
                .map_err(|e| e.to_string())?;
            let result = async {
                sql.execute(
                    &format!("INSERT INTO {table} (id, at) VALUES ($1, $2)"),
                    &[Value::Int(4), Value::Timestamp(at)],
                )
                .await
                .map_err(|e| e.to_string())?;
                let row = sql
                    .query_opt(
                        &format!(
                            "SELECT at AT TIME ZONE 'UTC' AS at, at = $2 AS same, at < now() AS past
                             FROM {table} WHERE id = $1"
                        ),
                        &[Value::Int(4), Value::Timestamp(at)],
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("row missing")?;
                let got = row.int("at").map_err(|e| e.to_string())?;
                ensure!(got == at, "read {got}, wrote {at}");
                ensure!(
                    row.bool("same").map_err(|e| e.to_string())?,
                    "parameter compares unequal"
                );
                ensure!(
                    row.bool("past").map_err(|e| e.to_string())?,
                    "now() is before it"
                );
                Ok(())
            }
            .await;
            sql.batch("RESET TIME ZONE")
                .await
                .map_err(|e| e.to_string())?;
            result
        }
        .await,
    ));
    cases.push(check(
        "timestamptz_result_columns_are_refused_as_on_spin",
        async {
            let r = sql
                .query(&format!("SELECT at FROM {table} WHERE id = 1"), &[])
                .await;
            ensure!(r.is_err(), "a timestamptz column was read: {r:?}");
            Ok(())
        }
        .await,
    ));
    cases.push(check(
        "empty_result_is_empty",
        async {
            let rows = sql
                .query(&format!("SELECT id FROM {table} WHERE id < 0"), &[])
                .await
                .map_err(|e| e.to_string())?;
            ensure!(rows.is_empty(), "rows {rows:?}");
            Ok(())
        }
        .await,
    ));
    cases.push(check(
        "drop_table",
        sql.batch(&format!("DROP TABLE {table}"))
            .await
            .map_err(|e| e.to_string()),
    ));
    cases
}

/// Runs the crypto suite: PBKDF2-HMAC-SHA256 against the published
/// vectors (RFC 6070's cases with SHA-256), so a platform's fast path
/// hashes exactly like the portable one, and randomness that is neither
/// constant nor zero.
pub async fn crypto_suite(crypto: &dyn Crypto) -> Vec<Case> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut cases = Vec::new();
    for (name, password, salt, iterations, want) in [
        (
            "pbkdf2_one_iteration",
            &b"password"[..],
            &b"salt"[..],
            1,
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
        ),
        (
            "pbkdf2_4096_iterations",
            &b"password"[..],
            &b"salt"[..],
            4096,
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
        ),
        (
            "pbkdf2_long_password_and_salt",
            &b"passwordPASSWORDpassword"[..],
            &b"saltSALTsaltSALTsaltSALTsaltSALTsalt"[..],
            4096,
            "348c89dbcbd32b2f32d814b8116e84cf2b17347ebc1800181c4e2a1fb8dd53e1",
        ),
    ] {
        let got = hex(&crypto.pbkdf2_sha256(password, salt, iterations).await);
        cases.push(check(name, {
            if got == want {
                Ok(())
            } else {
                Err(format!("got {got}"))
            }
        }));
    }
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    crypto.fill_random(&mut a);
    crypto.fill_random(&mut b);
    cases.push(check(
        "random_bytes_differ",
        if a != b && a != [0u8; 32] {
            Ok(())
        } else {
            Err(format!("{} then {}", hex(&a), hex(&b)))
        },
    ));
    cases
}

/// Runs the clock suite: the time is now (not 0, not seconds for
/// milliseconds), it does not go back, and a wait moves it on.
pub async fn clock_suite(clock: &dyn Clock) -> Vec<Case> {
    // 2024-01-01 and 2100-01-01, in milliseconds.
    const SANE: std::ops::Range<i64> = 1_704_067_200_000..4_102_444_800_000;
    let first = clock.now_ms();
    let now_ok = if SANE.contains(&first) {
        Ok(())
    } else {
        Err(format!("now_ms {first}"))
    };
    clock.sleep_ms(20).await;
    let after = clock.now_ms();
    let waited = if after >= first + 20 {
        Ok(())
    } else {
        Err(format!("slept 20 ms: {first} -> {after}"))
    };
    let secs = clock.now_secs();
    let secs_ok = if (secs - after / 1000).abs() <= 1 {
        Ok(())
    } else {
        Err(format!("now_secs {secs} against now_ms {after}"))
    };
    vec![
        check("now_is_milliseconds_since_the_epoch", now_ok),
        check("sleep_moves_time_on", waited),
        check("seconds_agree_with_milliseconds", secs_ok),
    ]
}

/// Runs the outbound HTTP suite against an echo server at `echo` (the
/// model fake's `/_fake/echo` in the end-to-end suite): a request arrives
/// exactly (method, path and query, a header, a body of every byte value)
/// and its answer comes back exactly (status, a header, a binary body);
/// error statuses are answers, not errors; a streamed body yields its first
/// chunk before the server has finished; a refused connection is an error.
pub async fn http_suite(http: &dyn HttpClient, echo: &str) -> Vec<Case> {
    let echo = echo.trim_end_matches('/');
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let request = |method: &str, url: String, body: Vec<u8>| {
        http::Request::builder()
            .method(method)
            .uri(url)
            .header("x-conformance", "yes")
            .body(Bytes::from(body))
            .map_err(|e| e.to_string())
    };

    let round_trip = async {
        let req = request(
            "POST",
            format!("{echo}/request?a=1&b=two"),
            all_bytes.clone(),
        )?;
        let res = http.send(req).await.map_err(|e| e.to_string())?;
        ensure!(res.status() == 201, "status {}", res.status());
        ensure!(
            res.headers().get("x-echo").is_some_and(|v| v == "yes"),
            "no x-echo header in {:?}",
            res.headers()
        );
        let seen: serde_json::Value =
            serde_json::from_slice(res.body()).map_err(|e| format!("echo body: {e}"))?;
        ensure!(seen["method"] == "POST", "method {}", seen["method"]);
        ensure!(
            seen["path"] == "/_fake/echo/request?a=1&b=two",
            "path {}",
            seen["path"]
        );
        ensure!(
            seen["header"] == "yes",
            "x-conformance header {}",
            seen["header"]
        );
        let hex: String = all_bytes.iter().map(|b| format!("{b:02x}")).collect();
        ensure!(
            seen["body_hex"] == hex.as_str(),
            "body {}",
            seen["body_hex"]
        );
        Ok(())
    };
    let statuses = async {
        for status in [404u16, 500] {
            let req = request("GET", format!("{echo}/status/{status}"), Vec::new())?;
            let res = http.send(req).await.map_err(|e| format!("{status}: {e}"))?;
            ensure!(
                res.status() == status,
                "asked {status}, got {}",
                res.status()
            );
            ensure!(res.body().as_ref() == b"status", "body {:?}", res.body());
        }
        Ok(())
    };
    let binary = async {
        let req = request("GET", format!("{echo}/bytes"), Vec::new())?;
        let res = http.send(req).await.map_err(|e| e.to_string())?;
        ensure!(
            res.body().as_ref() == all_bytes.as_slice(),
            "{} bytes, not 0..=255",
            res.body().len()
        );
        Ok(())
    };
    let streamed = async {
        use futures_util::StreamExt;
        let req = request("GET", format!("{echo}/stream"), Vec::new())?;
        let mut res = http.send_streaming(req).await.map_err(|e| e.to_string())?;
        ensure!(res.status == 200, "status {}", res.status);
        // Read until the first line is whole (a network may split it). The
        // server waits 300 ms before each later chunk, so a client that
        // streams has nothing more yet; one that buffered the body hands
        // over every chunk at once.
        let mut all = Vec::new();
        while !all.contains(&b'\n') {
            let chunk = res
                .body
                .next()
                .await
                .ok_or("the body ended before its first line")?
                .map_err(|e| e.to_string())?;
            all.extend_from_slice(&chunk);
        }
        ensure!(
            all == b"chunk 0\n",
            "the first items hold {:?}, not chunk 0 alone",
            String::from_utf8_lossy(&all)
        );
        while let Some(chunk) = res.body.next().await {
            all.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        ensure!(
            all == b"chunk 0\nchunk 1\nchunk 2\n",
            "whole body {:?}",
            String::from_utf8_lossy(&all)
        );
        Ok(())
    };
    let refused = async {
        let req = request("GET", "http://127.0.0.1:1/".into(), Vec::new())?;
        match http.send(req).await {
            Err(_) => Ok(()),
            Ok(res) => Err(format!("answered {}", res.status())),
        }
    };
    vec![
        check("request_and_answer_arrive_exactly", round_trip.await),
        check("error_statuses_are_answers", statuses.await),
        check("binary_bodies_are_exact", binary.await),
        check("streamed_bodies_arrive_as_sent", streamed.await),
        check("a_refused_connection_is_an_error", refused.await),
    ]
}
