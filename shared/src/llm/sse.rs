//! An incremental Server-Sent Events parser (WHATWG rules) for model
//! provider streams: bytes go in as they arrive, split anywhere; complete
//! events come out. Handles LF, CRLF and CR line ends, multi-line `data:`,
//! comments, and UTF-8 split across chunks (lines are decoded only once
//! complete, and a line break byte never occurs inside a UTF-8 sequence).

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// `event:` field; empty means the default `message`.
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// A CR ended the last line; a LF right after it belongs to that line end.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the events it completed. Lines are found a
    /// slice at a time; a line wholly inside the chunk is read in place, and
    /// only a line split across chunks is copied (into a buffer that keeps
    /// its capacity).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(&first) = rest.first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.buf.extend_from_slice(rest);
                break;
            };
            self.after_cr = rest[end] == b'\r';
            let ev = if self.buf.is_empty() {
                self.line(&rest[..end])
            } else {
                let mut line = std::mem::take(&mut self.buf);
                line.extend_from_slice(&rest[..end]);
                let ev = self.line(&line);
                line.clear();
                self.buf = line;
                ev
            };
            out.extend(ev);
            rest = &rest[end + 1..];
        }
        out
    }

    /// Ends the stream: a final event without its blank line is discarded,
    /// as the SSE spec says.
    pub fn finish(&mut self) {
        *self = Self::default();
    }

    fn line(&mut self, raw: &[u8]) -> Option<SseEvent> {
        if raw.is_empty() {
            if !self.has_data && self.event.is_empty() {
                return None;
            }
            let ev = SseEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data),
                id: self.id.clone(),
            };
            self.has_data = false;
            return Some(ev);
        }
        let line = String::from_utf8_lossy(raw);
        let line = line.strip_prefix('\u{feff}').unwrap_or(&line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = "event: message_start\r\ndata: {\"a\":1}\r\n\r\n: comment\n\nevent: delta\ndata: héllo 👋\ndata: second line\n\nid: 7\rdata: cr only\r\rdata: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into(),
                id: None,
            },
            SseEvent {
                event: "delta".into(),
                data: "héllo 👋\nsecond line".into(),
                id: None,
            },
            SseEvent {
                event: String::new(),
                data: "cr only".into(),
                id: Some("7".into()),
            },
            SseEvent {
                event: String::new(),
                data: "[DONE]".into(),
                id: Some("7".into()),
            },
        ]
    }

    #[test]
    fn whole_stream_parses() {
        let mut p = SseParser::new();
        assert_eq!(p.push(STREAM.as_bytes()), expected());
    }

    #[test]
    fn byte_at_a_time_parses_the_same() {
        let mut p = SseParser::new();
        let got: Vec<_> = STREAM
            .as_bytes()
            .iter()
            .flat_map(|b| p.push(&[*b]))
            .collect();
        assert_eq!(got, expected());
    }

    #[test]
    fn unterminated_last_event_is_dropped() {
        let mut p = SseParser::new();
        assert!(p.push(b"data: partial").is_empty());
        p.finish();
        assert!(p.push(b"\n\n").is_empty());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
            let bytes = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut p = SseParser::new();
            let mut got = Vec::new();
            let mut start = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                got.extend(p.push(&bytes[start..c.max(start)]));
                start = c.max(start);
            }
            prop_assert_eq!(got, expected());
        }

        #[test]
        fn arbitrary_data_round_trips(lines in proptest::collection::vec("[^\r\n]{0,20}", 1..5), split in 0usize..200) {
            let mut text = String::new();
            for l in &lines {
                text.push_str("data: ");
                text.push_str(l);
                text.push('\n');
            }
            text.push('\n');
            let bytes = text.as_bytes();
            let at = split.min(bytes.len());
            let mut p = SseParser::new();
            let mut got = p.push(&bytes[..at]);
            got.extend(p.push(&bytes[at..]));
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(&got[0].data, &lines.join("\n"));
        }
    }
}
