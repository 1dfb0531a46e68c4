//! A customer as the pop shows it, packed for an index of millions.
//!
//! One shared allocation per customer (its text fields back to back) plus five offsets: a
//! million customers cost ~100 MB instead of ~300 MB as separate `String`s, and handing one to
//! a call is a reference-count increment.

use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// Separates tags inside the packed text (control characters are stripped from fields).
const TAG_SEP: char = '\u{1f}';

/// Which of a customer's numbers a key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NumberKind {
    /// A mobile number: usually one person's.
    Mobile,
    /// A direct work line.
    Work,
    /// A main (switchboard) number.
    Main,
}

impl NumberKind {
    /// Parses `main`, `work` or `mobile`.
    pub fn parse(s: &str) -> Option<NumberKind> {
        match s {
            "main" => Some(NumberKind::Main),
            "work" => Some(NumberKind::Work),
            "mobile" => Some(NumberKind::Mobile),
            _ => None,
        }
    }

    /// The schema's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NumberKind::Main => "main",
            NumberKind::Work => "work",
            NumberKind::Mobile => "mobile",
        }
    }
}

/// A customer: id, name, company, account number, CRM link, tags. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Customer {
    text: Arc<str>,
    /// End offsets of id, name, company, account, crm_url; tags run to the end.
    ends: [u32; 5],
}

/// The fields of a new customer.
#[derive(Debug, Clone, Default)]
pub struct CustomerFields<'a> {
    /// The customer's id in the CRM.
    pub id: &'a str,
    /// The customer's name.
    pub name: &'a str,
    /// The company (empty: none).
    pub company: &'a str,
    /// The account number (empty: none).
    pub account: &'a str,
    /// A link into the CRM (empty: none).
    pub crm_url: &'a str,
    /// Free tags.
    pub tags: &'a [String],
}

impl Customer {
    /// Packs the fields. Control characters are dropped (they have no place in a name, and the
    /// tag separator is one); fields longer than 4 GiB in total are not representable and are
    /// cut at that size (no database row is that large).
    pub fn new(fields: CustomerFields<'_>) -> Customer {
        let mut text = String::with_capacity(
            fields.id.len()
                + fields.name.len()
                + fields.company.len()
                + fields.account.len()
                + fields.crm_url.len()
                + fields.tags.iter().map(|t| t.len() + 1).sum::<usize>(),
        );
        let mut ends = [0u32; 5];
        let parts = [
            fields.id.trim(),
            fields.name.trim(),
            fields.company.trim(),
            fields.account.trim(),
            fields.crm_url.trim(),
        ];
        let push = |text: &mut String, part: &str| {
            if part.chars().any(char::is_control) {
                text.extend(part.chars().filter(|c| !c.is_control()));
            } else {
                text.push_str(part);
            }
        };
        for (end, part) in ends.iter_mut().zip(parts) {
            push(&mut text, part);
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        let mut first = true;
        for tag in fields
            .tags
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
        {
            if !first {
                text.push(TAG_SEP);
            }
            first = false;
            push(&mut text, tag);
        }
        if text.len() > u32::MAX as usize {
            text.truncate(floor_char_boundary(&text, u32::MAX as usize));
        }
        Customer {
            text: Arc::from(text),
            ends,
        }
    }

    fn field(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = self.ends[i] as usize;
        self.text.get(start..end).unwrap_or_default()
    }

    fn optional(&self, i: usize) -> Option<&str> {
        Some(self.field(i)).filter(|s| !s.is_empty())
    }

    /// The customer's id in the CRM.
    pub fn id(&self) -> &str {
        self.field(0)
    }

    /// The customer's name.
    pub fn name(&self) -> &str {
        self.field(1)
    }

    /// The company, if any.
    pub fn company(&self) -> Option<&str> {
        self.optional(2)
    }

    /// The account number, if any.
    pub fn account(&self) -> Option<&str> {
        self.optional(3)
    }

    /// A link into the CRM, if any.
    pub fn crm_url(&self) -> Option<&str> {
        self.optional(4)
    }

    /// Free tags.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.text
            .get(self.ends[4] as usize..)
            .unwrap_or_default()
            .split(TAG_SEP)
            .filter(|t| !t.is_empty())
    }

    /// Bytes held on the heap for this customer (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.text.len() + 2 * std::mem::size_of::<usize>()
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Debug for Customer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Customer")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("company", &self.company())
            .finish_non_exhaustive()
    }
}

/// `{"id","name","company"?,"account"?,"crm_url"?,"tags"?}`: absent members are left out.
impl Serialize for Customer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("id", self.id())?;
        map.serialize_entry("name", self.name())?;
        if let Some(company) = self.company() {
            map.serialize_entry("company", company)?;
        }
        if let Some(account) = self.account() {
            map.serialize_entry("account", account)?;
        }
        if let Some(url) = self.crm_url() {
            map.serialize_entry("crm_url", url)?;
        }
        let tags: Vec<&str> = self.tags().collect();
        if !tags.is_empty() {
            map.serialize_entry("tags", &tags)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let tags = vec![
            "vip".to_owned(),
            " ".to_owned(),
            "whole\u{1f}sale".to_owned(),
        ];
        let c = Customer::new(CustomerFields {
            id: "c-1",
            name: "Ünïcode Name",
            company: "Acme",
            account: "",
            crm_url: " https://crm.example/c-1 ",
            tags: &tags,
        });
        assert_eq!(c.id(), "c-1");
        assert_eq!(c.name(), "Ünïcode Name");
        assert_eq!(c.company(), Some("Acme"));
        assert_eq!(c.account(), None);
        assert_eq!(c.crm_url(), Some("https://crm.example/c-1"));
        assert_eq!(c.tags().collect::<Vec<_>>(), ["vip", "wholesale"]);
        let json = serde_json::to_value(&c).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"id":"c-1","name":"Ünïcode Name","company":"Acme",
                "crm_url":"https://crm.example/c-1","tags":["vip","wholesale"]})
        );
        let bare = Customer::new(CustomerFields {
            id: "c-2",
            name: "Jo",
            ..CustomerFields::default()
        });
        assert_eq!(
            serde_json::to_value(&bare).expect("json"),
            serde_json::json!({"id":"c-2","name":"Jo"})
        );
        assert_eq!(bare.tags().count(), 0);
    }
}
