//! The port conformance suites against the in-memory KV, real Postgres and
//! a small HTTP client over TCP with its echo server, and the migrations
//! being idempotent.

use std::io;
use std::rc::Rc;

use bytes::Bytes;
use everjust_core::db::migrate::{apply, MIGRATIONS};
use everjust_core::ports::conformance::{
    clock_suite, crypto_suite, http_suite, kv_suite, sql_suite, Case,
};
use everjust_core::ports::http_client::{HttpClient, HttpError, StreamingResponse};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::TestApp;

#[tokio::test]
async fn memory_kv_passes_the_kv_suite() {
    let app = TestApp::new().await;
    for case in kv_suite(app.ports.kv.as_ref(), "t").await {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn memory_kv_expires_entries_by_its_clock() {
    let app = TestApp::new().await;
    app.ports.kv.put("k", b"v", Some(60)).await.expect("put");
    app.clock.advance_ms(59_000);
    assert!(app.ports.kv.get("k").await.expect("get").is_some());
    app.clock.advance_ms(1_000);
    assert!(app.ports.kv.get("k").await.expect("get").is_none());
}

#[tokio::test]
async fn the_kv_rate_limiter_passes_the_rate_limit_suite() {
    let app = TestApp::new().await;
    let limiter = everjust_core::ports::ratelimit::KvRateLimiter {
        kv: app.ports.kv.clone(),
        clock: app.clock.clone(),
    };
    let cases = everjust_core::ports::ratelimit::conformance_suite(&limiter, "t").await;
    assert_eq!(cases.len(), 3);
    for case in cases {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn the_host_crypto_and_the_test_clock_pass_their_suites() {
    let app = TestApp::new().await;
    let cases = crypto_suite(app.ports.crypto.as_ref()).await;
    assert_eq!(cases.len(), 4);
    for case in cases
        .into_iter()
        .chain(clock_suite(app.ports.clock.as_ref()).await)
    {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn the_crypto_suite_fails_a_pbkdf2_that_is_not_pbkdf2() {
    struct Wrong;
    #[async_trait::async_trait(?Send)]
    impl everjust_core::ports::Crypto for Wrong {
        fn fill_random(&self, buf: &mut [u8]) {
            buf.fill(7);
        }
        async fn pbkdf2_sha256(&self, password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
            everjust_core::ports::crypto::pbkdf2_sha256_pure(password, salt, iterations + 1)
        }
    }
    let failed: Vec<&str> = crypto_suite(&Wrong)
        .await
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| c.name)
        .collect();
    assert_eq!(failed.len(), 4, "every case catches it: {failed:?}");
}

#[tokio::test]
async fn postgres_passes_the_sql_suite() {
    let app = TestApp::new().await;
    for case in sql_suite(app.ports.sql.as_ref(), "t").await {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn conformance_route_runs_both_suites_in_development() {
    let app = TestApp::new().await;
    let r = app.get("/v1/_conformance", None).await;
    assert_eq!(r.json()["ok"], true, "{}", r.json());
    let prod = TestApp::with_vars(&[("EVERJUST_ENV", "production")]).await;
    prod.get("/v1/_conformance", None)
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn migrations_rerun_applies_nothing() {
    let app = TestApp::new().await;
    let applied = apply(app.ports.sql.as_ref(), MIGRATIONS)
        .await
        .expect("apply");
    assert!(applied.is_empty());
}

#[test]
fn every_migration_file_is_embedded_in_order() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("migrations dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sql"))
        .map(|n| n.trim_end_matches(".sql").to_owned())
        .collect();
    files.sort();
    let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
    assert_eq!(files, embedded);
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version, i64::try_from(i).expect("small") + 1);
    }
}

/// A tiny HTTP/1.1 echo server on a free local port, serving what the
/// model fake's `/_fake/echo` routes serve (tests/fakes/anthropic.mjs).
/// Returns the base URL to give the suite.
async fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = echo(BufReader::new(stream)).await;
            });
        }
    });
    format!("http://{addr}/_fake/echo")
}

/// Reads a request or response head: the first line and the headers, names
/// in lower case.
async fn read_head(r: &mut BufReader<TcpStream>) -> io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    r.read_line(&mut first).await?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            return Ok((first.trim_end().to_owned(), headers));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| io::Error::other(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

async fn echo(mut conn: BufReader<TcpStream>) -> io::Result<()> {
    let (line, headers) = read_head(&mut conn).await?;
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let length = header(&headers, "content-length").map_or(Ok(0), str::parse::<usize>);
    let mut body = vec![0; length.map_err(io::Error::other)?];
    conn.read_exact(&mut body).await?;
    let what = target
        .split('?')
        .next()
        .and_then(|p| p.strip_prefix("/_fake/echo/"))
        .unwrap_or("");
    let out = conn.get_mut();
    let whole = |status: u16, extra: &str, body: &[u8]| {
        let mut res = format!(
            "HTTP/1.1 {status} Echo\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        res.extend_from_slice(body);
        res
    };
    let res = if what == "request" {
        let seen = json!({
            "method": method,
            "path": target,
            "header": header(&headers, "x-conformance"),
            "body_hex": body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        });
        whole(201, "x-echo: yes\r\n", seen.to_string().as_bytes())
    } else if let Some(code) = what.strip_prefix("status/") {
        whole(code.parse().unwrap_or(400), "", b"status")
    } else if what == "bytes" {
        whole(200, "", &(0..=255u8).collect::<Vec<_>>())
    } else if what == "stream" {
        out.write_all(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        )
        .await?;
        for i in 0..3 {
            if i > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            out.write_all(format!("8\r\nchunk {i}\n\r\n").as_bytes())
                .await?;
            out.flush().await?;
        }
        b"0\r\n\r\n".to_vec()
    } else {
        whole(404, "", b"no such echo route")
    };
    out.write_all(&res).await?;
    out.shutdown().await
}

/// How a response body is delimited on the wire.
enum Framing {
    Chunked,
    Length(usize),
    Close,
}

/// An `HttpClient` over `tokio::net::TcpStream` (plain `http://` only),
/// streaming a chunked body chunk by chunk as the platforms' clients do.
/// The flags break it the ways a platform adapter could be broken.
#[derive(Default)]
struct TcpHttp {
    /// Hands over a streamed body whole, as the port's buffering fallback does.
    buffer_streams: bool,
    /// Sends requests without their body.
    drop_bodies: bool,
    /// Turns 4xx and 5xx answers into errors.
    statuses_as_errors: bool,
}

fn io_err(e: io::Error) -> HttpError {
    HttpError(e.to_string())
}

impl TcpHttp {
    async fn start(&self, req: http::Request<Bytes>) -> Result<StreamingResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let uri = &parts.uri;
        if uri.scheme_str() != Some("http") {
            return Err(HttpError(format!("not plain http: {uri}")));
        }
        let host = uri
            .host()
            .ok_or_else(|| HttpError(format!("no host: {uri}")))?;
        let stream = TcpStream::connect((host, uri.port_u16().unwrap_or(80)))
            .await
            .map_err(io_err)?;
        let body = if self.drop_bodies { Bytes::new() } else { body };
        let mut head = format!(
            "{} {} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
            parts.method,
            uri.path_and_query().map_or("/", |p| p.as_str()),
            uri.authority().map_or(host, |a| a.as_str()),
            body.len()
        )
        .into_bytes();
        for (name, value) in &parts.headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(&body);
        let mut conn = BufReader::new(stream);
        conn.get_mut().write_all(&head).await.map_err(io_err)?;

        let (line, headers) = read_head(&mut conn).await.map_err(io_err)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| http::StatusCode::from_bytes(s.as_bytes()).ok())
            .ok_or_else(|| HttpError(format!("bad status line {line:?}")))?;
        if self.statuses_as_errors && (status.is_client_error() || status.is_server_error()) {
            return Err(HttpError(format!("status {status}")));
        }
        let mut header_map = http::HeaderMap::new();
        for (name, value) in &headers {
            header_map.append(
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| HttpError(e.to_string()))?,
                http::HeaderValue::from_str(value).map_err(|e| HttpError(e.to_string()))?,
            );
        }
        let framing = if header(&headers, "transfer-encoding") == Some("chunked") {
            Framing::Chunked
        } else if let Some(n) = header(&headers, "content-length") {
            Framing::Length(n.parse().map_err(|_| HttpError(format!("length {n}")))?)
        } else {
            Framing::Close
        };
        let body =
            futures_util::stream::try_unfold((conn, framing), |(mut conn, framing)| async move {
                let chunk = match framing {
                    Framing::Chunked => {
                        let mut size = String::new();
                        conn.read_line(&mut size).await.map_err(io_err)?;
                        let size = usize::from_str_radix(size.trim(), 16)
                            .map_err(|_| HttpError(format!("chunk size {size:?}")))?;
                        let mut chunk = vec![0; size + 2];
                        conn.read_exact(&mut chunk).await.map_err(io_err)?;
                        chunk.truncate(size);
                        chunk
                    }
                    Framing::Length(n) => {
                        let mut chunk = vec![0; n];
                        conn.read_exact(&mut chunk).await.map_err(io_err)?;
                        chunk
                    }
                    Framing::Close => {
                        let mut chunk = Vec::new();
                        conn.read_to_end(&mut chunk).await.map_err(io_err)?;
                        chunk
                    }
                };
                Ok(match framing {
                    _ if chunk.is_empty() => None,
                    Framing::Chunked => Some((Bytes::from(chunk), (conn, Framing::Chunked))),
                    Framing::Length(_) | Framing::Close => {
                        Some((Bytes::from(chunk), (conn, Framing::Length(0))))
                    }
                })
            })
            .boxed_local();
        Ok(StreamingResponse {
            status,
            headers: header_map,
            body,
        })
    }
}

#[async_trait::async_trait(?Send)]
impl HttpClient for TcpHttp {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let res = self.start(req).await?;
        let body: Vec<Bytes> = res.body.try_collect().await?;
        let mut out = http::Response::new(Bytes::from(body.concat()));
        *out.status_mut() = res.status;
        *out.headers_mut() = res.headers;
        Ok(out)
    }

    async fn send_streaming(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<StreamingResponse, HttpError> {
        if !self.buffer_streams {
            return self.start(req).await;
        }
        let (parts, body) = self.send(req).await?.into_parts();
        Ok(StreamingResponse {
            status: parts.status,
            headers: parts.headers,
            body: futures_util::stream::once(async move { Ok(body) }).boxed_local(),
        })
    }
}

fn failed(cases: Vec<Case>) -> Vec<&'static str> {
    cases
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| c.name)
        .collect()
}

#[tokio::test]
async fn an_http_client_over_tcp_passes_the_http_suite() {
    let echo = echo_server().await;
    let cases = http_suite(&TcpHttp::default(), &echo).await;
    assert_eq!(cases.len(), 5);
    for case in cases {
        assert!(case.ok, "{}: {}", case.name, case.detail);
    }
}

#[tokio::test]
async fn the_http_suite_fails_clients_that_buffer_streams_drop_bodies_or_refuse_error_statuses() {
    let echo = echo_server().await;
    for (broken, case) in [
        (
            TcpHttp {
                buffer_streams: true,
                ..TcpHttp::default()
            },
            "streamed_bodies_arrive_as_sent",
        ),
        (
            TcpHttp {
                drop_bodies: true,
                ..TcpHttp::default()
            },
            "request_and_answer_arrive_exactly",
        ),
        (
            TcpHttp {
                statuses_as_errors: true,
                ..TcpHttp::default()
            },
            "error_statuses_are_answers",
        ),
    ] {
        assert_eq!(failed(http_suite(&broken, &echo).await), [case]);
    }
}

#[tokio::test]
async fn conformance_route_runs_the_http_suite_only_when_given_an_echo_server() {
    let app = TestApp::build(&[], Rc::new(TcpHttp::default())).await;
    let without = app.get("/v1/_conformance", None).await.json();
    assert!(without.get("http").is_none(), "{without}");
    let echo = echo_server().await;
    let with = app
        .get(&format!("/v1/_conformance?http={echo}"), None)
        .await
        .json();
    assert_eq!(with["ok"], true, "{with}");
    assert_eq!(with["http"].as_array().map(Vec::len), Some(5), "{with}");
    let broken = TcpHttp {
        drop_bodies: true,
        ..TcpHttp::default()
    };
    let app = TestApp::build(&[], Rc::new(broken)).await;
    let with = app
        .get(&format!("/v1/_conformance?http={echo}"), None)
        .await
        .json();
    assert_eq!(
        with["ok"], false,
        "a failing http case fails the answer: {with}"
    );
}
