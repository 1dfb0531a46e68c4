//! Event-socket framing: `Name: value` header lines (LF; CRLF accepted), a blank line, then
//! `Content-Length` bytes of body [mod_event_socket docs; PROTOCOLS.md §4].
//!
//! A header line without a colon is garbage (skipped, counted); so is a `Content-Length` that is
//! not a number. Bodies larger than [`MAX_BODY`] are skipped (counted) without being held.

use bytes::{Buf, Bytes, BytesMut};

/// Longest header line kept.
pub const MAX_LINE: usize = 8 * 1024;
/// Largest body held (an `api show calls as json` on a large switch is the biggest).
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Most headers kept per frame.
pub const MAX_HEADERS: usize = 128;

/// One frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// Headers in wire order.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes), empty without one.
    pub body: Bytes,
}

impl Frame {
    /// The first value of a header (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Content-Type`.
    pub fn content_type(&self) -> &str {
        self.get("Content-Type").unwrap_or_default()
    }
}

/// What the framer produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A frame.
    Frame(Frame),
    /// Something skipped.
    Garbage,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Headers,
    Body(usize),
    /// Discarding an oversized body or line.
    Skip(usize),
    SkipLine,
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct Framer {
    buf: BytesMut,
    current: Frame,
    state: State,
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

    /// The next frame or garbage, if buffered.
    pub fn next_item(&mut self) -> Option<Item> {
        loop {
            match self.state {
                State::Skip(n) => {
                    let take = n.min(self.buf.len());
                    self.buf.advance(take);
                    if take < n {
                        self.state = State::Skip(n - take);
                        return None;
                    }
                    self.state = State::Headers;
                }
                State::SkipLine => {
                    let Some(end) = memchr::memchr(b'\n', &self.buf) else {
                        self.buf.clear();
                        return None;
                    };
                    self.buf.advance(end + 1);
                    self.state = State::Headers;
                }
                State::Body(n) => {
                    if self.buf.len() < n {
                        return None;
                    }
                    self.current.body = self.buf.split_to(n).freeze();
                    self.state = State::Headers;
                    return Some(Item::Frame(std::mem::take(&mut self.current)));
                }
                State::Headers => {
                    let Some(end) = memchr::memchr(b'\n', &self.buf) else {
                        if self.buf.len() > MAX_LINE {
                            self.buf.clear();
                            self.state = State::SkipLine;
                            return Some(Item::Garbage);
                        }
                        return None;
                    };
                    let raw = self.buf.split_to(end + 1);
                    if raw.len() > MAX_LINE + 2 {
                        return Some(Item::Garbage);
                    }
                    let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.is_empty() {
                        if self.current.headers.is_empty() {
                            continue;
                        }
                        let length = self.current.get("Content-Length").map(str::trim);
                        match length.map(str::parse::<usize>) {
                            None | Some(Ok(0)) => {
                                return Some(Item::Frame(std::mem::take(&mut self.current)));
                            }
                            Some(Ok(n)) if n <= MAX_BODY => self.state = State::Body(n),
                            Some(Ok(n)) => {
                                self.current = Frame::default();
                                self.state = State::Skip(n);
                                return Some(Item::Garbage);
                            }
                            Some(Err(_)) => {
                                self.current = Frame::default();
                                return Some(Item::Garbage);
                            }
                        }
                        continue;
                    }
                    let Some(colon) = memchr::memchr(b':', line) else {
                        return Some(Item::Garbage);
                    };
                    let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
                    if name.is_empty() || self.current.headers.len() >= MAX_HEADERS {
                        return Some(Item::Garbage);
                    }
                    let value = String::from_utf8_lossy(&line[colon + 1..])
                        .trim()
                        .to_owned();
                    self.current.headers.push((name, value));
                }
            }
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
    fn headers_then_body_in_any_split() {
        let wire: &[u8] = b"Content-Type: auth/request\n\nContent-Length: 11\nContent-Type: text/event-json\n\n{\"a\":\"b c\"}Content-Type: command/reply\r\nReply-Text: +OK accepted\r\n\r\n";
        for split in 0..wire.len() {
            let got = items(&[&wire[..split], &wire[split..]]);
            assert_eq!(got.len(), 3, "split at {split}: {got:?}");
            let Item::Frame(f) = &got[1] else {
                panic!("frame")
            };
            assert_eq!(f.content_type(), "text/event-json");
            assert_eq!(&f.body[..], b"{\"a\":\"b c\"}");
            let Item::Frame(f) = &got[2] else {
                panic!("frame")
            };
            assert_eq!(f.get("reply-text"), Some("+OK accepted"));
        }
    }

    #[test]
    fn garbage_and_oversized_bodies_are_skipped() {
        let big = format!("Content-Length: {}\n\n", MAX_BODY + 10);
        let got = items(&[
            b"no colon here\n",
            b"Content-Length: many\n\n",
            big.as_bytes(),
            &vec![b'x'; MAX_BODY + 10],
            b"Content-Type: text/event-json\nContent-Length: 2\n\n{}",
        ]);
        let garbage = got.iter().filter(|i| **i == Item::Garbage).count();
        assert_eq!(garbage, 3, "{got:?}");
        assert!(matches!(got.last(), Some(Item::Frame(f)) if &f.body[..] == b"{}"));
    }
}
