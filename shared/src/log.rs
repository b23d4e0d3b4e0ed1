//! Structured JSON log lines. Where they go is the platform's choice
//! (`set_sink`; stderr by default, `console.log` on Workers where stderr
//! goes nowhere). Never pass secrets, tokens or request bodies here.

use std::sync::OnceLock;

static SINK: OnceLock<fn(&str)> = OnceLock::new();

/// Sets where log lines go (once, at start-up).
pub fn set_sink(sink: fn(&str)) {
    let _ = SINK.set(sink);
}

pub fn event(level: &str, name: &str, fields: serde_json::Value) {
    let line = serde_json::json!({ "level": level, "event": name, "fields": fields }).to_string();
    match SINK.get() {
        Some(sink) => sink(&line),
        None => eprintln!("{line}"),
    }
}

pub fn error(name: &str, message: &str) {
    event("error", name, serde_json::json!({ "message": message }));
}

/// The access-log line of one request (event `request`): method, the
/// matched route's template (never the raw path, so ids and file names stay
/// out; `null` when no route matched), status, milliseconds to the response
/// head (a streamed body goes on after it), request id and the caller when
/// known. Never a token, query string or body.
pub fn access(
    method: &str,
    route: Option<&str>,
    status: u16,
    duration_ms: i64,
    request_id: &str,
    user_id: Option<&str>,
) {
    event(
        "info",
        "request",
        serde_json::json!({
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": duration_ms,
            "request_id": request_id,
            "user_id": user_id,
        }),
    );
}
