//! The demo's profile data: balance and invoices (accounting), orders (sales) and credit terms
//! (credit) for every demo customer, generated deterministically from the customer's account,
//! so that the embedded demo and the PostgreSQL demo databases (`screenpop demo-db`) agree.
//!
//! Dates are offsets from "today" (given), so invoices fall due and orders are recent whenever
//! the demo runs.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A small, fixed PRNG (splitmix64): the same account gives the same data on every machine.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn for_key(key: &str) -> Rng {
        // FNV-1a of the key as the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(h)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// `INV-…`
    pub number: String,
    /// Days before today it was issued.
    pub issued_days_ago: i64,
    /// Days after issue it falls due.
    pub terms_days: i64,
    /// Amount in cents.
    pub cents: i64,
    /// Paid already.
    pub paid: bool,
}

/// An order line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Catalogue number.
    pub sku: &'static str,
    /// Product name.
    pub name: &'static str,
    /// Quantity.
    pub qty: i64,
    /// Unit price in cents.
    pub price_cents: i64,
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// `SO-…`
    pub id: String,
    /// Days before today it was placed.
    pub placed_days_ago: i64,
    /// Its lines.
    pub items: Vec<Item>,
}

/// Credit terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    /// Limit in cents.
    pub limit_cents: i64,
    /// `NET30`, …
    pub terms: &'static str,
    /// `A`…`D`.
    pub rating: &'static str,
    /// Orders on hold.
    pub hold: bool,
}

/// Everything the three demo systems hold about one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account number (the customers' `account`).
    pub account: String,
    /// ISO 4217.
    pub currency: &'static str,
    /// Accounting.
    pub invoices: Vec<Invoice>,
    /// Sales, newest first.
    pub orders: Vec<Order>,
    /// Credit.
    pub credit: Credit,
}

const CATALOGUE: &[(&str, &str, i64)] = &[
    ("WID-100", "Widget, standard", 1_250),
    ("WID-200", "Widget, heavy duty", 2_990),
    ("GAD-310", "Gadget mk III", 14_900),
    ("SPR-010", "Sprocket set (10)", 4_500),
    ("BRK-002", "Bracket, galvanised", 890),
    ("CBL-050", "Cable, 50 m", 7_800),
    ("PMP-900", "Pump assembly", 64_000),
    ("FLT-020", "Filter cartridge", 2_150),
    ("VLV-125", "Valve, 1¼ inch", 3_675),
    ("SNS-044", "Pressure sensor", 18_990),
    ("MNT-001", "Maintenance kit", 9_900),
    ("SRV-HRS", "Service hour", 12_000),
];
const TERMS: &[(&str, i64)] = &[
    ("NET30", 30),
    ("NET30", 30),
    ("NET45", 45),
    ("NET60", 60),
    ("COD", 0),
];
const RATINGS: &[&str] = &["A", "A", "B", "B", "B", "C", "D"];

/// Mixed into every account's seed (chosen so that the demo's Acme Corporation shows an overdue
/// invoice, a few orders and credit terms: the README's screenshot).
const SALT: &str = "screenpop-demo-64-";

/// The demo data of one account.
pub fn account(account: &str) -> Account {
    account_salted(account, SALT)
}

fn account_salted(account: &str, salt: &str) -> Account {
    let mut rng = Rng::for_key(&format!("{salt}{account}"));
    // Document numbers are unique per account (the account's letters and digits).
    let tag: String = account
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let currency = match rng.below(10) {
        0 => "EUR",
        1 => "GBP",
        _ => "USD",
    };
    let (terms, terms_days) = TERMS[rng.below(TERMS.len() as u64) as usize];
    let rating = RATINGS[rng.below(RATINGS.len() as u64) as usize];
    let mut invoices = Vec::new();
    let mut issued = rng.below(20) as i64 + 3;
    for n in 0..rng.below(4) + 1 {
        let cents = (rng.below(4_800) as i64 + 200) * 100 + rng.below(100) as i64;
        // Older invoices are more often paid; some recent ones are open, some overdue.
        let paid = issued > terms_days + 40 || rng.below(3) == 0;
        invoices.push(Invoice {
            number: format!("INV-{tag}-{}{n}", 100 + rng.below(900)),
            issued_days_ago: issued,
            terms_days,
            cents,
            paid,
        });
        issued += rng.below(35) as i64 + 10;
    }
    let mut orders = Vec::new();
    let mut placed = rng.below(10) as i64 + 1;
    for n in 0..rng.below(4) {
        let mut items = Vec::new();
        for _ in 0..rng.below(3) + 1 {
            let (sku, name, price_cents) = CATALOGUE[rng.below(CATALOGUE.len() as u64) as usize];
            if items.iter().any(|i: &Item| i.sku == sku) {
                continue;
            }
            items.push(Item {
                sku,
                name,
                qty: rng.below(12) as i64 + 1,
                price_cents,
            });
        }
        orders.push(Order {
            id: format!("SO-{tag}-{}{n}", 100 + rng.below(900)),
            placed_days_ago: placed,
            items,
        });
        placed += rng.below(60) as i64 + 7;
    }
    let credit = Credit {
        limit_cents: (rng.below(20) as i64 + 1) * 500_000,
        terms,
        rating,
        hold: rating == "D" || rng.below(25) == 0,
    };
    Account {
        account: account.to_owned(),
        currency,
        invoices,
        orders,
        credit,
    }
}

/// `YYYY-MM-DD` of `days` before `today`.
pub fn date(today: SystemTime, days_ago: i64) -> String {
    let secs = today
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let days = secs.div_euclid(86_400) - days_ago;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, (cents % 100).abs())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

impl Account {
    /// Balance due (unpaid invoices), cents.
    pub fn balance_cents(&self) -> i64 {
        self.invoices
            .iter()
            .filter(|i| !i.paid)
            .map(|i| i.cents)
            .sum()
    }

    /// Overdue (unpaid past their due day), cents, and the days the oldest is late.
    pub fn overdue(&self) -> (i64, i64) {
        let late = self
            .invoices
            .iter()
            .filter(|i| !i.paid && i.issued_days_ago > i.terms_days);
        let cents = late.clone().map(|i| i.cents).sum();
        let days = late
            .map(|i| i.issued_days_ago - i.terms_days)
            .max()
            .unwrap_or(0);
        (cents, days)
    }

    fn invoices_json(&self, today: SystemTime) -> String {
        let list: Vec<serde_json::Value> = self
            .invoices
            .iter()
            .map(|i| {
                let status = if i.paid {
                    "paid"
                } else if i.issued_days_ago > i.terms_days {
                    "overdue"
                } else {
                    "open"
                };
                serde_json::json!({
                    "number": i.number,
                    "date": date(today, i.issued_days_ago),
                    "due": date(today, i.issued_days_ago - i.terms_days),
                    "amount": i.cents as f64 / 100.0,
                    "status": status,
                })
            })
            .collect();
        serde_json::Value::Array(list).to_string()
    }

    fn items_json(order: &Order) -> String {
        let list: Vec<serde_json::Value> = order
            .items
            .iter()
            .map(|i| {
                serde_json::json!({"sku": i.sku, "name": i.name, "qty": i.qty,
                    "price": i.price_cents as f64 / 100.0})
            })
            .collect();
        serde_json::Value::Array(list).to_string()
    }
}

/// The three demo systems as CSV text (the embedded demo's sources): accounting (one row per
/// account), sales (one row per order, newest first), credit (one row per account).
pub fn csv(accounts: &[Account], today: SystemTime) -> (String, String, String) {
    let mut accounting = String::from("account,currency,balance,overdue,overdue_days,invoices\n");
    let mut sales = String::from("account,order,date,total,currency,items\n");
    let mut credit = String::from("account,limit,currency,terms,rating,hold\n");
    for a in accounts {
        let (overdue, days) = a.overdue();
        let _ = writeln!(
            accounting,
            "{},{},{},{},{},{}",
            csv_field(&a.account),
            a.currency,
            money(a.balance_cents()),
            money(overdue),
            days,
            csv_field(&a.invoices_json(today))
        );
        for o in &a.orders {
            let total: i64 = o.items.iter().map(|i| i.qty * i.price_cents).sum();
            let _ = writeln!(
                sales,
                "{},{},{},{},{},{}",
                csv_field(&a.account),
                o.id,
                date(today, o.placed_days_ago),
                money(total),
                a.currency,
                csv_field(&Account::items_json(o))
            );
        }
        let _ = writeln!(
            credit,
            "{},{},{},{},{},{}",
            csv_field(&a.account),
            money(a.credit.limit_cents),
            a.currency,
            a.credit.terms,
            a.credit.rating,
            a.credit.hold
        );
    }
    (accounting, sales, credit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_consistent() {
        assert_eq!(account("ACME-001"), account("ACME-001"));
        assert_ne!(account("ACME-001"), account("AC-00002"));
        let a = account("ACME-001");
        assert!(!a.invoices.is_empty() && a.credit.limit_cents > 0);
        // The README's screenshot shows these.
        assert!(a.overdue().0 > 0 && a.orders.len() >= 2 && !a.credit.hold);
        let (overdue, days) = a.overdue();
        assert!(overdue <= a.balance_cents());
        assert_eq!(days > 0, overdue > 0);
        let today = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(date(today, 0), "2026-11-18");
        assert_eq!(date(today, 30), "2026-10-19");
        let (acc, sales, credit) = csv(std::slice::from_ref(&a), today);
        assert!(
            acc.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("ACME-001,"))
        );
        assert_eq!(sales.lines().count(), 1 + a.orders.len());
        assert_eq!(credit.lines().count(), 2);
    }
}
