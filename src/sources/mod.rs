//! Data sources: where the sections of a customer's profile come from (balance from accounting,
//! recent purchases from sales, credit terms from credit…), each behind an adapter.
//!
//! # Adding an adapter
//! One file, `src/sources/<system>.rs`, holding `<System>Config` (plain serde data, `///` on
//! every field, `deny_unknown_fields`) and `<System>` (the running thing) implementing
//! [`Source`]; then one variant in [`AdapterConfig`] and its arm in [`AdapterConfig::build`].
//! The compiler points at anything left. `docs/adapters.md` walks through an example, and
//! [`contract::check`] is the test every adapter should pass.
//!
//! Adapters only fetch: they do not spawn, retry, cache or time themselves out. The composer
//! (the composer) does that for all of them alike.

pub mod contract;
pub(crate) mod csv;
pub mod http;
mod postgres;
mod value;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use serde::Deserialize;

use crate::customer::Customer;

/// A section's data: a JSON object (one record) or array (several), or null (nothing on file).
pub type Section = serde_json::Value;

/// Who a source is asked about: the resolved customer and its numbers.
#[derive(Debug, Clone)]
pub struct Who {
    /// The customer.
    pub customer: Customer,
    /// Its numbers: E.164 for valid numbers, else their digits.
    pub numbers: Vec<String>,
    /// The call it is composed for, if any (a source may leave that call out, as `history`
    /// does).
    pub call_id: Option<String>,
}

/// The customer fields a query or URL template may name.
pub const FIELDS: &[&str] = &[
    "customer_id",
    "account",
    "name",
    "company",
    "number",
    "crm_url",
];

impl Who {
    /// A customer field by name (see [`FIELDS`]); `None` when the customer has no such value.
    pub fn field(&self, name: &str) -> Option<&str> {
        match name {
            "customer_id" => Some(self.customer.id()),
            "account" => self.customer.account(),
            "name" => Some(self.customer.name()),
            "company" => self.customer.company(),
            "number" => self.numbers.first().map(String::as_str),
            "crm_url" => self.customer.crm_url(),
            _ => None,
        }
    }
}

/// Why a source gave no section; the source (or its configuration) is at fault. Messages carry
/// no customer data: they are shown to agents and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The system could not be reached (refused, DNS, TLS, pool exhausted).
    #[error("cannot reach the source: {0}")]
    Unreachable(String),
    /// The system answered with an error (SQL error, HTTP status).
    #[error("the source refused the request: {0}")]
    Refused(String),
    /// The answer could not be understood (not JSON, an unsupported column type, too large).
    #[error("the source's answer is unusable: {0}")]
    BadAnswer(String),
    /// The customer lacks a field the source needs (e.g. no account number).
    #[error("the customer has no {0}")]
    MissingField(String),
}

/// The adapter contract: fetch one customer's section.
pub trait Source: Send + Sync + 'static {
    /// Fetches the section for `who`. No timeouts or retries here: the composer applies them.
    fn fetch(&self, who: &Who) -> impl Future<Output = Result<Section, SourceError>> + Send;

    /// Gets ready for the first calls (opens connections, prepares statements), so that they
    /// do not pay for it; called once at start-up, in the background. Errors are not
    /// reported here: the calls will report them. Nothing to do by default.
    fn warm(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Reaches the system once, for `check-config --connect` (a trivial query, a request to
    /// the server), and says what answered; `None` for a source with no peer (a file). No
    /// timeout here: the caller applies it.
    fn probe(&self) -> impl Future<Output = Option<Result<String, SourceError>>> + Send {
        async { None }
    }
}

/// A boxed probe ([`Source::probe`]), for sources held behind `dyn`.
pub type Probe<'a> = Pin<Box<dyn Future<Output = Option<Result<String, SourceError>>> + Send + 'a>>;

/// A boxed fetch, for sources held behind `dyn`.
pub type Fetch<'a> = Pin<Box<dyn Future<Output = Result<Section, SourceError>> + Send + 'a>>;

/// [`Source`] in a form that can be boxed (`Box<dyn DynSource>`); implemented for every
/// [`Source`].
pub trait DynSource: Send + Sync + 'static {
    /// [`Source::fetch`], boxed.
    fn fetch_boxed<'a>(&'a self, who: &'a Who) -> Fetch<'a>;

    /// [`Source::warm`], boxed.
    fn warm_boxed(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// [`Source::probe`], boxed.
    fn probe_boxed(&self) -> Probe<'_>;
}

impl<S: Source> DynSource for S {
    fn fetch_boxed<'a>(&'a self, who: &'a Who) -> Fetch<'a> {
        Box::pin(self.fetch(who))
    }

    fn warm_boxed(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.warm())
    }

    fn probe_boxed(&self) -> Probe<'_> {
        Box::pin(self.probe())
    }
}

/// One adapter's configuration, chosen by `type` in a `[[sources]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AdapterConfig {
    /// A PostgreSQL database queried with a parameterised statement.
    Postgres(postgres::PostgresConfig),
    /// An HTTP JSON API.
    Http(http::HttpConfig),
    /// A CSV file (a spreadsheet export).
    Csv(csv::CsvConfig),
}

impl AdapterConfig {
    /// Starts the adapter; `base` is the config file's folder (relative paths). Errors name
    /// what is wrong for the operator.
    pub fn build(&self, base: &Path) -> Result<Box<dyn DynSource>, BuildError> {
        let failed = |reason| BuildError {
            adapter: self.kind(),
            reason,
        };
        Ok(match self {
            AdapterConfig::Postgres(c) => Box::new(postgres::Postgres::new(c).map_err(failed)?),
            AdapterConfig::Http(c) => Box::new(http::Http::new(c, base).map_err(failed)?),
            AdapterConfig::Csv(c) => Box::new(csv::Csv::open(c, base).map_err(failed)?),
        })
    }

    /// The adapter type, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AdapterConfig::Postgres(_) => "postgres",
            AdapterConfig::Http(_) => "http",
            AdapterConfig::Csv(_) => "csv",
        }
    }
}

/// An adapter that cannot start: its query, template, file or TLS settings are wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct BuildError {
    /// The adapter type (`postgres`, `http`, `csv`).
    pub adapter: &'static str,
    /// What is wrong, for the operator.
    pub reason: String,
}

/// How many rows a source answers with: one record, or a list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rows {
    /// The first row as an object (null when there is none).
    #[default]
    One,
    /// Every row, as an array of objects.
    Many,
}

/// Expands `{field}` placeholders in a template with the customer's fields, each passed through
/// `escape`. Unknown placeholders were refused by [`check_template`].
pub fn expand(
    template: &str,
    who: &Who,
    escape: impl Fn(&str) -> String,
) -> Result<String, SourceError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = &after[..close];
        let value = who
            .field(name)
            .ok_or_else(|| SourceError::MissingField(name.replace('_', " ")))?;
        out.push_str(&escape(value));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks that every `{placeholder}` in a template names a customer field.
pub fn check_template(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{template}`"))?;
        let name = &after[..close];
        if !FIELDS.contains(&name) {
            return Err(format!(
                "unknown placeholder `{{{name}}}`; use one of {}",
                FIELDS
                    .iter()
                    .map(|f| format!("{{{f}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::customer::CustomerFields;

    /// A customer for adapter tests.
    pub fn who(id: &str, account: &str) -> Who {
        Who {
            customer: Customer::new(CustomerFields {
                id,
                name: "Test Customer",
                company: "Test Co",
                account,
                ..CustomerFields::default()
            }),
            numbers: vec!["+14155550100".into()],
            call_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_expand_and_check() {
        let who = testing::who("c 1", "A/1");
        let url = expand("https://x/{customer_id}?a={account}", &who, |v| {
            v.replace(' ', "%20").replace('/', "%2F")
        })
        .expect("expands");
        assert_eq!(url, "https://x/c%201?a=A%2F1");
        assert!(check_template("https://x/{customer_id}/{number}").is_ok());
        assert!(
            check_template("https://x/{customer}")
                .is_err_and(|e| e.contains("unknown placeholder `{customer}`"))
        );
        assert!(check_template("https://x/{oops").is_err());
        let no_account = testing::who("c1", "");
        assert_eq!(
            expand("{account}", &no_account, str::to_owned),
            Err(SourceError::MissingField("account".into()))
        );
    }
}
