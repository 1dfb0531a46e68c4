//! Caller resolution: from the number on the wire to a customer.
//!
//! - `normalise`: raw caller IDs to E.164 keys (`phonenumber`, libphonenumber metadata).
//! - `customer`: a customer, packed into one allocation.
//! - `directory`: the index from keys to customers (ranking, company collapse, switchboard
//!   fallback), loadable from the customers CSV.
//! - `index`: the directory as lookups see it, behind its caches.
//! - `postgres`: the directory loaded from PostgreSQL and kept fresh by LISTEN/NOTIFY.
//! - `import`: bulk import of customers into PostgreSQL.
//! - `search`: the agents' customer search (name, company, account, any part of a number),
//!   an index owned by the directory and swapped with it.
//!
//! A lookup never waits on I/O: it is a hash-map probe.

pub mod directory;
pub mod import;
mod index;
mod normalise;
pub mod postgres;
pub mod search;
pub(crate) mod section;

use std::sync::Arc;

pub use crate::customer::{Customer, CustomerFields, NumberKind};
pub use directory::Directory;
pub use index::Index;
pub use normalise::{Key, Normaliser};
pub use search::SearchHit;

/// The outcome of resolving a caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "match", rename_all = "snake_case")]
pub enum Resolution {
    /// The caller withheld their number: no lookup was made.
    Withheld,
    /// No customer has this number.
    Unknown,
    /// Exactly one customer (or several contacts of one company: the company).
    Customer {
        /// The customer.
        customer: Customer,
    },
    /// The number is not on file, but it lies in a company's main-number block.
    Approximate {
        /// The company's record.
        customer: Customer,
        /// Why it is offered.
        reason: String,
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
    pub customer: Customer,
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
            Resolution::Approximate { .. } => "approximate",
            Resolution::Candidates { .. } => "candidates",
        }
    }

    /// The customers offered, best first.
    pub fn customers(&self) -> Vec<&Customer> {
        match self {
            Resolution::Customer { customer } | Resolution::Approximate { customer, .. } => {
                vec![customer]
            }
            Resolution::Candidates { candidates } => {
                candidates.iter().map(|c| &c.customer).collect()
            }
            Resolution::Withheld | Resolution::Unknown => Vec::new(),
        }
    }

    /// The same resolution with `customer_id` ranked first, if it is a candidate: the customer
    /// this agent picked last time for this number.
    pub fn preferring(&self, customer_id: &str) -> Option<Resolution> {
        let Resolution::Candidates { candidates } = self else {
            return None;
        };
        let at = candidates
            .iter()
            .position(|c| c.customer.id() == customer_id)?;
        let mut ranked = candidates.clone();
        let mut chosen = ranked.remove(at);
        chosen.reason = format!(
            "you picked this customer for this number last time; {}",
            chosen.reason
        );
        ranked.insert(0, chosen);
        Some(Resolution::Candidates { candidates: ranked })
    }
}

/// The configured directory: PostgreSQL (`[directory] database_url`, with the index to keep in
/// sync), a CSV file, or an empty one.
pub async fn open(
    numbers: &section::Numbers,
    directory: &section::DirectoryConfig,
) -> anyhow::Result<(Arc<dyn Resolver>, Option<Arc<postgres::PgDirectory>>)> {
    use anyhow::Context as _;
    let normaliser = Normaliser::new(numbers.default_region.0);
    let digits = numbers.switchboard_digits;
    Ok(match (&directory.csv, &directory.database_url) {
        (_, Some(url)) => {
            let directory = postgres::PgDirectory::load(url, normaliser, digits).await?;
            (directory.clone(), Some(directory))
        }
        (Some(path), None) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let directory =
                Directory::from_csv(file, &path.display().to_string(), normaliser, digits)?;
            tracing::info!(
                customers = directory.customers(),
                numbers = directory.keys(),
                "Customer directory loaded."
            );
            (Arc::new(Index::new(directory)), None)
        }
        (None, None) => (
            Arc::new(Index::new(Directory::new(normaliser, digits))),
            None,
        ),
    })
}

/// Anything that can resolve a caller number without waiting.
pub trait Resolver: Send + Sync + 'static {
    /// Resolves a raw caller number (as it came off the wire).
    fn resolve(&self, raw: &str) -> Resolution;

    /// The normalised key of a raw number (E.164, or its digits), when this resolver
    /// normalises: what per-caller state (an agent's pick) is keyed by.
    fn key(&self, _raw: &str) -> Option<Key> {
        None
    }

    /// A customer's numbers (E.164 for valid numbers, else their digits), for data sources
    /// that look customers up by number.
    fn numbers(&self, _customer_id: &str) -> Vec<String> {
        Vec::new()
    }

    /// A customer by id (an agent attaching a customer it found by search to a call).
    fn customer(&self, _customer_id: &str) -> Option<Customer> {
        None
    }

    /// At most `limit` customers matching an agent's search, best first (see [`search`]).
    fn search(&self, _query: &str, _limit: usize) -> Vec<SearchHit> {
        Vec::new()
    }
}

/// Metric `screenpop_directory_customers`.
pub const DIRECTORY_CUSTOMERS: &str = "screenpop_directory_customers";
/// Metric `screenpop_directory_miss_cache_total`.
pub const DIRECTORY_MISS_CACHE_TOTAL: &str = "screenpop_directory_miss_cache_total";
/// Metric `screenpop_directory_numbers`.
pub const DIRECTORY_NUMBERS: &str = "screenpop_directory_numbers";
/// Metric `screenpop_directory_reconnects_total`.
pub const DIRECTORY_RECONNECTS_TOTAL: &str = "screenpop_directory_reconnects_total";
/// Metric `screenpop_directory_reloads_total`.
pub const DIRECTORY_RELOADS_TOTAL: &str = "screenpop_directory_reloads_total";
/// Metric `screenpop_directory_updates_total`.
pub const DIRECTORY_UPDATES_TOTAL: &str = "screenpop_directory_updates_total";
