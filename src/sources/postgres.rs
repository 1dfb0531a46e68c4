//! `type = "postgres"`: a section from a PostgreSQL database (each source its own database,
//! owned by its own team), with a parameterised query.
//!
//! The query names customer fields as `$customer_id`, `$account`, `$name`, `$company`,
//! `$number`, `$crm_url`; they are rewritten to positional parameters (`($1::text)`) and bound,
//! never interpolated, so a customer field holding `'; DROP TABLE …` is just a string. Cast in
//! the query when a column is not text: `WHERE id = $customer_id::int`. Each row becomes an
//! object by column type (see `value`); `rows = "one"` takes the first row (null when there is
//! none), `rows = "many"` all of them, as an array.
//!
//! A pool per source (`deadpool-postgres`, fast recycling: a broken connection is replaced on
//! its next use); statements are prepared once per connection.

use std::time::Duration;

use deadpool_postgres::Pool;
use serde::Deserialize;
use serde_json::Value;

use super::{FIELDS, Rows, Section, Source, SourceError, Who};

/// `[[sources]] type = "postgres"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// The source's database, e.g. `postgres://screenpop@accounting.example/accounting`.
    pub database_url: String,
    /// The query, naming customer fields as `$customer_id`, `$account`, `$name`, `$company`,
    /// `$number` (the first of the customer's numbers, E.164) or `$crm_url`.
    pub query: String,
    /// `one` (the first row, as an object) or `many` (all rows, as an array).
    #[serde(default)]
    pub rows: Rows,
    /// Most connections to this database.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Connections opened (and the statement prepared on each) at start-up, so that the first
    /// calls do not wait for connection set-up (at most `pool_size`).
    #[serde(default = "default_warm")]
    pub warm_connections: usize,
    /// How long connecting may take.
    #[serde(
        default = "default_connect_timeout",
        with = "crate::serde_ext::duration"
    )]
    pub connect_timeout: Duration,
}

fn default_pool() -> usize {
    8
}
fn default_warm() -> usize {
    4
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}

/// A running PostgreSQL source.
pub struct Postgres {
    pool: Pool,
    sql: String,
    params: Vec<&'static str>,
    rows: Rows,
    warm: usize,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("sql", &self.sql)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Checks the query and sets up the pool (connections are made on first use).
    pub fn new(config: &PostgresConfig) -> Result<Postgres, String> {
        let (sql, params) = positional(&config.query)?;
        let mut pg: tokio_postgres::Config = config
            .database_url
            .parse()
            .map_err(|e| format!("database_url: {e}"))?;
        pg.connect_timeout(config.connect_timeout)
            .keepalives(true)
            .application_name("screenpop");
        let pool = crate::db::pool(pg, config.pool_size, None)?;
        Ok(Postgres {
            pool,
            sql,
            params,
            rows: config.rows,
            warm: config.warm_connections.min(config.pool_size.max(1)),
        })
    }
}

impl Source for Postgres {
    async fn warm(&self) {
        // Hold them all at once, so that the pool opens `warm` distinct connections.
        let mut held = Vec::with_capacity(self.warm);
        for _ in 0..self.warm {
            match self.pool.get().await {
                Ok(client) => {
                    let _ = client.prepare_cached(&self.sql).await;
                    held.push(client);
                }
                Err(_) => break, // unreachable now: the first calls will say so
            }
        }
    }

    async fn probe(&self) -> Option<Result<String, SourceError>> {
        let result = async {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| SourceError::Unreachable(pool_error(&e)))?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| SourceError::Refused(db_error(&e)))?;
            Ok("connected, SELECT 1 answered".to_owned())
        };
        Some(result.await)
    }

    async fn fetch(&self, who: &Who) -> Result<Section, SourceError> {
        let values: Vec<Option<&str>> = self.params.iter().map(|p| who.field(p)).collect();
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| SourceError::Unreachable(pool_error(&e)))?;
        let statement = client
            .prepare_cached(&self.sql)
            .await
            .map_err(|e| SourceError::Refused(db_error(&e)))?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = client
            .query(&statement, &params)
            .await
            .map_err(|e| SourceError::Refused(db_error(&e)))?;
        let objects = || rows.iter().map(super::value::row_to_json);
        match self.rows {
            Rows::One => match objects().next() {
                Some(row) => row.map(Value::Object).map_err(SourceError::BadAnswer),
                None => Ok(Value::Null),
            },
            Rows::Many => objects()
                .map(|r| r.map(Value::Object))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
                .map_err(SourceError::BadAnswer),
        }
    }
}

/// A database error as the agent and the log may see it: its SQLSTATE and the server's
/// message, whose text can quote a value only for the statement's own literals; for bound
/// parameters PostgreSQL names types, not values.
fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} (SQLSTATE {}){}",
            db.message(),
            db.code().code(),
            crate::db::missing_database_hint(e)
        ),
        None if e.is_closed() => "connection closed".into(),
        None => "connection failed".into(),
    }
}

fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(b) => db_error(b),
        deadpool_postgres::PoolError::Timeout(_) => "no connection in time".into(),
        _ => "connection pool unavailable".into(),
    }
}

/// Rewrites `$field` names to `($N::text)` and lists the fields in parameter order. Text in
/// single quotes, double-quoted identifiers, comments and `$n`/`$$` forms are left alone.
fn positional(query: &str) -> Result<(String, Vec<&'static str>), String> {
    let bytes = query.as_bytes();
    let mut out = String::with_capacity(query.len() + 16);
    let mut params: Vec<&'static str> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let skip_to = |from: usize, end: &[u8]| -> usize {
            query[from..]
                .find(std::str::from_utf8(end).unwrap_or("\0"))
                .map_or(query.len(), |p| from + p + end.len())
        };
        let next = match c {
            b'\'' => skip_to(i + 1, b"'"),
            b'"' => skip_to(i + 1, b"\""),
            b'-' if bytes.get(i + 1) == Some(&b'-') => skip_to(i + 2, b"\n"),
            b'/' if bytes.get(i + 1) == Some(&b'*') => skip_to(i + 2, b"*/"),
            b'$' if bytes
                .get(i + 1)
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_') =>
            {
                let end = query[i + 1..]
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .map_or(query.len(), |p| i + 1 + p);
                let name = &query[i + 1..end];
                if bytes.get(end) == Some(&b'$') {
                    return Err(format!(
                        "dollar-quoted strings (`${name}$`) are not supported in source queries"
                    ));
                }
                let Some(field) = FIELDS.iter().find(|f| **f == name) else {
                    return Err(format!(
                        "unknown parameter `${name}`; use one of {}",
                        FIELDS
                            .iter()
                            .map(|f| format!("${f}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                };
                let n = match params.iter().position(|p| p == field) {
                    Some(at) => at + 1,
                    None => {
                        params.push(field);
                        params.len()
                    }
                };
                out.push_str(&format!("(${n}::text)"));
                i = end;
                continue;
            }
            _ => {
                let len = query[i..].chars().next().map_or(1, char::len_utf8);
                i + len
            }
        };
        out.push_str(&query[i..next]);
        i = next;
    }
    Ok((out, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_parameters_become_positional() {
        let (sql, params) = positional(
            "SELECT '$account' AS lit, \"$x\" FROM t -- $name\n WHERE a = $account AND id = $customer_id::int OR b = $account",
        )
        .expect("ok");
        assert_eq!(
            sql,
            "SELECT '$account' AS lit, \"$x\" FROM t -- $name\n WHERE a = ($1::text) AND id = ($2::text)::int OR b = ($1::text)"
        );
        assert_eq!(params, ["account", "customer_id"]);
        assert!(positional("SELECT $nope").is_err_and(|e| e.contains("unknown parameter `$nope`")));
        assert!(positional("SELECT $1").is_ok());
        assert!(positional("SELECT $q$x$q$").is_err());
    }
}
