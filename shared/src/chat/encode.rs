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
/// An SSE comment sent while a stream has nothing to say, so that proxies
/// (Cloudflare closes a response idle for 100 s) keep it open through a
/// long tool call. Every SSE parser ignores it.
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";
/// How long a stream may be silent before a [`KEEP_ALIVE`].
pub const KEEP_ALIVE_MS: u64 = 15_000;

pub struct Encoder {
    protocol: Protocol,
    session_id: String,
    started: Option<String>,
    /// What is open in the current run (step, text blocks, tool calls), so a
    /// reader joining mid-run gets the starts it missed.
    open: Open,
    /// Open items learnt from [`Encoder::prime`] still to be announced.
    reopen: bool,
}

#[derive(Default)]
struct Open {
    step: Option<u32>,
    texts: Vec<String>,
    tools: Vec<(String, String)>,
}

impl Open {
    fn track(&mut self, body: &EventBody) {
        match body {
            EventBody::RunStarted { .. } | EventBody::RunFinished { .. } => *self = Open::default(),
            EventBody::StepStarted { step } => self.step = Some(*step),
            // A step's end closes what it left open (`Encoder::close_open`).
            EventBody::StepFinished { .. } => *self = Open::default(),
            EventBody::TextStart { block_id } => self.texts.push(block_id.clone()),
            EventBody::TextEnd { block_id } => self.texts.retain(|b| b != block_id),
            EventBody::ToolCallStart { tool_call_id, name } => {
                self.tools.push((tool_call_id.clone(), name.clone()))
            }
            EventBody::ToolCallEnd { tool_call_id, .. } => {
                self.tools.retain(|(id, _)| id != tool_call_id)
            }
            _ => {}
        }
    }
}

/// The SSE event of a native event whose JSON is `json`.
fn native(id: i64, json: &str) -> String {
    format!("id: {id}\ndata: {json}\n\n")
}

/// SSE events for one native event. Only the last carries the `id:`, so a
/// reader resuming after that id has every part, and one that dropped in
/// the middle of the group gets the whole group again.
fn group(id: i64, values: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i + 1 == values.len() {
            out.push_str(&format!("id: {id}\ndata: {v}\n\n"));
        } else {
            out.push_str(&format!("data: {v}\n\n"));
        }
    }
    out
}

impl Encoder {
    pub fn new(protocol: Protocol, session_id: &str) -> Self {
        Self {
            protocol,
            session_id: session_id.to_owned(),
            started: None,
            open: Open::default(),
            reopen: false,
        }
    }

    /// Tells the encoder what came before the first event it will encode
    /// (the events of the same run up to the resume point), so that a
    /// mid-run join opens the step, text blocks and tool calls still open.
    pub fn prime(&mut self, before: &[Event]) {
        for ev in before {
            self.open.track(&ev.body);
        }
        self.reopen = true;
    }

    /// The SSE text for `ev` (possibly several SSE events, or none).
    pub fn encode(&mut self, ev: &Event) -> String {
        match self.protocol {
            Protocol::Native => native(ev.seq, &serde_json::to_string(ev).unwrap_or_default()),
            Protocol::AgUi => {
                let values = self.ag_ui(ev);
                self.open.track(&ev.body);
                group(ev.seq, &values)
            }
            Protocol::AiSdk => {
                let values = self.ai_sdk(ev);
                self.open.track(&ev.body);
                group(ev.seq, &values)
            }
        }
    }

    /// [`Self::encode`] of an event whose native JSON is at hand (a room
    /// serializes each event once).
    pub fn encode_json(&mut self, ev: &Event, json: &str) -> String {
        match self.protocol {
            Protocol::Native => native(ev.seq, json),
            _ => self.encode(ev),
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
            self.reopen = false;
            return;
        }
        match self.protocol {
            Protocol::AgUi => out.push(
                json!({"type": "RUN_STARTED", "threadId": self.session_id, "runId": ev.run_id}),
            ),
            Protocol::AiSdk => out.push(json!({"type": "start", "messageId": ev.run_id})),
            Protocol::Native => {}
        }
        if std::mem::take(&mut self.reopen) {
            let open = &self.open;
            match self.protocol {
                Protocol::AgUi => {
                    if let Some(step) = open.step {
                        out.push(
                            json!({"type": "STEP_STARTED", "stepName": format!("step-{step}")}),
                        );
                    }
                    for b in &open.texts {
                        out.push(json!({"type": "TEXT_MESSAGE_START", "messageId": b, "role": "assistant"}));
                    }
                    for (id, name) in &open.tools {
                        out.push(json!({"type": "TOOL_CALL_START", "toolCallId": id, "toolCallName": name}));
                    }
                }
                Protocol::AiSdk => {
                    if open.step.is_some() {
                        out.push(json!({"type": "start-step"}));
                    }
                    for b in &open.texts {
                        out.push(json!({"type": "text-start", "id": b}));
                    }
                    for (id, name) in &open.tools {
                        out.push(
                            json!({"type": "tool-input-start", "toolCallId": id, "toolName": name}),
                        );
                    }
                }
                Protocol::Native => {}
            }
        }
    }

    /// A run stopped mid-step (cancelled, failed, cut at the token limit)
    /// ends its step, or the run, with text blocks or calls still open:
    /// they are closed first, as AG-UI and the AI SDK require (a call whose
    /// input never completed did not run: for the AI SDK its input is an
    /// error). At a run's end an unfinished step is finished too.
    fn close_open(&self, body: &EventBody, out: &mut Vec<Value>) {
        let run_end = matches!(body, EventBody::RunFinished { .. });
        if !run_end && !matches!(body, EventBody::StepFinished { .. }) {
            return;
        }
        let open = &self.open;
        let agui = self.protocol == Protocol::AgUi;
        for (id, name) in &open.tools {
            out.push(if agui {
                json!({"type": "TOOL_CALL_END", "toolCallId": id})
            } else {
                json!({"type": "tool-input-error", "toolCallId": id, "toolName": name, "input": null,
                    "errorText": "The run stopped before this call's input was complete; it did not run."})
            });
        }
        for b in &open.texts {
            out.push(if agui {
                json!({"type": "TEXT_MESSAGE_END", "messageId": b})
            } else {
                json!({"type": "text-end", "id": b})
            });
        }
        match open.step {
            Some(step) if run_end && agui => {
                out.push(json!({"type": "STEP_FINISHED", "stepName": format!("step-{step}")}))
            }
            Some(_) if run_end => out.push(json!({"type": "finish-step"})),
            _ => {}
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
        self.close_open(&ev.body, &mut out);
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
        self.close_open(&ev.body, &mut out);
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
