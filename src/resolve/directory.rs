//! The in-memory customer index: normalised number → customers, built for millions.
//!
//! Keys are packed into 64-bit integers (an E.164 number is its integer value; digit strings
//! carry their length and `+`), customers live in a slab addressed by `u32`, and the maps hold
//! only integers: 1M customers with 2M numbers fit in ~250 MB. Each number remembers its kind
//! (main, work, mobile), which ranks candidates.
//!
//! Resolution of a key:
//! - one customer → that customer;
//! - several, all of one company → the company (its contact holding the number as `main`);
//! - several otherwise → candidates, one per company (or per customer without one), each with
//!   why; mobile numbers rank first (a mobile is usually one person's), then work, then main;
//! - none, but the number shares the main-number stem of companies (all digits but the last
//!   `switchboard_digits`) → the company, marked approximate.
//!
//! Also loads the customers CSV: columns `id,name,company,account,crm_url,tags,numbers`, where
//! `numbers` is `kind:raw` entries separated by `|` (kinds: `main`, `work`, `mobile`), for
//! example `main:(415) 555-0100|mobile:+1 415 555 0199`, and `tags` is `|`-separated.

use std::hash::BuildHasher;
use std::io::Read;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::normalise::{Key, Normaliser};
use super::search::{Customers, Digits, Found, Search, SearchHit};
use super::{Candidate, Resolution};
pub use crate::customer::{Customer, CustomerFields, NumberKind};

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

// Packed keys: bits 60..61 are the type, bits 62..63 the number kind (in a slot's key list only).
const TYPE_SHIFT: u32 = 60;
const TYPE_E164: u64 = 0;
const TYPE_DIGITS: u64 = 1;
const TYPE_PLUS_DIGITS: u64 = 2;
const TYPE_HASHED: u64 = 3;
const LEN_SHIFT: u32 = 55;
const VALUE_MASK: u64 = (1 << LEN_SHIFT) - 1;
const KEY_MASK: u64 = (1 << 62) - 1;
const KIND_SHIFT: u32 = 62;
/// A map value with this bit set indexes [`Directory::groups`]; otherwise it is a slot.
const MANY: u32 = 1 << 31;

/// A packed key as stored in a map (4-byte alignment keeps map entries at 12 bytes).
type MapKey = [u32; 2];

fn map_key(packed: u64) -> MapKey {
    [packed as u32, (packed >> 32) as u32]
}

/// Packs a key; `None` for a key with no digits (never indexed, never matched).
fn pack(key: &Key, hasher: &DefaultHashBuilder) -> Option<u64> {
    match key {
        Key::E164(s) => pack_text(s, true, hasher),
        Key::Digits(s) => pack_text(s, false, hasher),
    }
}

fn pack_text(text: &str, e164: bool, hasher: &DefaultHashBuilder) -> Option<u64> {
    let plus = text.starts_with('+');
    let digits = text.trim_start_matches('+');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = || digits.parse::<u64>().ok();
    if e164 && digits.len() <= 15 && !digits.starts_with('0') {
        return value();
    }
    if digits.len() <= 16 {
        let ty = if plus { TYPE_PLUS_DIGITS } else { TYPE_DIGITS };
        return value().map(|v| ty << TYPE_SHIFT | (digits.len() as u64) << LEN_SHIFT | v);
    }
    // Longer digit strings are not phone numbers; they still match exactly, by a 60-bit hash.
    Some(TYPE_HASHED << TYPE_SHIFT | hasher.hash_one(text) & ((1 << TYPE_SHIFT) - 1))
}

/// The text of a packed key (`None` for a hashed one).
fn unpack(packed: u64) -> Option<Key> {
    let packed = packed & KEY_MASK;
    let value = packed & VALUE_MASK;
    let len = ((packed >> LEN_SHIFT) & 0x1f) as usize;
    match packed >> TYPE_SHIFT {
        TYPE_E164 => Some(Key::E164(format!("+{packed}"))),
        TYPE_DIGITS => Some(Key::Digits(format!("{value:0len$}"))),
        TYPE_PLUS_DIGITS => Some(Key::Digits(format!("+{value:0len$}"))),
        _ => None,
    }
}

/// The digits of a packed key, for search (`None` for a hashed one).
fn digits_of(packed: u64) -> Option<Digits> {
    let packed = packed & KEY_MASK;
    match packed >> TYPE_SHIFT {
        TYPE_E164 => Digits::new(packed, (packed.max(1).ilog10() + 1) as u8),
        TYPE_DIGITS | TYPE_PLUS_DIGITS => {
            Digits::new(packed & VALUE_MASK, ((packed >> LEN_SHIFT) & 0x1f) as u8)
        }
        _ => None,
    }
}

/// The slots as the search index reads them.
struct SlotView<'a>(&'a [Option<Slot>]);

impl Customers for SlotView<'_> {
    fn customer(&self, slot: u32) -> Option<&Customer> {
        self.0
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|s| &s.customer)
    }

    fn digits(&self, slot: u32, out: &mut Vec<Digits>) {
        if let Some(s) = self.0.get(slot as usize).and_then(Option::as_ref) {
            out.extend(s.keys.iter().filter_map(|&k| digits_of(k)));
        }
    }
}

fn kind_bits(kind: NumberKind) -> u64 {
    (match kind {
        NumberKind::Mobile => 0,
        NumberKind::Work => 1,
        NumberKind::Main => 2,
    }) << KIND_SHIFT
}

fn kind_of(entry: u64) -> NumberKind {
    match entry >> KIND_SHIFT {
        0 => NumberKind::Mobile,
        1 => NumberKind::Work,
        _ => NumberKind::Main,
    }
}

/// Adds numbers to customers already in a [`Directory`]; see [`Directory::loader`].
pub struct Loader<'a> {
    directory: &'a mut Directory,
    last: Option<(String, u32)>,
}

impl Loader<'_> {
    fn slot(&mut self, id: &str) -> Option<u32> {
        if let Some((last, slot)) = &self.last
            && last == id
        {
            return Some(*slot);
        }
        let slot = self.directory.slot_of(id)?;
        match &mut self.last {
            Some((last, s)) => {
                last.clear();
                last.push_str(id);
                *s = slot;
            }
            None => self.last = Some((id.to_owned(), slot)),
        }
        Some(slot)
    }

    /// Adds a number to customer `id`; false if there is no such customer.
    pub fn add(&mut self, id: &str, key: &Key, kind: NumberKind) -> bool {
        let Some(slot) = self.slot(id) else {
            return false;
        };
        self.directory.attach(slot, key, kind);
        true
    }

    /// Adds a number already in E.164 form (as stored by screenpop) without allocating.
    pub fn add_e164(&mut self, id: &str, e164: &str, kind: NumberKind) -> bool {
        let Some(slot) = self.slot(id) else {
            return false;
        };
        if let Some(packed) = pack_text(e164, true, &self.directory.hasher) {
            self.directory.attach_packed(slot, packed, kind);
        }
        true
    }
}

/// One customer and its packed keys (each with its kind in the top bits).
struct Slot {
    customer: Customer,
    keys: Box<[u64]>,
}

/// The index.
pub struct Directory {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Slot numbers, hashed by customer id.
    by_id: HashTable<u32>,
    /// Packed key → slot, or group of slots.
    by_key: hashbrown::HashMap<MapKey, u32>,
    /// Main-number stem of customers with a company → slot, or group of slots.
    stems: hashbrown::HashMap<MapKey, u32>,
    /// Slot lists for keys shared by several customers.
    groups: Vec<Vec<u32>>,
    free_groups: Vec<u32>,
    hasher: DefaultHashBuilder,
    normaliser: Normaliser,
    /// Trailing digits a switchboard stem leaves out (0: no switchboard fallback).
    switchboard_digits: u8,
    /// Customer search over the same slots: built once loaded ([`Directory::build_search`]),
    /// then told of every edit.
    search: Search,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("customers", &self.customers())
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// An empty index. `switchboard_digits` (at most 6) is how many trailing digits of a
    /// company's main number may differ for an approximate match; 0 turns that off.
    pub fn new(normaliser: Normaliser, switchboard_digits: u8) -> Self {
        Directory {
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashTable::new(),
            by_key: hashbrown::HashMap::default(),
            stems: hashbrown::HashMap::default(),
            groups: Vec::new(),
            free_groups: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            normaliser,
            switchboard_digits: switchboard_digits.min(6),
            search: Search::default(),
        }
    }

    /// Builds the search index over the customers loaded so far (a loader calls this once,
    /// after its bulk load and before the directory is served); edits after it keep it
    /// current. Building again starts afresh.
    pub fn build_search(&mut self) {
        let slots = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| i as u32);
        self.search = Search::build(
            &SlotView(&self.slots),
            slots,
            self.normaliser.country_code(),
        );
    }

    /// Builds the search index unless it is built.
    pub fn ensure_search(&mut self) {
        if !self.search.is_built() {
            self.build_search();
        }
    }

    /// Customers edited since the search index was built: past
    /// [`super::search::OVERLAY_MAX`] every search pays for them, and the owner should
    /// rebuild (reload) the directory.
    pub fn search_overlay(&self) -> usize {
        self.search.overlay_len()
    }

    /// Heap bytes held by the search index.
    pub fn search_heap_bytes(&self) -> usize {
        self.search.heap_bytes()
    }

    /// At most `limit` (1..=20) customers matching `query`, best first (see
    /// [`super::search`]); nothing before the search index is built.
    pub fn search(&self, query: &str, limit: usize) -> Vec<SearchHit> {
        let view = SlotView(&self.slots);
        // Two passes: the slots and their customers' text (scattered in memory) are all
        // read before any customer is cloned, so that their cache misses overlap instead of
        // queueing behind each clone's atomic increment (which orders the loads after it).
        let found: Vec<(Found, &Slot)> = self
            .search
            .query(&view, query, limit)
            .into_iter()
            .filter_map(|found| {
                let slot = self.slots.get(found.slot as usize)?.as_ref()?;
                std::hint::black_box(slot.customer.id().as_bytes().first());
                Some((found, slot))
            })
            .collect();
        found
            .into_iter()
            .map(|(found, slot)| SearchHit {
                customer: slot.customer.clone(),
                numbers: slot
                    .keys
                    .iter()
                    .filter_map(|&k| unpack(k).map(|key| (key, kind_of(k))))
                    .collect(),
                kind: found.kind,
                field: found.field,
            })
            .collect()
    }

    /// Room for this many customers and numbers, to load without rehashing.
    pub fn reserve(&mut self, customers: usize, numbers: usize) {
        self.slots.reserve(customers);
        let hasher = self.hasher.clone();
        self.by_id.reserve(customers, |&slot| {
            self.slots
                .get(slot as usize)
                .and_then(Option::as_ref)
                .map_or(0, |s| hasher.hash_one(s.customer.id()))
        });
        self.by_key.reserve(numbers);
    }

    /// Loads a CSV (see the module docs) read from `reader`; `name` labels errors.
    pub fn from_csv(
        reader: impl Read,
        name: &str,
        normaliser: Normaliser,
        switchboard_digits: u8,
    ) -> Result<Self, DirectoryError> {
        let mut dir = Directory::new(normaliser, switchboard_digits);
        let mut csv = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        for row in csv.deserialize::<super::import::CsvRow>() {
            let row = row.map_err(|e| DirectoryError::Row {
                source_name: name.into(),
                line: e.position().map_or(0, |p| p.line()),
                reason: e.to_string(),
            })?;
            let tags: Vec<String> = row
                .tags
                .split('|')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            let customer = Customer::new(CustomerFields {
                id: &row.id,
                name: &row.name,
                company: &row.company,
                account: &row.account,
                crm_url: &row.crm_url,
                tags: &tags,
            });
            let numbers: Vec<(Key, NumberKind)> = super::import::split_numbers(&row.numbers)
                .iter()
                .map(|(kind, raw)| {
                    (
                        normaliser.key(raw),
                        NumberKind::parse(kind).unwrap_or(NumberKind::Main),
                    )
                })
                .collect();
            dir.upsert(customer, numbers);
        }
        dir.build_search();
        Ok(dir)
    }

    /// The normaliser in use.
    pub fn normaliser(&self) -> Normaliser {
        self.normaliser
    }

    fn slot_of(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.by_id
            .find(hash, |&slot| {
                self.slots
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.customer.id() == id)
            })
            .copied()
    }

    /// Adds a customer with its numbers, replacing any earlier version of it.
    pub fn upsert(
        &mut self,
        customer: Customer,
        numbers: impl IntoIterator<Item = (Key, NumberKind)>,
    ) {
        self.remove(customer.id());
        if let Some(slot) = self.insert_new(customer) {
            for (key, kind) in numbers {
                self.attach(slot, &key, kind);
            }
        }
    }

    /// Adds a customer whose id is not in the index (the loader's path: ids come from a
    /// primary key), without numbers; returns its slot. A customer already there is replaced.
    pub fn insert_new(&mut self, customer: Customer) -> Option<u32> {
        let hash = self.hasher.hash_one(customer.id());
        let (slots, hasher) = (&self.slots, &self.hasher);
        let entry = self.by_id.entry(
            hash,
            |&s| {
                slots
                    .get(s as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|x| x.customer.id() == customer.id())
            },
            |&s| {
                slots
                    .get(s as usize)
                    .and_then(Option::as_ref)
                    .map_or(0, |x| hasher.hash_one(x.customer.id()))
            },
        );
        if let hashbrown::hash_table::Entry::Occupied(_) = entry {
            let id = customer.id().to_owned();
            self.remove(&id);
            return self.insert_new(customer);
        }
        let slot = match self.free.last() {
            Some(&slot) => slot,
            None => match u32::try_from(self.slots.len()) {
                // 2^31 customers are not representable; never reached in practice.
                Ok(slot) if slot & MANY == 0 => slot,
                _ => return None,
            },
        };
        entry.insert(slot);
        let filled = Some(Slot {
            customer,
            keys: Box::new([]),
        });
        if self.free.pop().is_some() {
            self.slots[slot as usize] = filled;
        } else {
            self.slots.push(filled);
        }
        self.search.inserted(slot, &SlotView(&self.slots));
        Some(slot)
    }

    /// A bulk loader of numbers, faster than [`Directory::add_number`] when numbers of one
    /// customer come together (it remembers the last customer).
    pub fn loader(&mut self) -> Loader<'_> {
        Loader {
            directory: self,
            last: None,
        }
    }

    /// Adds one number to a customer already in the index (the streaming loader's path);
    /// false if there is no such customer.
    pub fn add_number(&mut self, id: &str, key: &Key, kind: NumberKind) -> bool {
        match self.slot_of(id) {
            Some(slot) => {
                self.attach(slot, key, kind);
                true
            }
            None => false,
        }
    }

    fn attach(&mut self, slot: u32, key: &Key, kind: NumberKind) {
        if let Some(packed) = pack(key, &self.hasher) {
            self.attach_packed(slot, packed, kind);
        }
    }

    fn attach_packed(&mut self, slot: u32, packed: u64, kind: NumberKind) {
        let Some(entry) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if entry.keys.iter().any(|k| k & KEY_MASK == packed) {
            return;
        }
        let mut keys = std::mem::take(&mut entry.keys).into_vec();
        keys.push(packed | kind_bits(kind));
        entry.keys = keys.into_boxed_slice();
        if let Some(digits) = digits_of(packed) {
            self.search
                .number_added(slot, digits, &SlotView(&self.slots));
        }
        let Some(entry) = self.slots.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        let has_company = entry.customer.company().is_some();
        add_ref(
            &mut self.by_key,
            &mut self.groups,
            &mut self.free_groups,
            packed,
            slot,
        );
        if kind == NumberKind::Main
            && has_company
            && let Some(stem) = self.stem(packed)
        {
            add_ref(
                &mut self.stems,
                &mut self.groups,
                &mut self.free_groups,
                stem,
                slot,
            );
        }
    }

    /// The switchboard stem of an E.164 key: its value without the last digits.
    fn stem(&self, packed: u64) -> Option<u64> {
        if self.switchboard_digits == 0 || packed >> TYPE_SHIFT != TYPE_E164 {
            return None;
        }
        // Keep at least a country code and a few digits: a stem of a 7-digit number is noise.
        let divisor = 10u64.pow(u32::from(self.switchboard_digits));
        (packed >= 10_000_000).then_some(packed / divisor)
    }

    /// Takes a customer out; false if it was not there.
    pub fn remove(&mut self, id: &str) -> bool {
        let hash = self.hasher.hash_one(id);
        let slots = &self.slots;
        let Ok(found) = self.by_id.find_entry(hash, |&slot| {
            slots
                .get(slot as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.customer.id() == id)
        }) else {
            return false;
        };
        let (slot, _) = found.remove();
        let Some(entry) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return false;
        };
        for &key in entry.keys.iter() {
            let packed = key & KEY_MASK;
            remove_ref(
                &mut self.by_key,
                &mut self.groups,
                &mut self.free_groups,
                packed,
                slot,
            );
            if let Some(stem) = self.stem(packed) {
                remove_ref(
                    &mut self.stems,
                    &mut self.groups,
                    &mut self.free_groups,
                    stem,
                    slot,
                );
            }
        }
        self.search.removed(slot);
        self.free.push(slot);
        true
    }

    /// Customers loaded.
    pub fn customers(&self) -> usize {
        self.by_id.len()
    }

    /// Distinct number keys.
    pub fn keys(&self) -> usize {
        self.by_key.len()
    }

    /// A customer by id.
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        let slot = self.slot_of(id)?;
        self.slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|s| &s.customer)
    }

    /// A customer's numbers, as keys (E.164 for valid numbers), with their kinds.
    pub fn numbers_of(&self, id: &str) -> Vec<(Key, NumberKind)> {
        let Some(slot) = self.slot_of(id) else {
            return Vec::new();
        };
        self.slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|s| {
                s.keys
                    .iter()
                    .filter_map(|&k| unpack(k).map(|key| (key, kind_of(k))))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn slots_of<'a>(&'a self, value: &'a u32) -> &'a [u32] {
        if value & MANY == 0 {
            std::slice::from_ref(value)
        } else {
            self.groups
                .get((value & !MANY) as usize)
                .map_or(&[], Vec::as_slice)
        }
    }

    /// Resolves an E.164 number given as its integer value (`14155550100`) only if it names
    /// at least one customer; no allocation on this path.
    pub fn resolve_e164_hit(&self, value: u64) -> Option<Resolution> {
        if value >= 1 << 50 {
            return None;
        }
        let found = self.by_key.get(&map_key(value))?;
        Some(self.rank(value, self.slots_of(found)))
    }

    /// Resolves a key only if it names at least one customer (no switchboard fallback).
    pub fn resolve_hit(&self, key: &Key) -> Option<Resolution> {
        let packed = pack(key, &self.hasher)?;
        let value = self.by_key.get(&map_key(packed))?;
        Some(self.rank(packed, self.slots_of(value)))
    }

    /// Resolves an already normalised key.
    pub fn resolve_key(&self, key: &Key) -> Resolution {
        let Some(packed) = pack(key, &self.hasher) else {
            return Resolution::Unknown;
        };
        if let Some(value) = self.by_key.get(&map_key(packed)) {
            return self.rank(packed, self.slots_of(value));
        }
        self.switchboard(packed).unwrap_or(Resolution::Unknown)
    }

    /// The customers behind one key, ranked.
    fn rank(&self, packed: u64, slots: &[u32]) -> Resolution {
        let mut hits: Vec<(&Customer, NumberKind)> = slots
            .iter()
            .filter_map(|&s| self.slots.get(s as usize)?.as_ref())
            .map(|s| {
                let kind = s
                    .keys
                    .iter()
                    .find(|&&k| k & KEY_MASK == packed)
                    .map_or(NumberKind::Main, |&k| kind_of(k));
                (&s.customer, kind)
            })
            .collect();
        match hits.as_slice() {
            [] => return Resolution::Unknown,
            [(one, _)] => {
                return Resolution::Customer {
                    customer: (*one).clone(),
                };
            }
            _ => {}
        }
        // Best first: by kind (mobile, work, main), then by name, then id, for a stable order.
        hits.sort_by(|a, b| (a.1, a.0.name(), a.0.id()).cmp(&(b.1, b.0.name(), b.0.id())));
        // One entry per company; customers without a company stand alone.
        let mut groups: Vec<(&Customer, NumberKind, usize)> = Vec::new();
        for (customer, kind) in &hits {
            match customer.company() {
                Some(company) => {
                    match groups
                        .iter_mut()
                        .find(|(c, _, _)| c.company() == Some(company))
                    {
                        Some(group) => {
                            group.2 += 1;
                            // The company's own (main-number) record represents it.
                            if *kind == NumberKind::Main && group.1 != NumberKind::Main {
                                group.0 = customer;
                                group.1 = *kind;
                            }
                        }
                        None => groups.push((customer, *kind, 1)),
                    }
                }
                None => groups.push((customer, *kind, 1)),
            }
        }
        if let [(only, _, _)] = groups.as_slice() {
            return Resolution::Customer {
                customer: (*only).clone(),
            };
        }
        Resolution::Candidates {
            candidates: groups
                .into_iter()
                .map(|(customer, kind, n)| Candidate {
                    reason: match (customer.company(), n) {
                        (Some(company), n) if n > 1 => {
                            format!("{n} contacts at {company} share this number")
                        }
                        _ => format!("this is the customer's {} number", kind.as_str()),
                    },
                    customer: customer.clone(),
                })
                .collect(),
        }
    }

    /// An unknown E.164 number in a company's main-number block.
    fn switchboard(&self, packed: u64) -> Option<Resolution> {
        let stem = self.stem(packed)?;
        let value = self.stems.get(&map_key(stem))?;
        let mut companies: Vec<&Customer> = Vec::new();
        for &slot in self.slots_of(value) {
            let Some(s) = self.slots.get(slot as usize).and_then(Option::as_ref) else {
                continue;
            };
            if !companies
                .iter()
                .any(|c| c.company() == s.customer.company())
            {
                companies.push(&s.customer);
            }
        }
        companies.sort_by(|a, b| (a.company(), a.id()).cmp(&(b.company(), b.id())));
        let why = |c: &Customer| {
            format!(
                "number not on file; same number block as the main number of {}",
                c.company().unwrap_or_else(|| c.name())
            )
        };
        match companies.as_slice() {
            [] => None,
            [one] => Some(Resolution::Approximate {
                customer: (*one).clone(),
                reason: why(one),
            }),
            many => Some(Resolution::Candidates {
                candidates: many
                    .iter()
                    .map(|c| Candidate {
                        customer: (*c).clone(),
                        reason: why(c),
                    })
                    .collect(),
            }),
        }
    }
}

fn add_ref(
    map: &mut hashbrown::HashMap<MapKey, u32>,
    groups: &mut Vec<Vec<u32>>,
    free_groups: &mut Vec<u32>,
    packed: u64,
    slot: u32,
) {
    let key = map_key(packed);
    let Some(value) = map.get_mut(&key) else {
        map.insert(key, slot);
        return;
    };
    if *value & MANY == 0 {
        if *value == slot {
            return;
        }
        let group = vec![*value, slot];
        let index = match free_groups.pop() {
            Some(i) => {
                if let Some(g) = groups.get_mut(i as usize) {
                    *g = group;
                }
                i
            }
            None => {
                groups.push(group);
                (groups.len() - 1) as u32
            }
        };
        *value = index | MANY;
    } else if let Some(group) = groups.get_mut((*value & !MANY) as usize)
        && !group.contains(&slot)
    {
        group.push(slot);
    }
}

fn remove_ref(
    map: &mut hashbrown::HashMap<MapKey, u32>,
    groups: &mut [Vec<u32>],
    free_groups: &mut Vec<u32>,
    packed: u64,
    slot: u32,
) {
    let key = map_key(packed);
    let Some(value) = map.get_mut(&key) else {
        return;
    };
    if *value & MANY == 0 {
        if *value == slot {
            map.remove(&key);
        }
        return;
    }
    let index = *value & !MANY;
    let Some(group) = groups.get_mut(index as usize) else {
        return;
    };
    group.retain(|&s| s != slot);
    match group.as_slice() {
        [] => {
            map.remove(&key);
            free_groups.push(index);
        }
        [last] => {
            *value = *last;
            *group = Vec::new();
            free_groups.push(index);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonenumber::country;

    fn us() -> Normaliser {
        Normaliser::new(country::Id::US)
    }

    #[test]
    fn loads_and_resolves() {
        let csv = "id,name,company,account,crm_url,tags,numbers\n\
                   c1,Acme Corporation,Acme Corporation,A-1,,vip,main:(415) 555-0100|mobile:415 555 0199\n\
                   c2,Jo Doe,,,,,work:+1 212 555 0111\n\
                   c3,Al Roe,,,,,mobile:212-555-0111\n";
        let dir = Directory::from_csv(csv.as_bytes(), "test.csv", us(), 2).expect("loads");
        assert_eq!(dir.customers(), 3);
        match dir.resolve_key(&us().key("+14155550100")) {
            Resolution::Customer { customer } => assert_eq!(customer.name(), "Acme Corporation"),
            other => panic!("{other:?}"),
        }
        match dir.resolve_key(&us().key("+12125550111")) {
            Resolution::Candidates { candidates } => {
                let names: Vec<_> = candidates.iter().map(|c| c.customer.name()).collect();
                assert_eq!(names, ["Al Roe", "Jo Doe"], "mobile ranks before work");
                assert!(candidates[0].reason.contains("mobile"), "{candidates:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            dir.resolve_key(&us().key("+19995550000")),
            Resolution::Unknown
        );
        // The switchboard block of Acme's main number.
        match dir.resolve_key(&us().key("+14155550142")) {
            Resolution::Approximate { customer, reason } => {
                assert_eq!(customer.id(), "c1");
                assert!(reason.contains("Acme Corporation"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Not in the block (differs before the last two digits), and a mobile has no block.
        assert_eq!(
            dir.resolve_key(&us().key("+14155550242")),
            Resolution::Unknown
        );
        assert_eq!(
            dir.resolve_key(&us().key("+14155550198")),
            Resolution::Approximate {
                customer: dir.customer("c1").expect("c1").clone(),
                reason:
                    "number not on file; same number block as the main number of Acme Corporation"
                        .into(),
            }
        );
        let bad = "id,name\n\"unterminated,x\n";
        assert!(Directory::from_csv(bad.as_bytes(), "bad.csv", us(), 2).is_err());
    }

    #[test]
    fn upsert_move_remove_and_reuse() {
        let mut dir = Directory::new(us(), 0);
        let c = |id: &str, company: &str| {
            Customer::new(CustomerFields {
                id,
                name: id,
                company,
                ..CustomerFields::default()
            })
        };
        let k = |raw: &str| us().key(raw);
        dir.upsert(c("a", "Acme"), [(k("415 555 0100"), NumberKind::Main)]);
        dir.upsert(c("b", "Acme"), [(k("415 555 0100"), NumberKind::Work)]);
        dir.upsert(c("z", ""), [(k("911"), NumberKind::Main)]);
        match dir.resolve_key(&k("+14155550100")) {
            Resolution::Customer { customer } => {
                assert_eq!(customer.id(), "a", "company's main record")
            }
            other => panic!("{other:?}"),
        }
        // Short codes match on their digits only.
        assert!(matches!(
            dir.resolve_key(&k("911")),
            Resolution::Customer { .. }
        ));
        assert_eq!(dir.resolve_key(&k("+1911")), Resolution::Unknown);
        // b moves to another company: candidates.
        dir.upsert(c("b", "Beta"), [(k("415 555 0100"), NumberKind::Work)]);
        assert!(
            matches!(dir.resolve_key(&k("+14155550100")), Resolution::Candidates { candidates } if candidates.len() == 2)
        );
        assert!(dir.remove("a"));
        assert!(!dir.remove("a"));
        match dir.resolve_key(&k("+14155550100")) {
            Resolution::Customer { customer } => assert_eq!(customer.id(), "b"),
            other => panic!("{other:?}"),
        }
        // The freed slot is reused, and the old keys do not point at the newcomer.
        dir.upsert(c("n", ""), [(k("+44 20 7946 0018"), NumberKind::Mobile)]);
        assert_eq!(dir.customers(), 3);
        match dir.resolve_key(&k("+14155550100")) {
            Resolution::Customer { customer } => assert_eq!(customer.id(), "b"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            dir.numbers_of("n"),
            [(Key::E164("+442079460018".into()), NumberKind::Mobile)]
        );
        assert!(dir.add_number("n", &Key::Digits("0042".into()), NumberKind::Work));
        assert!(
            dir.numbers_of("n")
                .contains(&(Key::Digits("0042".into()), NumberKind::Work))
        );
        assert!(!dir.add_number("missing", &k("911"), NumberKind::Main));
    }

    #[test]
    fn packing_round_trips() {
        let h = DefaultHashBuilder::default();
        for key in [
            Key::E164("+14155550100".into()),
            Key::E164("+999123456789012".into()),
            Key::Digits("911".into()),
            Key::Digits("007".into()),
            Key::Digits("+0123".into()),
            Key::Digits("1234567890123456".into()),
        ] {
            let packed = pack(&key, &h).expect("packs");
            assert_eq!(unpack(packed), Some(key.clone()), "{key:?}");
        }
        assert_ne!(
            pack(&Key::Digits("007".into()), &h),
            pack(&Key::Digits("07".into()), &h)
        );
        assert_eq!(pack(&Key::Digits(String::new()), &h), None);
        let long = pack(&Key::Digits("12345678901234567890".into()), &h).expect("hashed");
        assert_eq!(unpack(long), None);
        assert_eq!(long >> TYPE_SHIFT, TYPE_HASHED);
    }
}
