//! `type = "csv"`: a section from a CSV file, the small shop's spreadsheet export.
//!
//! Rows are keyed by one column (`key_column`) matched against one customer field (`match`:
//! `customer_id`, `account`, `number`…). Cells become JSON: numbers written plainly, booleans,
//! empty cells null, the rest text; `json_columns` hold JSON (e.g. the items of an order).
//! `rows = "one"` gives the first matching row, `rows = "many"` all of them. The file is read
//! again when it changes (checked at most once per [`RECHECK`], off the async threads); a file
//! that becomes unreadable keeps the last good copy and the error is logged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{FIELDS, Rows, Section, Source, SourceError, Who};

/// How often the file's modification time is looked at.
pub const RECHECK: Duration = Duration::from_secs(1);

/// `[[sources]] type = "csv"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// The file, with a header line; relative to the config file.
    pub path: PathBuf,
    /// The column holding the key.
    pub key_column: String,
    /// The customer field the key is: `customer_id`, `account`, `number`, `name` or `company`.
    #[serde(rename = "match", default = "default_match")]
    pub match_field: String,
    /// `one` (the first matching row, as an object) or `many` (all of them, as an array).
    #[serde(default)]
    pub rows: Rows,
    /// Columns whose cells are JSON, parsed into the section (a cell that is not JSON is an
    /// error for that row's customer).
    #[serde(default)]
    pub json_columns: Vec<String>,
    /// Columns kept as text even when they look like numbers.
    #[serde(default)]
    pub text_columns: Vec<String>,
}

fn default_match() -> String {
    "customer_id".into()
}

/// The parsed file: rows by key.
#[derive(Debug, Default)]
struct Table {
    rows: HashMap<String, Vec<Arc<Map<String, Value>>>>,
}

/// Where the rows come from.
#[derive(Debug)]
enum Origin {
    /// A file, re-read when it changes.
    File {
        path: PathBuf,
        /// Modification time and size of the copy in memory.
        seen: Mutex<(Option<SystemTime>, u64, Instant)>,
    },
    /// Text given at start-up (the demo's bundled data).
    Text,
}

/// How to read the file's columns.
#[derive(Debug, Clone)]
struct Layout {
    key_column: String,
    json_columns: Vec<String>,
    text_columns: Vec<String>,
}

/// A running CSV source.
#[derive(Debug)]
pub struct Csv {
    origin: Origin,
    layout: Layout,
    match_field: &'static str,
    rows: Rows,
    table: RwLock<Arc<Table>>,
}

impl Layout {
    fn parse(&self, text: &[u8], name: &str) -> Result<Table, String> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(text);
        let headers = reader
            .headers()
            .map_err(|e| format!("{name}: {e}"))?
            .clone();
        let key_at = headers
            .iter()
            .position(|h| h == self.key_column)
            .ok_or_else(|| format!("{name}: no column `{}` (the key_column)", self.key_column))?;
        let mut table = Table::default();
        for record in reader.records() {
            let record = record.map_err(|e| format!("{name}: {e}"))?;
            let Some(key) = record.get(key_at).filter(|k| !k.is_empty()) else {
                continue;
            };
            let mut row = Map::with_capacity(headers.len());
            for (header, cell) in headers.iter().zip(record.iter()) {
                let value = if self.json_columns.iter().any(|c| c == header) {
                    if cell.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(cell).map_err(|e| {
                            format!(
                                "{name}: line {}: column `{header}` is not JSON: {e}",
                                record.position().map_or(0, |p| p.line())
                            )
                        })?
                    }
                } else if self.text_columns.iter().any(|c| c == header) {
                    Value::String(cell.to_owned())
                } else {
                    super::value::cell_to_json(cell)
                };
                row.insert(header.to_owned(), value);
            }
            table
                .rows
                .entry(key.to_owned())
                .or_default()
                .push(Arc::new(row));
        }
        Ok(table)
    }
}

impl Csv {
    /// Opens the file (relative to `base`) and reads it once; a file that cannot be read or
    /// lacks `key_column` stops start-up.
    pub fn open(config: &CsvConfig, base: &Path) -> Result<Csv, String> {
        let path = base.join(&config.path);
        let mut csv = Csv::configured(config, Origin::Text)?;
        let (table, mtime, size) = csv.read_file(&path)?;
        csv.table = RwLock::new(Arc::new(table));
        csv.origin = Origin::File {
            path,
            seen: Mutex::new((mtime, size, Instant::now())),
        };
        Ok(csv)
    }

    /// A source over CSV text (bundled data); never reloaded.
    pub fn from_text(config: &CsvConfig, text: &str) -> Result<Csv, String> {
        let csv = Csv::configured(config, Origin::Text)?;
        let table = csv.layout.parse(text.as_bytes(), "bundled data")?;
        *csv.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        Ok(csv)
    }

    fn configured(config: &CsvConfig, origin: Origin) -> Result<Csv, String> {
        let match_field = FIELDS
            .iter()
            .copied()
            .find(|f| *f == config.match_field)
            .ok_or_else(|| {
                format!(
                    "match: unknown customer field `{}`; use one of {}",
                    config.match_field,
                    FIELDS.join(", ")
                )
            })?;
        Ok(Csv {
            origin,
            layout: Layout {
                key_column: config.key_column.clone(),
                json_columns: config.json_columns.clone(),
                text_columns: config.text_columns.clone(),
            },
            match_field,
            rows: config.rows,
            table: RwLock::default(),
        })
    }

    fn read_file(&self, path: &Path) -> Result<(Table, Option<SystemTime>, u64), String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table = self.layout.parse(&text, &path.display().to_string())?;
        Ok((table, meta.modified().ok(), meta.len()))
    }

    /// Re-reads the file if it changed since it was read (at most once per [`RECHECK`]).
    async fn refresh(&self) {
        let Origin::File { path, seen } = &self.origin else {
            return;
        };
        {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.2.elapsed() < RECHECK {
                return;
            }
            seen.2 = Instant::now();
        }
        let meta = match tokio::fs::metadata(path).await {
            Ok(meta) => meta,
            Err(error) => {
                tracing::warn!(%error, file = %path.display(), "CSV source unreadable; keeping the last copy.");
                return;
            }
        };
        let (mtime, size) = (meta.modified().ok(), meta.len());
        let changed = {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            (seen.0, seen.1) != (mtime, size)
        };
        if !changed {
            return;
        }
        let text = match tokio::fs::read(path).await {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!(%error, file = %path.display(), "CSV source unreadable; keeping the last copy.");
                return;
            }
        };
        // Parsing a large file is CPU work: off the async threads.
        let (layout, name) = (self.layout.clone(), path.display().to_string());
        let parsed = tokio::task::spawn_blocking(move || layout.parse(&text, &name))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match parsed {
            Ok(table) => {
                *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.0 = mtime;
                seen.1 = size;
                tracing::info!(file = %path.display(), "CSV source reloaded.");
            }
            Err(error) => {
                tracing::warn!(%error, "CSV source not reloaded; keeping the last copy.");
            }
        }
    }
}

impl Source for Csv {
    async fn fetch(&self, who: &Who) -> Result<Section, SourceError> {
        self.refresh().await;
        let key = who
            .field(self.match_field)
            .ok_or_else(|| SourceError::MissingField(self.match_field.replace('_', " ")))?;
        let table = self.table.read().unwrap_or_else(|p| p.into_inner()).clone();
        let rows = table.rows.get(key).map(Vec::as_slice).unwrap_or_default();
        Ok(match self.rows {
            Rows::One => rows
                .first()
                .map_or(Value::Null, |r| Value::Object((**r).clone())),
            Rows::Many => Value::Array(rows.iter().map(|r| Value::Object((**r).clone())).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::testing::who;

    fn config(rows: Rows) -> CsvConfig {
        CsvConfig {
            path: "x.csv".into(),
            key_column: "account".into(),
            match_field: "account".into(),
            rows,
            json_columns: vec!["items".into()],
            text_columns: vec!["code".into()],
        }
    }

    #[tokio::test]
    async fn rows_by_key_typed() {
        let text = "account,total,code,paid,items\nA1,10.5,007,true,\"[{\"\"sku\"\":\"\"W\"\"}]\"\nA1,3,1,false,\nB2,1,2,,\n";
        let many = Csv::from_text(&config(Rows::Many), text).expect("parses");
        let got = many.fetch(&who("c1", "A1")).await.expect("fetch");
        assert_eq!(
            got,
            serde_json::json!([
                {"account": "A1", "total": 10.5, "code": "007", "paid": true, "items": [{"sku": "W"}]},
                {"account": "A1", "total": 3, "code": "1", "paid": false, "items": null}
            ])
        );
        let one = Csv::from_text(&config(Rows::One), text).expect("parses");
        assert_eq!(
            one.fetch(&who("c2", "B2")).await.expect("fetch")["total"],
            1
        );
        assert_eq!(
            one.fetch(&who("c3", "ZZ")).await.expect("fetch"),
            Value::Null
        );
        assert_eq!(
            one.fetch(&who("c4", "")).await,
            Err(SourceError::MissingField("account".into()))
        );
        assert!(
            Csv::from_text(&config(Rows::One), "nokey,x\n1,2\n")
                .is_err_and(|e| e.contains("no column `account`"))
        );
        assert!(
            Csv::from_text(&config(Rows::One), "account,items\nA,{bad\n")
                .is_err_and(|e| e.contains("line 2") && e.contains("not JSON"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_changed_file_is_read_again() {
        let dir = std::env::temp_dir().join(format!("screenpop-csv-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("credit.csv");
        std::fs::write(&file, "account,limit\nA1,1000\n").expect("write");
        let mut c = config(Rows::One);
        c.path = "credit.csv".into();
        let csv = Csv::open(&c, &dir).expect("opens");
        assert_eq!(
            csv.fetch(&who("c1", "A1")).await.expect("fetch")["limit"],
            1000
        );
        std::fs::write(&file, "account,limit\nA1,2500\n").expect("write");
        let started = Instant::now();
        loop {
            if csv.fetch(&who("c1", "A1")).await.expect("fetch")["limit"] == 2500 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "not reloaded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
