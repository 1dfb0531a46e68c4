//! Property tests for the CTI parsers that take network input: the AMI and event-socket framers
//! and the mappers behind them. Arbitrary bytes, and the fixture transcripts with random edits,
//! fed in random splits, must never panic, and framing must not depend on the split.

use std::sync::Arc;

use proptest::prelude::*;
use screenpop::telephony::ami;
use screenpop::telephony::esl;

fn fixtures(dir: &str) -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(root)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "ami" || e == "esl" || e == "json")
        })
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    out.sort();
    out
}

fn known() -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
    Arc::new(|e: &str| e.len() == 4 && e.starts_with("100"))
}

/// Feeds `bytes` to the AMI framer and mapper in chunks cut at `cuts`; returns the messages.
fn ami_run(bytes: &[u8], cuts: &[usize]) -> Vec<ami::frame::Message> {
    let mut framer = ami::frame::Framer::new();
    let mut mapper = ami::Mapper::new("p", known());
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let cut = cut.clamp(at, bytes.len());
        framer.buffer().extend_from_slice(&bytes[at..cut]);
        at = cut;
        while let Some(item) = framer.next_item() {
            if let ami::frame::Item::Message(m) = item {
                mapper.apply(&m);
                mapper.resync_channel(&m);
                out.push(m);
            }
        }
    }
    mapper.begin_resync();
    mapper.finish_resync();
    out
}

fn esl_run(bytes: &[u8], cuts: &[usize]) -> Vec<esl::frame::Frame> {
    let mut framer = esl::frame::Framer::new();
    let mut mapper = esl::Mapper::new("f", known());
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let cut = cut.clamp(at, bytes.len());
        framer.buffer().extend_from_slice(&bytes[at..cut]);
        at = cut;
        while let Some(item) = framer.next_item() {
            if let esl::frame::Item::Frame(f) = item {
                if let Some(e) = esl::map::Event::parse(&f.body) {
                    mapper.apply(&e);
                }
                let _ = mapper.resync(&f.body);
                out.push(f);
            }
        }
    }
    let _ = mapper.resync(bytes);
    out
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, op, value) in edits {
        if bytes.is_empty() {
            bytes.push(value);
            continue;
        }
        let at = at % bytes.len();
        match op % 4 {
            0 => bytes[at] = value,
            1 => bytes.insert(at, value),
            2 => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096), cuts in prop::collection::vec(0usize..4096, 0..6)) {
        let mut cuts = cuts;
        cuts.sort();
        ami_run(&bytes, &cuts);
        esl_run(&bytes, &cuts);
    }

    #[test]
    fn mutated_transcripts_never_panic(seed in any::<prop::sample::Index>(), edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..12)) {
        let ami_seeds = fixtures("ami");
        let esl_seeds = fixtures("esl");
        let a = mutate(seed.get(&ami_seeds).clone(), &edits);
        ami_run(&a, &[a.len() / 3]);
        let e = mutate(seed.get(&esl_seeds).clone(), &edits);
        esl_run(&e, &[e.len() / 2]);
    }

    #[test]
    fn framing_does_not_depend_on_the_split(seed in any::<prop::sample::Index>(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let ami_seed = seed.get(&fixtures("ami")).clone();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(ami_seed.len() + 1)).collect();
        at.sort();
        prop_assert_eq!(ami_run(&ami_seed, &at), ami_run(&ami_seed, &[]));
        let esl_seed = seed.get(&fixtures("esl")).clone();
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(esl_seed.len() + 1)).collect();
        at.sort();
        prop_assert_eq!(esl_run(&esl_seed, &at), esl_run(&esl_seed, &[]));
    }
}
