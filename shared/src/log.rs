//! Structured JSON log lines on stderr (Workers and Spin both collect it).
//! Never pass secrets, tokens or request bodies here.

pub fn event(level: &str, name: &str, fields: serde_json::Value) {
    let line = serde_json::json!({ "level": level, "event": name, "fields": fields });
    eprintln!("{line}");
}

pub fn error(name: &str, message: &str) {
    event("error", name, serde_json::json!({ "message": message }));
}
