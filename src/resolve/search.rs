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
//! ranks as its weakest word. The ranks (kind × field) are walked best first, each rank's
//! customers arrive in name order, so the walk stops as soon as `limit` are found. Several
//! words are intersected rank by rank by leapfrogging through their postings; where more than
//! [`MAX_STEER_LISTS`] tokens share their first [`GROUP_BYTES`] bytes, their postings are
//! also kept merged (a *prefix group*), so that a short prefix is one list, not hundreds.
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
/// A word whose tiers hold at most this many tokens steers a query of several words: its
/// postings are intersected with the other words' (see [`Search::text_base`]); past it, the
/// word is checked on each candidate instead, unless a prefix group stands in for its tokens.
const MAX_STEER_LISTS: usize = 64;
/// Prefix groups (merged postings) are kept for tokens sharing this many first bytes.
const GROUP_BYTES: usize = 3;
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
fn rank_words(words: &[impl AsRef<str>], fields: [&str; 3]) -> Option<(MatchKind, Field)> {
    let mut worst = (MatchKind::Exact, Field::Name);
    for word in words {
        let word = word.as_ref();
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
    /// Each token's first base id, side by side (see [`Merge::tokens`]).
    heads: Vec<u32>,
    /// `token << 5 | offset`, sorted by the token's text from that offset.
    suffixes: Vec<u32>,
    /// Each token's first four bytes ([`key4`]): most steps of a binary search read only
    /// these, not the scattered text.
    keys: Vec<u32>,
    /// The same for each suffix.
    suffix_keys: Vec<u32>,
    /// Tokens sharing their first [`GROUP_BYTES`] bytes, where more than [`MAX_STEER_LISTS`]
    /// do (name and company only): (first token, end token), in token order.
    groups: Vec<(u32, u32)>,
    /// End of group i's postings in `group_postings`.
    group_ends: Vec<u32>,
    /// Each group's tokens' postings merged: base ids, ascending, once each.
    group_postings: Vec<u32>,
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
        let key = key4(word);
        let cut = |i: usize| cut_cmp(self.keys[i], || self.token(i), word, key);
        let lo = partition(self.len(), |i| cut(i).is_lt());
        let hi = lo + partition(self.len() - lo, |i| !cut(lo + i).is_gt());
        lo..hi
    }

    /// Suffixes starting with `word` (indices into `suffixes`).
    fn suffix_range(&self, word: &[u8]) -> Range<usize> {
        let key = key4(word);
        let cut = |i: usize| {
            cut_cmp(
                self.suffix_keys[i],
                || self.suffix(self.suffixes[i]),
                word,
                key,
            )
        };
        let lo = partition(self.suffixes.len(), |i| cut(i).is_lt());
        let hi = lo + partition(self.suffixes.len() - lo, |i| !cut(lo + i).is_gt());
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
                let range = self.suffix_range(word);
                // A token holding the word twice comes twice (the walks take each id once).
                for &entry in &self.suffixes[range] {
                    let token = entry >> 5;
                    if !self.token(token as usize).starts_with(word) {
                        out.push(token);
                    }
                }
            }
        }
    }

    /// The merged postings of the tokens starting with `word`'s first [`GROUP_BYTES`] bytes,
    /// when they form a group: (postings, whether they are exactly `word`'s prefix range).
    fn group(&self, word: &[u8]) -> Option<(&[u32], bool)> {
        let head = word.get(..GROUP_BYTES)?;
        let first = self.prefix_range(head).start as u32;
        let g = self.groups.partition_point(|&(start, _)| start < first);
        let &(start, _) = self.groups.get(g)?;
        if start != first {
            return None;
        }
        let from = if g == 0 {
            0
        } else {
            self.group_ends[g - 1] as usize
        };
        Some((
            &self.group_postings[from..self.group_ends[g] as usize],
            word.len() == GROUP_BYTES,
        ))
    }

    fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + 4 * (self.ends.capacity()
                + self.post_ends.capacity()
                + self.postings.capacity()
                + self.suffixes.capacity()
                + self.heads.capacity()
                + self.keys.capacity()
                + self.suffix_keys.capacity()
                + self.group_ends.capacity()
                + self.group_postings.capacity())
            + 8 * self.groups.capacity()
    }
}

/// The first four bytes of `text`, big-endian, zeros past its end: keys order as the texts'
/// first four bytes do.
fn key4(text: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = text.len().min(4);
    b[..n].copy_from_slice(&text[..n]);
    u32::from_be_bytes(b)
}

/// `text` cut to `word`'s length, compared with `word` (`Less`: before every text starting
/// with `word`; `Equal`: starts with it). `key` is `text`'s [`key4`], `word_key` `word`'s:
/// for a word of four bytes or fewer they decide alone (a text ending early has zeros there,
/// below any byte of a word), else whenever they differ.
fn cut_cmp<'t>(
    key: u32,
    text: impl FnOnce() -> &'t [u8],
    word: &[u8],
    word_key: u32,
) -> std::cmp::Ordering {
    if word.len() <= 4 {
        let mask = !u32::MAX.checked_shr(8 * word.len() as u32).unwrap_or(0);
        return (key & mask).cmp(&word_key);
    }
    match key.cmp(&word_key) {
        std::cmp::Ordering::Equal => {
            let text = text();
            text[..text.len().min(word.len())].cmp(word)
        }
        other => other,
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
            heads: Vec::new(),
            keys: Vec::new(),
            suffix_keys: Vec::new(),
            groups: Vec::new(),
            group_ends: Vec::new(),
            group_postings: Vec::new(),
        };
        for (new, (token, old)) in tokens.iter().enumerate() {
            remap[*old as usize] = new as u32;
            dict.text.extend_from_slice(token.as_bytes());
            dict.ends.push(dict.text.len() as u32);
        }
        drop(tokens);
        dict.keys = (0..dict.len()).map(|i| key4(dict.token(i))).collect();
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
        dict.heads = (0..dict.len()).map(|t| dict.postings(t)[0]).collect();
        if suffixes {
            // Prefix groups: runs of tokens sharing their first bytes, merged where long.
            let mut i = 0;
            while i < dict.len() {
                let Some(head) = dict.token(i).get(..GROUP_BYTES) else {
                    i += 1;
                    continue;
                };
                let end = i + partition(dict.len() - i, |k| dict.token(i + k).starts_with(head));
                if end - i > MAX_STEER_LISTS {
                    let from = dict.group_postings.len();
                    for t in i..end {
                        let start = if t == 0 {
                            0
                        } else {
                            dict.post_ends[t - 1] as usize
                        };
                        let postings = &dict.postings[start..dict.post_ends[t] as usize];
                        dict.group_postings.extend_from_slice(postings);
                    }
                    dict.group_postings[from..].sort_unstable();
                    let mut merged = dict.group_postings.split_off(from);
                    merged.dedup();
                    dict.group_postings.extend(merged);
                    dict.groups.push((i as u32, end as u32));
                    dict.group_ends.push(dict.group_postings.len() as u32);
                }
                i = end;
            }
            dict.group_postings.shrink_to_fit();
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
            dict.suffix_keys = suffixes.iter().map(|&e| key4(dict.suffix(e))).collect();
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
    /// Each number with its owner, together: a suffix's comparison reads one cache line.
    entries: Vec<Number>,
    /// `number << 5 | offset`, sorted by the digits from that offset.
    suffixes: Vec<u32>,
    /// Where the suffixes starting with each three digits begin (1,001 bounds): a query's
    /// binary search starts inside its first three digits' bucket.
    buckets: Vec<u32>,
}

/// One number of the base.
#[derive(Debug, Clone, Copy)]
struct Number {
    value: u64,
    /// Base id of the number's customer.
    owner: u32,
    len: u8,
}

impl Numbers {
    fn digits(&self, n: usize) -> Digits {
        let e = &self.entries[n];
        Digits {
            value: e.value,
            len: e.len,
        }
    }

    fn suffix(&self, entry: u32) -> Digits {
        self.digits((entry >> 5) as usize)
            .suffix((entry & 31) as u8)
    }

    fn range(&self, q: Digits) -> Range<usize> {
        let (from, to) = match self.buckets.get(q.head(3) as usize..q.head(3) as usize + 2) {
            Some(&[from, to]) if q.len >= 3 => (from as usize, to as usize),
            _ => (0, self.suffixes.len()),
        };
        let bucket = &self.suffixes[from..to];
        let lo = partition(bucket.len(), |i| self.suffix(bucket[i]).cmp_text(q).is_lt());
        let hi = partition(bucket.len(), |i| {
            let s = self.suffix(bucket[i]);
            s.cmp_text(q).is_lt() || s.starts_with(q)
        });
        from + lo..from + hi
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Number>() * self.entries.capacity()
            + 4 * (self.suffixes.capacity() + self.buckets.capacity())
    }
}

/// Fills `numbers.suffixes` (every offset leaving at least [`MIN_NUMBER_DIGITS`] digits),
/// sorted by their digits: a counting sort on the first three digits straight into place (no
/// second copy of the array), then each bucket by an exact key (the digits left-aligned in a
/// `u64`, then the length: `12` < `120` < `13`), so that no comparison chases pointers.
fn sort_number_suffixes(numbers: &mut Numbers) {
    let count = numbers.entries.len();
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
    numbers.buckets = starts.iter().map(|&s| s as u32).collect();
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

/// How a customer matched a word: (kind, field), better first.
type Rank = (MatchKind, Field);
/// One tier of a word's matches: its rank and the field's tokens in it.
type Tier = (Rank, Vec<u32>);

/// A postings list a word's customers of one rank are in.
struct List<'a> {
    rank: Rank,
    postings: &'a [u32],
    /// Whether every customer in it has the word at this rank (a prefix group for a
    /// longer word holds more).
    exact: bool,
}

/// The ranks a text word can have, best first.
const RANKS: [Rank; 8] = [
    (MatchKind::Exact, Field::Name),
    (MatchKind::Exact, Field::Company),
    (MatchKind::Exact, Field::Account),
    (MatchKind::Prefix, Field::Name),
    (MatchKind::Prefix, Field::Company),
    (MatchKind::Prefix, Field::Account),
    (MatchKind::Substring, Field::Name),
    (MatchKind::Substring, Field::Company),
];

/// One customer's fields folded, kept while several words are checked against them.
#[derive(Default)]
struct Folded {
    slot: u32,
    fields: [String; 3],
}

impl Folded {
    /// `word`'s best rank in the customer at `slot`.
    fn rank(&mut self, customers: &dyn Customers, slot: u32, word: &str) -> Option<Rank> {
        if self.slot != slot {
            let c = customers.customer(slot)?;
            for (f, text) in self.fields.iter_mut().zip([
                c.name(),
                c.company().unwrap_or_default(),
                c.account().unwrap_or_default(),
            ]) {
                f.clear();
                fold_into(text, f);
            }
            self.slot = slot;
        }
        let [name, company, account] = &self.fields;
        rank_words(&[word], [name, company, account])
    }
}

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
                if d.len as usize >= MIN_NUMBER_DIGITS && numbers.entries.len() < 1 << 27 {
                    numbers.entries.push(Number {
                        value: d.value,
                        owner: base,
                        len: d.len,
                    });
                }
            }
        }
        drop(named);
        // Numbers in digit order: the numbers a prefix finds (most of a number query's
        // range) then sit side by side in memory, not one cache miss each.
        numbers
            .entries
            .sort_unstable_by_key(|e| (e.value * POW10[19 - e.len as usize], e.len));
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
        // Best match per base customer; base ids are name order, so (kind, field, base id)
        // is already the result order.
        base.sort_unstable_by_key(|&(kind, field, b)| (b, kind, field));
        base.dedup_by_key(|hit| hit.2);
        base.sort_unstable();
        base.truncate(limit);
        let found: Vec<Found> = base
            .iter()
            .filter_map(|&(kind, field, b)| {
                Some(Found {
                    slot: *self.order.get(b as usize)?,
                    kind,
                    field,
                })
            })
            .collect();
        // Edited customers (not in the base) go in by folded name, then id: only then are
        // the base hits' names folded.
        let edited: Vec<(MatchKind, Field, &Entry)> = self
            .overlay
            .iter()
            .filter_map(|entry| {
                let (kind, field) = self.rank_entry(entry, &query)?;
                Some((kind, field, entry))
            })
            .collect();
        if edited.is_empty() {
            return found;
        }
        let id = |slot: u32| customers.customer(slot).map(Customer::id);
        let mut keyed: Vec<((MatchKind, Field, String), Found)> = found
            .into_iter()
            .filter_map(|f| {
                Some((
                    (f.kind, f.field, fold(customers.customer(f.slot)?.name())),
                    f,
                ))
            })
            .collect();
        keyed.extend(edited.into_iter().map(|(kind, field, entry)| {
            let name = entry.fields[0].to_string();
            (
                (kind, field, name),
                Found {
                    slot: entry.slot,
                    kind,
                    field,
                },
            )
        }));
        keyed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| id(a.1.slot).cmp(&id(b.1.slot))));
        keyed.truncate(limit);
        keyed.into_iter().map(|(_, f)| f).collect()
    }

    /// A word's tiers of these `kinds` that have tokens, best first: (rank, tokens).
    fn word_tiers(&self, word: &str, kinds: &[MatchKind]) -> Vec<Tier> {
        let mut tiers = Vec::new();
        for rank in RANKS.into_iter().filter(|r| kinds.contains(&r.0)) {
            let mut tokens = Vec::new();
            self.dicts[rank.1 as usize].tier(word.as_bytes(), rank.0, &mut tokens);
            if !tokens.is_empty() {
                tiers.push((rank, tokens));
            }
        }
        tiers
    }

    /// Base customers for one word: each tier's tokens looked up only when the tiers before
    /// it left results to find, and each customer's rank is its first tier's.
    fn one_word(&self, word: &str, limit: usize, out: &mut Vec<(MatchKind, Field, u32)>) {
        let mut taken: Vec<u32> = Vec::new();
        let mut tokens = Vec::new();
        for (kind, field) in RANKS {
            let dict = &self.dicts[field as usize];
            tokens.clear();
            dict.tier(word.as_bytes(), kind, &mut tokens);
            // A prefix of exactly a group's bytes: its merged postings are the tier's (and
            // the exact token's, all taken before this tier is reached).
            let group = (kind == MatchKind::Prefix && tokens.len() > MAX_STEER_LISTS)
                .then(|| dict.group(word.as_bytes()))
                .flatten()
                .filter(|&(_, exact)| exact);
            let mut merge = match group {
                Some((postings, _)) => Merge::new(std::iter::once(postings)),
                None => Merge::tokens(dict, &tokens),
            };
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

    /// Base customers for the words, best first, at most `limit` more into `out`.
    ///
    /// A customer ranks as its weakest word, so the walk goes rank by rank (the tiers, best
    /// first): the customers of rank ≤ R are those in every word's tiers ≤ R. Within a rank
    /// they come in base (name) order, so the walk stops as soon as `limit` are found.
    ///
    /// Words whose tiers ≤ R hold few postings lists (or one prefix group standing in for
    /// many) *steer*: their lists are intersected by leapfrogging (each moves to the others'
    /// next id by binary search). The others are checked on each candidate by folding its
    /// fields. With no steering word, the word with the fewest postings is walked and every
    /// candidate checked, at most [`MAX_EXAMINED`] of them.
    fn text_base(
        &self,
        customers: &dyn Customers,
        words: &[String],
        limit: usize,
        out: &mut Vec<(MatchKind, Field, u32)>,
    ) {
        if let [word] = words {
            return self.one_word(word, limit, out);
        }
        // Substring tiers are looked up only when the walk reaches them.
        let mut tiers: Vec<Vec<Tier>> = words
            .iter()
            .map(|w| self.word_tiers(w, &[MatchKind::Exact, MatchKind::Prefix]))
            .collect();
        let mut substrings = false;
        let mut found: Vec<u32> = Vec::new();
        let mut examined = 0;
        let mut folded = Folded::default();
        for rank in RANKS {
            if rank.0 == MatchKind::Substring && !substrings {
                for (w, word) in words.iter().enumerate() {
                    tiers[w].extend(self.word_tiers(word, &[MatchKind::Substring]));
                }
                substrings = true;
            }
            // Someone must rank exactly here, or every candidate was found before.
            if !tiers
                .iter()
                .any(|t| t.iter().any(|(tier, _)| *tier == rank))
            {
                continue;
            }
            let mut steering: Vec<(usize, Vec<List>)> = Vec::new();
            let mut others: Vec<usize> = Vec::new();
            let mut sizes: Vec<(usize, usize)> = Vec::new();
            for (w, word) in words.iter().enumerate() {
                let lists = self.word_lists(word, &tiers[w], rank);
                if lists.is_empty() {
                    steering.clear();
                    sizes.clear();
                    break; // This word ranks worse than `rank` everywhere.
                }
                if lists.len() <= MAX_STEER_LISTS {
                    steering.push((w, lists));
                } else {
                    sizes.push((lists.iter().map(|l| l.postings.len()).sum(), w));
                    others.push(w);
                }
            }
            if steering.is_empty() {
                // Walk the smallest word's union; every candidate is checked.
                let Some(&(_, w)) = sizes.iter().min() else {
                    continue;
                };
                others.retain(|&o| o != w);
                steering.push((w, self.word_lists(&words[w], &tiers[w], rank)));
            }
            steering
                .sort_by_key(|(_, lists)| lists.iter().map(|l| l.postings.len()).sum::<usize>());
            let mut merges: Vec<Merge> = steering
                .iter()
                .map(|(_, lists)| Merge::new(lists.iter().map(|l| l.postings)))
                .collect();
            // Leapfrog: the first id at or after every steering word's next one.
            'walk: while let Some(mut target) = merges[0].peek() {
                let mut agreed = false;
                while !agreed {
                    agreed = true;
                    for merge in &mut merges {
                        merge.seek(target);
                        match merge.peek() {
                            None => break 'walk,
                            Some(next) if next > target => {
                                target = next;
                                agreed = false;
                            }
                            Some(_) => {}
                        }
                    }
                }
                let b = target;
                if self.is_dead(b) || found.contains(&b) {
                    for merge in &mut merges {
                        merge.seek(b + 1);
                    }
                    continue;
                }
                examined += 1;
                if examined > MAX_EXAMINED {
                    return;
                }
                // Each word's best rank at `b`: a steering word's from the lists at `b`
                // (exact while they are), the others' by folding the customer's fields.
                folded.slot = NONE;
                let mut worst = Some(RANKS[0]);
                for ((w, lists), merge) in steering.iter().zip(&merges) {
                    let at = lists
                        .iter()
                        .zip(&merge.lists)
                        .filter(|(_, rest)| rest.first() == Some(&b));
                    let mut best: Option<Rank> = None;
                    let mut sure = lists.len() <= MAX_STEER_LISTS;
                    for (list, _) in at {
                        sure &= list.exact;
                        best = Some(best.map_or(list.rank, |r| r.min(list.rank)));
                    }
                    if !sure {
                        let slot = self.order.get(b as usize).copied().unwrap_or(NONE);
                        best = folded.rank(customers, slot, &words[*w]);
                    }
                    worst = worst.zip(best).map(|(a, b)| a.max(b));
                }
                for &w in &others {
                    let slot = self.order.get(b as usize).copied().unwrap_or(NONE);
                    let best = folded.rank(customers, slot, &words[w]);
                    worst = worst.zip(best).map(|(a, b)| a.max(b));
                }
                for merge in &mut merges {
                    merge.seek(b + 1);
                }
                if worst == Some(rank) {
                    found.push(b);
                    out.push((rank.0, rank.1, b));
                    if found.len() >= limit {
                        return;
                    }
                }
            }
        }
    }

    /// The postings lists holding `word`'s customers of tiers ≤ `rank`: a prefix tier of
    /// many tokens by its prefix group when there is one (not exact for a word longer than
    /// the group's bytes: its candidates are then checked by folding).
    fn word_lists<'a>(&'a self, word: &str, tiers: &[Tier], rank: Rank) -> Vec<List<'a>> {
        let mut lists = Vec::new();
        for (tier, tokens) in tiers.iter().filter(|(tier, _)| *tier <= rank) {
            let dict = &self.dicts[tier.1 as usize];
            if tier.0 == MatchKind::Prefix
                && tokens.len() > MAX_STEER_LISTS
                && let Some((postings, exact)) = dict.group(word.as_bytes())
            {
                lists.push(List {
                    rank: *tier,
                    postings,
                    exact,
                });
            } else {
                lists.extend(tokens.iter().map(|&t| List {
                    rank: *tier,
                    postings: dict.postings(t as usize),
                    exact: true,
                }));
            }
        }
        lists
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
            let owner = self.numbers.entries[n].owner;
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

/// The first index of ascending `list` at or above `target`, by galloping from the start:
/// a walk's next id is usually close, and the steps stay near it in memory.
fn gallop(list: &[u32], target: u32) -> usize {
    let mut hi = 1;
    while hi < list.len() && list[hi - 1] < target {
        hi *= 2;
    }
    let lo = hi / 2;
    let hi = hi.min(list.len());
    lo + list[lo..hi].partition_point(|&x| x < target)
}

/// The union of ascending lists, ascending (duplicates kept). List `i` of the constructor
/// stays `lists[i]` (empty ones too), so a caller can tell which lists hold the current id.
struct Merge<'a> {
    lists: Vec<&'a [u32]>,
    heap: BinaryHeap<Reverse<(u32, u32)>>,
    /// Lists not yet in the heap, by their first id (see [`Merge::tokens`]).
    pending: Vec<(u32, u32)>,
    /// Where `pending` lists come from.
    dict: Option<&'a Dict>,
    /// Every pending list starts at or after this.
    threshold: u32,
}

impl<'a> Merge<'a> {
    fn new(lists: impl Iterator<Item = &'a [u32]>) -> Merge<'a> {
        let lists: Vec<&[u32]> = lists.collect();
        let heap = lists
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some(Reverse((*l.first()?, i as u32))))
            .collect();
        Merge {
            lists,
            heap,
            pending: Vec::new(),
            dict: None,
            threshold: NONE,
        }
    }

    /// The union of `tokens`' postings in `dict`, for a walk from the start (`next` only):
    /// lists join the heap a few at a time, smallest first id first, so a walk that stops
    /// after a few ids touches only the lists that hold them (each token's first id is kept
    /// beside the others in [`Dict::heads`]).
    fn tokens(dict: &'a Dict, tokens: &[u32]) -> Merge<'a> {
        let mut merge = Merge {
            lists: Vec::new(),
            heap: BinaryHeap::new(),
            pending: tokens
                .iter()
                .map(|&t| (dict.heads[t as usize], t))
                .collect(),
            dict: Some(dict),
            threshold: 0,
        };
        merge.activate();
        merge
    }

    /// Moves the pending lists with the smallest first ids into the heap.
    fn activate(&mut self) {
        const BATCH: usize = 16;
        let Some(dict) = self.dict else {
            return;
        };
        let take = if self.pending.len() > BATCH {
            self.pending.select_nth_unstable(BATCH - 1);
            // Every list left starts at or after the batch's last.
            self.threshold = self.pending[BATCH - 1].0;
            BATCH
        } else {
            self.threshold = NONE;
            self.pending.len()
        };
        for (head, token) in self.pending.drain(..take) {
            self.heap.push(Reverse((head, self.lists.len() as u32)));
            self.lists.push(dict.postings(token as usize));
        }
    }

    fn next(&mut self) -> Option<u32> {
        // An id above the threshold may come after a pending list's first.
        while !self.pending.is_empty()
            && self
                .heap
                .peek()
                .is_none_or(|Reverse((value, _))| *value > self.threshold)
        {
            self.activate();
        }
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

    /// The next value, left in place (not for a [`Merge::tokens`]).
    fn peek(&self) -> Option<u32> {
        debug_assert!(self.pending.is_empty());
        if self.lists.len() == 1 {
            return self.lists[0].first().copied();
        }
        self.heap.peek().map(|Reverse((value, _))| *value)
    }

    /// Skips every value below `target`: only the lists still below it move, each by a
    /// binary search.
    fn seek(&mut self, target: u32) {
        debug_assert!(self.pending.is_empty());
        if self.lists.len() == 1 {
            let l = &mut self.lists[0];
            *l = &l[gallop(l, target)..];
            return;
        }
        while let Some(&Reverse((value, list))) = self.heap.peek() {
            if value >= target {
                break;
            }
            self.heap.pop();
            let l = &mut self.lists[list as usize];
            *l = &l[gallop(l, target)..];
            if let Some(&next) = l.first() {
                self.heap.push(Reverse((next, list)));
            }
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
    fn gallops_to_the_first_id_at_or_above_a_target() {
        let list: Vec<u32> = (0..100).map(|i| i * 3).collect();
        for target in 0..310 {
            let want = list.iter().position(|&x| x >= target).unwrap_or(list.len());
            assert_eq!(gallop(&list, target), want, "target {target}");
        }
        assert_eq!(gallop(&[], 5), 0);
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

    /// What a query must return, by folding and ranking every customer in `slots` (the
    /// definition the index's walks must agree with).
    fn scan(s: &Slots, live: &[u32], text: &str, limit: usize) -> Vec<Found> {
        let query = Query::parse(text);
        let mut all: Vec<(Rank, String, String, u32)> = live
            .iter()
            .filter_map(|&slot| {
                let c = s.customer(slot)?;
                let fields = [
                    fold(c.name()),
                    fold(c.company().unwrap_or_default()),
                    fold(c.account().unwrap_or_default()),
                ];
                let rank = rank_words(&query.tokens, [&fields[0], &fields[1], &fields[2]])?;
                Some((rank, fields[0].clone(), c.id().to_owned(), slot))
            })
            .collect();
        all.sort();
        all.truncate(limit);
        all.into_iter()
            .map(|((kind, field), _, _, slot)| Found { slot, kind, field })
            .collect()
    }

    #[test]
    fn text_queries_return_what_a_scan_of_every_customer_returns() {
        // Names from syllables, so that thousands of tokens share their first letters and
        // prefix groups are built; a few customers edited after the build (the overlay).
        const SYL: [&str; 12] = [
            "ma", "mar", "an", "ber", "ko", "vic", "son", "el", "ni", "sch", "ta", "lo",
        ];
        const FIRST: [&str; 8] = [
            "Ana", "Anna", "Mark", "Maria", "Vic", "Elena", "Bert", "Kos",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let word = |next: &mut dyn FnMut(usize) -> usize| {
            let mut w = String::new();
            for _ in 0..2 + next(3) {
                w.push_str(SYL[next(SYL.len())]);
            }
            w
        };
        let mut rows = Vec::new();
        for i in 0..4000 {
            let family = word(&mut next);
            let name = format!("{} {family}", FIRST[next(FIRST.len())]);
            let company = match next(3) {
                0 => String::new(),
                _ => format!("{} GmbH", word(&mut next)),
            };
            rows.push((format!("c{i}"), name, company, format!("AC-{i}")));
        }
        let as_rows: Vec<(&str, &str, &str, &str, &[&str])> = rows
            .iter()
            .map(|(id, n, c, a)| (id.as_str(), n.as_str(), c.as_str(), a.as_str(), &[][..]))
            .collect();
        let mut s = slots(&as_rows);
        let mut search = Search::build(&s, 0..s.0.len() as u32, 1);
        assert!(
            search.dicts[0].groups.len() + search.dicts[1].groups.len() > 3,
            "the data builds prefix groups"
        );
        for slot in [7u32, 100, 2500] {
            s.0[slot as usize].0 = Customer::new(CustomerFields {
                id: &format!("c{slot}"),
                name: "Mark Marvicson",
                company: "Vicko Ltd",
                account: "AC-9",
                ..CustomerFields::default()
            });
            search.inserted(slot, &s);
        }
        let live: Vec<u32> = (0..s.0.len() as u32).collect();
        let mut queries = vec![
            "ana mar".to_owned(),
            "mark vic".to_owned(),
            "vic".to_owned(),
            "ma ma".to_owned(),
            "an el gmbh".to_owned(),
            "marvicson".to_owned(),
            "zz top".to_owned(),
        ];
        for _ in 0..400 {
            let (_, name, company, account) = &rows[next(rows.len())];
            let tokens: Vec<String> = [name, company, account]
                .iter()
                .flat_map(|t| fold(t).split(' ').map(str::to_owned).collect::<Vec<_>>())
                .filter(|t| !t.is_empty())
                .collect();
            let mut q = Vec::new();
            for _ in 0..1 + next(3) {
                let t = &tokens[next(tokens.len())];
                let from = if next(3) == 0 { next(t.len()) } else { 0 };
                let to = (from + 1 + next(5)).min(t.len());
                q.push(t[from..to].to_owned());
            }
            queries.push(q.join(" "));
        }
        for q in &queries {
            let want = scan(&s, &live, q, MAX_LIMIT);
            for limit in [1, 10, MAX_LIMIT] {
                let got = search.query(&s, q, limit);
                assert_eq!(
                    got,
                    want[..limit.min(want.len())],
                    "query {q:?}, limit {limit}"
                );
            }
        }
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
