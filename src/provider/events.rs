//! Splits a provider's Server-Sent Events stream into events, for the translating providers
//! (the `Sse` layer above forwards bytes as they are and never needs this).

use super::dialect::StreamError;

/// An event larger than this ends the stream as failed: no chat event comes near it, and an
/// upstream that never ends an event must not grow our memory.
const MAX_EVENT: usize = 8 * 1024 * 1024;

/// An incremental parser of the `text/event-stream` format (WHATWG HTML, "Server-sent
/// events"): any of `\n`, `\r\n` or `\r` ends a line, a blank line ends an event, `data:`
/// lines are joined with `\n`, comments (`:`) and `id:`/`retry:` are ignored.
#[derive(Debug, Default)]
pub(crate) struct EventSplitter {
    /// The start of a line whose end has not arrived.
    line: Vec<u8>,
    /// The last byte seen was `\r`: a `\n` right after it belongs to the same line ending.
    pending_cr: bool,
    name: String,
    data: Vec<u8>,
    has_data: bool,
}

impl EventSplitter {
    /// Feeds the next bytes of the stream; `on_event(name, data)` is called for each event
    /// they complete, in order.
    pub(crate) fn feed(
        &mut self,
        mut chunk: &[u8],
        on_event: &mut impl FnMut(&str, &[u8]) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        // An empty chunk (HTTP/2 allows empty DATA frames) says nothing about the byte after a
        // `\r`: the pending `\r` waits for the next byte.
        if self.pending_cr && !chunk.is_empty() {
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
            self.pending_cr = false;
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) {
            let is_cr = chunk.get(end) == Some(&b'\r');
            let (head, rest) = chunk.split_at(end);
            let mut rest = rest.get(1..).unwrap_or_default();
            if is_cr {
                match rest.first() {
                    Some(b'\n') => rest = rest.get(1..).unwrap_or_default(),
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            if self.line.is_empty() {
                self.process_line(head, on_event)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                let result = self.process_line(&line, on_event);
                line.clear();
                self.line = line;
                result?;
            }
            chunk = rest;
        }
        if self.line.len() + chunk.len() + self.data.len() > MAX_EVENT {
            return Err(StreamError("an upstream event is too large".into()));
        }
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    /// The stream ended: an event whose blank line never came is still dispatched (providers
    /// that close right after their last `data:` line).
    pub(crate) fn finish(
        &mut self,
        on_event: &mut impl FnMut(&str, &[u8]) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, on_event)?;
        }
        self.process_line(b"", on_event)
    }

    fn process_line(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(&str, &[u8]) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        if line.is_empty() {
            if self.has_data {
                let result = on_event(&self.name, &self.data);
                self.data.clear();
                self.has_data = false;
                self.name.clear();
                return result;
            }
            self.name.clear();
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => return Ok(()),
            Some(colon) => {
                let value = line.get(colon + 1..).unwrap_or_default();
                let (field, _) = line.split_at(colon);
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() > MAX_EVENT {
                    return Err(StreamError("an upstream event is too large".into()));
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.name.clear();
                self.name.push_str(&String::from_utf8_lossy(value));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut splitter = EventSplitter::default();
        let mut events = Vec::new();
        let mut on_event = |name: &str, data: &[u8]| {
            events.push((name.to_owned(), String::from_utf8(data.to_vec()).unwrap()));
            Ok(())
        };
        for chunk in chunks {
            splitter.feed(chunk, &mut on_event).unwrap();
        }
        splitter.finish(&mut on_event).unwrap();
        events
    }

    #[test]
    fn events_split_at_any_line_ending_and_across_chunks() {
        let whole = b"event: a\ndata: 1\n\n: comment\r\nevent: b\r\ndata: x\r\ndata:y\r\n\r\ndata: last\r\rdata: z";
        let expected = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "x\ny".to_owned()),
            (String::new(), "last".to_owned()),
            (String::new(), "z".to_owned()),
        ];
        assert_eq!(split(&[whole]), expected);
        // Every split point, including between `\r` and `\n`.
        for at in 0..whole.len() {
            let (a, b) = whole.split_at(at);
            assert_eq!(split(&[a, b]), expected, "split at {at}");
        }
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(split(&bytes), expected);
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_is_one_line_ending() {
        let expected = vec![(String::new(), "a\nb".to_owned())];
        assert_eq!(split(&[b"data: a\r", b"", b"\ndata: b\n\n"]), expected);
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert!(split(&[b"event: ping\n\nid: 4\nretry: 5\n\n"]).is_empty());
    }

    #[test]
    fn an_endless_event_is_an_error_not_memory() {
        let mut splitter = EventSplitter::default();
        let mut on_event = |_: &str, _: &[u8]| Ok(());
        let chunk = vec![b'x'; 1024 * 1024];
        let mut failed = false;
        for _ in 0..10 {
            if splitter.feed(&chunk, &mut on_event).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn a_callback_error_stops_the_feed() {
        let mut splitter = EventSplitter::default();
        let mut on_event = |_: &str, _: &[u8]| Err(StreamError("bad".into()));
        assert!(splitter.feed(b"data: 1\n\n", &mut on_event).is_err());
    }
}
