//! Server-sent events, parsed incrementally from the bytes of a response.
//!
//! Follows the HTML living standard's event-stream rules: lines end with
//! `\n`, `\r\n` or `\r`; a blank line ends an event; `data:` lines of one
//! event are joined with `\n`; one space after the colon is dropped; lines
//! starting with `:` are comments (keep-alives). Bytes may arrive split
//! anywhere — mid-line, mid-UTF-8 sequence, between `\r` and `\n` — and the
//! parser keeps what it has not finished until the next push.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the event has one (OpenAI servers send none).
    pub event: Option<String>,
    /// The event's `data:` lines, joined with `\n`.
    pub data: String,
}

/// Incremental event-stream parser: push bytes as they arrive, collect the
/// events they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last byte pushed was a `\r`: a `\n` right after it is part of
    /// the same line ending.
    after_cr: bool,
    /// `data:` lines of the event being read.
    data: Vec<String>,
    /// `event:` field of the event being read.
    event: Option<String>,
}

impl SseParser {
    /// An empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `bytes` and appends every event they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some((b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let ending = rest[pos];
            rest = &rest[pos + 1..];
            if ending == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.end_line(&line) {
                out.push(event);
            }
        }
        self.line.extend_from_slice(rest);
    }

    /// Ends the stream: returns the event still being read, if any (a server
    /// that closes without a final blank line loses nothing).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.line);
        self.after_cr = false;
        if !line.is_empty() {
            if let Some(event) = self.end_line(&line) {
                return Some(event);
            }
        }
        self.dispatch()
    }

    /// Handles one complete line; a blank line may complete an event.
    fn end_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match field {
            b"data" => self.data.push(value),
            b"event" => self.event = Some(value),
            // `id:` and `retry:` only matter to reconnecting clients.
            _ => {}
        }
        None
    }

    /// Completes the current event; none when it has no `data:` line.
    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if self.data.is_empty() {
            return None;
        }
        let data = std::mem::take(&mut self.data).join("\n");
        Some(SseEvent { event, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(pieces: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for piece in pieces {
            p.push(piece, &mut out);
        }
        out.extend(p.finish());
        out
    }

    fn data(s: &str) -> SseEvent {
        SseEvent {
            event: None,
            data: s.to_string(),
        }
    }

    const STREAM: &str = "data: {\"choices\":[{\"text\":\"h\u{e9}\"}]}\n\n\
                          : keep-alive\n\n\
                          data: {\"choices\":[],\n\
                          data: \"usage\":{\"completion_tokens\":1}}\r\n\r\n\
                          data: [DONE]\r\r";

    fn expected() -> Vec<SseEvent> {
        vec![
            data("{\"choices\":[{\"text\":\"h\u{e9}\"}]}"),
            data("{\"choices\":[],\n\"usage\":{\"completion_tokens\":1}}"),
            data("[DONE]"),
        ]
    }

    #[test]
    fn whole_stream_at_once() {
        assert_eq!(parse_in_pieces(&[STREAM.as_bytes()]), expected());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        // Covers splits mid-line, inside the two-byte 'é', and between the
        // `\r` and `\n` of a CRLF.
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(parse_in_pieces(&[a, b]), expected(), "cut at {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let pieces: Vec<&[u8]> = STREAM.as_bytes().chunks(1).collect();
        assert_eq!(parse_in_pieces(&pieces), expected());
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let out = parse_in_pieces(&[b"data: {\"a\":\ndata:1}\n\n"]);
        assert_eq!(out, vec![data("{\"a\":\n1}")]);
        let v: serde_json::Value = serde_json::from_str(&out[0].data).unwrap();
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn event_field_comments_and_unknown_fields() {
        let out = parse_in_pieces(&[b": ping\n\nid: 3\nretry: 10\nevent: error\ndata: x\n\n\n\n"]);
        assert_eq!(
            out,
            vec![SseEvent {
                event: Some("error".into()),
                data: "x".into()
            }]
        );
    }

    #[test]
    fn error_event_is_an_ordinary_data_event() {
        let out = parse_in_pieces(&[
            b"data: {\"error\": {\"message\": \"boom\"}}\n\n",
            b"data: [DONE]\n\n",
        ]);
        assert_eq!(
            out,
            vec![data("{\"error\": {\"message\": \"boom\"}}"), data("[DONE]")]
        );
    }

    #[test]
    fn unterminated_last_event_is_flushed_by_finish() {
        assert_eq!(parse_in_pieces(&[b"data: [DONE]"]), vec![data("[DONE]")]);
        assert_eq!(parse_in_pieces(&[b"data: [DONE]\n"]), vec![data("[DONE]")]);
        assert_eq!(parse_in_pieces(&[b": only a comment"]), vec![]);
    }

    #[test]
    fn empty_data_line_still_makes_an_event() {
        assert_eq!(parse_in_pieces(&[b"data\n\n"]), vec![data("")]);
        assert_eq!(parse_in_pieces(&[b"event: x\n\n"]), vec![]);
    }
}
