//! HTTP plumbing on `http` types: bodies, routing, request parsing and
//! response building. Platform adapters convert at the edge.

pub mod body;
pub mod request;
pub mod response;
pub mod router;
