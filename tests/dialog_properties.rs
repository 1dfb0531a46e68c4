//! Property tests for the dialog-event intake, which takes network input twice: the
//! dialog-info XML of each NOTIFY, and the SIP datagrams around it. Arbitrary bytes and the
//! fixtures in `tests/fixtures/dialog/` with random edits must never panic the parser, the
//! mapper or the subscriber, and whatever the parser accepts stays within its bounds.

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use screenpop::telephony::cti::Secret;
use screenpop::telephony::dialog::Mapper;
use screenpop::telephony::dialog::info::{self, MAX_DIALOGS, MAX_TEXT};
use screenpop::telephony::dialog::subscriber::{Output, Subscriber, SubscriptionSettings};
use tokio::time::Instant;

fn fixtures() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dialog");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(root)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    out.sort();
    assert!(out.len() >= 5, "the fixtures are there");
    out
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, value) in edits {
        if bytes.is_empty() {
            bytes.push(value);
            continue;
        }
        let at = at % bytes.len();
        match op % 5 {
            0 => bytes[at] = value,
            1 => bytes.insert(at, value),
            2 => {
                bytes.remove(at);
            }
            3 => {
                // Duplicate a slice: repeated elements, unbalanced tags.
                let end = (at + usize::from(value)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// Parses and maps a body; checks the parser's bounds on what it accepts.
fn parse_and_map(body: &[u8]) {
    if let Ok(doc) = info::parse(body) {
        assert!(doc.dialogs.len() <= MAX_DIALOGS);
        for d in &doc.dialogs {
            for text in [
                Some(&d.id),
                d.call_id.as_ref(),
                d.remote_identity.as_ref(),
                d.remote_display.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                assert!(text.len() <= MAX_TEXT);
            }
        }
        let mut mapper = Mapper::new("p");
        mapper.apply("1001", &doc);
        mapper.apply("1002", &doc);
        mapper.apply("1001", &doc);
    }
}

fn settings() -> SubscriptionSettings {
    SubscriptionSettings {
        name: "p".into(),
        domain: "pbx.test".into(),
        username: "screenpop".into(),
        password: Secret::new("pw"),
        extensions: vec!["1001".into()],
        expires: Duration::from_secs(60),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_secs(1),
        contact: "127.0.0.1:5070".parse().expect("addr"),
        pbx: "127.0.0.1:5060".parse().expect("addr"),
    }
}

/// A subscriber whose subscription matches the NOTIFYs built by [`notify`].
fn subscriber() -> (Subscriber, String, String) {
    let mut s = Subscriber::new(settings(), Instant::now());
    let sent = s.take();
    let Some(Output::Send { bytes, .. }) = sent.first() else {
        panic!("a SUBSCRIBE")
    };
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .expect("header")
    };
    (s, header("Call-ID:"), header("From:"))
}

fn notify(call_id: &str, from: &str, cseq: u32, body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "NOTIFY sip:screenpop@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{cseq}\r\n\
         From: <sip:1001@pbx.test>;tag=p\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\n\
         Event: dialog\r\nSubscription-State: active;expires=60\r\nContent-Type: application/dialog-info+xml\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(body);
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        parse_and_map(&bytes);
        let (mut s, _, _) = subscriber();
        let pbx: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        s.on_datagram(&bytes, pbx, Instant::now());
    }

    #[test]
    fn mutated_documents_never_panic(seed in any::<prop::sample::Index>(), edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..16)) {
        let seeds = fixtures();
        let body = mutate(seed.get(&seeds).clone(), &edits);
        parse_and_map(&body);
        // The same body through a live subscription: answered, mapped, never a panic.
        let (mut s, call_id, from) = subscriber();
        let pbx: SocketAddr = "127.0.0.1:5060".parse().expect("addr");
        let now = Instant::now();
        let original: &Vec<u8> = seed.get(&seeds);
        s.on_datagram(&notify(&call_id, &from, 1, original), pbx, now);
        s.on_datagram(&notify(&call_id, &from, 2, &body), pbx, now);
        let answered = s.take().iter().filter(|o| matches!(o, Output::Send { bytes, .. } if bytes.starts_with(b"SIP/2.0 200"))).count();
        prop_assert_eq!(answered, 2, "every NOTIFY of the subscription is answered 200");
        // And the whole datagram mutated.
        let datagram = mutate(notify(&call_id, &from, 3, &body), &edits);
        s.on_datagram(&datagram, pbx, now);
        s.on_timer(now + Duration::from_secs(600));
    }

    #[test]
    fn repeated_dialogs_and_deep_nesting_are_bounded(n in 0usize..400, depth in 0usize..64) {
        let dialogs = "<dialog id='d' call-id='c' direction='recipient'><state>early</state></dialog>".repeat(n);
        let nest = format!("{}{}", "<x:a xmlns:x='urn:x'>".repeat(depth), "</x:a>".repeat(depth));
        let doc = format!("<dialog-info version='1' state='full'>{dialogs}<dialog id='e'>{nest}<state>early</state></dialog></dialog-info>");
        let parsed = info::parse(doc.as_bytes());
        if n + 1 > MAX_DIALOGS || depth + 2 > info::MAX_DEPTH {
            prop_assert!(parsed.is_err());
        } else {
            prop_assert!(parsed.is_ok(), "{parsed:?}");
        }
    }
}
