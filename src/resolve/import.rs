//! Bulk import of customers into PostgreSQL: `screenpop import FILE --database-url URL`.
//!
//! Reads CSV (`id,name,company,account,crm_url,tags,numbers`, as the demo data) or JSON Lines
//! (one object per line with the same fields; `numbers` a `|`-separated string or a list of
//! `{"kind","raw"}`), streaming. Rows that cannot be taken (no id, no name, a duplicate id, a
//! bad number kind) are rejected with their line number and reason; everything else is copied
//! (`COPY … FROM STDIN`) into staging tables and merged in ONE transaction: existing customers
//! are updated and their numbers replaced. A file that cannot be read to the end, or a database
//! error, rolls everything back: no partial import. The per-row notifications are silenced
//! (`screenpop.bulk`) and one `'*'` tells running daemons to reload. E.164 (or, for numbers that are not valid, the exact-digits key) is
//! filled in here, and the tables are analysed afterwards.

use std::collections::HashSet;
use std::io::{BufRead, Read};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use super::normalise::{Key, Normaliser};
use crate::db::DbError;

/// Rows sent per COPY chunk.
const CHUNK_BYTES: usize = 256 * 1024;

/// Why an import failed as a whole (nothing was imported).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read to the end.
    #[error("{file}: line {line}: {reason} (nothing was imported)")]
    Read {
        /// The file.
        file: String,
        /// Where reading stopped.
        line: u64,
        /// Why.
        reason: String,
    },
    /// The database refused the import.
    #[error("{0} (nothing was imported)")]
    Db(#[from] DbError),
}

/// A row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reject {
    /// 1-based line in the file.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Customers inserted or updated.
    pub customers: u64,
    /// Numbers written.
    pub numbers: u64,
    /// Numbers that are not valid numbers (kept, matched on their exact digits).
    pub numbers_not_e164: u64,
    /// Rows rejected.
    pub rejected: Vec<Reject>,
}

/// One accepted row.
struct Row {
    id: String,
    name: String,
    company: String,
    account: String,
    crm_url: String,
    tags: Vec<String>,
    numbers: Vec<(String, String)>,
}

/// One line of the customers CSV (shared with the demo loader in `directory`).
#[derive(serde::Deserialize)]
pub(crate) struct CsvRow {
    pub(crate) id: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) company: String,
    #[serde(default)]
    pub(crate) account: String,
    #[serde(default)]
    pub(crate) crm_url: String,
    #[serde(default)]
    pub(crate) tags: String,
    #[serde(default)]
    pub(crate) numbers: String,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonNumbers {
    Joined(String),
    List(Vec<JsonNumber>),
}

#[derive(serde::Deserialize)]
struct JsonNumber {
    #[serde(default = "main_kind")]
    kind: String,
    raw: String,
}

fn main_kind() -> String {
    "main".into()
}

#[derive(serde::Deserialize)]
struct JsonRow {
    id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    company: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    crm_url: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    numbers: Option<JsonNumbers>,
}

/// Splits a `numbers` cell: `kind:raw` entries separated by `|`. An entry without a kind (or
/// one that starts with a URI scheme such as `tel:`) is a `main` number; a word before `:` is
/// the kind (checked later against main, work, mobile).
pub(crate) fn split_numbers(joined: &str) -> Vec<(String, String)> {
    joined
        .split('|')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| match e.split_once(':') {
            Some((kind, raw))
                if kind.chars().all(|c| c.is_ascii_alphabetic())
                    && !["tel", "sip", "sips"].contains(&kind.to_ascii_lowercase().as_str()) =>
            {
                (kind.to_owned(), raw.trim().to_owned())
            }
            _ => ("main".to_owned(), e.to_owned()),
        })
        .collect()
}

/// Checks a row; the reason is shown to the operator.
fn validate(row: Row, seen: &mut HashSet<String>) -> Result<Row, String> {
    if row.id.trim().is_empty() {
        return Err("missing id".into());
    }
    if row.name.trim().is_empty() {
        return Err("missing name".into());
    }
    if let Some((kind, _)) = row
        .numbers
        .iter()
        .find(|(k, _)| !["main", "work", "mobile"].contains(&k.as_str()))
    {
        return Err(format!("number kind `{kind}` is not main, work or mobile"));
    }
    if let Some((_, raw)) = row.numbers.iter().find(|(_, raw)| raw.is_empty()) {
        return Err(format!("empty number `{raw}`"));
    }
    if !seen.insert(row.id.clone()) {
        return Err(format!("duplicate id `{}` (first occurrence kept)", row.id));
    }
    Ok(row)
}

/// The file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated with a header line.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl Format {
    /// By extension: `.jsonl`/`.ndjson` are JSON Lines, anything else CSV.
    pub fn of(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson") => Format::JsonLines,
            _ => Format::Csv,
        }
    }
}

/// Reads and validates the whole file into rows and rejects. Reading is done up front so that
/// a file that breaks half-way fails before the database is touched.
fn read_rows(
    reader: impl Read,
    format: Format,
    name: &str,
    progress: &dyn Fn(u64),
) -> Result<(Vec<Row>, Vec<Reject>), ImportError> {
    let mut rows = Vec::new();
    let mut rejects = Vec::new();
    let mut seen = HashSet::new();
    let take = |line: u64,
                row: Result<Row, String>,
                rows: &mut Vec<Row>,
                rejects: &mut Vec<Reject>,
                seen: &mut HashSet<String>| {
        match row.and_then(|r| validate(r, seen)) {
            Ok(r) => rows.push(r),
            Err(reason) => rejects.push(Reject { line, reason }),
        }
    };
    match format {
        Format::Csv => {
            let mut csv = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .flexible(false)
                .from_reader(reader);
            let mut record = csv::StringRecord::new();
            let headers = csv
                .headers()
                .map_err(|e| ImportError::Read {
                    file: name.into(),
                    line: 1,
                    reason: e.to_string(),
                })?
                .clone();
            loop {
                match csv.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        let line = record.position().map_or(0, |p| p.line());
                        let row = record
                            .deserialize::<CsvRow>(Some(&headers))
                            .map_err(|e| e.to_string())
                            .map(|r| Row {
                                numbers: split_numbers(&r.numbers),
                                tags: r
                                    .tags
                                    .split('|')
                                    .map(str::trim)
                                    .filter(|t| !t.is_empty())
                                    .map(str::to_owned)
                                    .collect(),
                                id: r.id,
                                name: r.name,
                                company: r.company,
                                account: r.account,
                                crm_url: r.crm_url,
                            });
                        take(line, row, &mut rows, &mut rejects, &mut seen);
                        progress(line);
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, |p| p.line());
                        // A record with the wrong number of fields is one bad row; anything else
                        // (bad UTF-8, an I/O error) means the file cannot be trusted to the end.
                        if matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. }) {
                            rejects.push(Reject {
                                line,
                                reason: e.to_string(),
                            });
                            continue;
                        }
                        return Err(ImportError::Read {
                            file: name.into(),
                            line,
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        Format::JsonLines => {
            for (i, line) in std::io::BufReader::new(reader).lines().enumerate() {
                let n = i as u64 + 1;
                let text = line.map_err(|e| ImportError::Read {
                    file: name.into(),
                    line: n,
                    reason: e.to_string(),
                })?;
                if text.trim().is_empty() {
                    continue;
                }
                let row = serde_json::from_str::<JsonRow>(&text)
                    .map_err(|e| e.to_string())
                    .map(|r| Row {
                        id: r.id.unwrap_or_default(),
                        name: r.name.unwrap_or_default(),
                        company: r.company.unwrap_or_default(),
                        account: r.account.unwrap_or_default(),
                        crm_url: r.crm_url.unwrap_or_default(),
                        tags: r.tags,
                        numbers: match r.numbers {
                            None => Vec::new(),
                            Some(JsonNumbers::Joined(s)) => split_numbers(&s),
                            Some(JsonNumbers::List(list)) => {
                                list.into_iter().map(|n| (n.kind, n.raw)).collect()
                            }
                        },
                    });
                take(n, row, &mut rows, &mut rejects, &mut seen);
                progress(n);
            }
        }
    }
    Ok((rows, rejects))
}

/// A PostgreSQL array literal of text (`{"a","b"}`) for COPY.
fn text_array(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|t| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// Imports a file. `progress` is called with the line number as rows are read.
pub async fn import(
    client: &mut Client,
    reader: impl Read,
    format: Format,
    name: &str,
    normaliser: Normaliser,
    progress: &dyn Fn(u64),
) -> Result<Summary, ImportError> {
    let (rows, rejected) = read_rows(reader, format, name, progress)?;
    let mut summary = Summary {
        rejected,
        ..Summary::default()
    };
    let q = |what: &'static str| DbError::query(what);
    let tx = client
        .transaction()
        .await
        .map_err(q("starting the import"))?;
    tx.batch_execute(
        "SET LOCAL screenpop.bulk = 'on';
         CREATE TEMP TABLE stage_customers (LIKE customers INCLUDING DEFAULTS) ON COMMIT DROP;
         CREATE TEMP TABLE stage_numbers (customer_id text, raw text, kind text, e164 text, digits text) ON COMMIT DROP;",
    )
    .await
    .map_err(q("preparing the import"))?;

    let mut customers = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let sink = tx
        .copy_in("COPY stage_customers (id, name, company, account_number, crm_url, tags) FROM STDIN WITH (FORMAT csv)")
        .await
        .map_err(q("copying customers"))?;
    futures_util::pin_mut!(sink);
    let mut numbers = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    for row in &rows {
        let none = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                s.to_owned()
            }
        };
        let _ = customers.write_record([
            &row.id,
            &row.name,
            &none(&row.company),
            &none(&row.account),
            &none(&row.crm_url),
            &text_array(&row.tags),
        ]);
        for (kind, raw) in &row.numbers {
            let (e164, digits) = match normaliser.key(raw) {
                Key::E164(k) => (k, String::new()),
                Key::Digits(d) => {
                    summary.numbers_not_e164 += 1;
                    (String::new(), d)
                }
            };
            let _ = numbers.write_record([&row.id, raw, kind, &e164, &digits]);
            summary.numbers += 1;
        }
        summary.customers += 1;
    }
    let all = customers.into_inner().unwrap_or_default();
    for chunk in all.chunks(CHUNK_BYTES) {
        sink.send(Bytes::copy_from_slice(chunk))
            .await
            .map_err(q("copying customers"))?;
    }
    sink.as_mut()
        .finish()
        .await
        .map_err(q("copying customers"))?;

    let sink = tx
        .copy_in(
            "COPY stage_numbers (customer_id, raw, kind, e164, digits) FROM STDIN WITH (FORMAT csv)",
        )
        .await
        .map_err(q("copying numbers"))?;
    futures_util::pin_mut!(sink);
    let all = numbers.into_inner().unwrap_or_default();
    for chunk in all.chunks(CHUNK_BYTES) {
        sink.send(Bytes::copy_from_slice(chunk))
            .await
            .map_err(q("copying numbers"))?;
    }
    sink.as_mut().finish().await.map_err(q("copying numbers"))?;

    tx.batch_execute(
        "INSERT INTO customers (id, name, company, account_number, crm_url, tags, updated_at)
             SELECT id, name, NULLIF(company, ''), NULLIF(account_number, ''), NULLIF(crm_url, ''), tags, now() FROM stage_customers
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, company = EXCLUDED.company,
             account_number = EXCLUDED.account_number, crm_url = EXCLUDED.crm_url, tags = EXCLUDED.tags, updated_at = now();
         DELETE FROM customer_numbers WHERE customer_id IN (SELECT id FROM stage_customers);
         INSERT INTO customer_numbers (customer_id, raw, kind, e164, digits)
             SELECT customer_id, raw, kind, NULLIF(e164, ''), NULLIF(digits, '') FROM stage_numbers;
         NOTIFY screenpop_customers, '*';",
    )
    .await
    .map_err(q("merging the import"))?;
    tx.commit().await.map_err(q("committing the import"))?;
    // Fresh statistics for the planner, and for the daemons' load to size their index.
    client
        .batch_execute("ANALYZE customers; ANALYZE customer_numbers")
        .await
        .map_err(q("analysing the imported tables"))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_rejects() {
        let csv = "id,name,company,account,crm_url,tags,numbers\n\
                   c1,Acme,Acme,A1,,vip|x,main:(415) 555-0100|mobile:+1 415 555 0199\n\
                   c2,,NoName,,,,main:1\n\
                   c3,Bad Kind,,,,,fax:415 555 0101\n\
                   c1,Again,,,,,\n\
                   c4,Short\n\
                   c5,Plain,,,,,415 555 0102\n";
        let (rows, rejects) =
            read_rows(csv.as_bytes(), Format::Csv, "t.csv", &|_| {}).expect("reads");
        assert_eq!(
            rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["c1", "c5"]
        );
        assert_eq!(
            rows[0].numbers,
            vec![
                ("main".into(), "(415) 555-0100".into()),
                ("mobile".into(), "+1 415 555 0199".into())
            ]
        );
        assert_eq!(
            rows[1].numbers,
            vec![("main".into(), "415 555 0102".into())]
        );
        let lines: Vec<u64> = rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, [3, 4, 5, 6], "{rejects:?}");
        assert_eq!(rejects[0].reason, "missing name");
        assert!(rejects[1].reason.contains("fax"));
        assert!(rejects[2].reason.contains("duplicate id"));
    }

    #[test]
    fn json_lines_and_a_broken_file() {
        let jsonl = "{\"id\":\"j1\",\"name\":\"Jay\",\"numbers\":[{\"kind\":\"work\",\"raw\":\"+12125550100\"}]}\n\nnot json\n{\"id\":\"j2\",\"name\":\"Kay\",\"numbers\":\"mobile:212 555 0101\"}\n";
        let (rows, rejects) =
            read_rows(jsonl.as_bytes(), Format::JsonLines, "t.jsonl", &|_| {}).expect("reads");
        assert_eq!(rows.len(), 2);
        assert_eq!(rejects.iter().map(|r| r.line).collect::<Vec<_>>(), [3]);
        let mut broken = b"id,name\nc1,Ok\n".to_vec();
        broken.extend_from_slice(&[b'c', b'2', b',', 0xff, 0xfe, b'\n']);
        match read_rows(&broken[..], Format::Csv, "b.csv", &|_| {}) {
            Err(ImportError::Read { line, .. }) => assert_eq!(line, 3),
            other => panic!(
                "a broken file must fail as a whole, got {:?}",
                other.map(|(r, j)| (r.len(), j))
            ),
        }
        assert_eq!(
            text_array(&["a\"b".into(), "c\\d".into()]),
            r#"{"a\"b","c\\d"}"#
        );
    }
}
