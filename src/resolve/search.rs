//! Customer search for agents: name, company, account number and any part of any phone number,
//! ranked, in microseconds on a million customers. Owned by the [`super::Directory`], built
//! with it and swapped with it; it holds slot numbers only, never customers.
//!
//! Text is folded before it is indexed or compared: lower case, accents off (a table for
//! Latin-1 and Latin Extended-A: `Müller` → `muller`, `Łódź` → `lodz`, `ß` → `ss`; other
//! letters are only lower-cased), an apostrophe joins (`O'Brien` → `obrien`), anything else
//! that is not a letter or digit separates tokens. Numbers compare by their digits only.
//!
//! Built once per directory (load or reload), from the customers in name order, so that a
//! customer's *base id* is its rank by folded name (then id), and every postings list, kept
//! in base-id order, is already in result order:
//!
//! ```text
//!   field dictionary (name / company / account)     numbers
//!   sorted tokens ──► postings (base ids, sorted)   digits (value, length) ──► owner base id
//!   sorted token suffixes (name, company)           sorted suffixes of ≥ 3 digits
//! ```
//!
//! - exact and prefix: a binary search in the sorted tokens (a prefix is a contiguous range);
//! - substring: a binary search in the sorted suffixes (offsets 1..=31 of each token);
//! - number part: a binary search in the sorted digit suffixes.
//!
//! Ranking: exact token > prefix > substring; then name > company > account > number; then
//! by folded name and id. A query of several words must match every word (in any field); it
//! ranks as its weakest word. The tiers (kind × field) are walked best first, each tier's
//! customers arrive in name order, so the walk stops as soon as `limit` are settled.
//!
//! Edits after the build (the PostgreSQL sync's upserts and deletes) are not re-sorted into
//! the base: an edited base customer is marked dead and the edited version joins a small
//! *overlay*, scanned in full by every query. Past [`OVERLAY_MAX`] customers the owner
//! rebuilds the whole directory off the lock (`postgres` reloads), which starts a fresh base.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use crate::customer::Customer;

/// Results unless the query asks for another number.
pub const DEFAULT_LIMIT: usize = 10;
/// Most results a query returns.
pub const MAX_LIMIT: usize = 20;
/// Fewest digits a number-part query needs.
pub const MIN_NUMBER_DIGITS: usize = 3;
/// Edited customers kept outside the sorted base before a rebuild is asked for.
pub const OVERLAY_MAX: usize = 1024;
/// Most digit suffixes one number query looks at: a fragment shared by more numbers (`555`)
/// returns matches, not necessarily the first ones by name.
const NUMBER_SCAN: usize = 4096;
/// Most customers a query of several words verifies before it settles for what it found.
const MAX_EXAMINED: usize = 20_000;
/// Token suffixes are indexed from these offsets (bytes) only; longer tokens still match by
/// exact and prefix, and by substring through the other words' candidates.
const MAX_SUFFIX_OFFSET: usize = 31;
/// Words of a query considered (the API caps queries at 64 characters anyway).
const MAX_QUERY_TOKENS: usize = 8;
const NONE: u32 = u32::MAX;

/// How a query word met a customer's token (better first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchKind {
    /// The whole token (or the whole number).
    Exact,
    /// The token's (or the number's) start.
    Prefix,
    /// Anywhere inside.
    Substring,
}

impl MatchKind {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Prefix => "prefix",
            MatchKind::Substring => "substring",
        }
    }
}

/// Which of a customer's fields matched (better first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// The customer's name.
    Name,
    /// The company.
    Company,
    /// The account number.
    Account,
    /// One of the phone numbers.
    Number,
}

impl Field {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Company => "company",
            Field::Account => "account",
            Field::Number => "number",
        }
    }

    const TEXT: [Field; 3] = [Field::Name, Field::Company, Field::Account];
}

/// A customer an agent's search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// The customer.
    pub customer: Customer,
    /// Its numbers (E.164 for valid ones, else their digits), with their kinds.
    pub numbers: Vec<(super::Key, crate::customer::NumberKind)>,
    /// How it matched (the weakest word of the query).
    pub kind: MatchKind,
    /// Where.
    pub field: Field,
}

/// A customer found: its directory slot and how it matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The directory slot.
    pub slot: u32,
    /// How the weakest word matched.
    pub kind: MatchKind,
    /// Where.
    pub field: Field,
}

/// The digits of a number: its value and how many digits it has (leading zeros count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digits {
    value: u64,
    len: u8,
}

impl Digits {
    /// At most 19 digits.
    pub fn new(value: u64, len: u8) -> Option<Digits> {
        (len > 0 && len <= 19 && (len == 19 || value < POW10[len as usize]))
            .then_some(Digits { value, len })
    }

    /// The digits of a string of ASCII digits (at most 19).
    pub fn parse(text: &str) -> Option<Digits> {
        if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value = text.parse().ok()?;
        Digits::new(value, text.len() as u8)
    }

    /// The last `len - off` digits.
    fn suffix(self, off: u8) -> Digits {
        let len = self.len - off;
        Digits {
            value: if len >= 19 {
                self.value
            } else {
                self.value % POW10[len as usize]
            },
            len,
        }
    }

    /// The first `n` digits (`n <= len`).
    fn head(self, n: u8) -> u64 {
        self.value / POW10[(self.len - n) as usize]
    }

    fn starts_with(self, q: Digits) -> bool {
        self.len >= q.len && self.head(q.len) == q.value
    }

    /// Lexicographic order of the digit strings.
    fn cmp_text(self, q: Digits) -> std::cmp::Ordering {
        let m = self.len.min(q.len);
        self.head(m).cmp(&q.head(m)).then(self.len.cmp(&q.len))
    }
}

const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// What the index reads customers from: the directory's slots.
pub trait Customers {
    /// The customer in a slot.
    fn customer(&self, slot: u32) -> Option<&Customer>;
    /// The digits of the numbers of the customer in a slot, appended to `out`.
    fn digits(&self, slot: u32, out: &mut Vec<Digits>);
}

// ---------------------------------------------------------------------------------------------
// Folding

/// The ASCII folding of a Latin-1 Supplement or Latin Extended-A letter (U+00C0..=U+017F);
/// `None` for the two signs among them (`×`, `÷`), which separate.
fn latin(c: char) -> Option<&'static str> {
    Some(match c {
        'À'..='Å' | 'à'..='å' | 'Ā'..='ą' => "a",
        'Æ' | 'æ' => "ae",
        'Ç' | 'ç' | 'Ć'..='č' => "c",
        'Ð' | 'ð' | 'Ď'..='đ' => "d",
        'È'..='Ë' | 'è'..='ë' | 'Ē'..='ě' => "e",
        'Ì'..='Ï' | 'ì'..='ï' | 'Ĩ'..='ı' => "i",
        'Ñ' | 'ñ' | 'Ń'..='ŋ' => "n",
        'Ò'..='Ö' | 'Ø' | 'ò'..='ö' | 'ø' | 'Ō'..='ő' => "o",
        'Ù'..='Ü' | 'ù'..='ü' | 'Ũ'..='ų' => "u",
        'Ý' | 'ý' | 'ÿ' | 'Ŷ'..='Ÿ' => "y",
        'Þ' | 'þ' => "th",
        'ß' => "ss",
        'Ĝ'..='ģ' => "g",
        'Ĥ'..='ħ' => "h",
        'Ĳ' | 'ĳ' => "ij",
        'Ĵ' | 'ĵ' => "j",
        'Ķ'..='ĸ' => "k",
        'Ĺ'..='ł' => "l",
        'Œ' | 'œ' => "oe",
        'Ŕ'..='ř' => "r",
        'Ś'..='š' | 'ſ' => "s",
        'Ţ'..='ŧ' => "t",
        'Ŵ' | 'ŵ' => "w",
        'Ź'..='ž' => "z",
        _ => return None,
    })
}

/// Appends `text` folded (see the module docs) to `out`: tokens separated by one space.
pub fn fold_into(text: &str, out: &mut String) {
    let mut in_token = false;
    let open = |out: &mut String, in_token: &mut bool| {
        if !*in_token && !out.is_empty() {
            out.push(' ');
        }
        *in_token = true;
    };
    for c in text.chars() {
        match c {
            'a'..='z' | '0'..='9' => {
                open(out, &mut in_token);
                out.push(c);
            }
            'A'..='Z' => {
                open(out, &mut in_token);
                out.push(c.to_ascii_lowercase());
            }
            '\'' | '\u{2019}' => {}
            '\u{c0}'..='\u{17f}' => match latin(c) {
                Some(s) => {
                    open(out, &mut in_token);
                    out.push_str(s);
                }
                None => in_token = false,
            },
            c if !c.is_ascii() && c.is_alphanumeric() => {
                open(out, &mut in_token);
                out.extend(c.to_lowercase());
            }
            _ => in_token = false,
        }
    }
}

/// `text` folded (see the module docs): tokens separated by one space.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    fold_into(text, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// The query

/// A query, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    /// Folded words, deduplicated.
    tokens: Vec<String>,
    /// Digit patterns when the query looks like (part of) a phone number.
    numbers: Vec<Digits>,
}

impl Query {
    fn parse(text: &str) -> Query {
        let folded = fold(text);
        let mut tokens: Vec<String> = Vec::new();
        for t in folded.split(' ').filter(|t| !t.is_empty()) {
            if tokens.len() < MAX_QUERY_TOKENS && !tokens.iter().any(|x| x == t) {
                tokens.push(t.to_owned());
            }
        }
        let phone_like = text
            .chars()
            .all(|c| c.is_ascii_digit() || " +-.()/".contains(c));
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        let mut numbers = Vec::new();
        if phone_like && digits.len() >= MIN_NUMBER_DIGITS {
            let mut push = |d: &str| {
                if d.len() >= MIN_NUMBER_DIGITS
                    && let Some(d) = Digits::parse(d)
                    && !numbers.contains(&d)
                {
                    numbers.push(d);
                }
            };
            push(&digits);
            // Dialled forms of a stored E.164 number: international prefixes, a trunk zero.
            if let Some(rest) = digits.strip_prefix("011") {
                push(rest);
            } else if let Some(rest) = digits.strip_prefix("00") {
                push(rest);
            } else if let Some(rest) = digits.strip_prefix('0') {
                push(rest);
            }
        }
        Query { tokens, numbers }
    }
}

/// How a query word meets a token; substrings only where `substring` (and for words of two
/// characters or more).
fn match_token(word: &str, token: &str, substring: bool) -> Option<MatchKind> {
    if token == word {
        Some(MatchKind::Exact)
    } else if token.starts_with(word) {
        Some(MatchKind::Prefix)
    } else if substring
        && word.len() >= 2
        && memchr::memmem::find(token.as_bytes(), word.as_bytes()).is_some()
    {
        Some(MatchKind::Substring)
    } else {
        None
    }
}

/// The rank of a customer whose fields fold to `fields` (name, company, account) for all of
/// `words`: each word's best (kind, field), the weakest of those; `None` if a word matches
/// nothing.
fn rank_words(words: &[String], fields: [&str; 3]) -> Option<(MatchKind, Field)> {
    let mut worst = (MatchKind::Exact, Field::Name);
    for word in words {
        let mut best: Option<(MatchKind, Field)> = None;
        for (field, text) in Field::TEXT.into_iter().zip(fields) {
            for token in text.split(' ') {
                if let Some(kind) = match_token(word, token, field != Field::Account)
                    && best.is_none_or(|b| (kind, field) < b)
                {
                    best = Some((kind, field));
                }
            }
        }
        worst = worst.max(best?);
    }
    Some(worst)
}

// ---------------------------------------------------------------------------------------------
// Dictionaries

/// One field's sorted tokens with their postings and (for name and company) suffixes.
#[derive(Debug, Default)]
struct Dict {
    /// Tokens back to back, in sorted order.
    text: Vec<u8>,
    /// End of token i in `text`.
    ends: Vec<u32>,
    /// End of token i's postings in `postings`.
    post_ends: Vec<u32>,
    /// Base ids, ascending per token.
    postings: Vec<u32>,
    /// `token << 5 | offset`, sorted by the token's text from that offset.
    suffixes: Vec<u32>,
}

impl Dict {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn token(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    fn postings(&self, i: usize) -> &[u32] {
        let start = if i == 0 {
            0
        } else {
            self.post_ends[i - 1] as usize
        };
        &self.postings[start..self.post_ends[i] as usize]
    }

    fn suffix(&self, entry: u32) -> &[u8] {
        let token = self.token((entry >> 5) as usize);
        &token[((entry & 31) as usize).min(token.len())..]
    }

    /// Tokens starting with `word`.
    fn prefix_range(&self, word: &[u8]) -> Range<usize> {
        let lo = partition(self.len(), |i| self.token(i) < word);
        let hi = partition(self.len(), |i| {
            let t = self.token(i);
            t < word || t.starts_with(word)
        });
        lo..hi
    }

    /// The tokens of one tier for `word`, appended to `out`.
    fn tier(&self, word: &[u8], kind: MatchKind, out: &mut Vec<u32>) {
        let range = self.prefix_range(word);
        match kind {
            MatchKind::Exact => {
                if !range.is_empty() && self.token(range.start) == word {
                    out.push(range.start as u32);
                }
            }
            MatchKind::Prefix => {
                for i in range {
                    if self.token(i) != word {
                        out.push(i as u32);
                    }
                }
            }
            MatchKind::Substring => {
                if self.suffixes.is_empty() || word.len() < 2 {
                    return;
                }
                let lo = partition(self.suffixes.len(), |i| {
                    self.suffix(self.suffixes[i]) < word
                });
                let hi = partition(self.suffixes.len(), |i| {
                    let s = self.suffix(self.suffixes[i]);
                    s < word || s.starts_with(word)
                });
                let start = out.len();
                for &entry in &self.suffixes[lo..hi] {
                    let token = entry >> 5;
                    if !self.token(token as usize).starts_with(word) {
                        out.push(token);
                    }
                }
                out[start..].sort_unstable();
                let mut tail = out.split_off(start);
                tail.dedup();
                out.extend(tail);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + 4 * (self.ends.capacity()
                + self.post_ends.capacity()
                + self.postings.capacity()
                + self.suffixes.capacity())
    }
}

/// The first index in `0..n` for which `below` is false (`below` true then false).
fn partition(n: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Collects one field's tokens while the base is built.
#[derive(Default)]
struct DictBuilder {
    ids: hashbrown::HashMap<Box<str>, u32>,
    /// (token id, base id), base ids ascending.
    pairs: Vec<(u32, u32)>,
}

impl DictBuilder {
    fn add(&mut self, token: &str, base: u32) {
        let next = self.ids.len() as u32;
        let id = match self.ids.get(token) {
            Some(&id) => id,
            None => {
                self.ids.insert(token.into(), next);
                next
            }
        };
        self.pairs.push((id, base));
    }

    fn finish(self, suffixes: bool) -> Dict {
        let mut tokens: Vec<(Box<str>, u32)> = self.ids.into_iter().collect();
        tokens.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut remap = vec![0u32; tokens.len()];
        let mut dict = Dict {
            text: Vec::with_capacity(tokens.iter().map(|t| t.0.len()).sum()),
            ends: Vec::with_capacity(tokens.len()),
            post_ends: Vec::with_capacity(tokens.len()),
            postings: vec![0; self.pairs.len()],
            suffixes: Vec::new(),
        };
        for (new, (token, old)) in tokens.iter().enumerate() {
            remap[*old as usize] = new as u32;
            dict.text.extend_from_slice(token.as_bytes());
            dict.ends.push(dict.text.len() as u32);
        }
        drop(tokens);
        let mut counts = vec![0u32; remap.len()];
        for &(old, _) in &self.pairs {
            counts[remap[old as usize] as usize] += 1;
        }
        let mut end = 0;
        let mut cursor = Vec::with_capacity(counts.len());
        for count in counts {
            cursor.push(end);
            end += count;
            dict.post_ends.push(end);
        }
        for (old, base) in self.pairs {
            let token = remap[old as usize] as usize;
            dict.postings[cursor[token] as usize] = base;
            cursor[token] += 1;
        }
        if suffixes {
            let mut suffixes = Vec::new();
            for i in 0..dict.len() {
                let token = dict.token(i);
                // A query starts on a character boundary, never inside one.
                for (off, &b) in token.iter().enumerate().take(MAX_SUFFIX_OFFSET + 1).skip(1) {
                    if (b as i8) >= -0x40 {
                        suffixes.push((i as u32) << 5 | off as u32);
                    }
                }
            }
            suffixes.sort_unstable_by(|&a, &b| dict.suffix(a).cmp(dict.suffix(b)).then(a.cmp(&b)));
            suffixes.shrink_to_fit();
            dict.suffixes = suffixes;
        }
        dict
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// Every number's digits, and their sorted suffixes of three digits or more.
#[derive(Debug, Default)]
struct Numbers {
    values: Vec<u64>,
    lens: Vec<u8>,
    /// Base id of each number's customer.
    owners: Vec<u32>,
    /// `number << 5 | offset`, sorted by the digits from that offset.
    suffixes: Vec<u32>,
}

impl Numbers {
    fn digits(&self, n: usize) -> Digits {
        Digits {
            value: self.values[n],
            len: self.lens[n],
        }
    }

    fn suffix(&self, entry: u32) -> Digits {
        self.digits((entry >> 5) as usize)
            .suffix((entry & 31) as u8)
    }

    fn range(&self, q: Digits) -> Range<usize> {
        let lo = partition(self.suffixes.len(), |i| {
            self.suffix(self.suffixes[i]).cmp_text(q).is_lt()
        });
        let hi = partition(self.suffixes.len(), |i| {
            let s = self.suffix(self.suffixes[i]);
            s.cmp_text(q).is_lt() || s.starts_with(q)
        });
        lo..hi
    }

    fn heap_bytes(&self) -> usize {
        8 * self.values.capacity()
            + self.lens.capacity()
            + 4 * (self.owners.capacity() + self.suffixes.capacity())
    }
}

/// Fills `numbers.suffixes` (every offset leaving at least [`MIN_NUMBER_DIGITS`] digits),
/// sorted by their digits: a counting sort on the first three digits straight into place (no
/// second copy of the array), then each bucket by an exact key (the digits left-aligned in a
/// `u64`, then the length: `12` < `120` < `13`), so that no comparison chases pointers.
fn sort_number_suffixes(numbers: &mut Numbers) {
    let count = numbers.values.len();
    let each = |n: usize, f: &mut dyn FnMut(u32, Digits)| {
        let d = numbers.digits(n);
        for off in 0..=(d.len as usize - MIN_NUMBER_DIGITS).min(MAX_SUFFIX_OFFSET) {
            f((n as u32) << 5 | off as u32, d.suffix(off as u8));
        }
    };
    let mut starts = vec![0usize; 1001];
    for n in 0..count {
        each(n, &mut |_, s| starts[s.head(3) as usize + 1] += 1);
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut sorted = vec![0u32; starts[1000]];
    let mut cursor = starts.clone();
    for n in 0..count {
        each(n, &mut |e, s| {
            let b = s.head(3) as usize;
            sorted[cursor[b]] = e;
            cursor[b] += 1;
        });
    }
    let key = |e: u32| {
        let s = numbers.suffix(e);
        (s.value * POW10[19 - s.len as usize], s.len, e)
    };
    let mut scratch: Vec<(u64, u8, u32)> = Vec::new();
    for b in 0..1000 {
        let part = &mut sorted[starts[b]..starts[b + 1]];
        scratch.clear();
        scratch.extend(part.iter().map(|&e| key(e)));
        scratch.sort_unstable();
        for (dst, (_, _, e)) in part.iter_mut().zip(&scratch) {
            *dst = *e;
        }
    }
    numbers.suffixes = sorted;
}

// ---------------------------------------------------------------------------------------------
// The index

/// An edited customer outside the sorted base, folded.
#[derive(Debug)]
struct Entry {
    slot: u32,
    /// Folded name, company, account.
    fields: [Box<str>; 3],
    digits: Vec<Digits>,
}

impl Entry {
    fn new(slot: u32, customers: &dyn Customers) -> Option<Entry> {
        let customer = customers.customer(slot)?;
        let mut digits = Vec::new();
        customers.digits(slot, &mut digits);
        Some(Entry {
            slot,
            fields: [
                fold(customer.name()).into(),
                fold(customer.company().unwrap_or_default()).into(),
                fold(customer.account().unwrap_or_default()).into(),
            ],
            digits,
        })
    }
}

/// One tier of a word's matches: (kind, field) and the field's tokens in it.
type Tier = ((MatchKind, Field), Vec<u32>);

/// The search index of one directory.
#[derive(Debug, Default)]
pub struct Search {
    built: bool,
    /// Base id → slot.
    order: Vec<u32>,
    /// Slot → base id (`NONE`: not in the base).
    base_of: Vec<u32>,
    /// Base ids whose customer changed or left.
    dead: Vec<u64>,
    dicts: [Dict; 3],
    numbers: Numbers,
    /// Where a number in the default region starts, after its country code.
    country_code: Option<Digits>,
    overlay: Vec<Entry>,
}

impl Search {
    /// Builds the base from the customers in `slots`; `country_code` is the default region's
    /// (a number typed without it matches from its national start as a prefix).
    pub fn build(
        customers: &dyn Customers,
        slots: impl Iterator<Item = u32>,
        country_code: u16,
    ) -> Search {
        // Name order: folded name, then id.
        let mut named: Vec<(Box<str>, u32)> = slots
            .filter_map(|slot| Some((fold(customers.customer(slot)?.name()).into(), slot)))
            .collect();
        named.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                let id = |s: u32| customers.customer(s).map(Customer::id);
                id(a.1).cmp(&id(b.1))
            })
        });
        let order: Vec<u32> = named.iter().map(|(_, slot)| *slot).collect();
        let max_slot = order.iter().copied().max().map_or(0, |m| m as usize + 1);
        let mut base_of = vec![NONE; max_slot];
        let mut builders: [DictBuilder; 3] = Default::default();
        let mut numbers = Numbers::default();
        let mut folded = String::new();
        let mut digits = Vec::new();
        for (base, (name, slot)) in named.iter().enumerate() {
            let base = base as u32;
            base_of[*slot as usize] = base;
            let Some(customer) = customers.customer(*slot) else {
                continue;
            };
            for (f, builder) in builders.iter_mut().enumerate() {
                let text: &str = match f {
                    0 => name,
                    1 => {
                        folded.clear();
                        fold_into(customer.company().unwrap_or_default(), &mut folded);
                        &folded
                    }
                    _ => {
                        folded.clear();
                        fold_into(customer.account().unwrap_or_default(), &mut folded);
                        &folded
                    }
                };
                for (i, token) in text.split(' ').enumerate() {
                    if !token.is_empty() && !text.split(' ').take(i).any(|t| t == token) {
                        builder.add(token, base);
                    }
                }
            }
            digits.clear();
            customers.digits(*slot, &mut digits);
            for d in &digits {
                if d.len as usize >= MIN_NUMBER_DIGITS && numbers.values.len() < 1 << 27 {
                    numbers.values.push(d.value);
                    numbers.lens.push(d.len);
                    numbers.owners.push(base);
                }
            }
        }
        drop(named);
        sort_number_suffixes(&mut numbers);
        let [name, company, account] = builders;
        let dicts = [
            name.finish(true),
            company.finish(true),
            account.finish(false),
        ];
        let country_code = (country_code > 0)
            .then(|| Digits::parse(&country_code.to_string()))
            .flatten();
        Search {
            built: true,
            dead: vec![0; order.len().div_ceil(64)],
            order,
            base_of,
            dicts,
            numbers,
            country_code,
            overlay: Vec::new(),
        }
    }

    /// Whether the base has been built (before that, edits are not tracked).
    pub fn is_built(&self) -> bool {
        self.built
    }

    /// Customers edited since the build (scanned by every query).
    pub fn overlay_len(&self) -> usize {
        self.overlay.len()
    }

    /// Heap bytes held (capacities).
    pub fn heap_bytes(&self) -> usize {
        let overlay: usize = self
            .overlay
            .iter()
            .map(|e| {
                std::mem::size_of::<Entry>()
                    + e.fields.iter().map(|f| f.len()).sum::<usize>()
                    + 16 * e.digits.capacity()
            })
            .sum();
        4 * (self.order.capacity() + self.base_of.capacity())
            + 8 * self.dead.capacity()
            + self.dicts.iter().map(Dict::heap_bytes).sum::<usize>()
            + self.numbers.heap_bytes()
            + overlay
    }

    fn is_dead(&self, base: u32) -> bool {
        self.dead
            .get(base as usize / 64)
            .is_some_and(|w| w & 1 << (base % 64) != 0)
    }

    /// Takes a slot out of the base or the overlay.
    fn forget(&mut self, slot: u32) {
        if let Some(base) = self.base_of.get_mut(slot as usize)
            && *base != NONE
        {
            let b = *base as usize;
            *base = NONE;
            if let Some(w) = self.dead.get_mut(b / 64) {
                *w |= 1 << (b % 64);
            }
        }
        if let Some(at) = self.overlay.iter().position(|e| e.slot == slot) {
            self.overlay.swap_remove(at);
        }
    }

    /// A customer was added to (or replaced in) the directory at `slot`.
    pub fn inserted(&mut self, slot: u32, customers: &dyn Customers) {
        if !self.built {
            return;
        }
        self.forget(slot);
        if let Some(entry) = Entry::new(slot, customers) {
            self.overlay.push(entry);
        }
    }

    /// The customer at `slot` got a number.
    pub fn number_added(&mut self, slot: u32, digits: Digits, customers: &dyn Customers) {
        if !self.built {
            return;
        }
        if let Some(entry) = self.overlay.iter_mut().find(|e| e.slot == slot) {
            entry.digits.push(digits);
            return;
        }
        self.inserted(slot, customers);
    }

    /// The customer at `slot` left the directory.
    pub fn removed(&mut self, slot: u32) {
        if self.built {
            self.forget(slot);
        }
    }

    /// At most `limit` customers matching `text`, best first (see the module docs).
    pub fn query(&self, customers: &dyn Customers, text: &str, limit: usize) -> Vec<Found> {
        let limit = limit.clamp(1, MAX_LIMIT);
        let query = Query::parse(text);
        // (kind, field, base id) from the base; overlay hits separately.
        let mut base: Vec<(MatchKind, Field, u32)> = Vec::new();
        if !query.tokens.is_empty() {
            self.text_base(customers, &query.tokens, limit, &mut base);
        }
        for &pattern in &query.numbers {
            self.number_base(pattern, limit, &mut base);
        }
        let mut found: Vec<Found> = base
            .into_iter()
            .filter_map(|(kind, field, b)| {
                Some(Found {
                    slot: *self.order.get(b as usize)?,
                    kind,
                    field,
                })
            })
            .collect();
        for entry in &self.overlay {
            if let Some((kind, field)) = self.rank_entry(entry, &query) {
                found.push(Found {
                    slot: entry.slot,
                    kind,
                    field,
                });
            }
        }
        // Best match per customer, then in rank order.
        found.sort_unstable_by_key(|f| (f.slot, f.kind, f.field));
        found.dedup_by_key(|f| f.slot);
        let mut keyed: Vec<((MatchKind, Field, String), Found)> = found
            .into_iter()
            .filter_map(|f| {
                let c = customers.customer(f.slot)?;
                Some(((f.kind, f.field, fold(c.name())), f))
            })
            .collect();
        keyed.sort_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                let id = |s: u32| customers.customer(s).map(Customer::id);
                id(a.1.slot).cmp(&id(b.1.slot))
            })
        });
        keyed.truncate(limit);
        keyed.into_iter().map(|(_, f)| f).collect()
    }

    /// A word's tiers that have tokens, best first: ((kind, field), tokens).
    fn word_tiers(&self, word: &str) -> Vec<Tier> {
        let mut tiers = Vec::new();
        for kind in [MatchKind::Exact, MatchKind::Prefix, MatchKind::Substring] {
            for field in Field::TEXT {
                if kind == MatchKind::Substring && field == Field::Account {
                    continue;
                }
                let mut tokens = Vec::new();
                self.dicts[field as usize].tier(word.as_bytes(), kind, &mut tokens);
                if !tokens.is_empty() {
                    tiers.push(((kind, field), tokens));
                }
            }
        }
        tiers
    }

    /// Base customers for one word: each tier's tokens looked up only when the tiers before
    /// it left results to find, and each customer's rank is its first tier's.
    fn one_word(&self, word: &str, limit: usize, out: &mut Vec<(MatchKind, Field, u32)>) {
        let mut taken: Vec<u32> = Vec::new();
        let mut tokens = Vec::new();
        for kind in [MatchKind::Exact, MatchKind::Prefix, MatchKind::Substring] {
            for field in Field::TEXT {
                if kind == MatchKind::Substring && field == Field::Account {
                    continue;
                }
                let dict = &self.dicts[field as usize];
                tokens.clear();
                dict.tier(word.as_bytes(), kind, &mut tokens);
                let mut merge = Merge::new(tokens.iter().map(|&t| dict.postings(t as usize)));
                while let Some(b) = merge.next() {
                    if self.is_dead(b) || taken.contains(&b) {
                        continue;
                    }
                    taken.push(b);
                    out.push((kind, field, b));
                    if taken.len() >= limit {
                        return;
                    }
                }
            }
        }
    }

    /// Base customers for the words, best first, at most `limit` more into `out`.
    ///
    /// Candidates come from one *driving* word, tier by tier; the others are checked by a
    /// binary search in their tokens' postings (or, for a word matching very many tokens, by
    /// folding the candidate's fields). The driving word is the one whose best tier is the
    /// weakest (then the one with the fewest postings): its candidates' rank is then mostly
    /// the tier's own, and the walk settles after about `limit` hits.
    fn text_base(
        &self,
        customers: &dyn Customers,
        words: &[String],
        limit: usize,
        out: &mut Vec<(MatchKind, Field, u32)>,
    ) {
        /// Above this many tokens, a word is checked by folding rather than by postings.
        const MAX_CHECK_TOKENS: usize = 256;
        /// Up to this many tokens, a word leaps the walk forward (see `leaps`).
        const MAX_LEAP_TOKENS: usize = 64;
        /// Up to this many lists, the driving word's walk can be moved forward.
        const MAX_SEEK_LISTS: usize = 1024;
        if let [word] = words {
            return self.one_word(word, limit, out);
        }
        let mut tiers: Vec<Vec<Tier>> = Vec::new();
        for word in words {
            let t = self.word_tiers(word);
            if t.is_empty() {
                return; // Every word must match: nothing in the base does.
            }
            tiers.push(t);
        }
        let postings = |w: usize| -> usize {
            tiers[w]
                .iter()
                .filter(|(tier, _)| tier.0 != MatchKind::Substring)
                .flat_map(|(tier, tokens)| {
                    let dict = &self.dicts[tier.1 as usize];
                    tokens.iter().map(|&t| dict.postings(t as usize).len())
                })
                .sum()
        };
        let Some(driving) = (0..words.len())
            .min_by_key(|&w| (Reverse(tiers[w][0].0), postings(w), Reverse(words[w].len())))
        else {
            return;
        };
        let checks: Vec<Option<&[Tier]>> = (0..words.len())
            .map(|w| {
                let tokens: usize = tiers[w].iter().map(|t| t.1.len()).sum();
                (tokens <= MAX_CHECK_TOKENS).then_some(tiers[w].as_slice())
            })
            .collect();
        // Words with few tokens also steer the walk: candidates without them are skipped by
        // binary search instead of being checked one by one.
        let leaps: Vec<Vec<&[u32]>> = (0..words.len())
            .filter(|&w| w != driving)
            .filter(|&w| tiers[w].iter().map(|t| t.1.len()).sum::<usize>() <= MAX_LEAP_TOKENS)
            .map(|w| {
                tiers[w]
                    .iter()
                    .flat_map(|(t, tokens)| {
                        let dict = &self.dicts[t.1 as usize];
                        tokens.iter().map(|&k| dict.postings(k as usize))
                    })
                    .collect()
            })
            .collect();
        let mut results: Vec<((MatchKind, Field), u32)> = Vec::new();
        let mut examined: hashbrown::HashSet<u32> = hashbrown::HashSet::new();
        let mut folded = [String::new(), String::new(), String::new()];
        'tiers: for (tier, tokens) in &tiers[driving] {
            let tier = *tier;
            let mut settled = results.iter().filter(|r| r.0 <= tier).count();
            if settled >= limit {
                break;
            }
            let dict = &self.dicts[tier.1 as usize];
            let mut merge = Merge::new(tokens.iter().map(|&t| dict.postings(t as usize)));
            let seekable = tokens.len() <= MAX_SEEK_LISTS;
            'candidates: while let Some(b) = merge.peek() {
                // Leapfrog: the next id every other (leaping) word has at or after `b`.
                if seekable {
                    let mut target = b;
                    for lists in &leaps {
                        let next = lists
                            .iter()
                            .filter_map(|l| l.get(l.partition_point(|&x| x < b)).copied())
                            .min();
                        match next {
                            Some(next) => target = target.max(next),
                            // No later candidate has this word: the tier is done.
                            None => continue 'tiers,
                        }
                    }
                    if target > b {
                        merge.seek(target);
                        continue;
                    }
                }
                merge.next();
                if self.is_dead(b) || !examined.insert(b) {
                    continue;
                }
                if examined.len() > MAX_EXAMINED {
                    break 'tiers;
                }
                let mut rank = tier;
                let mut is_folded = false;
                for (w, check) in checks.iter().enumerate() {
                    if w == driving {
                        continue;
                    }
                    let best = match check {
                        Some(word_tiers) => word_tiers.iter().find_map(|(t, tokens)| {
                            let dict = &self.dicts[t.1 as usize];
                            tokens
                                .iter()
                                .any(|&k| dict.postings(k as usize).binary_search(&b).is_ok())
                                .then_some(*t)
                        }),
                        None => {
                            if !is_folded {
                                let Some(c) = self
                                    .order
                                    .get(b as usize)
                                    .and_then(|&s| customers.customer(s))
                                else {
                                    continue 'candidates;
                                };
                                for (f, text) in folded.iter_mut().zip([
                                    c.name(),
                                    c.company().unwrap_or_default(),
                                    c.account().unwrap_or_default(),
                                ]) {
                                    f.clear();
                                    fold_into(text, f);
                                }
                                is_folded = true;
                            }
                            rank_words(
                                std::slice::from_ref(&words[w]),
                                [&folded[0], &folded[1], &folded[2]],
                            )
                        }
                    };
                    match best {
                        Some(best) => rank = rank.max(best),
                        None => continue 'candidates,
                    }
                }
                results.push((rank, b));
                if rank <= tier {
                    settled += 1;
                    if settled >= limit {
                        break 'tiers;
                    }
                }
            }
        }
        results.sort_unstable();
        results.truncate(limit);
        out.extend(results.into_iter().map(|((k, f), b)| (k, f, b)));
    }

    /// How a number's digits from `off` on meet a pattern of `len` digits.
    fn number_kind(&self, number: Digits, off: u8, len: u8) -> MatchKind {
        let national = self
            .country_code
            .filter(|cc| number.len > cc.len && number.starts_with(*cc))
            .map(|cc| cc.len);
        if off == 0 || Some(off) == national {
            if number.len - off == len {
                MatchKind::Exact
            } else {
                MatchKind::Prefix
            }
        } else {
            MatchKind::Substring
        }
    }

    /// Base customers with a number containing `pattern`, at most `limit` into `out`.
    fn number_base(&self, pattern: Digits, limit: usize, out: &mut Vec<(MatchKind, Field, u32)>) {
        let range = self.numbers.range(pattern);
        let mut hits: Vec<(MatchKind, u32)> = Vec::new();
        for &entry in self.numbers.suffixes[range].iter().take(NUMBER_SCAN) {
            let n = (entry >> 5) as usize;
            let owner = self.numbers.owners[n];
            if self.is_dead(owner) {
                continue;
            }
            let kind = self.number_kind(self.numbers.digits(n), (entry & 31) as u8, pattern.len);
            hits.push((kind, owner));
        }
        hits.sort_unstable();
        let mut last = NONE;
        let mut taken = 0;
        for (kind, owner) in hits {
            if owner == last {
                continue;
            }
            last = owner;
            out.push((kind, Field::Number, owner));
            taken += 1;
            if taken == limit {
                break;
            }
        }
    }

    /// An overlay customer's rank for the query, if it matches.
    fn rank_entry(&self, entry: &Entry, query: &Query) -> Option<(MatchKind, Field)> {
        let text = (!query.tokens.is_empty())
            .then(|| {
                rank_words(
                    &query.tokens,
                    [&entry.fields[0], &entry.fields[1], &entry.fields[2]],
                )
            })
            .flatten();
        let mut number: Option<MatchKind> = None;
        for &pattern in &query.numbers {
            for &d in &entry.digits {
                if d.len < pattern.len {
                    continue;
                }
                for off in 0..=(d.len - pattern.len) {
                    if d.suffix(off).starts_with(pattern) {
                        let kind = self.number_kind(d, off, pattern.len);
                        number = Some(number.map_or(kind, |k| k.min(kind)));
                    }
                }
            }
        }
        match (text, number) {
            (Some(t), Some(n)) => Some(t.min((n, Field::Number))),
            (Some(t), None) => Some(t),
            (None, Some(n)) => Some((n, Field::Number)),
            (None, None) => None,
        }
    }
}

/// The union of ascending lists, ascending (duplicates kept).
struct Merge<'a> {
    lists: Vec<&'a [u32]>,
    heap: BinaryHeap<Reverse<(u32, u32)>>,
}

impl<'a> Merge<'a> {
    fn new(lists: impl Iterator<Item = &'a [u32]>) -> Merge<'a> {
        let lists: Vec<&[u32]> = lists.filter(|l| !l.is_empty()).collect();
        let heap = lists
            .iter()
            .enumerate()
            .map(|(i, l)| Reverse((l[0], i as u32)))
            .collect();
        Merge { lists, heap }
    }

    fn next(&mut self) -> Option<u32> {
        if self.lists.len() == 1 {
            let (first, rest) = self.lists[0].split_first()?;
            self.lists[0] = rest;
            return Some(*first);
        }
        let Reverse((value, list)) = self.heap.pop()?;
        let l = &mut self.lists[list as usize];
        *l = &l[1..];
        if let Some(&next) = l.first() {
            self.heap.push(Reverse((next, list)));
        }
        Some(value)
    }

    /// The next value, left in place.
    fn peek(&self) -> Option<u32> {
        if self.lists.len() == 1 {
            return self.lists[0].first().copied();
        }
        self.heap.peek().map(|Reverse((value, _))| *value)
    }

    /// Skips every value below `target`.
    fn seek(&mut self, target: u32) {
        for l in &mut self.lists {
            *l = &l[l.partition_point(|&x| x < target)..];
        }
        if self.lists.len() > 1 {
            self.heap = self
                .lists
                .iter()
                .enumerate()
                .filter_map(|(i, l)| Some(Reverse((*l.first()?, i as u32))))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customer::CustomerFields;

    #[test]
    fn folds_case_accents_and_separators() {
        assert_eq!(fold("Müller"), "muller");
        assert_eq!(fold("  ŁÓDŹ-Straße 5 "), "lodz strasse 5");
        assert_eq!(fold("O'Brien & Søn, Æsir"), "obrien son aesir");
        assert_eq!(fold("Crème Brûlée"), "creme brulee");
        assert_eq!(fold("Ĳssel Œuvre ſ"), "ijssel oeuvre s");
        assert_eq!(fold("2×3÷4"), "2 3 4");
        assert_eq!(fold("ΑΘΗΝΑ Köln"), "αθηνα koln");
        assert_eq!(fold("—"), "");
        // Every letter of the table folds to ASCII lower case.
        for c in '\u{c0}'..='\u{17f}' {
            if let Some(s) = latin(c) {
                assert!(s.bytes().all(|b| b.is_ascii_lowercase()), "{c}");
            } else {
                assert!(matches!(c, '×' | '÷'), "{c} has no folding");
            }
        }
    }

    #[test]
    fn parses_queries() {
        let q = Query::parse("(415) 555-0102");
        assert_eq!(q.tokens, ["415", "555", "0102"]);
        assert_eq!(q.numbers, [Digits::parse("4155550102").unwrap()]);
        let q = Query::parse("020 7946 0018");
        assert_eq!(
            q.numbers,
            [
                Digits::parse("02079460018").unwrap(),
                Digits::parse("2079460018").unwrap()
            ]
        );
        assert!(Query::parse("55").numbers.is_empty());
        assert!(Query::parse("AC-555").numbers.is_empty());
        assert_eq!(Query::parse("Jo jo JO").tokens, ["jo"]);
    }

    #[test]
    fn digits_order_like_text() {
        let d = |s: &str| Digits::parse(s).unwrap();
        assert!(d("0123").cmp_text(d("123")).is_lt());
        assert!(d("12").cmp_text(d("123")).is_lt());
        assert!(d("124").cmp_text(d("1239")).is_gt());
        assert!(d("14155550102").suffix(1).starts_with(d("415")));
        assert!(d("0042").suffix(1).starts_with(d("042")));
        assert!(!d("0042").suffix(1).starts_with(d("42")));
    }

    struct Slots(Vec<(Customer, Vec<Digits>)>);

    impl Customers for Slots {
        fn customer(&self, slot: u32) -> Option<&Customer> {
            self.0.get(slot as usize).map(|c| &c.0)
        }
        fn digits(&self, slot: u32, out: &mut Vec<Digits>) {
            out.extend(self.0.get(slot as usize).into_iter().flat_map(|c| &c.1));
        }
    }

    fn slots(rows: &[(&str, &str, &str, &str, &[&str])]) -> Slots {
        Slots(
            rows.iter()
                .map(|(id, name, company, account, numbers)| {
                    (
                        Customer::new(CustomerFields {
                            id,
                            name,
                            company,
                            account,
                            ..CustomerFields::default()
                        }),
                        numbers.iter().map(|n| Digits::parse(n).unwrap()).collect(),
                    )
                })
                .collect(),
        )
    }

    fn names(s: &Slots, found: &[Found]) -> Vec<String> {
        found
            .iter()
            .map(|f| s.customer(f.slot).unwrap().name().to_owned())
            .collect()
    }

    fn sample() -> Slots {
        slots(&[
            ("c1", "Anna Müller", "Globex", "AC-100", &["14155550102"]),
            (
                "c2",
                "Bob Mull",
                "Muller Logistics",
                "AC-101",
                &["12125550111"],
            ),
            ("c3", "Carla Smullen", "Initech", "MUL-7", &["442079460018"]),
            (
                "c4",
                "Dan Roe",
                "Acme Müllerei",
                "AC-102",
                &["14155550199", "611"],
            ),
            ("c5", "Aaron Muller", "", "", &[]),
            ("c6", "Zed Other", "Hooli", "AC-103", &["13125550142"]),
        ])
    }

    #[test]
    fn ranks_exact_prefix_substring_then_fields_then_names() {
        let s = sample();
        let search = Search::build(&s, 0..s.0.len() as u32, 1);
        let found = search.query(&s, "muller", 10);
        // Exact name (by name), exact company, prefix company; accents folded both ways.
        assert_eq!(
            names(&s, &found),
            ["Aaron Muller", "Anna Müller", "Bob Mull", "Dan Roe"]
        );
        assert_eq!(found[0].kind, MatchKind::Exact);
        assert_eq!(
            (found[2].kind, found[2].field),
            (MatchKind::Exact, Field::Company)
        );
        assert_eq!(
            (found[3].kind, found[3].field),
            (MatchKind::Prefix, Field::Company)
        );
        let found = search.query(&s, "MÜL", 10);
        assert_eq!(
            names(&s, &found),
            // Exact account (`MUL-7`), then prefix name ×3 (by name), then prefix company.
            [
                "Carla Smullen",
                "Aaron Muller",
                "Anna Müller",
                "Bob Mull",
                "Dan Roe"
            ]
        );
        assert_eq!(
            (found[0].kind, found[0].field),
            (MatchKind::Exact, Field::Account)
        );
        assert_eq!(
            (found[4].kind, found[4].field),
            (MatchKind::Prefix, Field::Company)
        );
        let found = search.query(&s, "ulle", 10);
        assert!(found.iter().all(|f| f.kind == MatchKind::Substring));
        assert_eq!(
            names(&s, &found)[..3],
            ["Aaron Muller", "Anna Müller", "Carla Smullen"]
        );
        // Several words: all must match, in any field.
        let found = search.query(&s, "anna globex", 10);
        assert_eq!(names(&s, &found), ["Anna Müller"]);
        assert_eq!(
            (found[0].kind, found[0].field),
            (MatchKind::Exact, Field::Company)
        );
        assert!(search.query(&s, "anna initech", 10).is_empty());
        // The limit.
        assert_eq!(search.query(&s, "mul", 2).len(), 2);
        assert_eq!(search.query(&s, "ac-10", 10).len(), 4);
    }

    #[test]
    fn finds_numbers_by_any_part() {
        let s = sample();
        let search = Search::build(&s, 0..s.0.len() as u32, 1);
        for q in ["415 555", "(415) 555-01", "+1 415-555"] {
            let found = search.query(&s, q, 10);
            assert_eq!(names(&s, &found), ["Anna Müller", "Dan Roe"], "{q}");
            assert_eq!(found[0].kind, MatchKind::Prefix, "{q}");
        }
        let found = search.query(&s, "5550102", 10);
        assert_eq!(names(&s, &found), ["Anna Müller"]);
        assert_eq!(found[0].kind, MatchKind::Substring);
        assert_eq!(
            search.query(&s, "415.555.0102", 10)[0].kind,
            MatchKind::Exact
        );
        // A trunk zero and an international prefix.
        assert_eq!(
            names(&s, &search.query(&s, "020 7946 0018", 10)),
            ["Carla Smullen"]
        );
        assert_eq!(
            names(&s, &search.query(&s, "0044 20 7946", 10)),
            ["Carla Smullen"]
        );
        assert_eq!(names(&s, &search.query(&s, "611", 10)), ["Dan Roe"]);
        assert!(search.query(&s, "55", 10).is_empty());
    }

    #[test]
    fn edits_go_through_the_overlay() {
        let mut s = sample();
        let mut search = Search::build(&s, 0..s.0.len() as u32, 1);
        // c2 renamed; c6 gone; a newcomer in a new slot with a number added afterwards.
        s.0[1].0 = Customer::new(CustomerFields {
            id: "c2",
            name: "Bea Muller",
            ..CustomerFields::default()
        });
        search.inserted(1, &s);
        search.removed(5);
        s.0.push(slots(&[("c7", "Ada Mullins", "", "", &[])]).0.remove(0));
        search.inserted(6, &s);
        let number = Digits::parse("13125550142").unwrap();
        s.0[6].1.push(number);
        search.number_added(6, number, &s);
        assert_eq!(search.overlay_len(), 2);
        assert_eq!(
            names(&s, &search.query(&s, "mull", 10)),
            [
                "Aaron Muller",
                "Ada Mullins",
                "Anna Müller",
                "Bea Muller",
                "Dan Roe",
                "Carla Smullen"
            ]
        );
        assert!(search.query(&s, "hooli", 10).is_empty());
        assert!(search.query(&s, "bob", 10).is_empty());
        assert_eq!(names(&s, &search.query(&s, "312 555", 10)), ["Ada Mullins"]);
        // A base customer that gets a number moves to the overlay with all its numbers.
        let extra = Digits::parse("19995550000").unwrap();
        s.0[0].1.push(extra);
        search.number_added(0, extra, &s);
        assert_eq!(names(&s, &search.query(&s, "999555", 10)), ["Anna Müller"]);
        assert_eq!(
            names(&s, &search.query(&s, "4155550102", 10)),
            ["Anna Müller"]
        );
    }
}
