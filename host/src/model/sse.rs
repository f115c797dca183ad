//! Server-sent events, decoded from a byte stream that arrives in arbitrary
//! pieces: lines are cut at `\n` (with an optional `\r`), `data:` lines of
//! one event are joined, and a blank line ends the event.

/// One event: its `event:` name (empty if none) and its joined `data:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Event {
    pub name: String,
    pub data: String,
}

/// The longest line accepted; a longer one means the body is not SSE.
pub(crate) const MAX_LINE: usize = 4 << 20;

#[derive(Debug, Default)]
pub(crate) struct Decoder {
    /// Bytes of the line not yet ended.
    partial: Vec<u8>,
    /// The event being built.
    current: Event,
    /// Whether the event has a `data:` line yet.
    has_data: bool,
}

impl Decoder {
    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, String> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
            self.partial.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            let mut line = std::mem::take(&mut self.partial);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line(&line, &mut events)?;
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE {
            return Err(format!(
                "sent a line longer than {} MiB, which is not an event stream",
                MAX_LINE >> 20
            ));
        }
        Ok(events)
    }

    /// The event left when the body ends without a blank line, if any.
    pub fn finish(&mut self) -> Result<Option<Event>, String> {
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, &mut events)?;
        }
        if self.has_data {
            self.has_data = false;
            events.push(std::mem::take(&mut self.current));
        }
        Ok(events.pop())
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<Event>) -> Result<(), String> {
        let line = std::str::from_utf8(line)
            .map_err(|_| "sent a line that is not valid UTF-8".to_string())?;
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                events.push(std::mem::take(&mut self.current));
            } else {
                self.current.name.clear();
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                if self.current.data.len() + value.len() > MAX_LINE {
                    return Err(format!("sent an event larger than {} MiB", MAX_LINE >> 20));
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.name = value.to_string(),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_are_joined() {
        let body = b"event: a\r\ndata: one\r\ndata: two\r\n\r\n: comment\n\ndata: {\"x\":1}\n\n";
        for cut in 0..body.len() {
            let mut decoder = Decoder::default();
            let mut events = decoder.feed(&body[..cut]).unwrap();
            events.extend(decoder.feed(&body[cut..]).unwrap());
            assert_eq!(decoder.finish().unwrap(), None);
            assert_eq!(
                events,
                [
                    Event {
                        name: "a".into(),
                        data: "one\ntwo".into()
                    },
                    Event {
                        name: String::new(),
                        data: "{\"x\":1}".into()
                    }
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_multibyte_character_split_over_chunks_survives_and_bad_utf8_is_an_error() {
        let body = "data: é中\n\n".as_bytes();
        let mut decoder = Decoder::default();
        let mut events = decoder.feed(&body[..8]).unwrap();
        events.extend(decoder.feed(&body[8..]).unwrap());
        assert_eq!(events[0].data, "é中");
        let mut decoder = Decoder::default();
        assert!(decoder.feed(b"data: \xff\n").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn an_unended_event_is_returned_by_finish_and_long_lines_are_refused() {
        let mut decoder = Decoder::default();
        assert!(decoder.feed(b"data: last").unwrap().is_empty());
        assert_eq!(decoder.finish().unwrap().unwrap().data, "last");
        let mut decoder = Decoder::default();
        let long = vec![b'a'; MAX_LINE + 1];
        assert!(decoder.feed(&long).unwrap_err().contains("longer than"));
    }
}
