//! The TCP socket tokio-postgres talks over: workerd's `connect()`, with
//! the socket's stream reader and writer taken once and held for the
//! connection's life.
//!
//! Why not `worker::Socket`: it takes the stream's lock before every read
//! and write and releases it after, and each release rejects the reader's
//! (or writer's) `closed` promise with a new `TypeError` whose stack trace
//! workerd captures through the wasm frames. Seen with `perf` under load on
//! `GET /v1/projects`: about a twelfth of workerd's CPU went to making
//! those errors.
//!
//! Writes are queued on the stream and answered at once (the chunk is
//! copied into JavaScript); a flush waits for the last of them, and a
//! failed write is reported by the next write or flush.

use std::io::{Error as IoError, Result as IoResult};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::{ready, Ready};
use futures_util::FutureExt;
use js_sys::{Object, Reflect, Uint8Array};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStreamDefaultReader, WritableStreamDefaultWriter};
use worker::worker_sys;

pub struct PgSocket {
    /// `None` once upgraded to TLS (the upgraded socket is another one).
    socket: Option<worker_sys::Socket>,
    reader: ReadableStreamDefaultReader,
    writer: WritableStreamDefaultWriter,
    /// The read in flight.
    reading: Option<JsFuture>,
    /// Bytes of the last chunk read that did not fit the caller's buffer.
    rest: Vec<u8>,
    /// The last write queued (writes complete in order).
    written: Option<JsFuture>,
    /// A write failed: every later one fails.
    failed: Option<String>,
    closing: Option<JsFuture>,
}

fn io_error(e: JsValue) -> IoError {
    IoError::other(crate::body_stream::describe(&e))
}

/// How the connection is secured, as `connect()`'s `secureTransport`.
#[derive(Clone, Copy)]
pub enum Transport {
    Off,
    StartTls,
}

impl PgSocket {
    /// Opens a connection to `host:port`.
    pub fn connect(host: &str, port: u16, transport: Transport) -> Result<Self, String> {
        let build = || -> Result<worker_sys::Socket, JsValue> {
            let address = Object::new();
            Reflect::set(&address, &"hostname".into(), &host.into())?;
            Reflect::set(&address, &"port".into(), &JsValue::from(port))?;
            let options = Object::new();
            let secure = match transport {
                Transport::Off => "off",
                Transport::StartTls => "starttls",
            };
            Reflect::set(&options, &"secureTransport".into(), &secure.into())?;
            worker_sys::connect(address.into(), options.into())
        };
        let socket = build().map_err(|e| io_error(e).to_string())?;
        Self::new(socket).map_err(|e| io_error(e).to_string())
    }

    fn new(socket: worker_sys::Socket) -> Result<Self, JsValue> {
        let reader = socket.readable()?.get_reader().dyn_into()?;
        let writer = socket.writable()?.get_writer()?;
        Ok(Self {
            socket: Some(socket),
            reader,
            writer,
            reading: None,
            rest: Vec::new(),
            written: None,
            failed: None,
            closing: None,
        })
    }

    /// Upgrades the connection to TLS (the streams are released first, as
    /// `startTls()` needs them unlocked; this happens once per connection).
    fn start_tls(mut self) -> Result<Self, JsValue> {
        self.reader.release_lock();
        self.writer.release_lock();
        let socket = self
            .socket
            .take()
            .ok_or_else(|| JsValue::from_str("the socket was upgraded already"))?;
        Self::new(socket.start_tls()?)
    }

    /// Polls the last queued write.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        if let Some(e) = &self.failed {
            return Poll::Ready(Err(IoError::other(e.clone())));
        }
        let Some(written) = self.written.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match written.poll_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.written = None;
                if let Err(e) = result {
                    let e = io_error(e);
                    self.failed = Some(e.to_string());
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl Drop for PgSocket {
    fn drop(&mut self) {
        // Closes both directions (tokio-postgres has sent its Terminate).
        if let Some(socket) = &self.socket {
            let _ = socket.close();
        }
    }
}

impl AsyncRead for PgSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<IoResult<()>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            let n = buf.remaining().min(this.rest.len());
            buf.put_slice(&this.rest[..n]);
            this.rest.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let reader = &this.reader;
        let reading = this
            .reading
            .get_or_insert_with(|| JsFuture::from(reader.read()));
        let result = match reading.poll_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        this.reading = None;
        let chunk = result.map_err(io_error)?;
        let done = Reflect::get(&chunk, &"done".into()).map_err(io_error)?;
        if done.is_truthy() {
            // The end of the stream: nothing read.
            return Poll::Ready(Ok(()));
        }
        let bytes: Uint8Array = Reflect::get(&chunk, &"value".into())
            .map_err(io_error)?
            .dyn_into()
            .map_err(io_error)?;
        let len = bytes.length() as usize;
        let n = buf.remaining().min(len);
        let filled = buf.initialize_unfilled_to(n);
        bytes.subarray(0, n as u32).copy_to(&mut filled[..n]);
        buf.advance(n);
        if n < len {
            this.rest = bytes.subarray(n as u32, len as u32).to_vec();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PgSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<IoResult<usize>> {
        // A write still in flight is left to run; one that failed is reported.
        if let Poll::Ready(Err(e)) = self.poll_written(cx) {
            return Poll::Ready(Err(e));
        }
        let chunk = Uint8Array::from(buf);
        self.written = Some(JsFuture::from(self.writer.write_with_chunk(&chunk)));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        self.poll_written(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        match self.poll_written(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let writer = self.writer.clone();
        let closing = self
            .closing
            .get_or_insert_with(|| JsFuture::from(writer.close()));
        closing
            .poll_unpin(cx)
            .map(|r| r.map(drop).map_err(io_error))
    }
}

impl TlsStream for PgSocket {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// tokio-postgres's TLS step: the socket's own `startTls()` (the runtime
/// does the TLS).
pub struct StartTls;

impl TlsConnect<PgSocket> for StartTls {
    type Stream = PgSocket;
    type Error = IoError;
    type Future = Ready<IoResult<PgSocket>>;

    fn connect(self, socket: PgSocket) -> Self::Future {
        ready(socket.start_tls().map_err(io_error))
    }
}
