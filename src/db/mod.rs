//! PostgreSQL: connecting, and the schema migrations in `schema/`.
//!
//! Owns the schema's lifecycle only; what reads and writes the tables lives with its stage
//! (`resolve` for customers, `agents`, the call log).

pub(crate) mod listen;
pub mod migrate;

pub use migrate::{MIGRATIONS, applied, migrate};

/// Why the database could not be used; the database (or its URL) is at fault.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Connecting failed.
    #[error("cannot connect to PostgreSQL: {0}{hint}", hint = missing_database_hint(.0))]
    Connect(#[source] tokio_postgres::Error),
    /// A worker for the database could not be started (out of threads or memory).
    #[error("cannot start a database worker: {0}")]
    Runtime(#[source] std::io::Error),
    /// A long-lived connection (LISTEN) ended.
    #[error("the PostgreSQL connection was lost")]
    Lost,
    /// A statement failed.
    #[error("{what}: {source}")]
    Query {
        /// What was being done.
        what: String,
        /// The database's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// What to do about a database that does not exist (SQLSTATE 3D000), as a sentence to append
/// to the error; empty for any other error.
pub fn missing_database_hint(e: &tokio_postgres::Error) -> &'static str {
    if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME) {
        " (for the demo's databases run `screenpop demo-db`; otherwise create the database, \
         and for the customer index run `screenpop migrate` on it)"
    } else {
        ""
    }
}

impl DbError {
    /// Wraps a query error with what was being done.
    pub fn query(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> DbError {
        let what = what.into();
        move |source| DbError::Query { what, source }
    }
}

/// A pool of connections made on first use and checked cheaply when taken again
/// (`RecyclingMethod::Fast`: a broken one is replaced on its next use); `wait`: how long a
/// caller waits for a free connection (`None`: as long as it takes).
pub fn pool(
    pg: tokio_postgres::Config,
    size: usize,
    wait: Option<std::time::Duration>,
) -> Result<deadpool_postgres::Pool, String> {
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let mut builder = deadpool_postgres::Pool::builder(manager).max_size(size.max(1));
    if wait.is_some() {
        builder = builder
            .wait_timeout(wait)
            .runtime(deadpool_postgres::Runtime::Tokio1);
    }
    builder.build().map_err(|e| format!("pool: {e}"))
}

/// Connects and drives the connection on a task of its own (ended when the client drops).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(DbError::Connect)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL connection ended.");
        }
    });
    Ok(client)
}
