//! Micro-benchmarks of caller resolution: E.164 normalisation of caller IDs in the forms PBXs
//! send, and the per-call lookup (`Resolver::resolve`, then `Resolver::key`, as the call tracker
//! does on every new call) against the demo directory and a synthetic one of 1,000,000
//! customers with 2,000,000 numbers.
//! The `search` group times agents' customer searches (`Resolver::search`) on 1,000,000
//! customers with realistic, partly accented names: p50/p99 per kind of query, and what the
//! search index adds to the directory's build time and memory.
//! Run with: `cargo bench --bench resolve` (figures in benches/README.md);
//! `cargo bench --bench resolve -- search` for the search group alone.

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

/// First names of the search directory (some accented, as a CRM holds them).
const FIRST: [&str; 40] = [
    "Anna",
    "Ana",
    "Björn",
    "Chloé",
    "David",
    "Élodie",
    "Fatima",
    "Günter",
    "Hana",
    "Ingrid",
    "Jürgen",
    "Katarzyna",
    "Luis",
    "María",
    "Noël",
    "Olga",
    "Paweł",
    "Quentin",
    "Renée",
    "Søren",
    "Tomás",
    "Ulrike",
    "Vera",
    "Wojciech",
    "Xavier",
    "Yusuf",
    "Zoë",
    "John",
    "Mary",
    "Peter",
    "Linda",
    "James",
    "Susan",
    "Robert",
    "Karen",
    "Michael",
    "Lisa",
    "William",
    "Nancy",
    "Ömer",
];
/// Syllables of the synthetic family names and company words.
const SYLLABLES: [&str; 32] = [
    "mül", "ler", "sch", "mid", "ber", "ga", "son", "ko", "wal", "ski", "ró", "dri", "guez", "an",
    "der", "sen", "ni", "el", "fer", "nán", "dez", "ma", "tin", "lo", "pez", "ha", "ns", "to",
    "vić", "ström", "ja", "ne",
];
const COMPANY_SUFFIX: [&str; 8] = [
    "GmbH",
    "Logistics",
    "Systems",
    "Holdings",
    "Industries",
    "& Co",
    "Technologies",
    "S.A.",
];

/// A deterministic mix of `i` (no `rand` in the directory's shape).
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ x >> 29
}

fn word(seed: u64, syllables: usize) -> String {
    let mut w = String::new();
    for k in 0..syllables {
        w.push_str(SYLLABLES[(mix(seed * 7 + k as u64) % 32) as usize]);
    }
    let mut chars = w.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The search directory's i-th customer: (name, company, account).
fn person(i: u32) -> (String, String, String) {
    let h = mix(u64::from(i));
    // ~30,000 family names, 5,000 companies.
    let family = word(h % 30_000, 2 + (h % 3) as usize);
    let name = format!("{} {family}", FIRST[(h >> 20) as usize % FIRST.len()]);
    let c = (h >> 32) % 5_000;
    let company = format!(
        "{} {}",
        word(1_000_000 + c, 2 + (c % 2) as usize),
        COMPANY_SUFFIX[(c % 8) as usize]
    );
    (name, company, format!("A{i:07}"))
}

/// `customers` people with the synthetic numbers, loaded as the PostgreSQL directory loads
/// (the search index not built yet).
fn people(customers: u32) -> Directory {
    let mut directory = Directory::new(us(), SWITCHBOARD_DIGITS);
    directory.reserve(customers as usize, 2 * customers as usize);
    let mut id = String::new();
    for i in 0..customers {
        id.clear();
        let _ = write!(id, "c{i}");
        let (name, company, account) = person(i);
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
            loader.add_e164(&id, &e164, kind);
        }
    }
    drop(loader);
    directory
}

/// Resident memory of this process, bytes (Linux).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Queries of one kind, drawn from the directory's own customers.
fn queries(kind: &str, n: u32) -> Vec<String> {
    (0..n)
        .map(|k| {
            let i = (mix(u64::from(k) + 77) % 1_000_000) as u32;
            let (name, company, _) = person(i);
            let [(area, exchange, line), _] = synthetic_numbers(i);
            let h = mix(u64::from(k));
            match kind {
                // The family name's first 3 to 5 letters, as an agent types it.
                "name prefix" => {
                    let family: Vec<char> = name.split(' ').nth(1).unwrap_or("").chars().collect();
                    family[..family.len().min(3 + (h % 3) as usize)]
                        .iter()
                        .collect()
                }
                // 4 letters from inside the company's first word.
                "company substring" => {
                    let first: Vec<char> =
                        company.split(' ').next().unwrap_or("").chars().collect();
                    let at = 1 + (h as usize) % first.len().saturating_sub(5).max(1);
                    first[at.min(first.len() - 4)..][..4].iter().collect()
                }
                // The last 7 digits, as `5550102` is typed.
                "number substring" => format!("{exchange}{line:04}"),
                // Area code and exchange, with a space: `415 555`.
                "number, area + exchange" => format!("{area} {exchange}"),
                // Two words: first name and the start of the family name.
                "first name + family prefix" => {
                    let mut words = name.split(' ');
                    let first = words.next().unwrap_or("");
                    let family: String = words.next().unwrap_or("").chars().take(3).collect();
                    format!("{first} {family}")
                }
                _ => format!("({area}) {exchange}-{line:04}"),
            }
        })
        .collect()
}

fn search(c: &mut Criterion) {
    const N: u32 = 1_000_000;
    let before = rss();
    let started = std::time::Instant::now();
    let mut directory = people(N);
    let load = started.elapsed();
    let loaded = rss();
    let started = std::time::Instant::now();
    directory.build_search();
    let build = started.elapsed();
    let built = rss();
    eprintln!(
        "search directory: {N} customers, {} numbers; load {:.2} s, RSS +{} MB; \
         search index build {:.2} s, heap {} MB ({} B/customer), RSS +{} MB",
        directory.keys(),
        load.as_secs_f64(),
        (loaded - before) >> 20,
        build.as_secs_f64(),
        directory.search_heap_bytes() >> 20,
        directory.search_heap_bytes() / N as usize,
        built.saturating_sub(loaded) >> 20,
    );
    let resolver: Arc<dyn Resolver> = Arc::new(Index::new(directory));
    let mut group = c.benchmark_group("search/1,000,000 customers");
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for kind in [
        "name prefix",
        "company substring",
        "number substring",
        "number, area + exchange",
        "first name + family prefix",
        "full national number",
    ] {
        let qs = queries(kind, 10_000);
        // p50/p99 over distinct queries, each timed alone (HDR histogram, ns).
        let mut histogram = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        let mut empty = 0;
        for q in &qs {
            let t = std::time::Instant::now();
            let hits = resolver.search(black_box(q), 10);
            histogram
                .record(t.elapsed().as_nanos() as u64)
                .expect("record");
            empty += usize::from(hits.is_empty());
        }
        eprintln!(
            "search {kind:28} e.g. {:18} p50 {:>6.1} µs  p99 {:>6.1} µs  max {:>7.1} µs  ({} of {} empty)",
            format!("`{}`", qs[0]),
            histogram.value_at_quantile(0.5) as f64 / 1e3,
            histogram.value_at_quantile(0.99) as f64 / 1e3,
            histogram.max() as f64 / 1e3,
            empty,
            qs.len()
        );
        let mut next = 0;
        group.bench_function(kind, |b| {
            b.iter(|| {
                next = (next + 1) % qs.len();
                resolver.search(black_box(&qs[next]), 10)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, normalise, resolve, search);
criterion_main!(benches);
