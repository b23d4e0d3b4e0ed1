//! `POST /webhooks/daytona`: Svix-signed deliveries. The signature is
//! HMAC-SHA256 over `{svix-id}.{svix-timestamp}.{raw body}` keyed with the
//! bytes of the secret (base64 after `whsec_`); `svix-signature` lists
//! `v1,<base64>` entries separated by spaces. Timestamps more than five
//! minutes off are refused; each `svix-id` is processed once (one whose
//! processing failed half-way runs again when Daytona retries it); unknown
//! events and fields are accepted and ignored.

use base64::Engine;
use hmac::{Hmac, Mac};
use http::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::lifecycle::Lifecycle;
use super::provider::State;
use super::store;
use crate::error::{ApiError, ApiResult};
use crate::http::request::Request;
use crate::http::response::{json as json_response, Response};
use crate::routes::Ctx;

/// How far a delivery's timestamp may be from our clock.
pub const TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no webhook secret is configured")]
    NotConfigured,
    #[error("the webhook secret is not whsec_<base64>")]
    BadSecret,
    #[error("svix-id, svix-timestamp or svix-signature is missing")]
    Unsigned,
    #[error("svix-timestamp is not a number")]
    BadTimestamp,
    #[error("svix-timestamp is more than five minutes off")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// The key bytes of a `whsec_<base64>` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, Refusal> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or(Refusal::BadSecret)
}

/// The `v1` signature of a delivery, base64.
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks one delivery against `secret` at `now_secs`.
pub fn verify(
    secret: Option<&str>,
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Refusal> {
    let key = secret_key(secret.ok_or(Refusal::NotConfigured)?)?;
    let (Some(id), Some(ts), Some(sigs)) = (
        id.filter(|s| !s.is_empty()),
        timestamp.filter(|s| !s.is_empty()),
        signatures.filter(|s| !s.trim().is_empty()),
    ) else {
        return Err(Refusal::Unsigned);
    };
    let at: i64 = ts.trim().parse().map_err(|_| Refusal::BadTimestamp)?;
    if (now_secs - at).abs() > TOLERANCE_SECS {
        return Err(Refusal::Stale);
    }
    let expected = sign(&key, id, ts, body);
    let matched = sigs
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .any(|(_, sig)| bool::from(sig.as_bytes().ct_eq(expected.as_bytes())));
    if matched {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

fn header<'r>(req: &'r Request, names: &[&str]) -> Option<&'r str> {
    names
        .iter()
        .find_map(|n| req.headers().get(*n))
        .and_then(|v| v.to_str().ok())
}

fn ms_of(v: Option<&Value>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v?.as_str()?)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// What a verified event asks for: the remote sandbox, its new state and when.
pub fn parse_event(body: &Value) -> Option<(String, Option<State>, Option<i64>)> {
    let event = body.get("event")?.as_str()?;
    let (state_field, time_field) = match event {
        "sandbox.created" => ("state", "createdAt"),
        "sandbox.state.updated" => ("newState", "updatedAt"),
        _ => return None,
    };
    let id = body.get("id")?.as_str()?.to_owned();
    let state = body
        .get(state_field)
        .and_then(Value::as_str)
        .and_then(State::from_daytona);
    let at = ms_of(body.get(time_field)).or_else(|| ms_of(body.get("timestamp")));
    Some((id, state, at))
}

pub async fn handle(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let config = ctx.ports.config()?;
    let secret = config
        .daytona
        .as_ref()
        .and_then(|d| d.webhook_secret.as_deref());
    let id = header(req, &["svix-id", "webhook-id"]);
    let verdict = verify(
        secret,
        id,
        header(req, &["svix-timestamp", "webhook-timestamp"]),
        header(req, &["svix-signature", "webhook-signature"]),
        req.body(),
        ctx.ports.clock.now_secs(),
    );
    if let Err(refusal) = verdict {
        crate::log::event(
            "warn",
            "daytona_webhook_refused",
            json!({ "reason": refusal.to_string() }),
        );
        if matches!(refusal, Refusal::BadSecret) {
            crate::log::error(
                "daytona_webhook_secret",
                "DAYTONA_WEBHOOK_SECRET is not whsec_<base64>",
            );
        }
        return Err(ApiError::unauthorized(
            "invalid_signature",
            "The webhook signature is missing, invalid or too old.",
        ));
    }
    let id = id.unwrap_or_default();
    let body: Value = serde_json::from_slice(req.body())
        .map_err(|_| ApiError::bad_request("invalid_body", "The webhook body is not JSON."))?;
    let event = body
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(100)
        .collect::<String>();
    let sql = ctx.ports.sql.as_ref();
    let fresh = sql
        .execute(
            "INSERT INTO webhook_deliveries (source, delivery_id, event) VALUES ('daytona', $1, $2)
             ON CONFLICT (source, delivery_id) DO UPDATE SET received_at = now()
             WHERE webhook_deliveries.processed_at IS NULL",
            &[id.into(), event.as_str().into()],
        )
        .await?
        == 1;
    if !fresh {
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "status": "duplicate" }),
        ));
    }
    let result = apply(ctx, &body).await?;
    sql.execute(
        "UPDATE webhook_deliveries SET processed_at = $2, result = $3 WHERE source = 'daytona' AND delivery_id = $1",
        &[
            id.into(),
            crate::ports::sql::Value::Timestamp(ctx.ports.clock.now_ms()),
            result.into(),
        ],
    )
    .await?;
    Ok(json_response(StatusCode::OK, &json!({ "status": result })))
}

/// Applies a verified, first-time event; returns what was done.
async fn apply(ctx: &Ctx<'_>, body: &Value) -> ApiResult<&'static str> {
    let Some((external_id, state, at)) = parse_event(body) else {
        return Ok("ignored");
    };
    let Some(state) = state else {
        return Ok("ignored");
    };
    let Some(lc) = Lifecycle::new(ctx.ports)? else {
        return Ok("ignored");
    };
    let sql = ctx.ports.sql.as_ref();
    let Some(row) = store::by_external(sql, lc.provider.name(), &external_id).await? else {
        return Ok("unknown_sandbox");
    };
    let at = at.unwrap_or_else(|| ctx.ports.clock.now_ms());
    if !store::event_is_newer(sql, &row.project_id, at).await? {
        return Ok("stale");
    }
    if state != row.state {
        // Daytona's events carry no reason for an error; its sandbox does.
        let mut error = body
            .get("errorReason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if state == State::Error && error.is_none() {
            error = lc
                .provider
                .get(&external_id)
                .await
                .ok()
                .and_then(|r| r.error);
        }
        let error = error.filter(|_| state == State::Error);
        if !lc
            .apply_event(&row.project_id, state, error.as_deref(), at)
            .await?
        {
            return Ok("stale");
        }
    }
    Ok("applied")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_780_000_000;

    fn signed(id: &str, ts: i64, body: &[u8]) -> String {
        let key = secret_key(SECRET).expect("key");
        format!("v1,{}", sign(&key, id, &ts.to_string(), body))
    }

    fn check(
        id: Option<&str>,
        ts: Option<&str>,
        sig: Option<&str>,
        body: &[u8],
    ) -> Result<(), Refusal> {
        verify(Some(SECRET), id, ts, sig, body, NOW)
    }

    #[test]
    fn a_good_signature_passes() {
        let body = br#"{"event":"sandbox.created"}"#;
        let sig = signed("msg_1", NOW, body);
        assert_eq!(
            check(Some("msg_1"), Some(&NOW.to_string()), Some(&sig), body),
            Ok(())
        );
    }

    #[test]
    fn the_svix_reference_vector_verifies() {
        // From Svix's documentation of manual verification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let key = secret_key(secret).expect("key");
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body),
            "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn any_matching_entry_of_several_passes() {
        let body = b"{}";
        let sig = format!("v1,bm9wZQ== v2,abc {} v1,AAAA", signed("m", NOW, body));
        assert_eq!(
            check(Some("m"), Some(&NOW.to_string()), Some(&sig), body),
            Ok(())
        );
    }

    #[test]
    fn forged_bodies_ids_and_signatures_fail() {
        let body = br#"{"event":"sandbox.created"}"#;
        let ts = NOW.to_string();
        let sig = signed("msg_1", NOW, body);
        assert_eq!(
            check(Some("msg_1"), Some(&ts), Some(&sig), b"{\"event\":\"x\"}"),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(Some("msg_2"), Some(&ts), Some(&sig), body),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(
                Some("msg_1"),
                Some(&(NOW + 1).to_string()),
                Some(&sig),
                body
            ),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(Some("msg_1"), Some(&ts), Some("v1,AAAA"), body),
            Err(Refusal::Mismatch)
        );
        // The right MAC under another version tag, or without one.
        let bare = sig.trim_start_matches("v1,");
        assert_eq!(
            check(Some("msg_1"), Some(&ts), Some(&format!("v2,{bare}")), body),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(Some("msg_1"), Some(&ts), Some(bare), body),
            Err(Refusal::Mismatch)
        );
        // Signed with another secret.
        let other = sign(b"another key", "msg_1", &ts, body);
        assert_eq!(
            check(Some("msg_1"), Some(&ts), Some(&format!("v1,{other}")), body),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_fail() {
        let body = b"{}";
        for ts in [NOW - TOLERANCE_SECS - 1, NOW + TOLERANCE_SECS + 1, 0] {
            let sig = signed("m", ts, body);
            assert_eq!(
                check(Some("m"), Some(&ts.to_string()), Some(&sig), body),
                Err(Refusal::Stale),
                "{ts}"
            );
        }
        let edge = NOW - TOLERANCE_SECS;
        let sig = signed("m", edge, body);
        assert_eq!(
            check(Some("m"), Some(&edge.to_string()), Some(&sig), body),
            Ok(())
        );
    }

    #[test]
    fn unsigned_or_malformed_headers_fail() {
        let body = b"{}";
        let ts = NOW.to_string();
        let sig = signed("m", NOW, body);
        assert_eq!(
            check(None, Some(&ts), Some(&sig), body),
            Err(Refusal::Unsigned)
        );
        assert_eq!(
            check(Some("m"), None, Some(&sig), body),
            Err(Refusal::Unsigned)
        );
        assert_eq!(
            check(Some("m"), Some(&ts), None, body),
            Err(Refusal::Unsigned)
        );
        assert_eq!(
            check(Some(""), Some(&ts), Some(&sig), body),
            Err(Refusal::Unsigned)
        );
        assert_eq!(
            check(Some("m"), Some(&ts), Some("  "), body),
            Err(Refusal::Unsigned)
        );
        assert_eq!(
            check(Some("m"), Some("soon"), Some(&sig), body),
            Err(Refusal::BadTimestamp)
        );
        assert_eq!(
            check(Some("m"), Some("1.5e9"), Some(&sig), body),
            Err(Refusal::BadTimestamp)
        );
    }

    #[test]
    fn a_missing_or_malformed_secret_refuses_everything() {
        let body = b"{}";
        let ts = NOW.to_string();
        let sig = signed("m", NOW, body);
        assert_eq!(
            verify(None, Some("m"), Some(&ts), Some(&sig), body, NOW),
            Err(Refusal::NotConfigured)
        );
        assert_eq!(
            verify(
                Some("whsec_!!!"),
                Some("m"),
                Some(&ts),
                Some(&sig),
                body,
                NOW
            ),
            Err(Refusal::BadSecret)
        );
        assert_eq!(
            verify(Some("whsec_"), Some("m"), Some(&ts), Some(&sig), body, NOW),
            Err(Refusal::BadSecret)
        );
    }

    #[test]
    fn events_name_their_sandbox_state_and_time() {
        let created = json!({"event": "sandbox.created", "timestamp": "2026-05-01T10:00:01.000Z", "id": "sb1",
            "organizationId": "o", "state": "creating", "sandboxClass": "container", "createdAt": "2026-05-01T10:00:00.000Z"});
        assert_eq!(
            parse_event(&created),
            Some(("sb1".into(), Some(State::Creating), Some(1_777_629_600_000)))
        );
        let updated = json!({"event": "sandbox.state.updated", "timestamp": "2026-05-01T10:00:00.000Z", "id": "sb1",
            "oldState": "started", "newState": "stopped", "updatedAt": "2026-05-01T10:00:00.000Z", "extra": [1]});
        assert_eq!(
            parse_event(&updated).map(|e| e.1),
            Some(Some(State::Stopped))
        );
        let odd = json!({"event": "sandbox.state.updated", "id": "sb1", "newState": "levitating"});
        assert_eq!(parse_event(&odd), Some(("sb1".into(), None, None)));
        assert_eq!(
            parse_event(&json!({"event": "snapshot.created", "id": "s"})),
            None
        );
        assert_eq!(parse_event(&json!({"id": "s"})), None);
    }
}
