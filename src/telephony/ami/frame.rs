//! AMI framing: `Key: Value` lines, an empty line ending each message
//! [asterisk `configs/samples/manager.conf.sample`; PROTOCOLS.md §3 "Framing"].
//!
//! Lines end in CRLF or a bare LF (`CoreShowChannelMap` ends CRLF LF on 18.19+/20.4+,
//! asterisk/asterisk#761). Keys may repeat and are kept in order. A line without a colon, an empty
//! key, or a line longer than [`MAX_LINE`] is garbage: skipped and counted, and the stream goes
//! on. Memory is bounded: at most [`MAX_LINE`] bytes of an unfinished line and
//! [`MAX_FIELDS`] fields per message are held.

use bytes::BytesMut;

/// Longest line kept; longer ones are skipped to their end.
pub const MAX_LINE: usize = 8 * 1024;
/// Most fields kept per message; the rest are dropped (and counted as garbage once).
pub const MAX_FIELDS: usize = 256;

/// One AMI message (an event or a response).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The fields in wire order.
    pub fields: Vec<(String, String)>,
}

impl Message {
    /// The first value of `key` (AMI keys compare case-insensitively).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// `Event`, if this is one.
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// `Response`, if this is one.
    pub fn response(&self) -> Option<&str> {
        self.get("Response")
    }

    /// Renders an action (or, in tests, an event) in wire form: CRLF lines, blank line.
    pub fn render(fields: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for (k, v) in fields {
            out.push_str(k);
            out.push_str(": ");
            // A CR or LF in a value would inject a field; configuration values never need one.
            out.extend(v.chars().filter(|c| *c != '\r' && *c != '\n'));
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out
    }
}

/// What the framer produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A complete message.
    Message(Message),
    /// A line that was skipped.
    Garbage,
}

/// Splits a byte stream into messages.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
    current: Message,
    /// Inside an over-long line: drop bytes until the next LF.
    skipping: bool,
    /// The current message already lost fields to [`MAX_FIELDS`].
    truncated: bool,
}

impl Framer {
    /// An empty framer.
    pub fn new() -> Self {
        Framer::default()
    }

    /// The buffer to read into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Takes one line (without its end) if a whole one is buffered: the banner.
    pub fn line(&mut self) -> Option<String> {
        let end = memchr::memchr(b'\n', &self.buf)?;
        let line = self.buf.split_to(end + 1);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some(String::from_utf8_lossy(line).into_owned())
    }

    /// The next message or garbage line, if the buffer holds one.
    pub fn next_item(&mut self) -> Option<Item> {
        loop {
            let Some(end) = memchr::memchr(b'\n', &self.buf) else {
                if self.buf.len() > MAX_LINE {
                    self.buf.clear();
                    if !self.skipping {
                        self.skipping = true;
                        return Some(Item::Garbage);
                    }
                }
                return None;
            };
            let raw = self.buf.split_to(end + 1);
            if self.skipping {
                self.skipping = false;
                continue;
            }
            if raw.len() > MAX_LINE + 2 {
                return Some(Item::Garbage);
            }
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.current.fields.is_empty() {
                    continue; // stray blank lines between messages
                }
                self.truncated = false;
                return Some(Item::Message(std::mem::take(&mut self.current)));
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                return Some(Item::Garbage);
            };
            let (key, value) = (&line[..colon], &line[colon + 1..]);
            let key = String::from_utf8_lossy(key).trim().to_owned();
            if key.is_empty() || key.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Some(Item::Garbage);
            }
            if self.current.fields.len() >= MAX_FIELDS {
                if !self.truncated {
                    self.truncated = true;
                    return Some(Item::Garbage);
                }
                continue;
            }
            let value = value.strip_prefix(b" ").unwrap_or(value);
            let value = String::from_utf8_lossy(value).trim_end().to_owned();
            self.current.fields.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(chunks: &[&[u8]]) -> Vec<Item> {
        let mut f = Framer::new();
        let mut out = Vec::new();
        for chunk in chunks {
            f.buffer().extend_from_slice(chunk);
            while let Some(item) = f.next_item() {
                out.push(item);
            }
        }
        out
    }

    #[test]
    fn crlf_and_bare_lf_and_split_reads() {
        let wire: &[u8] = b"Event: Newstate\r\nChannel: PJSIP/2001-00000032\r\nChannelState: 5\r\n\r\nResponse: Success\nActionID: 7\nPing: Pong\n\n";
        for split in 0..wire.len() {
            let got = items(&[&wire[..split], &wire[split..]]);
            assert_eq!(got.len(), 2, "split at {split}");
            let Item::Message(m) = &got[0] else {
                panic!("message")
            };
            assert_eq!(m.event(), Some("Newstate"));
            assert_eq!(m.get("channelstate"), Some("5"));
            let Item::Message(m) = &got[1] else {
                panic!("message")
            };
            assert_eq!(m.get("Ping"), Some("Pong"));
        }
    }

    #[test]
    fn repeated_keys_kept_in_order_and_values_with_colons() {
        let got = items(&[b"Event: VarSet\r\nVariable: a\r\nVariable: b\r\nValue: x: y\r\n\r\n"]);
        let Item::Message(m) = &got[0] else {
            panic!("message")
        };
        let vars: Vec<_> = m
            .fields
            .iter()
            .filter(|(k, _)| k == "Variable")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(vars, ["a", "b"]);
        assert_eq!(m.get("Value"), Some("x: y"));
    }

    #[test]
    fn garbage_is_skipped_and_counted() {
        let mut long = vec![b'x'; MAX_LINE * 3];
        long.push(b'\n');
        let got = items(&[
            b"this is not a header\r\n: no key\r\n\x00\x01\xff\r\n",
            &long,
            b"Event: Hangup\r\nUniqueid: 1\r\n\r\n",
        ]);
        let garbage = got.iter().filter(|i| **i == Item::Garbage).count();
        assert_eq!(garbage, 4, "{got:?}");
        assert!(matches!(got.last(), Some(Item::Message(m)) if m.event() == Some("Hangup")));
    }

    #[test]
    fn banner_line_then_messages() {
        let mut f = Framer::new();
        f.buffer()
            .extend_from_slice(b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\n\r\n");
        assert_eq!(f.line().as_deref(), Some("Asterisk Call Manager/9.0.0"));
        assert!(matches!(f.next_item(), Some(Item::Message(_))));
    }

    #[test]
    fn render_strips_line_breaks() {
        assert_eq!(
            Message::render(&[("Action", "Login"), ("Secret", "a\r\nAction: x")]),
            "Action: Login\r\nSecret: aAction: x\r\n\r\n"
        );
    }
}
