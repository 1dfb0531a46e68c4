//! Profiling driver for the intake path (not a benchmark: see benches/).
//! Run with: `cargo run --release --example profile_scan -- FILE [ITERATIONS]`, under
//! `valgrind --tool=callgrind` or `perf record`.

use std::hint::black_box;

use screenpop::telephony::sip::scan::{StartLine, Transport, scan};
use screenpop::telephony::sip::{check, identity};

fn main() {
    let mut args = std::env::args().skip(1);
    let file = args.next().unwrap_or_else(|| {
        format!(
            "{}/tests/corpus/pbx/carrier-pai-tel.sip",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let bytes = std::fs::read(file).expect("read");
    let mut sink = 0usize;
    for _ in 0..n {
        let Ok(msg) = scan(black_box(&bytes), Transport::Datagram) else {
            continue;
        };
        let StartLine::Request { uri, .. } = msg.start else {
            continue;
        };
        let caller = identity::caller(&msg);
        let ext = identity::Target::of(&msg, uri);
        sink += check::request(&msg).map(|c| c.cseq as usize).unwrap_or(0)
            + caller.number.map_or(0, |n| n.len())
            + ext.ruri_user.map_or(0, |u| u.len());
    }
    println!("{sink}");
}
