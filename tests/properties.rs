//! Property tests for the two parsers that take network input: the SIP scanner (with everything
//! layered on it) and the HEP decoder. Arbitrary bytes and mutations of real messages must never
//! panic; framing must not depend on how a stream is split. The coverage-guided fuzz targets in
//! `fuzz/` explore further; these run in every CI build.

use std::net::SocketAddr;

use proptest::prelude::*;
use screenpop::telephony::hep;
use screenpop::telephony::sip::reply::{self, Reply};
use screenpop::telephony::sip::scan::{Frame, StartLine, Transport, frame, scan};
use screenpop::telephony::sip::{check, identity};

fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(load_seeds)
}

fn load_seeds() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut out = Vec::new();
    for dir in ["torture/rfc4475", "torture/rfc5118", "corpus/pbx"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("dir").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "dat" || e == "sip") {
                out.push(std::fs::read(path).expect("read"));
            }
        }
    }
    out.sort();
    out
}

/// Everything the daemon does with a message from the network, minus the sockets.
fn exercise(bytes: &[u8]) {
    let source: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
    for transport in [Transport::Datagram, Transport::Stream] {
        let Ok(msg) = scan(bytes, transport) else {
            continue;
        };
        let _ = msg.fields().count();
        if let StartLine::Request { uri, .. } = msg.start {
            let _ = check::request(&msg);
            let _ = identity::caller(&msg);
            let _ = identity::dialled(&msg);
            let _ = identity::Target::of(&msg, uri).extension(|_| false);
            let out = reply::build(
                &msg,
                source,
                Reply {
                    code: 400,
                    reason: "Bad Request",
                    to_tag: Some("t"),
                    extra: &[],
                },
            );
            assert!(out.starts_with(b"SIP/2.0 400 ") && out.ends_with(b"\r\n\r\n"));
            let fin = reply::finalize(&out, 487, "Request Terminated", "x");
            assert!(fin.starts_with(b"SIP/2.0 487 ") && fin.ends_with(b"\r\n\r\n"));
        }
    }
    if let Ok(Frame::Message(n)) = frame(bytes) {
        assert!(n <= bytes.len());
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let special = prop::sample::select(vec![
        b"\r\n".to_vec(),
        b"\n".to_vec(),
        b" ".to_vec(),
        b"\"".to_vec(),
        b"\\".to_vec(),
        b"<".to_vec(),
        b">".to_vec(),
        b",".to_vec(),
        b";".to_vec(),
        b":".to_vec(),
        b"@".to_vec(),
        b"%".to_vec(),
        b"[".to_vec(),
        b"]".to_vec(),
        b"\r\n ".to_vec(),
        b"Content-Length: 99999\r\n".to_vec(),
        b"l: -1\r\n".to_vec(),
        vec![0xff, 0xfe],
    ]);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Cut),
        (any::<usize>(), special).prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Remove(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match e {
            Edit::Flip(i, b) => bytes[i % len] = *b,
            Edit::Cut(i) => bytes.truncate(i % len),
            Edit::Insert(i, s) => {
                let at = i % len;
                bytes.splice(at..at, s.iter().copied());
            }
            Edit::Remove(i, n) => {
                let at = i % len;
                let end = (at + n).min(len);
                bytes.drain(at..end);
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&bytes);
        let _ = hep::decode(&bytes);
        let _ = hep::decode::frame_len(&bytes);
    }

    #[test]
    fn mutated_real_messages_never_panic(seed in any::<prop::sample::Index>(), edits in prop::collection::vec(edit(), 1..8)) {
        let seeds = seeds();
        let bytes = apply(seed.get(seeds).clone(), &edits);
        exercise(&bytes);
        let packet = hep::encode("10.0.0.1:5060".parse().expect("a"), "10.0.0.2:5060".parse().expect("a"), (1, 2), 3, None, &bytes);
        if !bytes.is_empty() && packet.len() <= usize::from(u16::MAX) {
            let mutated = apply(packet, &edits);
            let _ = hep::decode(&mutated);
        }
    }

    #[test]
    fn stream_framing_does_not_depend_on_the_split(split in any::<prop::sample::Index>(), body in "[a-z0-9=\\r\\n ]{0,200}") {
        let one = format!("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nCall-ID: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let two = format!("{one}{one}");
        // The whole stream frames the first message exactly.
        prop_assert_eq!(frame(two.as_bytes()), Ok(Frame::Message(one.len())));
        // Any prefix shorter than one message is incomplete, never an error or a wrong frame.
        let cut = split.index(one.len());
        prop_assert_eq!(frame(&one.as_bytes()[..cut]), Ok(Frame::Incomplete));
    }

    #[test]
    fn hep_round_trip(payload in prop::collection::vec(any::<u8>(), 1..4000), v6 in any::<bool>(), key in prop::option::of("[a-z]{1,12}")) {
        let (src, dst): (SocketAddr, SocketAddr) = if v6 {
            ("[2001:db8::1]:5060".parse().expect("a"), "[2001:db8::2]:5080".parse().expect("a"))
        } else {
            ("192.0.2.1:5060".parse().expect("a"), "192.0.2.2:5080".parse().expect("a"))
        };
        let packet = hep::encode(src, dst, (7, 8), 9, key.as_deref().map(str::as_bytes), &payload);
        let decoded = hep::decode(&packet).expect("own packets decode");
        prop_assert_eq!(&*decoded.payload, &payload[..]);
        prop_assert_eq!((decoded.src, decoded.dst, decoded.capture_id), (Some(src), Some(dst), Some(9)));
        prop_assert_eq!(decoded.auth_key, key.as_deref().map(str::as_bytes));
    }
}
