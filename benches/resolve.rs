//! Micro-benchmarks of caller resolution: E.164 normalisation of caller IDs in the forms PBXs
//! send, and the per-call lookup (`Resolver::resolve`, then `Resolver::key`, as the call tracker
//! does on every new call) against the demo directory and a synthetic one of 1,000,000
//! customers with 2,000,000 numbers.
//! Run with: `cargo bench --bench resolve` (figures in benches/README.md).

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use screenpop::resolve::{
    Customer, CustomerFields, Directory, Index, Normaliser, NumberKind, Resolution, Resolver,
};

/// The daemon's default `[numbers] switchboard_digits`.
const SWITCHBOARD_DIGITS: u8 = 2;

fn us() -> Normaliser {
    Normaliser::new(Normaliser::region("US").expect("US is a region"))
}

/// The demo directory (examples/data/customers.csv, 1,202 customers), as `[directory] csv`
/// loads it.
fn demo() -> Index {
    let path = format!("{}/examples/data/customers.csv", env!("CARGO_MANIFEST_DIR"));
    let file = std::fs::File::open(&path).expect("demo customers");
    let directory =
        Directory::from_csv(file, &path, us(), SWITCHBOARD_DIGITS).expect("demo CSV loads");
    Index::new(directory)
}

/// Area codes of the synthetic directory's first numbers (the second ones are these + 100);
/// the same scheme as `examples/index_bench.rs`.
const AREAS: [u32; 20] = [
    201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 218, 219, 224, 225,
    228,
];

/// The i-th synthetic customer's numbers as (area, exchange, line): a main number and a
/// mobile, distinct across the directory for i < 140,000,000.
fn synthetic_numbers(i: u32) -> [(u32, u32, u32); 2] {
    let exchange = 200 + i / 20 % 700;
    let line = i / 14_000 % 10_000;
    [
        (AREAS[(i % 20) as usize], exchange, line),
        (AREAS[((i + 7) % 20) as usize] + 100, exchange, line),
    ]
}

/// The number shared by the synthetic customers 0 and 1 (different companies).
const SHARED: &str = "+1 312 555 0142";

/// 1,000,000 customers (5,000 companies) with a main and a mobile number each, loaded the way
/// the PostgreSQL directory loads at start-up: maps sized first, customers, then numbers by
/// their stored E.164 through the [`screenpop::resolve::directory::Loader`]. One number is
/// shared by two customers of different companies.
fn synthetic(customers: u32) -> Index {
    let mut directory = Directory::new(us(), SWITCHBOARD_DIGITS);
    directory.reserve(customers as usize, 2 * customers as usize);
    let (mut id, mut name, mut company, mut account) =
        (String::new(), String::new(), String::new(), String::new());
    for i in 0..customers {
        for text in [&mut id, &mut name, &mut company, &mut account] {
            text.clear();
        }
        let _ = write!(id, "c{i}");
        let _ = write!(name, "Customer {i}");
        let _ = write!(company, "Company {}", i % 5000);
        let _ = write!(account, "A{i:07}");
        directory.insert_new(Customer::new(CustomerFields {
            id: &id,
            name: &name,
            company: &company,
            account: &account,
            ..CustomerFields::default()
        }));
    }
    let mut loader = directory.loader();
    let mut e164 = String::new();
    for i in 0..customers {
        id.clear();
        let _ = write!(id, "c{i}");
        for ((area, exchange, line), kind) in synthetic_numbers(i)
            .into_iter()
            .zip([NumberKind::Main, NumberKind::Mobile])
        {
            e164.clear();
            let _ = write!(e164, "+1{area}{exchange}{line:04}");
            assert!(loader.add_e164(&id, &e164, kind), "customer {id} loaded");
        }
    }
    for id in ["c0", "c1"] {
        assert!(loader.add_e164(id, &SHARED.replace(' ', ""), NumberKind::Main));
    }
    drop(loader);
    assert_eq!(directory.customers(), customers as usize);
    assert_eq!(directory.keys(), 2 * customers as usize + 1);
    Index::new(directory)
}

/// How many customers of the synthetic directory the spread hits visit in turn.
const SPREAD: u32 = 65_536;

/// Caller IDs in the forms PBXs send, all but the last for one number.
const FORMS: [(&str, &str); 5] = [
    ("E.164", "+14155550100"),
    ("national", "(415) 555-0100"),
    ("00 international", "0014155550100"),
    (
        "tel: URI with npdi;rn",
        "tel:+1-415-555-0100;npdi;rn=+14155559999",
    ),
    ("invalid short code", "611"),
];

fn normalise(c: &mut Criterion) {
    let normaliser = us();
    let index = demo();
    for (form, raw) in FORMS {
        let mut group = c.benchmark_group(format!("normalise/{form} `{raw}`"));
        group.throughput(Throughput::Elements(1));
        // The first step of every lookup: no validation, no allocation.
        group.bench_function("fast_e164", |b| {
            b.iter(|| normaliser.fast_e164(black_box(raw)))
        });
        // The full normalisation (libphonenumber parse and validation): a lookup's slow path,
        // once per distinct caller ID.
        group.bench_function("Normaliser::key", |b| {
            b.iter(|| normaliser.key(black_box(raw)))
        });
        // What the call tracker asks for on every call (`Resolver::key`): memoised.
        group.bench_function("Index::key (memoised)", |b| {
            b.iter(|| index.key(black_box(raw)))
        });
        group.finish();
    }
}

/// The lookups timed against one directory.
struct Lookups<'a> {
    hit_e164: &'a str,
    hit_national: &'a str,
    miss: &'a str,
    shared: &'a str,
    /// National-format numbers of customers spread over the directory, asked in turn: hits
    /// that find the maps and customers out of the CPU caches, as a large directory's do.
    spread: &'a [String],
}

fn lookups(c: &mut Criterion, label: &str, index: Index, q: Lookups<'_>) {
    let expect = |raw: &str, want: &str| {
        let got = index.resolve(raw).label();
        assert_eq!(got, want, "{label}: {raw}");
    };
    expect(q.hit_e164, "customer");
    expect(q.hit_national, "customer");
    expect(q.miss, "unknown");
    expect(q.shared, "candidates");
    // As the daemon holds it.
    let resolver: Arc<dyn Resolver> = Arc::new(index);
    let mut group = c.benchmark_group(format!("resolve/{label}"));
    group.throughput(Throughput::Elements(1));
    for (name, raw) in [
        ("hit, E.164", q.hit_e164),
        ("hit, national", q.hit_national),
        ("miss (remembered)", q.miss),
        ("shared number → candidates", q.shared),
    ] {
        group.bench_function(name, |b| b.iter(|| resolver.resolve(black_box(raw))));
    }
    if !q.spread.is_empty() {
        let mut next = 0;
        group.bench_function(
            format!("hit, national, {} customers in turn", q.spread.len()),
            |b| {
                b.iter(|| {
                    next = (next + 1) % q.spread.len();
                    resolver.resolve(black_box(&q.spread[next]))
                })
            },
        );
    }
    // Everything `Calls::new_call` asks of the directory for a known caller.
    group.bench_function("hit, national: resolve + key (per call)", |b| {
        b.iter(|| {
            let raw = black_box(q.hit_national);
            let resolution = resolver.resolve(raw);
            let key = resolver
                .key(raw)
                .map(|k| k.as_str().to_owned())
                .filter(|k| !k.is_empty());
            (resolution, key)
        })
    });
    // A caller never seen before and not on file: normalisation, probe, switchboard block,
    // and the miss remembered (a new number every iteration; the caches fill and evict).
    let mut n = 0u64;
    group.bench_function("miss, first time", |b| {
        b.iter_batched(
            || {
                n += 1;
                format!("+1 646 {} {:04}", 200 + n / 10_000 % 700, n % 10_000)
            },
            |raw| {
                let resolution = resolver.resolve(&raw);
                debug_assert!(matches!(resolution, Resolution::Unknown));
                resolution
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn resolve(c: &mut Criterion) {
    lookups(
        c,
        "demo (1,202 customers)",
        demo(),
        Lookups {
            hit_e164: "+14155550100",
            hit_national: "(415) 555-0100",
            miss: "+16465550199",
            shared: "+1 312 555 0142",
            spread: &[],
        },
    );
    let started = std::time::Instant::now();
    let index = synthetic(1_000_000);
    eprintln!(
        "synthetic directory: 1,000,000 customers, 2,000,001 numbers, built in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let [(a, exchange, line), (b, ..)] = synthetic_numbers(777_777);
    let hit_e164 = format!("+1{b}{exchange}{line:04}");
    let hit_national = format!("({a}) {exchange}-{line:04}");
    let spread: Vec<String> = (0..SPREAD)
        .map(|k| {
            let [(a, exchange, line), _] = synthetic_numbers(k * 7919 % 1_000_000);
            format!("({a}) {exchange}-{line:04}")
        })
        .collect();
    lookups(
        c,
        "synthetic (1,000,000 customers, 2,000,000 numbers)",
        index,
        Lookups {
            hit_e164: &hit_e164,
            hit_national: &hit_national,
            miss: "+16465550199",
            shared: SHARED,
            spread: &spread,
        },
    );
}

criterion_group!(benches, normalise, resolve);
criterion_main!(benches);
