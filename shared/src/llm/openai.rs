//! OpenAI-compatible chat completions, streaming: messages and tools mapped
//! from our blocks, and the decoder from `data:` chunks (`choices[].delta`
//! content and tool-call fragments, usage in the last chunk, `[DONE]`).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::sse::SseEvent;
use super::{Block, ChatRequest, ModelError, ModelEvent, ModelStream, Role, StopReason, Usage};
use crate::ports::http_client::HttpClient;

pub fn request_body(req: &ChatRequest) -> Value {
    let mut messages = vec![json!({"role": "system", "content": req.system})];
    for m in &req.messages {
        let mut text = String::new();
        let mut calls = Vec::new();
        for b in &m.content {
            match b {
                Block::Text { text: t } => text.push_str(t),
                Block::ToolUse { id, name, input } => calls.push(json!({
                    "id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}
                })),
                Block::ToolResult { tool_use_id, content, .. } => {
                    messages.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}));
                }
                Block::Thinking { .. } => {}
            }
        }
        let role = if m.role == Role::User {
            "user"
        } else {
            "assistant"
        };
        if !text.is_empty() || !calls.is_empty() {
            let mut msg = json!({"role": role, "content": text});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            messages.push(msg);
        }
    }
    let tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
        .collect();
    json!({
        "model": req.model,
        "max_tokens": req.max_tokens,
        "messages": messages,
        "tools": tools,
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

pub async fn stream(
    http: &dyn HttpClient,
    base_url: &str,
    api_key: &str,
    req: &ChatRequest,
) -> Result<ModelStream, ModelError> {
    let request = http::Request::post(format!(
        "{}/v1/chat/completions",
        base_url.trim_end_matches('/')
    ))
    .header("authorization", format!("Bearer {api_key}"))
    .header("content-type", "application/json")
    .header("accept", "text/event-stream")
    .body(Bytes::from(request_body(req).to_string()))
    .map_err(|e| ModelError::Transport(e.to_string()))?;
    let res = super::post_stream(http, request).await?;
    Ok(super::decode_sse(
        res.body,
        Decoder::default(),
        Decoder::decode,
    ))
}

#[derive(Default)]
pub struct Decoder {
    text_open: bool,
    /// index -> tool call id
    tools: BTreeMap<u64, String>,
    stop: Option<StopReason>,
    done: bool,
}

impl Decoder {
    fn close(&mut self) -> Vec<Result<ModelEvent, ModelError>> {
        let mut out = Vec::new();
        if std::mem::take(&mut self.text_open) {
            out.push(Ok(ModelEvent::TextEnd));
        }
        for (_, id) in std::mem::take(&mut self.tools) {
            out.push(Ok(ModelEvent::ToolEnd { id }));
        }
        out
    }

    pub fn decode(&mut self, ev: SseEvent) -> Vec<Result<ModelEvent, ModelError>> {
        if ev.event == "__eof" {
            return if self.done {
                vec![]
            } else {
                vec![Err(ModelError::Stream(
                    "the stream ended before [DONE]".into(),
                ))]
            };
        }
        if ev.data.trim() == "[DONE]" {
            self.done = true;
            let mut out = self.close();
            out.push(Ok(ModelEvent::Stop(
                self.stop.clone().unwrap_or(StopReason::EndTurn),
            )));
            return out;
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            return vec![];
        };
        if let Some(err) = data.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error");
            return vec![Err(ModelError::Stream(msg.to_owned()))];
        }
        let mut out = Vec::new();
        if let Some(choice) = data.get("choices").and_then(|c| c.get(0)) {
            let delta = &choice["delta"];
            if let Some(t) = delta
                .get("content")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                if !self.text_open {
                    self.text_open = true;
                    out.push(Ok(ModelEvent::TextStart));
                }
                out.push(Ok(ModelEvent::TextDelta(t.to_owned())));
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let std::collections::btree_map::Entry::Vacant(slot) = self.tools.entry(index) {
                    let id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("call_{index}"), str::to_owned);
                    let name = call["function"]
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    slot.insert(id.clone());
                    out.push(Ok(ModelEvent::ToolStart { id, name }));
                }
                if let Some(args) = call["function"]
                    .get("arguments")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    let id = self.tools.get(&index).cloned().unwrap_or_default();
                    out.push(Ok(ModelEvent::ToolDelta {
                        id,
                        partial_json: args.to_owned(),
                    }));
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.stop = Some(match reason {
                    "stop" => StopReason::EndTurn,
                    "tool_calls" | "function_call" => StopReason::ToolUse,
                    "length" => StopReason::MaxTokens,
                    other => StopReason::Other(other.to_owned()),
                });
            }
        }
        if let Some(u) = data.get("usage").filter(|u| u.is_object()) {
            let get = |k: &str| u.get(k).and_then(Value::as_i64).unwrap_or(0);
            let cached = u
                .pointer("/prompt_tokens_details/cached_tokens")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let usage = Usage {
                input_tokens: get("prompt_tokens") - cached,
                output_tokens: get("completion_tokens"),
                cache_read_tokens: cached,
                cache_write_tokens: 0,
            };
            // The count of the whole call comes with the finish or after it
            // (`choices: []`); some servers send partial counts before.
            let last = self.stop.is_some()
                || data
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            out.push(Ok(if last {
                ModelEvent::FinalUsage(usage)
            } else {
                ModelEvent::Usage(usage)
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::sse::SseParser;

    #[test]
    fn tool_call_arguments_are_reassembled() {
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"read_file\",\"arguments\":\"{\\\"pa\"}}]}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"th\\\":\\\"a\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5}}\n\n\
data: [DONE]\n\n";
        let mut p = SseParser::new();
        let mut d = Decoder::default();
        let got: Vec<ModelEvent> = p
            .push(s.as_bytes())
            .into_iter()
            .flat_map(|e| d.decode(e))
            .map(|r| r.expect("ok"))
            .collect();
        let args: String = got
            .iter()
            .filter_map(|e| {
                if let ModelEvent::ToolDelta { partial_json, .. } = e {
                    Some(partial_json.as_str())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(args, "{\"path\":\"a\"}");
        assert_eq!(got.last(), Some(&ModelEvent::Stop(StopReason::ToolUse)));
        assert!(got.contains(&ModelEvent::ToolEnd { id: "c1".into() }));
        assert!(got.contains(&ModelEvent::TextEnd));
    }
}
