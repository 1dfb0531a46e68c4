//! Display hints: how the agent page shows one source's section (`[sources.display]`).
//!
//! Owns the hints' config struct, its validation and its wire form (the `display` member of a
//! `section` message). It does not render anything: `src/web/page/app.js` does, by the data's
//! shape when no hint says otherwise (an object → labelled fields, a list of objects → a table,
//! a list of scalars → a list). The hints are plain data; the composer only carries them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[sources.display]`: the optional hints for one section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawHints")]
pub struct DisplayHints {
    /// The section's heading (default: the source's `title`, else its name humanised). Sent as
    /// the message's `title`, not in `display`.
    #[serde(skip_serializing)]
    pub title: Option<String>,
    /// Which view renders it (default: chosen by the data's shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<View>,
    /// Field or column labels by key (default: the key humanised, `credit_limit` → "Credit
    /// limit").
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The fields or table columns shown, in this order (default: every key, first seen
    /// first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// How values are formatted, by key (default: as they are).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub formats: BTreeMap<String, ValueFormat>,
    /// What to say when there is nothing on file (default: "Nothing on file.").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty: Option<String>,
}

/// A view of the agent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Labelled fields (a definition grid): the shape of an object.
    Fields,
    /// A table, a row per object: the shape of a list of objects.
    Table,
    /// A bulleted list: the shape of a list of scalars.
    List,
    /// Balance and overdue amounts over an invoice table: `{currency, balance, overdue,
    /// overdue_days, invoices: [{number, date, due, amount, status}]}`.
    Balance,
    /// Credit terms with a banner when on hold: `{limit, currency, terms, rating, hold}`.
    Credit,
    /// Earlier calls with their outcomes and notes, and a repeat-caller banner: the built-in
    /// `history` section's shape (`calls::history`).
    History,
}

impl View {
    /// Every view, as written in the config.
    pub const ALL: &'static [(&'static str, View)] = &[
        ("fields", View::Fields),
        ("table", View::Table),
        ("list", View::List),
        ("balance", View::Balance),
        ("credit", View::Credit),
        ("history", View::History),
    ];
}

/// How one value is formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    /// An amount, in the sibling `currency` field's currency when there is one.
    Money,
    /// An ISO 8601 date or timestamp, in the agent's locale.
    Date,
    /// A fraction as a percentage: 0.125 → 12.5 %.
    Percent,
    /// A small pill: yes/no for a boolean, else the text.
    Badge,
    /// Line items `[{qty, name}]` as "10 × Widget, 5 × Gasket".
    Items,
}

impl ValueFormat {
    /// Every format, as written in the config.
    pub const ALL: &'static [(&'static str, ValueFormat)] = &[
        ("money", ValueFormat::Money),
        ("date", ValueFormat::Date),
        ("percent", ValueFormat::Percent),
        ("badge", ValueFormat::Badge),
        ("items", ValueFormat::Items),
    ];
}

/// The hints as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHints {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    view: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    formats: BTreeMap<String, String>,
    #[serde(default)]
    empty: Option<String>,
}

fn one_of<T: Copy>(all: &[(&str, T)], given: &str, what: &str, key: &str) -> Result<T, String> {
    all.iter()
        .find(|(name, _)| *name == given)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
            format!(
                "{key}: unknown {what} `{given}` (one of: {})",
                names.join(", ")
            )
        })
}

impl TryFrom<RawHints> for DisplayHints {
    type Error = String;

    /// Checks the hints; the error names the key (`display.formats.amount`).
    fn try_from(raw: RawHints) -> Result<DisplayHints, String> {
        let view = raw
            .view
            .map(|v| one_of(View::ALL, &v, "view", "display.view"))
            .transpose()?;
        let mut formats = BTreeMap::new();
        for (key, format) in raw.formats {
            let at = format!("display.formats.{key}");
            nonempty(&key, &at)?;
            formats.insert(key, one_of(ValueFormat::ALL, &format, "format", &at)?);
        }
        for (key, label) in &raw.labels {
            let at = format!("display.labels.{key}");
            nonempty(key, &at)?;
            nonempty(label, &at)?;
        }
        for (i, column) in raw.columns.iter().enumerate() {
            let at = format!("display.columns[{i}]");
            nonempty(column, &at)?;
            if raw.columns[..i].contains(column) {
                return Err(format!("{at}: `{column}` is listed twice"));
            }
        }
        if let Some(title) = &raw.title {
            nonempty(title, "display.title")?;
        }
        Ok(DisplayHints {
            title: raw.title,
            view,
            labels: raw.labels,
            columns: raw.columns,
            formats,
            empty: raw.empty,
        })
    }
}

fn nonempty(text: &str, key: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{key}: must not be empty"));
    }
    Ok(())
}

impl DisplayHints {
    /// Whether the hints say anything the page uses (`title` travels as the message's own).
    pub fn is_empty(&self) -> bool {
        self.view.is_none()
            && self.labels.is_empty()
            && self.columns.is_empty()
            && self.formats.is_empty()
            && self.empty.is_none()
    }
}

/// A key as a heading: `credit_limit` → "Credit limit", `overdueDays` → "Overdue days"; words
/// in capitals (`SKU`) stay so.
pub fn humanise(key: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if c == '_' || c == '-' || c == '.' || c.is_whitespace() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        word.push(c);
    }
    if !word.is_empty() {
        words.push(word);
    }
    let words: Vec<String> = words
        .into_iter()
        .map(|w| {
            if w.chars().count() > 1 && !w.chars().any(char::is_lowercase) {
                w
            } else {
                w.to_lowercase()
            }
        })
        .collect();
    let text = words.join(" ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Source {
        #[allow(dead_code)]
        name: String,
        display: DisplayHints,
    }

    fn parse(display: &str) -> Result<DisplayHints, String> {
        toml::from_str::<Source>(&format!("name = \"s\"\n[display]\n{display}"))
            .map(|s| s.display)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn hints_parse_and_travel_without_the_title() {
        let hints = parse(
            "title = \"Balance\"\nview = \"table\"\nlabels = { amount = \"Amount\" }\n\
             columns = [\"date\", \"amount\"]\nformats = { amount = \"money\", date = \"date\", \
             rate = \"percent\", overdue = \"badge\", items = \"items\" }\n",
        )
        .expect("valid hints");
        assert_eq!(hints.title.as_deref(), Some("Balance"));
        assert_eq!(hints.view, Some(View::Table));
        assert_eq!(hints.formats["amount"], ValueFormat::Money);
        assert_eq!(
            serde_json::to_value(&hints).expect("json"),
            serde_json::json!({
                "view": "table", "labels": {"amount": "Amount"}, "columns": ["date", "amount"],
                "formats": {"amount": "money", "date": "date", "items": "items",
                            "overdue": "badge", "rate": "percent"}
            })
        );
        assert!(
            parse("title = \"Only a title\"\n")
                .expect("valid")
                .is_empty()
        );
    }

    #[test]
    fn a_bad_hint_is_refused_naming_its_key() {
        let err = parse("view = \"carousel\"\n").expect_err("unknown view");
        assert!(
            err.contains("display.view") && err.contains("`carousel`") && err.contains("balance"),
            "{err}"
        );
        let err = parse("formats = { amount = \"dollars\" }\n").expect_err("unknown format");
        assert!(
            err.contains("display.formats.amount") && err.contains("money, date, percent"),
            "{err}"
        );
        let err = parse("columns = [\"a\", \"b\", \"a\"]\n").expect_err("twice");
        assert!(err.contains("display.columns[2]"), "{err}");
        let err = parse("labels = { a = \"\" }\n").expect_err("empty label");
        assert!(err.contains("display.labels.a"), "{err}");
        let err = parse("colour = \"red\"\n").expect_err("unknown key");
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn keys_are_humanised() {
        assert_eq!(humanise("credit_limit"), "Credit limit");
        assert_eq!(humanise("ar_balance"), "Ar balance");
        assert_eq!(humanise("overdueDays"), "Overdue days");
        assert_eq!(humanise("SKU"), "SKU");
        assert_eq!(humanise("vat-ID"), "Vat ID");
        assert_eq!(humanise("tickets"), "Tickets");
        assert_eq!(humanise("__"), "__");
    }
}
