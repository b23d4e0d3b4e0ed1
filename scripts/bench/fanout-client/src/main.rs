//! The WebSocket clients of `scripts/bench-chat`'s fan-out figure.
//!
//! Reads WebSocket URLs from stdin (one per line, until end of input),
//! connects them in order, prints `ready` once every socket is open, then
//! notes when each text delta `w<k> ` of the room's answer arrives at each
//! socket. Each socket has a thread of its own that blocks on it, so an
//! arrival is timed when the kernel hands it over, not when a shared event
//! loop gets to it (one Node process reading 100 sockets measured mostly
//! itself: its own p99 was 24-43 ms against a plain `ws` relay). Ends when
//! every socket has `DELTAS` deltas or after `TIMEOUT_MS`, printing one JSON
//! line: `{"arrivals": [[[k, unix_ms], ...] per socket]}`.
//!
//! Usage: `everjust-fanout-client DELTAS TIMEOUT_MS < urls`

use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tungstenite::{Message, WebSocket};

#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(default)]
    delta: Option<&'a str>,
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The delta's index when it is one of the benchmark's `w<k> ` deltas.
fn delta_index(text: &str) -> Option<usize> {
    let frame: Frame = serde_json::from_str(text).ok()?;
    if frame.kind != "text_delta" {
        return None;
    }
    frame
        .delta?
        .strip_prefix('w')?
        .strip_suffix(' ')?
        .parse()
        .ok()
}

fn connect(url: &str) -> Result<WebSocket<TcpStream>, String> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("not a ws:// URL: {url}"))?;
    let stream = TcpStream::connect(authority).map_err(|e| format!("{authority}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (socket, _) = tungstenite::client(url, stream).map_err(|e| format!("{url}: {e}"))?;
    Ok(socket)
}

/// Reads one socket until it has `deltas` deltas or `deadline` passes.
fn listen(mut socket: WebSocket<TcpStream>, deltas: usize, deadline: Instant) -> Vec<(usize, f64)> {
    let mut seen = vec![false; deltas];
    let mut arrivals = Vec::with_capacity(deltas);
    while arrivals.len() < deltas {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.get_ref().set_read_timeout(Some(left)).is_err() {
            break;
        }
        let message = match socket.read() {
            Ok(m) => m,
            Err(_) => break,
        };
        let at = unix_ms();
        if let Message::Text(text) = message {
            if let Some(k) = delta_index(text.as_str()).filter(|k| *k < deltas) {
                if !seen[k] {
                    seen[k] = true;
                    arrivals.push((k, at));
                }
            }
        }
    }
    let _ = socket.close(None);
    arrivals
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(deltas), Some(timeout_ms)) = (
        args.first().and_then(|a| a.parse::<usize>().ok()),
        args.get(1).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: everjust-fanout-client DELTAS TIMEOUT_MS < urls");
        std::process::exit(2);
    };
    let urls: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .collect();
    // Each socket is read from the moment it is open (the room's replay and
    // presence frames would queue up otherwise).
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut threads = Vec::with_capacity(urls.len());
    for url in &urls {
        match connect(url.trim()) {
            Ok(s) => threads.push(std::thread::spawn(move || listen(s, deltas, deadline))),
            Err(e) => {
                eprintln!("connect: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let arrivals: Vec<Vec<(usize, f64)>> = threads
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect();
    match serde_json::to_string(&serde_json::json!({ "arrivals": arrivals })) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("output: {e}");
            std::process::exit(1);
        }
    }
}
