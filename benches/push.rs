//! Micro-benchmarks of the push encoding: every frame of a full pop as the daemon sends it over
//! the WebSocket (`ringing` for a matched customer and for candidates, the `balance`,
//! `purchases` and `credit` sections, `complete`), each in its two steps: the hub encodes the
//! message once per event (`push::message`), and each connection's writer renders it with its
//! own `seq`. Throughput is the rendered frame's bytes.
//! Run with: `cargo bench --bench push` (figures in benches/README.md).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use screenpop::calls::{Call, CallState, Intake, Leg, LegState};
use screenpop::compose::{Part, Status, Summary};
use screenpop::push::message::{self, Outbound};
use screenpop::resolve::{Directory, Index, Normaliser, Resolution, Resolver};
use serde_json::{Value, json};

const CALL_ID: &str = "0170b3350ae18a49";
const EXTENSION: &str = "201";

/// Resolutions from the demo directory: Acme Corporation (id, name, company, account, two
/// tags) and the demo's shared number (two candidates, each with a reason).
fn resolutions() -> (Resolution, Resolution) {
    let path = format!("{}/examples/data/customers.csv", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).expect("demo customers");
    let normaliser = Normaliser::new(Normaliser::region("US").expect("US is a region"));
    let index = Index::new(Directory::from_csv(file, &path, normaliser, 2).expect("demo CSV"));
    let customer = index.resolve("+14155550100");
    let candidates = index.resolve("+13125550142");
    assert_eq!(customer.label(), "customer");
    assert_eq!(candidates.label(), "candidates");
    (customer, candidates)
}

/// A call ringing at one extension, as the call tracker makes it from a SIP INVITE.
fn call(number: &str, resolution: Resolution) -> Call {
    Call {
        id: CALL_ID.into(),
        intake: Intake::SIP,
        key: "a84b4c76e66710@pc33.example.com".into(),
        caller_number: Some(number.into()),
        caller_display: Some("Acme Corporation".into()),
        caller_key: Some(number.into()),
        caller_e164: Some(number.into()),
        withheld_number: None,
        withheld: false,
        dialled: Some("+18005550199".into()),
        resolution,
        started: SystemTime::now(),
        answered_at: None,
        hangup_seen: false,
        state: CallState::Ringing,
        legs: vec![Leg {
            extension: EXTENSION.into(),
            state: LegState::Ringing,
        }],
    }
}

/// A source's `ok` answer, in the demo's section shapes (docs/protocol.md).
fn part(name: &str, title: &str, data: Value, elapsed_ms: f64) -> Part {
    Part {
        name: name.into(),
        title: title.into(),
        status: Status::Ok,
        data: Some(Arc::new(data)),
        error: None,
        age: None,
        elapsed: Duration::from_secs_f64(elapsed_ms / 1000.0),
        roles: Arc::from(Vec::<String>::new()),
        field_roles: Arc::from(Vec::new()),
        display: None,
    }
}

fn parts() -> [Part; 3] {
    let balance = json!({
        "currency": "USD", "balance": 1520.75, "overdue": 320.0, "overdue_days": 41,
        "invoices": [
            {"number": "INV-ACME001-4120", "date": "2026-09-30", "due": "2026-10-30",
             "amount": 320.0, "status": "overdue"},
            {"number": "INV-ACME001-5311", "date": "2026-10-28", "due": "2026-11-27",
             "amount": 1200.75, "status": "open"},
            {"number": "INV-ACME001-2032", "date": "2026-08-14", "due": "2026-09-13",
             "amount": 845.1, "status": "paid"}
        ]
    });
    let purchases = json!([
        {"order": "SO-ACME001-7710", "date": "2026-11-20", "total": 1193.0, "currency": "USD",
         "items": [
            {"sku": "HX-220", "name": "Hex bolt M8 (box of 200)", "qty": 6, "price": 38.9},
            {"sku": "WS-014", "name": "Washer set, stainless", "qty": 12, "price": 19.5},
            {"sku": "PL-900", "name": "Pallet wrap, 500 m", "qty": 10, "price": 72.56}
         ]},
        {"order": "SO-ACME001-6121", "date": "2026-10-02", "total": 455.0, "currency": "USD",
         "items": [
            {"sku": "DR-118", "name": "Cordless drill 18 V", "qty": 2, "price": 189.0},
            {"sku": "BT-018", "name": "Battery 18 V 4 Ah", "qty": 1, "price": 77.0}
         ]},
        {"order": "SO-ACME001-5302", "date": "2026-08-19", "total": 249.0, "currency": "USD",
         "items": [
            {"sku": "GL-300", "name": "Work gloves, size L (pack of 10)", "qty": 6, "price": 41.5}
         ]}
    ]);
    let credit = json!({
        "limit": 50000.0, "currency": "USD", "terms": "NET30", "rating": "B", "hold": false
    });
    [
        part("balance", "Balance", balance, 2.4),
        part("purchases", "Purchases", purchases, 3.1),
        part("credit", "Credit", credit, 1.7),
    ]
}

/// Times the hub's encode and the writer's render of one frame; throughput in frame bytes.
fn frame(c: &mut Criterion, label: &str, encode: impl Fn() -> Outbound) {
    let bytes = encode().render(41).len();
    let mut group = c.benchmark_group(format!("push/{label} ({bytes} B)"));
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("encode (hub, once per event)", |b| b.iter(&encode));
    let shared = encode();
    group.bench_function("render (writer, per connection)", |b| {
        b.iter(|| black_box(&shared).render(black_box(41)))
    });
    group.bench_function("encode + render", |b| b.iter(|| encode().render(41)));
    group.finish();
}

fn bench(c: &mut Criterion) {
    let (customer, candidates) = resolutions();
    let matched = call("+14155550100", customer);
    let shared = call("+13125550142", candidates);
    frame(c, "ringing, customer", || {
        message::ringing(black_box(&matched), &matched.resolution, EXTENSION)
    });
    frame(c, "ringing, 2 candidates", || {
        message::ringing(black_box(&shared), &shared.resolution, EXTENSION)
    });
    let customer_id = "c-0001";
    let [balance, purchases, credit] = parts();
    frame(c, "section balance (3 invoices)", || {
        message::section(CALL_ID, customer_id, black_box(&balance))
    });
    frame(c, "section purchases (3 orders, 6 items)", || {
        message::section(CALL_ID, customer_id, black_box(&purchases))
    });
    frame(c, "section credit", || {
        message::section(CALL_ID, customer_id, black_box(&credit))
    });
    let summary = Summary {
        sources: vec!["balance".into(), "purchases".into(), "credit".into()],
        missing: Vec::new(),
        elapsed: Duration::from_micros(3_100),
    };
    frame(c, "complete", || {
        message::complete(CALL_ID, customer_id, black_box(&summary), &[])
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
