//! The Anthropic Messages API, streaming: request building and the decoder
//! from its SSE events (`message_start`, `content_block_*`,
//! `message_delta`, `message_stop`, `ping`, `error`) to model events.
//! Unknown event and block types are ignored.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{json, Value};

use super::sse::SseEvent;
use super::{ChatRequest, ModelError, ModelEvent, ModelStream, StopReason, Usage};
use crate::ports::http_client::HttpClient;

pub const VERSION: &str = "2023-06-01";

pub fn request_body(req: &ChatRequest) -> Value {
    let mut tools: Vec<Value> = req
        .tools
        .iter()
        .map(|t| serde_json::to_value(t).unwrap_or_default())
        .collect();
    if let Some(last) = tools.last_mut() {
        // Cache the stable prefix (tools and system prompt) across the steps of a run.
        last["cache_control"] = json!({"type": "ephemeral"});
    }
    json!({
        "model": req.model,
        "max_tokens": req.max_tokens,
        "system": [{"type": "text", "text": req.system, "cache_control": {"type": "ephemeral"}}],
        "messages": req.messages,
        "tools": tools,
        "stream": true,
    })
}

pub async fn stream(
    http: &dyn HttpClient,
    base_url: &str,
    api_key: &str,
    req: &ChatRequest,
) -> Result<ModelStream, ModelError> {
    let request = http::Request::post(format!("{}/v1/messages", base_url.trim_end_matches('/')))
        .header("x-api-key", api_key)
        .header("anthropic-version", VERSION)
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

enum Kind {
    Text,
    Tool(String),
    Thinking(String, String),
    Other,
}

#[derive(Default)]
pub struct Decoder {
    blocks: HashMap<u64, Kind>,
    usage: Usage,
    stop: Option<StopReason>,
    finished: bool,
}

fn tokens(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

impl Decoder {
    pub fn decode(&mut self, ev: SseEvent) -> Vec<Result<ModelEvent, ModelError>> {
        if ev.event == "__eof" {
            return if self.finished {
                vec![]
            } else {
                vec![Err(ModelError::Stream(
                    "the stream ended before message_stop".into(),
                ))]
            };
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            return if ev.event.is_empty() || ev.event == "ping" {
                vec![]
            } else {
                vec![Err(ModelError::Stream(format!(
                    "malformed {} event",
                    ev.event
                )))]
            };
        };
        let kind = if ev.event.is_empty() {
            data.get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        } else {
            ev.event.clone()
        };
        let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind.as_str() {
            "message_start" => {
                let u = &data["message"]["usage"];
                self.usage.input_tokens = tokens(u, "input_tokens").unwrap_or(0);
                self.usage.cache_read_tokens = tokens(u, "cache_read_input_tokens").unwrap_or(0);
                self.usage.cache_write_tokens =
                    tokens(u, "cache_creation_input_tokens").unwrap_or(0);
                self.usage.output_tokens = tokens(u, "output_tokens").unwrap_or(0);
                vec![Ok(ModelEvent::Usage(self.usage))]
            }
            "content_block_start" => {
                let block = &data["content_block"];
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        self.blocks.insert(index, Kind::Text);
                        let mut out = vec![Ok(ModelEvent::TextStart)];
                        if let Some(t) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            out.push(Ok(ModelEvent::TextDelta(t.to_owned())));
                        }
                        out
                    }
                    Some("tool_use") => {
                        let id = block
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let name = block
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        self.blocks.insert(index, Kind::Tool(id.clone()));
                        vec![Ok(ModelEvent::ToolStart { id, name })]
                    }
                    Some("thinking") => {
                        let t = block
                            .get("thinking")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        let streamed = t.len();
                        self.blocks.insert(index, Kind::Thinking(t, String::new()));
                        if streamed == 0 {
                            vec![]
                        } else {
                            vec![Ok(ModelEvent::ThinkingDelta(streamed))]
                        }
                    }
                    _ => {
                        self.blocks.insert(index, Kind::Other);
                        vec![]
                    }
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                let text = |k: &str| {
                    delta
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                match (
                    delta.get("type").and_then(Value::as_str),
                    self.blocks.get_mut(&index),
                ) {
                    (Some("text_delta"), Some(Kind::Text)) => {
                        vec![Ok(ModelEvent::TextDelta(text("text")))]
                    }
                    (Some("input_json_delta"), Some(Kind::Tool(id))) => {
                        vec![Ok(ModelEvent::ToolDelta {
                            id: id.clone(),
                            partial_json: text("partial_json"),
                        })]
                    }
                    (Some("thinking_delta"), Some(Kind::Thinking(t, _))) => {
                        let delta = text("thinking");
                        t.push_str(&delta);
                        vec![Ok(ModelEvent::ThinkingDelta(delta.len()))]
                    }
                    (Some("signature_delta"), Some(Kind::Thinking(_, s))) => {
                        s.push_str(&text("signature"));
                        vec![]
                    }
                    _ => vec![],
                }
            }
            "content_block_stop" => match self.blocks.remove(&index) {
                Some(Kind::Text) => vec![Ok(ModelEvent::TextEnd)],
                Some(Kind::Tool(id)) => vec![Ok(ModelEvent::ToolEnd { id })],
                Some(Kind::Thinking(thinking, signature)) => vec![Ok(ModelEvent::Thinking {
                    thinking,
                    signature,
                })],
                _ => vec![],
            },
            "message_delta" => {
                if let Some(r) = data["delta"].get("stop_reason").and_then(Value::as_str) {
                    self.stop = Some(match r {
                        "end_turn" | "stop_sequence" => StopReason::EndTurn,
                        "tool_use" => StopReason::ToolUse,
                        "max_tokens" => StopReason::MaxTokens,
                        other => StopReason::Other(other.to_owned()),
                    });
                }
                if let Some(out) = tokens(&data["usage"], "output_tokens") {
                    self.usage.output_tokens = out;
                }
                vec![Ok(ModelEvent::FinalUsage(self.usage))]
            }
            "message_stop" => {
                self.finished = true;
                vec![Ok(ModelEvent::Stop(
                    self.stop.clone().unwrap_or(StopReason::EndTurn),
                ))]
            }
            "error" => {
                let e = &data["error"];
                let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
                let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
                // The API overloaded or rate-limited after the answer began
                // (an `error` event instead of a 529 / 429 status): busy,
                // which the agent retries while nothing was streamed yet.
                match kind {
                    "overloaded_error" => vec![Err(ModelError::Busy {
                        status: 529,
                        retry_after: None,
                    })],
                    "rate_limit_error" => vec![Err(ModelError::Busy {
                        status: 429,
                        retry_after: None,
                    })],
                    _ => vec![Err(ModelError::Stream(format!("{kind}: {msg}")))],
                }
            }
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::sse::SseParser;

    fn run(stream: &str) -> Vec<Result<ModelEvent, ModelError>> {
        let mut p = SseParser::new();
        let mut d = Decoder::default();
        let mut out: Vec<_> = p
            .push(stream.as_bytes())
            .into_iter()
            .flat_map(|e| d.decode(e))
            .collect();
        out.extend(d.decode(SseEvent {
            event: "__eof".into(),
            ..Default::default()
        }));
        out
    }

    #[test]
    fn tool_call_fragments_arrive_in_order_and_unknown_events_are_ignored() {
        let s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tu_1\",\"name\":\"write_file\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"pa\"}}\n\n\
event: brand_new_event\ndata: {\"type\":\"brand_new_event\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"th\\\":1}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":30}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let got: Vec<ModelEvent> = run(s).into_iter().map(|r| r.expect("ok")).collect();
        let json: String = got
            .iter()
            .filter_map(|e| match e {
                ModelEvent::ToolDelta { partial_json, .. } => Some(partial_json.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(json, "{\"path\":1}");
        assert_eq!(got.last(), Some(&ModelEvent::Stop(StopReason::ToolUse)));
        assert!(got.contains(&ModelEvent::FinalUsage(Usage {
            input_tokens: 12,
            output_tokens: 30,
            ..Usage::default()
        })));
    }

    #[test]
    fn error_event_mid_stream_fails_the_stream() {
        let start = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
        let error = |kind: &str| {
            format!("{start}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":\"x\"}}}}\n\n")
        };
        let got = run(&error("api_error"));
        assert!(
            matches!(got.iter().find(|r| r.is_err()), Some(Err(ModelError::Stream(m))) if m.contains("api_error"))
        );
        // An overload or a rate limit is the provider being busy.
        for (kind, status) in [("overloaded_error", 529), ("rate_limit_error", 429)] {
            let got = run(&error(kind));
            assert_eq!(
                got.iter().find(|r| r.is_err()),
                Some(&Err(ModelError::Busy {
                    status,
                    retry_after: None
                })),
                "{kind}"
            );
        }
    }

    #[test]
    fn stream_cut_before_message_stop_is_an_error() {
        let got = run("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{}}}\n\n");
        assert!(matches!(got.last(), Some(Err(ModelError::Stream(_)))));
    }
}
