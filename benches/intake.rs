//! Micro-benchmarks of the intake hot path: the SIP scan of a realistic ~950-byte INVITE, the
//! identity rules on top of it, the request checks, the 100 Trying, and the HEP decode.
//! Run with: `cargo bench --bench intake` (figures in benches/README.md).

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use screenpop::telephony::hep;
use screenpop::telephony::sip::reply::{self, Reply};
use screenpop::telephony::sip::scan::{Name, StartLine, Transport, scan};
use screenpop::telephony::sip::{check, identity};

fn invite(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/corpus/pbx/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("corpus file")
}

fn bench(c: &mut Criterion) {
    let source: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
    for name in ["carrier-pai-tel.sip", "asterisk-pjsip-pai.sip"] {
        let bytes = invite(name);
        let mut group = c.benchmark_group(format!("sip/{name} ({} B)", bytes.len()));
        group.throughput(Throughput::Elements(1));
        group.bench_function("scan", |b| {
            b.iter(|| {
                scan(black_box(&bytes), Transport::Datagram)
                    .map(|m| m.headers.get(Name::CallId).map(<[u8]>::len))
            })
        });
        group.bench_function("scan+identity", |b| {
            b.iter(|| {
                let msg = scan(black_box(&bytes), Transport::Datagram).expect("valid");
                let StartLine::Request { uri, .. } = msg.start else {
                    unreachable!()
                };
                let caller = identity::caller(&msg);
                let target = identity::Target::of(&msg, uri);
                (caller, target.extension(|_| false).map(str::len))
            })
        });
        group.bench_function("scan+check+identity+100", |b| {
            b.iter(|| {
                let msg = scan(black_box(&bytes), Transport::Datagram).expect("valid");
                let checked = check::request(&msg).expect("valid");
                let caller = identity::caller(&msg);
                let trying = reply::build(
                    &msg,
                    source,
                    Reply {
                        code: 100,
                        reason: "Trying",
                        to_tag: None,
                        extra: &[],
                    },
                );
                (checked.cseq, caller, trying.len())
            })
        });
        let packet = hep::encode(
            source,
            "192.0.2.2:5060".parse().expect("addr"),
            (1, 2),
            3,
            Some(b"s3cret"),
            &bytes,
        );
        group.bench_function("hep decode", |b| {
            b.iter(|| hep::decode(black_box(&packet)).map(|p| p.payload.len()))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
