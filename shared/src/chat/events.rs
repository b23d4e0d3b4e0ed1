//! The one internal model of run events. Every event of a session carries
//! a sequence number, increasing across the session's runs; readers resume
//! after the last number they saw.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::llm::Usage;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    RunStarted {
        provider: String,
        model: String,
        message_id: String,
        user_message_id: String,
    },
    StepStarted {
        step: u32,
    },
    TextStart {
        block_id: String,
    },
    TextDelta {
        block_id: String,
        delta: String,
    },
    TextEnd {
        block_id: String,
    },
    ToolCallStart {
        tool_call_id: String,
        name: String,
    },
    ToolCallDelta {
        tool_call_id: String,
        delta: String,
    },
    ToolCallEnd {
        tool_call_id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_call_id: String,
        output: String,
        is_error: bool,
    },
    StepFinished {
        step: u32,
    },
    /// Terminal: `status` is complete, incomplete, error or cancelled.
    RunFinished {
        status: String,
        stop_reason: String,
        usage: Usage,
        cost_micros: i64,
    },
    RunError {
        code: String,
        message: String,
    },
    /// Room only (WebSocket): who is connected.
    Presence {
        users: Vec<Value>,
    },
}

impl EventBody {
    pub fn is_terminal(&self) -> bool {
        matches!(self, EventBody::RunFinished { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub run_id: String,
    #[serde(flatten)]
    pub body: EventBody,
}
