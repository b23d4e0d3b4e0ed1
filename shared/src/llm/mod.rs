//! Model providers behind one streaming interface: the Anthropic Messages
//! API, OpenAI-compatible chat completions, and a keyless demo. Each turns
//! its wire stream into [`ModelEvent`]s.

pub mod anthropic;
pub mod demo;
pub mod openai;
pub mod sse;

use bytes::Bytes;
use futures_util::stream::LocalBoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ports::http_client::{HttpClient, StreamingResponse};

/// One content block of a conversation message (Anthropic's shape, which
/// the OpenAI adapter maps from and to).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
    Thinking {
        thinking: String,
        #[serde(default)]
        signature: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub input_schema: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    Other(String),
}

/// What a provider stream says, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    TextStart,
    TextDelta(String),
    TextEnd,
    ToolStart {
        id: String,
        name: String,
    },
    ToolDelta {
        id: String,
        partial_json: String,
    },
    ToolEnd {
        id: String,
    },
    /// Bytes of thinking streamed. The run gets the thinking whole at its
    /// block's end ([`ModelEvent::Thinking`]); these count what a call cut
    /// short inside the block had produced (billed as an estimate).
    ThinkingDelta(usize),
    Thinking {
        thinking: String,
        signature: String,
    },
    /// Usage so far (providers report input at the start and output at the end).
    Usage(Usage),
    /// The provider's count of the whole call, output included: Anthropic's
    /// `message_delta`, an OpenAI-compatible usage chunk at or after the
    /// finish (a server may send partial counts in earlier chunks).
    FinalUsage(Usage),
    Stop(StopReason),
    /// Events arrived that carry nothing for the run (a `ping`, thinking
    /// still in progress): the model is alive, its silence is not a stall.
    Alive,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// 429 or 529 (overloaded): retry after the given seconds if known.
    #[error("the model provider is busy (status {status})")]
    Busy {
        status: u16,
        retry_after: Option<u64>,
    },
    #[error("the model provider refused the request (status {status}): {message}")]
    Refused { status: u16, message: String },
    /// An `error` event or a broken stream after the response began.
    #[error("the model stream failed: {0}")]
    Stream(String),
    #[error("the model provider is unreachable: {0}")]
    Transport(String),
}

pub type ModelStream = LocalBoxStream<'static, Result<ModelEvent, ModelError>>;

/// A credential. Its `Debug` shows only that it is there, so a struct that
/// carries one can still be logged or printed by a failing test.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A configured provider.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    Anthropic {
        base_url: String,
        api_key: Secret,
        model: String,
    },
    OpenAi {
        base_url: String,
        api_key: Secret,
        model: String,
    },
    Demo,
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Anthropic { .. } => "anthropic",
            Provider::OpenAi { .. } => "openai",
            Provider::Demo => "demo",
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Provider::Anthropic { model, .. } | Provider::OpenAi { model, .. } => model,
            Provider::Demo => "demo",
        }
    }

    /// The key its calls send (none for the demo).
    pub fn api_key(&self) -> Option<&Secret> {
        match self {
            Provider::Anthropic { api_key, .. } | Provider::OpenAi { api_key, .. } => Some(api_key),
            Provider::Demo => None,
        }
    }

    /// Starts one streamed model call.
    pub async fn stream(
        &self,
        http: &dyn HttpClient,
        req: &ChatRequest,
    ) -> Result<ModelStream, ModelError> {
        match self {
            Provider::Anthropic {
                base_url, api_key, ..
            } => anthropic::stream(http, base_url, api_key.expose(), req).await,
            Provider::OpenAi {
                base_url, api_key, ..
            } => openai::stream(http, base_url, api_key.expose(), req).await,
            Provider::Demo => Ok(demo::stream(req)),
        }
    }
}

/// Sends a streaming POST and maps HTTP-level failures to [`ModelError`].
pub(crate) async fn post_stream(
    http: &dyn HttpClient,
    req: http::Request<Bytes>,
) -> Result<StreamingResponse, ModelError> {
    let res = http
        .send_streaming(req)
        .await
        .map_err(|e| ModelError::Transport(e.0))?;
    let status = res.status.as_u16();
    if res.status.is_success() {
        return Ok(res);
    }
    let retry_after = res
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let mut body = Vec::new();
    let mut s = res.body;
    while let Some(Ok(chunk)) = s.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > 16 * 1024 {
            break;
        }
    }
    if status == 429 || status == 529 || status == 503 {
        return Err(ModelError::Busy {
            status,
            retry_after,
        });
    }
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "no details".to_owned());
    Err(ModelError::Refused { status, message })
}

/// Joins the deltas that arrived together: adjacent text deltas, and adjacent
/// input fragments of one tool call. A model streams a few tokens per
/// event; when a network read brings many (the reader fell behind, or the
/// provider sent a burst), passing each on alone costs a stored event and a
/// frame per token for nothing, while joined they leave at once. Nothing
/// waits to be joined: the first delta of a read leaves with what came with
/// it, never later.
fn merge_deltas(queue: &mut std::collections::VecDeque<Result<ModelEvent, ModelError>>) {
    if queue.len() < 2 {
        return;
    }
    let mut merged: std::collections::VecDeque<Result<ModelEvent, ModelError>> =
        std::collections::VecDeque::with_capacity(queue.len());
    for item in queue.drain(..) {
        match (merged.back_mut(), item) {
            (Some(Ok(ModelEvent::TextDelta(text))), Ok(ModelEvent::TextDelta(more))) => {
                text.push_str(&more);
            }
            (
                Some(Ok(ModelEvent::ToolDelta { id, partial_json })),
                Ok(ModelEvent::ToolDelta {
                    id: more_id,
                    partial_json: more,
                }),
            ) if *id == more_id => partial_json.push_str(&more),
            (_, item) => merged.push_back(item),
        }
    }
    *queue = merged;
}

/// Turns a byte stream of SSE into parsed events, feeding `decode`, which
/// may emit any number of model events per SSE event.
pub(crate) fn decode_sse<S: 'static>(
    body: LocalBoxStream<'static, Result<Bytes, crate::ports::http_client::HttpError>>,
    state: S,
    decode: fn(&mut S, sse::SseEvent) -> Vec<Result<ModelEvent, ModelError>>,
) -> ModelStream {
    futures_util::stream::unfold(
        (
            body,
            sse::SseParser::new(),
            state,
            std::collections::VecDeque::<Result<ModelEvent, ModelError>>::new(),
            false,
        ),
        move |(mut body, mut parser, mut state, mut queue, mut done)| async move {
            loop {
                if let Some(item) = queue.pop_front() {
                    let failed = item.is_err();
                    if failed {
                        done = true;
                        queue.clear();
                    }
                    return Some((item, (body, parser, state, queue, done)));
                }
                if done {
                    return None;
                }
                match body.next().await {
                    Some(Ok(chunk)) => {
                        let mut events = 0;
                        for ev in parser.push(&chunk) {
                            events += 1;
                            queue.extend(decode(&mut state, ev));
                        }
                        if events > 0 && queue.is_empty() {
                            queue.push_back(Ok(ModelEvent::Alive));
                        }
                        merge_deltas(&mut queue);
                    }
                    Some(Err(e)) => {
                        queue.push_back(Err(ModelError::Stream(format!(
                            "connection lost: {}",
                            e.0
                        ))));
                    }
                    None => {
                        parser.finish();
                        done = true;
                        queue.extend(decode(
                            &mut state,
                            sse::SseEvent {
                                event: "__eof".into(),
                                data: String::new(),
                                id: None,
                            },
                        ));
                    }
                }
            }
        },
    )
    .boxed_local()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn text(s: &str) -> Result<ModelEvent, ModelError> {
        Ok(ModelEvent::TextDelta(s.into()))
    }

    fn tool(id: &str, s: &str) -> Result<ModelEvent, ModelError> {
        Ok(ModelEvent::ToolDelta {
            id: id.into(),
            partial_json: s.into(),
        })
    }

    #[test]
    fn adjacent_deltas_join_and_everything_else_keeps_its_place() {
        let mut q: std::collections::VecDeque<_> = vec![
            Ok(ModelEvent::TextStart),
            text("Hel"),
            text("lo"),
            text(" world"),
            Ok(ModelEvent::TextEnd),
            Ok(ModelEvent::ToolStart {
                id: "a".into(),
                name: "write_file".into(),
            }),
            tool("a", "{\"pa"),
            tool("a", "th\":"),
            tool("b", "1"),
            tool("a", "2}"),
            text("x"),
            Err(ModelError::Stream("cut".into())),
            text("y"),
        ]
        .into();
        merge_deltas(&mut q);
        let got: Vec<_> = q.into_iter().collect();
        assert_eq!(
            got,
            vec![
                Ok(ModelEvent::TextStart),
                text("Hello world"),
                Ok(ModelEvent::TextEnd),
                Ok(ModelEvent::ToolStart {
                    id: "a".into(),
                    name: "write_file".into()
                }),
                tool("a", "{\"path\":"),
                tool("b", "1"),
                tool("a", "2}"),
                text("x"),
                Err(ModelError::Stream("cut".into())),
                text("y"),
            ]
        );
    }

    fn delta_event(text: &str) -> String {
        format!(
            "event: content_block_delta\ndata: {}\n\n",
            serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
        )
    }

    type Reads = std::rc::Rc<std::cell::RefCell<std::collections::VecDeque<Bytes>>>;

    /// An Anthropic stream over a network whose reads are pending until
    /// the test hands over bytes (pushed on the returned queue).
    fn anthropic_over_test_network() -> (Reads, ModelStream) {
        let reads = Reads::default();
        let pending = reads.clone();
        let body = futures_util::stream::poll_fn(move |_| match pending.borrow_mut().pop_front() {
            Some(b) => std::task::Poll::Ready(Some(Ok(b))),
            None => std::task::Poll::Pending,
        });
        let stream = decode_sse(
            body.boxed_local(),
            anthropic::Decoder::default(),
            anthropic::Decoder::decode,
        );
        (reads, stream)
    }

    #[test]
    fn deltas_of_one_read_leave_together_and_none_waits_for_the_next_read() {
        let (reads, mut stream) = anthropic_over_test_network();
        let send = |s: String| reads.borrow_mut().push_back(Bytes::from(s));
        let start = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
        let first = format!(
            "{start}{}{}{}",
            delta_event("a"),
            delta_event("b"),
            delta_event("c")
        );
        send(first);
        assert_eq!(
            stream.next().now_or_never().flatten(),
            Some(Ok(ModelEvent::TextStart))
        );
        assert_eq!(stream.next().now_or_never().flatten(), Some(text("abc")));
        // Nothing more has arrived: the stream waits, it does not invent.
        assert!(stream.next().now_or_never().is_none());
        send(delta_event("d"));
        assert_eq!(stream.next().now_or_never().flatten(), Some(text("d")));
    }

    #[test]
    fn events_that_carry_nothing_say_the_model_is_alive_and_half_events_do_not() {
        let (reads, mut stream) = anthropic_over_test_network();
        let send = |s: &str| reads.borrow_mut().push_back(Bytes::from(s.to_owned()));
        // Half an event: nothing yet.
        send("event: ping\ndata: {\"type\":");
        assert!(stream.next().now_or_never().is_none());
        // Its end: a ping, which carries nothing for the run.
        send("\"ping\"}\n\n");
        assert_eq!(
            stream.next().now_or_never().flatten(),
            Some(Ok(ModelEvent::Alive))
        );
        // An event with content: that content, no Alive besides.
        send("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        assert_eq!(
            stream.next().now_or_never().flatten(),
            Some(Ok(ModelEvent::TextStart))
        );
        assert!(stream.next().now_or_never().is_none());
    }

    #[test]
    fn a_key_never_shows_in_debug_and_crosses_as_a_plain_string() {
        let p = Provider::Anthropic {
            base_url: "https://api.anthropic.com".into(),
            api_key: Secret::new("sk-ant-secret-1234"),
            model: "m".into(),
        };
        assert!(!format!("{p:?}").contains("sk-ant"), "{p:?}");
        let wire = serde_json::to_string(&Secret::new("sk-ant-secret-1234")).expect("serializes");
        assert_eq!(wire, "\"sk-ant-secret-1234\"");
        let back: Secret = serde_json::from_str(&wire).expect("deserializes");
        assert_eq!(back.expose(), "sk-ant-secret-1234");
    }
}
