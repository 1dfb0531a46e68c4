//! Fuzzes the HEPv3 decoder (`decode`, `frame_len`) and feeds every decoded payload to the SIP
//! scanner (and, for requests, to the identity rules the HEP observer applies), as the HEP
//! listener does.
//!
//! Invariants checked (beyond "never panics, never hangs, never leaks"):
//! - `frame_len` returning `Some(n)` means `6 <= n <= data.len()`;
//! - `decode` succeeds only where `frame_len` found a whole packet, and returns a non-empty
//!   payload.

#![no_main]

use libfuzzer_sys::fuzz_target;
use screenpop::telephony::hep::decode::{decode, frame_len};
use screenpop::telephony::sip::identity;
use screenpop::telephony::sip::scan::{self, StartLine, Transport};

fuzz_target!(|data: &[u8]| {
    let framed = frame_len(data);
    if let Ok(Some(n)) = framed {
        assert!(
            (6..=data.len()).contains(&n),
            "frame_len {n} outside a {}-byte buffer",
            data.len()
        );
    }
    if let Ok(packet) = decode(data) {
        assert!(
            matches!(framed, Ok(Some(_))),
            "decode succeeded where frame_len said {framed:?}"
        );
        assert!(
            !packet.payload.is_empty(),
            "decode returned an empty payload"
        );
        for transport in [Transport::Datagram, Transport::Stream] {
            if let Ok(msg) = scan::scan(&packet.payload, transport) {
                for field in msg.fields() {
                    std::hint::black_box(field);
                }
                // What the HEP observer reads from an observed INVITE.
                if let StartLine::Request { uri, .. } = msg.start {
                    std::hint::black_box(identity::caller(&msg));
                    std::hint::black_box(identity::dialled(&msg));
                    std::hint::black_box(identity::Target::of(&msg, uri));
                }
            }
        }
        let _ = std::hint::black_box(scan::frame(&packet.payload));
    }
});
