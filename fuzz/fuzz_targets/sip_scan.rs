//! Fuzzes the SIP scanner and everything that reads a scanned request from the network:
//! `scan` (datagram, TCP stream and TLS stream), `frame`, `check::request`, `identity::caller`, `dialled` and
//! `Target::of`, `Message::fields` and `reply::build`.
//!
//! Invariants checked (beyond "never panics, never hangs, never leaks"):
//! - `frame` returning `Frame::Message(n)` / `Frame::Skip { len, .. }` stays inside the buffer
//!   and is never empty (`0 < n <= data.len()`), or the TCP listener would spin;
//! - (a message cut by `frame` is scanned again on the stream transports, as the TCP and TLS
//!   listeners do: SIP over TLS is framed by the same `frame` once decrypted);
//! - a 400 built from any scanned request starts with `SIP/2.0 400 ` and ends with `\r\n\r\n`;
//! - feature `strict-reply` (on by default): every CR or LF in that reply is part of a CRLF, so
//!   nothing copied from the request can start a new line for a peer that splits on CR or LF
//!   alone.

#![no_main]

use libfuzzer_sys::fuzz_target;
use screenpop::telephony::sip::reply::{self, Reply};
use screenpop::telephony::sip::scan::{self, Frame, StartLine, Transport};
use screenpop::telephony::sip::{check, identity};

fn exercise(data: &[u8], transport: Transport) {
    let Ok(msg) = scan::scan(data, transport) else {
        return;
    };
    for field in msg.fields() {
        std::hint::black_box(field);
    }
    let StartLine::Request { uri, .. } = msg.start else {
        return;
    };
    let _ = std::hint::black_box(check::request(&msg));
    std::hint::black_box(identity::caller(&msg));
    std::hint::black_box(identity::dialled(&msg));
    let target = identity::Target::of(&msg, uri);
    std::hint::black_box(target.extension(|u| u.len() == 4));
    let out = reply::build(
        &msg,
        "127.0.0.1:5060".parse().unwrap(),
        Reply {
            code: 400,
            reason: "x",
            to_tag: Some("t"),
            extra: &[],
        },
    );
    assert!(
        out.starts_with(b"SIP/2.0 400 "),
        "reply does not start with the status line: {:?}",
        String::from_utf8_lossy(&out)
    );
    assert!(
        out.ends_with(b"\r\n\r\n"),
        "reply does not end with CRLFCRLF: {:?}",
        String::from_utf8_lossy(&out)
    );
    #[cfg(feature = "strict-reply")]
    for (i, &b) in out.iter().enumerate() {
        let bare = match b {
            b'\r' => out.get(i + 1) != Some(&b'\n'),
            b'\n' => i == 0 || out[i - 1] != b'\r',
            _ => false,
        };
        assert!(
            !bare,
            "reply has a bare {} at byte {i}: {:?}",
            if b == b'\r' { "CR" } else { "LF" },
            String::from_utf8_lossy(&out)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    exercise(data, Transport::Datagram);
    exercise(data, Transport::Stream);
    exercise(data, Transport::Tls);
    match scan::frame(data) {
        Ok(Frame::Message(n)) => {
            // n == 0 would make the TCP listener loop forever on the same bytes.
            assert!(
                n > 0 && n <= data.len(),
                "Frame::Message({n}) outside a {}-byte buffer",
                data.len()
            );
            // A framed message is whole: scan it as the TCP and TLS listeners would.
            exercise(&data[..n], Transport::Stream);
            exercise(&data[..n], Transport::Tls);
        }
        Ok(Frame::Skip { len, .. }) => {
            assert!(
                len > 0 && len <= data.len(),
                "Frame::Skip({len}) outside a {}-byte buffer",
                data.len()
            );
        }
        Ok(Frame::Incomplete) | Err(_) => {}
    }
});
