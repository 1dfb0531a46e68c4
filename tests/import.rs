//! Bulk import into the real PostgreSQL: a 100,000-row CSV with bad lines, a file that fails
//! mid-way (nothing changes), and a running index that reloads after the import.

mod support;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use screenpop::resolve::{Normaliser, Resolution, Resolver};
use support::pg::TestDb;

const BIN: &str = env!("CARGO_BIN_EXE_screenpop");
const BAD_LINES: [u64; 4] = [10, 5_000, 77_777, 100_001];

/// Writes 100,000 customers; the data lines in BAD_LINES are broken in different ways.
fn big_csv(path: &std::path::Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    writeln!(f, "id,name,company,account,crm_url,tags,numbers").expect("write");
    for i in 0..100_000u64 {
        let line = i + 2; // the header is line 1
        let area = ["415", "212", "312", "617"][(i % 4) as usize];
        let number = format!("({area}) 555-{:04}", i % 10_000);
        let row = match BAD_LINES.iter().position(|&b| b == line) {
            Some(0) => format!("c{i},,Nameless Co,,,,main:{number}"),
            Some(1) => format!("c{i},Fax Only,,,,,fax:{number}"),
            Some(2) => format!("c{i},Too,Few"),
            Some(_) => "c0,Duplicate Of The First,,,,,".to_string(),
            None => format!(
                "c{i},Customer {i},Company {},ACC{i},,tag{},main:{number}|mobile:+1 {area} 555 {:04}",
                i % 97,
                i % 3,
                (i + 1) % 10_000
            ),
        };
        writeln!(f, "{row}").expect("write");
    }
}

#[tokio::test]
async fn a_100k_row_csv_with_bad_lines_imports_the_good_rows_and_reports_the_bad_ones() {
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("screenpop-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("customers.csv");
    big_csv(&file);
    // A daemon-style index is running while the import happens.
    let index = screenpop::resolve::postgres::PgDirectory::load(
        &db.url,
        Normaliser::new(phonenumber::country::Id::US),
        2,
    )
    .await
    .expect("index");
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(index.clone().run(cancel.clone()));

    let out = Command::new(BIN)
        .arg("import")
        .arg(&file)
        .args(["--database-url", &db.url])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("imported 99996 customers"), "{stdout}");
    assert!(stdout.contains("rejected 4 lines"), "{stdout}");
    for line in BAD_LINES {
        assert!(
            stdout.contains(&format!("customers.csv:{line}: ")),
            "line {line} not reported:\n{stdout}"
        );
    }
    assert!(stdout.contains(":10: missing name"), "{stdout}");
    let client = db.client().await;
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .expect("count")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count("SELECT count(*) FROM customers").await, 99_996);
    assert_eq!(
        count("SELECT count(*) FROM customer_numbers").await,
        2 * 99_996
    );
    assert_eq!(
        count("SELECT count(*) FROM customer_numbers WHERE e164 IS NULL").await,
        0,
        "e164 filled at import"
    );

    // The running index reloaded on the import's single '*' notification.
    let started = Instant::now();
    while index.customers() != 99_996 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "index did not reload after the import"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "index reloaded {:?} after the import finished",
        started.elapsed()
    );
    // The generated numbers repeat every 10,000 rows: c0's main number is shared by ten customers.
    match index.resolve("+14155550000") {
        Resolution::Candidates { candidates } => {
            assert_eq!(candidates.len(), 10);
            assert!(candidates.iter().any(|c| c.customer.id() == "c0"));
        }
        other => panic!("expected candidates, got {other:?}"),
    }

    // Importing again updates in place (same ids): still 99,996, numbers replaced, not doubled.
    let again = Command::new(BIN)
        .arg("import")
        .arg(&file)
        .args(["--database-url", &db.url])
        .output()
        .expect("runs");
    assert!(again.status.success());
    assert_eq!(
        count("SELECT count(*) FROM customer_numbers").await,
        2 * 99_996
    );
    cancel.cancel();
    let _ = std::fs::remove_dir_all(dir);
    db.drop_now().await;
}

#[tokio::test]
async fn a_file_that_fails_mid_way_leaves_the_tables_unchanged() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute("INSERT INTO customers (id, name) VALUES ('keep', 'Kept'); INSERT INTO customer_numbers (customer_id, raw) VALUES ('keep', '+1 415 555 0100');")
        .await
        .expect("seed");
    let mut bytes = b"id,name,company,account,crm_url,tags,numbers\n".to_vec();
    for i in 0..50_000 {
        bytes.extend_from_slice(
            format!("m{i},Mid {i},,,,,main:+1 212 555 {:04}\n", i % 10_000).as_bytes(),
        );
    }
    bytes.extend_from_slice(b"broken,\xff\xfe\xfd,,,,,\n");
    bytes.extend_from_slice(b"after,After,,,,,\n");
    let mut db_client = db.client().await;
    let result = screenpop::resolve::import::import(
        &mut db_client,
        &bytes[..],
        screenpop::resolve::import::Format::Csv,
        "mid.csv",
        Normaliser::new(phonenumber::country::Id::US),
        &|_| {},
    )
    .await;
    let error = result.expect_err("a file that cannot be read to the end fails as a whole");
    assert!(error.to_string().contains("mid.csv: line 50002"), "{error}");
    assert!(
        error.to_string().contains("nothing was imported"),
        "{error}"
    );
    let customers: i64 = client
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .expect("count")
        .get(0);
    let numbers: i64 = client
        .query_one("SELECT count(*) FROM customer_numbers", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!((customers, numbers), (1, 1), "tables unchanged");
    db.drop_now().await;
}
