//! The in-memory customer index: normalised key → customers.
//!
//! Loaded from CSV with columns `id,name,company,account,crm_url,tags,numbers`, where `numbers`
//! is `kind:raw` entries separated by `|` (kinds: `main`, `work`, `mobile`), for example
//! `main:(415) 555-0100|mobile:+1 415 555 0199`, and `tags` is `|`-separated.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use super::normalise::{Key, Normaliser};
use super::{Candidate, Resolution, Resolver};

/// A customer as the pop shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Customer {
    /// The customer's id in the CRM.
    pub id: String,
    /// The customer's name.
    pub name: String,
    /// The company, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// The account number, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// A link into the CRM, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crm_url: Option<String>,
    /// Free tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Why a CSV could not be loaded; the file's author is at fault.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A row is malformed.
    #[error("{source_name}: line {line}: {reason}")]
    Row {
        /// The file (or bundle) name.
        source_name: String,
        /// The line number, 1-based.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The index.
#[derive(Debug, Default)]
pub struct Directory {
    by_key: HashMap<Key, Vec<Arc<Customer>>>,
    /// Each customer's keys, to take a customer out again.
    keys_of: HashMap<String, Vec<Key>>,
    normaliser: Option<Normaliser>,
}

impl Directory {
    /// Loads a CSV (see the module docs) read from `reader`; `name` labels errors.
    pub fn from_csv(
        reader: impl Read,
        name: &str,
        normaliser: Normaliser,
    ) -> Result<Self, DirectoryError> {
        let mut dir = Directory {
            normaliser: Some(normaliser),
            ..Directory::default()
        };
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        for row in csv.deserialize::<super::import::CsvRow>() {
            let row = row.map_err(|e| DirectoryError::Row {
                source_name: name.into(),
                line: e.position().map_or(0, |p| p.line()),
                reason: e.to_string(),
            })?;
            let some = |s: String| (!s.is_empty()).then_some(s);
            let customer = Arc::new(Customer {
                id: row.id,
                name: row.name,
                company: some(row.company),
                account: some(row.account),
                crm_url: some(row.crm_url),
                tags: row
                    .tags
                    .split('|')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
            });
            let keys = super::import::split_numbers(&row.numbers)
                .iter()
                .map(|(_, raw)| normaliser.key(raw))
                .collect();
            dir.upsert(customer, keys);
        }
        Ok(dir)
    }

    /// An empty index for one normaliser.
    pub fn empty(normaliser: Normaliser) -> Self {
        Directory {
            normaliser: Some(normaliser),
            ..Directory::default()
        }
    }

    /// The normaliser in use.
    pub fn normaliser(&self) -> Option<Normaliser> {
        self.normaliser
    }

    /// Adds a customer with its number keys, replacing any earlier version of it.
    pub fn upsert(&mut self, customer: Arc<Customer>, mut keys: Vec<Key>) {
        self.remove(&customer.id);
        keys.sort();
        keys.dedup();
        for key in &keys {
            self.by_key
                .entry(key.clone())
                .or_default()
                .push(customer.clone());
        }
        self.keys_of.insert(customer.id.clone(), keys);
    }

    /// Takes a customer out; false if it was not there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(keys) = self.keys_of.remove(id) else {
            return false;
        };
        for key in keys {
            if let Some(list) = self.by_key.get_mut(&key) {
                list.retain(|c| c.id != id);
                if list.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
        true
    }

    /// Customers loaded.
    pub fn customers(&self) -> usize {
        self.keys_of.len()
    }

    /// Distinct number keys.
    pub fn keys(&self) -> usize {
        self.by_key.len()
    }
}

impl Resolver for Directory {
    fn resolve(&self, raw: &str) -> Resolution {
        let Some(normaliser) = self.normaliser else {
            return Resolution::Unknown;
        };
        self.resolve_key(&normaliser.key(raw))
    }
}

impl Directory {
    /// Resolves a key only if it names at least one customer.
    pub fn resolve_hit(&self, key: &Key) -> Option<Resolution> {
        self.by_key.contains_key(key).then(|| self.resolve_key(key))
    }

    /// Resolves an already normalised key.
    pub fn resolve_key(&self, key: &Key) -> Resolution {
        match self.by_key.get(key).map(Vec::as_slice) {
            None | Some([]) => Resolution::Unknown,
            Some([one]) => Resolution::Customer {
                customer: one.clone(),
            },
            Some(many) => {
                // Several customers of one company collapse to the company (the first listed).
                let company = many[0].company.as_deref();
                if company.is_some() && many.iter().all(|c| c.company.as_deref() == company) {
                    return Resolution::Customer {
                        customer: many[0].clone(),
                    };
                }
                Resolution::Candidates {
                    candidates: many
                        .iter()
                        .map(|c| Candidate {
                            customer: c.clone(),
                            reason: "shares this number".into(),
                        })
                        .collect(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonenumber::country;

    #[test]
    fn loads_and_resolves() {
        let csv = "id,name,company,account,crm_url,tags,numbers\n\
                   c1,Acme Corporation,Acme Corporation,A-1,,vip,main:(415) 555-0100|mobile:415 555 0199\n\
                   c2,Jo Doe,,,,,work:+1 212 555 0111\n\
                   c3,Al Roe,,,,,work:212-555-0111\n";
        let dir = Directory::from_csv(csv.as_bytes(), "test.csv", Normaliser::new(country::Id::US))
            .expect("loads");
        assert_eq!(dir.customers(), 3);
        match dir.resolve("+14155550100") {
            Resolution::Customer { customer } => assert_eq!(customer.name, "Acme Corporation"),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(dir.resolve("+12125550111"), Resolution::Candidates { candidates } if candidates.len() == 2)
        );
        assert_eq!(dir.resolve("+19995550000"), Resolution::Unknown);
        let bad = "id,name\n\"unterminated,x\n";
        assert!(
            Directory::from_csv(bad.as_bytes(), "bad.csv", Normaliser::new(country::Id::US))
                .is_err()
        );
    }
}
