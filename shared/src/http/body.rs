//! Response bodies: whole, or a stream of chunks (SSE) that the adapter
//! pipes to its platform's body without looking inside.

use bytes::Bytes;
use futures_util::stream::LocalBoxStream;

pub enum Body {
    Full(Bytes),
    Stream(LocalBoxStream<'static, Bytes>),
    /// A platform response the adapter returns as it is (e.g. a WebSocket
    /// upgrade answered by a Durable Object). Only a platform's own ports
    /// create it, and only its adapter unwraps it.
    Native(Box<dyn std::any::Any>),
}

/// A response extension: the streamed body drives work that must go on
/// when its client leaves (a run driven inside its request). An adapter
/// whose platform lets a request's work outlive its client reads such a
/// body to its end, discarding it, once a write fails; any other streamed
/// body is dropped then, which stops its producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrivesWork;

impl Body {
    pub fn empty() -> Self {
        Body::Full(Bytes::new())
    }

    /// The whole body, if it is not a stream.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Body::Full(b) => Some(b),
            Body::Stream(_) | Body::Native(_) => None,
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Full(b) => write!(f, "Body::Full({} bytes)", b.len()),
            Body::Stream(_) => write!(f, "Body::Stream"),
            Body::Native(_) => write!(f, "Body::Native"),
        }
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::Full(Bytes::from(s))
    }
}
impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::Full(Bytes::from_static(s.as_bytes()))
    }
}
impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::Full(Bytes::from(v))
    }
}
impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Full(b)
    }
}
