//! Caller resolution: from the number on the wire to a customer.
//!
//! - `normalise`: raw caller IDs to E.164 keys (`phonenumber`, libphonenumber metadata).
//! - `directory`: the in-memory index from keys to customers, loaded from a CSV file (the demo
//!   data, or a small site's export). PostgreSQL-backed loading arrives with the index issue.
//!
//! A lookup never waits on I/O: it is a hash-map probe.

pub mod directory;
pub mod import;
pub mod normalise;
pub mod postgres;

use std::sync::Arc;

pub use directory::{Customer, Directory};
pub use normalise::{Key, Normaliser};

/// The outcome of resolving a caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "match", rename_all = "snake_case")]
pub enum Resolution {
    /// The caller withheld their number: no lookup was made.
    Withheld,
    /// No customer has this number.
    Unknown,
    /// Exactly one customer.
    Customer {
        /// The customer.
        customer: Arc<Customer>,
    },
    /// Several customers share the number; ranked, each with why.
    Candidates {
        /// The candidates, best first.
        candidates: Vec<Candidate>,
    },
}

/// One of several customers a number could mean.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    /// The customer.
    pub customer: Arc<Customer>,
    /// Why it is offered.
    pub reason: String,
}

impl Resolution {
    /// A metrics and log label (carries no customer data).
    pub fn label(&self) -> &'static str {
        match self {
            Resolution::Withheld => "withheld",
            Resolution::Unknown => "unknown",
            Resolution::Customer { .. } => "customer",
            Resolution::Candidates { .. } => "candidates",
        }
    }
}

/// The configured directory: PostgreSQL (`[directory] database_url`, with the index to keep in
/// sync), a CSV file, or an empty one.
pub async fn open(
    config: &crate::config::Config,
) -> anyhow::Result<(Arc<dyn Resolver>, Option<Arc<postgres::PgDirectory>>)> {
    use anyhow::Context as _;
    let normaliser = Normaliser::new(config.numbers.default_region.0);
    Ok(
        match (&config.directory.csv, &config.directory.database_url) {
            (_, Some(url)) => {
                let directory = postgres::PgDirectory::load(url, normaliser).await?;
                (directory.clone(), Some(directory))
            }
            (Some(path), None) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                let directory = Directory::from_csv(file, &path.display().to_string(), normaliser)?;
                tracing::info!(
                    customers = directory.customers(),
                    numbers = directory.keys(),
                    "Customer directory loaded."
                );
                (Arc::new(directory), None)
            }
            (None, None) => (Arc::new(Directory::empty(normaliser)), None),
        },
    )
}

/// Anything that can resolve a caller number without waiting.
pub trait Resolver: Send + Sync + 'static {
    /// Resolves a raw caller number (as it came off the wire).
    fn resolve(&self, raw: &str) -> Resolution;
}
