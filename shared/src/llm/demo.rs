//! The keyless demo provider, used only when no model key is configured.
//! It runs a short scripted agent turn (text, a `write_file` call, text) so
//! a fresh `./scripts/dev` shows the whole pipeline; every answer says it
//! is the demo.

use futures_util::StreamExt;
use serde_json::json;

use super::{Block, ChatRequest, ModelEvent, ModelStream, Role, StopReason, Usage};

pub const LABEL: &str = "[demo model: no API key is configured]";

fn chunks(text: &str) -> Vec<ModelEvent> {
    let mut out = vec![ModelEvent::TextStart];
    let mut word = String::new();
    for c in text.chars() {
        word.push(c);
        if c == ' ' {
            out.push(ModelEvent::TextDelta(std::mem::take(&mut word)));
        }
    }
    if !word.is_empty() {
        out.push(ModelEvent::TextDelta(word));
    }
    out.push(ModelEvent::TextEnd);
    out
}

pub fn stream(req: &ChatRequest) -> ModelStream {
    let after_tool = req.messages.last().is_some_and(|m| {
        m.role == Role::User
            && m.content
                .iter()
                .any(|b| matches!(b, Block::ToolResult { .. }))
    });
    let ask = req
        .messages
        .iter()
        .rev()
        .find_map(|m| {
            m.content.iter().find_map(|b| {
                if let Block::Text { text } = b {
                    (m.role == Role::User).then(|| text.clone())
                } else {
                    None
                }
            })
        })
        .unwrap_or_default();
    let mut events = vec![ModelEvent::Usage(Usage {
        input_tokens: 0,
        ..Usage::default()
    })];
    if after_tool {
        events.extend(chunks(&format!("{LABEL} I wrote index.html for you. Open the preview to see it. Set ANTHROPIC_API_KEY or OPENAI_API_KEY for a real agent.")));
        events.push(ModelEvent::Stop(StopReason::EndTurn));
    } else {
        events.extend(chunks(&format!(
            "{LABEL} Here is a page that shows your request. "
        )));
        let safe: String = ask
            .chars()
            .filter(|c| !matches!(c, '<' | '>' | '&' | '"'))
            .take(200)
            .collect();
        let html = format!("<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Demo</title></head>\n<body>\n<h1>{safe}</h1>\n<p>Written by the EverJust demo model.</p>\n</body>\n</html>\n");
        let input = json!({"path": "index.html", "content": html}).to_string();
        let id = "toolu_demo_1".to_owned();
        events.push(ModelEvent::ToolStart {
            id: id.clone(),
            name: "write_file".into(),
        });
        let bytes: Vec<char> = input.chars().collect();
        for part in bytes.chunks(24) {
            events.push(ModelEvent::ToolDelta {
                id: id.clone(),
                partial_json: part.iter().collect(),
            });
        }
        events.push(ModelEvent::ToolEnd { id });
        events.push(ModelEvent::Stop(StopReason::ToolUse));
    }
    futures_util::stream::iter(events.into_iter().map(Ok)).boxed_local()
}
