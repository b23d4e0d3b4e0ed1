//! Wire encodings of run events to the browser, chosen by `?protocol=`:
//! our `native` SSE (one JSON event per SSE event), AG-UI events
//! (docs.ag-ui.com) and the Vercel AI SDK UI message stream. Every SSE
//! event carries `id:` = the native sequence number, so any of them
//! resumes with `Last-Event-ID`.

use serde_json::{json, Value};

use super::events::{Event, EventBody};
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Native,
    AgUi,
    AiSdk,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Result<Protocol, ApiError> {
        match s.unwrap_or("native") {
            "native" | "" => Ok(Protocol::Native),
            "ag-ui" => Ok(Protocol::AgUi),
            "ai-sdk" => Ok(Protocol::AiSdk),
            _ => Err(ApiError::bad_request(
                "invalid_protocol",
                "protocol must be native, ag-ui or ai-sdk.",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::AgUi => "ag-ui",
            Protocol::AiSdk => "ai-sdk",
        }
    }

    /// Extra response headers of this protocol.
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Protocol::AiSdk => &[("x-vercel-ai-ui-message-stream", "v1")],
            _ => &[],
        }
    }
}

/// Encodes one session's events; keeps the little state AG-UI and the AI
/// SDK need (which run has started).
pub struct Encoder {
    protocol: Protocol,
    session_id: String,
    started: Option<String>,
}

fn sse(id: i64, data: &Value) -> String {
    format!("id: {id}\ndata: {data}\n\n")
}

impl Encoder {
    pub fn new(protocol: Protocol, session_id: &str) -> Self {
        Self {
            protocol,
            session_id: session_id.to_owned(),
            started: None,
        }
    }

    /// The SSE text for `ev` (possibly several SSE events, or none).
    pub fn encode(&mut self, ev: &Event) -> String {
        match self.protocol {
            Protocol::Native => sse(ev.seq, &serde_json::to_value(ev).unwrap_or_default()),
            Protocol::AgUi => self.ag_ui(ev).iter().map(|v| sse(ev.seq, v)).collect(),
            Protocol::AiSdk => self.ai_sdk(ev).iter().map(|v| sse(ev.seq, v)).collect(),
        }
    }

    /// The trailer after the last event of a stream.
    pub fn end(&self) -> String {
        match self.protocol {
            Protocol::AiSdk => "data: [DONE]\n\n".to_owned(),
            _ => String::new(),
        }
    }

    /// Events of a run joined mid-way need its start first (AG-UI and the AI
    /// SDK reject content before the start).
    fn ensure_started(&mut self, ev: &Event, out: &mut Vec<Value>) {
        if self.started.as_deref() == Some(ev.run_id.as_str()) {
            return;
        }
        self.started = Some(ev.run_id.clone());
        if matches!(ev.body, EventBody::RunStarted { .. }) {
            return;
        }
        match self.protocol {
            Protocol::AgUi => out.push(
                json!({"type": "RUN_STARTED", "threadId": self.session_id, "runId": ev.run_id}),
            ),
            Protocol::AiSdk => out.push(json!({"type": "start", "messageId": ev.run_id})),
            Protocol::Native => {}
        }
    }

    fn ag_ui(&mut self, ev: &Event) -> Vec<Value> {
        let mut out = Vec::new();
        if matches!(ev.body, EventBody::Presence { .. }) {
            if let EventBody::Presence { users } = &ev.body {
                out.push(json!({"type": "CUSTOM", "name": "presence", "value": users}));
            }
            return out;
        }
        self.ensure_started(ev, &mut out);
        let (thread, run) = (&self.session_id, &ev.run_id);
        match &ev.body {
            EventBody::RunStarted { .. } => out.push(json!({"type": "RUN_STARTED", "threadId": thread, "runId": run})),
            EventBody::StepStarted { step } => out.push(json!({"type": "STEP_STARTED", "stepName": format!("step-{step}")})),
            EventBody::StepFinished { step } => out.push(json!({"type": "STEP_FINISHED", "stepName": format!("step-{step}")})),
            EventBody::TextStart { block_id } => {
                out.push(json!({"type": "TEXT_MESSAGE_START", "messageId": block_id, "role": "assistant"}));
            }
            EventBody::TextDelta { block_id, delta } if !delta.is_empty() => {
                out.push(json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": block_id, "delta": delta}));
            }
            EventBody::TextDelta { .. } => {}
            EventBody::TextEnd { block_id } => out.push(json!({"type": "TEXT_MESSAGE_END", "messageId": block_id})),
            EventBody::ToolCallStart { tool_call_id, name } => {
                out.push(json!({"type": "TOOL_CALL_START", "toolCallId": tool_call_id, "toolCallName": name}));
            }
            EventBody::ToolCallDelta { tool_call_id, delta } if !delta.is_empty() => {
                out.push(json!({"type": "TOOL_CALL_ARGS", "toolCallId": tool_call_id, "delta": delta}));
            }
            EventBody::ToolCallDelta { .. } => {}
            EventBody::ToolCallEnd { tool_call_id, .. } => out.push(json!({"type": "TOOL_CALL_END", "toolCallId": tool_call_id})),
            EventBody::ToolResult { tool_call_id, output, .. } => out.push(json!({
                "type": "TOOL_CALL_RESULT", "messageId": format!("{tool_call_id}-result"), "toolCallId": tool_call_id,
                "content": output, "role": "tool"
            })),
            EventBody::RunFinished { status, .. } if status == "complete" || status == "cancelled" => {
                out.push(json!({"type": "RUN_FINISHED", "threadId": thread, "runId": run}));
            }
            EventBody::RunFinished { status, stop_reason, .. } => {
                out.push(json!({"type": "RUN_ERROR", "message": format!("The run ended {status}: {stop_reason}"), "code": status}));
            }
            EventBody::RunError { code, message } => out.push(json!({"type": "CUSTOM", "name": "run_error", "value": {"code": code, "message": message}})),
            EventBody::Presence { .. } => {}
        }
        out
    }

    fn ai_sdk(&mut self, ev: &Event) -> Vec<Value> {
        let mut out = Vec::new();
        if matches!(ev.body, EventBody::Presence { .. }) {
            if let EventBody::Presence { users } = &ev.body {
                out.push(json!({"type": "data-presence", "data": users, "transient": true}));
            }
            return out;
        }
        self.ensure_started(ev, &mut out);
        match &ev.body {
            EventBody::RunStarted { .. } => {
                out.push(json!({"type": "start", "messageId": ev.run_id}))
            }
            EventBody::StepStarted { .. } => out.push(json!({"type": "start-step"})),
            EventBody::StepFinished { .. } => out.push(json!({"type": "finish-step"})),
            EventBody::TextStart { block_id } => {
                out.push(json!({"type": "text-start", "id": block_id}))
            }
            EventBody::TextDelta { block_id, delta } => {
                out.push(json!({"type": "text-delta", "id": block_id, "delta": delta}))
            }
            EventBody::TextEnd { block_id } => {
                out.push(json!({"type": "text-end", "id": block_id}))
            }
            EventBody::ToolCallStart { tool_call_id, name } => {
                out.push(json!({"type": "tool-input-start", "toolCallId": tool_call_id, "toolName": name}));
            }
            EventBody::ToolCallDelta {
                tool_call_id,
                delta,
            } => {
                out.push(json!({"type": "tool-input-delta", "toolCallId": tool_call_id, "inputTextDelta": delta}));
            }
            EventBody::ToolCallEnd {
                tool_call_id,
                name,
                input,
            } => {
                out.push(json!({"type": "tool-input-available", "toolCallId": tool_call_id, "toolName": name, "input": input}));
            }
            EventBody::ToolResult {
                tool_call_id,
                output,
                is_error: false,
            } => {
                out.push(json!({"type": "tool-output-available", "toolCallId": tool_call_id, "output": output}));
            }
            EventBody::ToolResult {
                tool_call_id,
                output,
                is_error: true,
            } => {
                out.push(json!({"type": "tool-output-error", "toolCallId": tool_call_id, "errorText": output}));
            }
            EventBody::RunFinished { status, .. }
                if status == "complete" || status == "cancelled" =>
            {
                out.push(json!({"type": "finish"}))
            }
            EventBody::RunFinished {
                status,
                stop_reason,
                ..
            } => {
                out.push(json!({"type": "error", "errorText": format!("The run ended {status}: {stop_reason}")}));
                out.push(json!({"type": "finish"}));
            }
            EventBody::RunError { message, .. } => {
                out.push(json!({"type": "data-run-error", "data": {"message": message}}))
            }
            EventBody::Presence { .. } => {}
        }
        out
    }
}
