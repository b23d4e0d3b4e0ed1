//! The OpenAPI 3.1 document: its paths generated from the route table, so
//! that every route that exists is described; its shared schemas (chat's
//! native events among them) from `openapi_schemas.json`.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::http::response::{ok, Response};
use crate::routes::{Route, ROUTES};

/// The shared schemas (`components.schemas`). They are data, not code: as
/// `json!` literals they cost the Worker's wasm about 10 KB (gzip).
fn all_schemas() -> Value {
    serde_json::from_str(include_str!("openapi_schemas.json")).unwrap_or_default()
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// What a route takes and answers, besides its path parameters and the
/// problem answer every route has.
struct Shape {
    body: Option<Value>,
    /// Query and header parameters.
    params: Vec<Value>,
    /// Status and response object of each success.
    responses: Vec<(u16, Value)>,
}

/// A response object: `description`, with a JSON body of `schema` (`None`: no body).
fn json_response(description: &str, schema: Option<Value>) -> Value {
    match schema {
        Some(s) => {
            json!({"description": description, "content": {"application/json": {"schema": s}}})
        }
        None => json!({ "description": description }),
    }
}

impl Shape {
    /// One success: `status` with the response object `response`.
    fn with(status: u16, response: Value) -> Shape {
        Shape {
            body: None,
            params: Vec::new(),
            responses: vec![(status, response)],
        }
    }

    /// A JSON answer (`None`: no body) with `status`.
    fn answer(status: u16, schema: Option<Value>) -> Shape {
        Shape::with(status, json_response("Success", schema))
    }

    fn body(mut self, body: Value) -> Shape {
        self.body = Some(body);
        self
    }

    fn param(mut self, place: &str, name: &str, schema: Value, description: &str) -> Shape {
        self.params
            .push(json!({"name": name, "in": place, "schema": schema, "description": description}));
        self
    }

    /// `?limit=&cursor=`.
    fn paged(self) -> Shape {
        self.param(
            "query",
            "limit",
            json!({"type": "integer", "minimum": 1}),
            "Items per page",
        )
        .param(
            "query",
            "cursor",
            json!({"type": "string"}),
            "`next_cursor` of the page before",
        )
    }

    fn also(mut self, status: u16, response: Value) -> Shape {
        self.responses.push((status, response));
        self
    }
}

fn json_body(name: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema_ref(name)}}})
}

/// A page of `items`.
fn page_of(items: &str) -> Option<Value> {
    Some(
        json!({"allOf": [schema_ref("Page"), {"properties": {"items": {"items": schema_ref(items)}}}]}),
    )
}

/// `?protocol=`, the encoding of a run's event stream.
fn protocol(shape: Shape) -> Shape {
    shape.param(
        "query",
        "protocol",
        json!({"enum": ["native", "ag-ui", "ai-sdk"], "default": "native"}),
        "native: `NativeEvent`s. ag-ui: AG-UI events (RUN_STARTED, TEXT_MESSAGE_CONTENT, TOOL_CALL_ARGS, ...). ai-sdk: the Vercel AI SDK UI message stream (header x-vercel-ai-ui-message-stream: v1, ends with `data: [DONE]`).",
    )
}

/// A run's events as Server-Sent Events.
fn event_stream(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"text/event-stream": {
            "schema": {"type": "string"},
            // OpenAPI 3.2's itemSchema: what each SSE event carries.
            "x-itemSchema": {
                "type": "object", "required": ["id", "data"],
                "properties": {
                    "id": {"type": "string", "description": "The event's sequence number (`seq`): resume after it with Last-Event-ID or ?after="},
                    "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": schema_ref("NativeEvent")}
                }
            }
        }}
    })
}

fn shapes(route: Route) -> Shape {
    match route {
        Route::Signup => Shape::answer(201, Some(schema_ref("Tokens"))).body(json_body("Credentials")),
        Route::Login => Shape::answer(200, Some(schema_ref("Tokens"))).body(json_body("Credentials")),
        Route::Refresh => Shape::answer(200, Some(schema_ref("Tokens"))).body(json_body("RefreshToken")),
        Route::Logout => Shape::answer(204, None).body(json_body("RefreshToken")),
        Route::OidcInfo => Shape::answer(200, Some(schema_ref("OidcInfo"))),
        Route::OidcCallback => Shape::answer(200, Some(schema_ref("Tokens"))).body(json_body("OidcCallback")),
        Route::Me => Shape::answer(200, Some(schema_ref("User"))),
        Route::DeleteMe | Route::DeleteProject | Route::DeleteFile => Shape::answer(204, None),
        Route::CreateProject => Shape::answer(201, Some(schema_ref("Project"))).body(json_body("ProjectCreate")),
        Route::UpdateProject => Shape::answer(200, Some(schema_ref("Project"))).body(json_body("ProjectUpdate")),
        Route::GetProject => Shape::answer(200, Some(schema_ref("Project"))),
        Route::ListProjects => Shape::answer(200, page_of("Project")).paged(),
        Route::ListFiles => Shape::answer(200, page_of("File")).paged(),
        Route::Templates => Shape::answer(200, Some(schema_ref("Page"))),
        Route::PutFile => Shape::answer(201, Some(schema_ref("File")))
            .body(json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}))
            .also(409, json!({"description": "The path is a folder of another file, or inside a file (path_conflict); or the same content was collected at the same moment (concurrent_write, try again). Nothing was written", "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})),
        Route::GetFile => Shape::with(
            200,
            json!({"description": "The file's bytes", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}),
        ),
        Route::CreateSession => Shape::answer(201, Some(schema_ref("Session"))).body(
            json!({"required": false, "content": {"application/json": {"schema": schema_ref("SessionCreate")}}}),
        ),
        Route::ListSessions => Shape::answer(200, page_of("Session")).paged(),
        Route::ListMessages => Shape::answer(200, page_of("Message")).paged(),
        Route::SendMessage => {
            let mut shape = protocol(Shape::answer(202, Some(schema_ref("RunAccepted"))).body(json_body("SendMessage")))
                .param("header", "Accept", json!({"type": "string"}), "text/event-stream: answer with the run's event stream (200) instead of 202")
                .also(200, event_stream("With Accept: text/event-stream, the run's events until its run_finished"));
            for (_, response) in &mut shape.responses {
                response["headers"] = json!({"Server-Timing": {
                    "description": "How long the start took, in ms: `admit` (authentication, rate limit, quota, the run stored) and, with live rooms, `room` (until the session's room answered the start; it calls the model once it has stored the run, before that answer); `early` (no duration) when the model call was started beside the checks (a session's first message, in a room holding its owner's lease)",
                    "schema": {"type": "string", "pattern": "^admit;dur=[0-9]+(, room;dur=[0-9]+)?(, early;dur=0)?$"}
                }});
            }
            // One run at a time per session.
            shape.also(409, json!({"description": "A run is in progress in this session (run_in_progress): wait for its run_finished or cancel it", "content": {"application/problem+json": {"schema": schema_ref("Problem")}}}))
        }
        Route::Events => protocol(Shape::with(200, event_stream("The session's events after the resume point, then the live ones until the active run's run_finished (at once when no run is active)")))
        .param("query", "after", json!({"type": "integer", "minimum": 0}), "Resume after this sequence number (default 0: the session's buffered events)")
        .param("header", "Last-Event-ID", json!({"type": "string", "pattern": "^[0-9]+$"}), "As `after` (an EventSource sends it when it reconnects); wins over `after`; 400 invalid_resume_point when either is not a sequence number"),
        Route::WsTicket => Shape::answer(201, Some(schema_ref("WsTicket"))),
        Route::WebSocket => Shape::with(101, json_response("WebSocket. Server frames: `WsServerFrame`; client frames: `WsClientMessage`.", None))
        .param("query", "ticket", json!({"type": "string"}), "From POST /v1/sessions/{id}/ws-ticket: single use, 60 s")
        .param("query", "after", json!({"type": "integer", "minimum": 0}), "Send the events after this sequence number first (default: all buffered)"),
        Route::Cancel => Shape::answer(202, Some(schema_ref("CancelAnswer"))),
        Route::PutKey => Shape::answer(200, Some(schema_ref("ProviderKey"))).body(json_body("PutKey")),
        Route::ListKeys => Shape::answer(200, page_of("ProviderKey")),
        Route::DeleteKey | Route::GithubDisconnect => Shape::answer(204, None),
        Route::Usage => Shape::answer(200, Some(schema_ref("UsageReport"))),
        Route::Audit => Shape::answer(200, page_of("AuditEvent")).paged(),
        Route::Health => Shape::answer(200, Some(schema_ref("Health"))),
        Route::Ready => Shape::answer(200, Some(schema_ref("Ready"))),
        Route::GithubLinkState => Shape::answer(200, Some(schema_ref("GithubLinkState"))),
        Route::GithubLinkInstallation => Shape::answer(201, Some(schema_ref("GithubInstallationsLinked")))
            .body(json_body("LinkInstallation"))
            .also(403, json!({"description": "The installation is not on the GitHub account behind the code or on an organisation it administers (github_installation_mismatch); nothing linked", "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})),
        Route::GithubInstallations => Shape::answer(
            200,
            Some(json!({"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": schema_ref("GithubInstallation")}}})),
        ),
        Route::GithubConnect => Shape::answer(201, Some(schema_ref("GithubLink"))),
        Route::GithubGet => Shape::answer(200, Some(schema_ref("GithubLink"))),
        Route::SandboxGet => Shape::answer(200, Some(schema_ref("Sandbox"))),
        Route::SandboxCreate => Shape::answer(200, Some(schema_ref("Sandbox"))).also(
            202,
            json_response("Starting: ask again after Retry-After", Some(schema_ref("Sandbox"))),
        ),
        Route::SandboxDelete => Shape::answer(202, Some(schema_ref("Sandbox"))).also(
            204,
            json_response("No sandbox provider is configured: nothing to stop", None),
        ),
        Route::GithubWebhook => Shape::answer(202, Some(schema_ref("WebhookAnswer"))).also(
            200,
            json_response("A delivery seen before: nothing done", Some(schema_ref("WebhookAnswer"))),
        ),
        Route::DaytonaWebhook => Shape::answer(200, Some(schema_ref("WebhookAnswer"))),
        Route::SandboxIdleJob => Shape::answer(200, Some(schema_ref("IdleJobReport"))),
        Route::GithubCatchupJob => Shape::answer(200, Some(schema_ref("CatchupJobReport"))),
        Route::GithubPush => Shape::answer(200, Some(schema_ref("SyncReport"))).body(
            json!({"required": false, "content": {"application/json": {"schema": schema_ref("PushRequest")}}}),
        ),
        Route::SandboxExec => Shape::with(200, json!({
            "description": "The command's outcome; with Accept: text/event-stream, its output as it comes (`ExecEvent`s)",
            "content": {
                "application/json": {"schema": schema_ref("ExecOutcome")},
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "x-itemSchema": {
                        "type": "object", "required": ["event", "data"],
                        "properties": {
                            "event": {"enum": ["start", "output", "exit", "error"]},
                            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": schema_ref("ExecEvent")}
                        }
                    }
                }
            }
        }))
        .body(json_body("ExecRequest"))
        .param("header", "Accept", json!({"type": "string"}), "text/event-stream: stream the command's output instead of one JSON answer"),
        Route::AdminUsers => Shape::answer(200, page_of("AdminUserRow")).paged(),
        Route::AdminUpdateUser => Shape::answer(200, Some(schema_ref("AdminUser"))).body(json_body("AdminUserUpdate")),
        Route::ExportMe => Shape::answer(200, Some(schema_ref("AccountExport"))),
        Route::Preview => Shape::with(
            200,
            json!({"description": "The file's bytes (index.html for a directory), with its content type", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}),
        ),
        Route::OpenApi | Route::Conformance => Shape::answer(200, Some(json!({"type": "object"}))),
    }
}

fn build() -> Value {
    let mut paths = Map::new();
    for def in ROUTES {
        let path = def.path.replace("{*", "{");
        let mut params = Vec::new();
        for seg in def.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({"name": name.trim_start_matches('*'), "in": "path", "required": true, "schema": {"type": "string"}}));
            }
        }
        let shape = shapes(def.route);
        params.extend(shape.params);
        let mut responses = Map::new();
        for (status, response) in shape.responses {
            responses.insert(status.to_string(), response);
        }
        responses.insert(
            "default".into(),
            json!({"description": "Problem", "content": {"application/problem+json": {"schema": schema_ref("Problem")}}}),
        );
        let mut op = json!({
            "operationId": format!("{:?}", def.route),
            "summary": def.summary,
            "tags": [def.tag],
            "parameters": params,
            "responses": responses,
        });
        if let Some(b) = shape.body {
            op["requestBody"] = b;
        }
        if def.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[def.method.as_str().to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "EverJust API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Backend of an AI app builder. Errors are application/problem+json with a stable `code`. Lists take ?limit=&cursor= and answer {items, next_cursor}."
        },
        "paths": paths,
        "components": {
            "schemas": all_schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
}

pub fn document() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    ok(DOC.get_or_init(build))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::events::{Event, EventBody};
    use crate::llm::Usage;

    /// One event of each kind. The match makes a new kind a compile error
    /// here until it has a sample (and so a check against the document).
    fn samples() -> Vec<EventBody> {
        let all = vec![
            EventBody::RunStarted {
                provider: "anthropic".into(),
                model: "m".into(),
                message_id: "msg_a".into(),
                user_message_id: "msg_u".into(),
            },
            EventBody::StepStarted { step: 1 },
            EventBody::TextStart {
                block_id: "b".into(),
            },
            EventBody::TextDelta {
                block_id: "b".into(),
                delta: "hi".into(),
            },
            EventBody::TextEnd {
                block_id: "b".into(),
            },
            EventBody::ToolCallStart {
                tool_call_id: "t".into(),
                name: "write_file".into(),
            },
            EventBody::ToolCallDelta {
                tool_call_id: "t".into(),
                delta: "{\"pa".into(),
            },
            EventBody::ToolCallEnd {
                tool_call_id: "t".into(),
                name: "write_file".into(),
                input: json!({"path": "a"}),
            },
            EventBody::ToolResult {
                tool_call_id: "t".into(),
                output: "ok".into(),
                is_error: false,
            },
            EventBody::StepFinished { step: 1 },
            EventBody::RunFinished {
                status: "complete".into(),
                stop_reason: "end_turn".into(),
                usage: Usage::default(),
                cost_micros: 0,
            },
            EventBody::RunError {
                code: "upstream".into(),
                message: "m".into(),
            },
        ];
        for body in &all {
            match body {
                EventBody::RunStarted { .. }
                | EventBody::StepStarted { .. }
                | EventBody::TextStart { .. }
                | EventBody::TextDelta { .. }
                | EventBody::TextEnd { .. }
                | EventBody::ToolCallStart { .. }
                | EventBody::ToolCallDelta { .. }
                | EventBody::ToolCallEnd { .. }
                | EventBody::ToolResult { .. }
                | EventBody::StepFinished { .. }
                | EventBody::RunFinished { .. }
                | EventBody::RunError { .. } => {}
                // A room's frame, documented as `Presence`.
                EventBody::Presence { .. } => unreachable!(),
            }
        }
        all
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn every_native_event_is_documented_with_exactly_its_fields() {
        let schemas = all_schemas();
        let documented = schemas["NativeEvent"]["oneOf"]
            .as_array()
            .expect("NativeEvent is a oneOf");
        let samples = samples();
        assert_eq!(documented.len(), samples.len(), "one schema per event kind");
        for body in samples {
            let wire = serde_json::to_value(Event {
                seq: 1,
                run_id: "run_1".into(),
                body,
            })
            .expect("events serialize");
            let kind = wire["type"].as_str().expect("events have a type");
            let schema = documented
                .iter()
                .find(|s| s["properties"]["type"]["const"] == kind)
                .unwrap_or_else(|| panic!("{kind} is not documented"));
            assert_eq!(keys(&wire), keys(&schema["properties"]), "{kind}'s fields");
            let mut required: Vec<String> =
                serde_json::from_value(schema["required"].clone()).expect("a list of names");
            required.sort();
            assert_eq!(keys(&wire), required, "{kind} always has all its fields");
        }
    }

    #[test]
    fn every_reference_names_a_schema() {
        let doc = build();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"]
            .as_object()
            .expect("the schemas parse");
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').expect("a closing quote")];
            assert!(
                schemas.contains_key(name),
                "{name} is referenced but not defined"
            );
        }
    }
}
