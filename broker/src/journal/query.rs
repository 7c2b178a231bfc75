//! Journal queries over the store's secondary indexes: the index keys of a batch of entries,
//! a filter, and paging in journal order that reads only the index of the most selective
//! field (never a scan of the whole log when a field is given).

use std::collections::BTreeMap;

use time::OffsetDateTime;
use uuid::Uuid;

use super::entry::{Entry, EventKind};
use crate::store::{Store, StoreError, keys};

/// The indexed fields, each with the letter of its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// Either party: sender, recipient, or the actor (who leased, acked, was refused, asked).
    Entity,
    /// The header's sender.
    Sender,
    /// The header's recipient (`*` for events).
    Recipient,
    /// The service.
    Service,
    /// The action.
    Action,
    /// The conversation.
    Conversation,
    /// The envelope id.
    EnvelopeId,
    /// The event kind.
    Kind,
    /// `ok`, `refused`, or the refusal code.
    Status,
}

impl Field {
    fn letter(self) -> u8 {
        match self {
            Field::Entity => b'e',
            Field::Sender => b's',
            Field::Recipient => b'r',
            Field::Service => b'v',
            Field::Action => b'a',
            Field::Conversation => b'c',
            Field::EnvelopeId => b'i',
            Field::Kind => b'k',
            Field::Status => b'o',
        }
    }

    /// Most selective first: the order in which a query picks the index it walks.
    const BY_SELECTIVITY: [Field; 9] = [
        Field::EnvelopeId,
        Field::Conversation,
        Field::Sender,
        Field::Recipient,
        Field::Action,
        Field::Entity,
        Field::Service,
        Field::Status,
        Field::Kind,
    ];

    /// Whether `e` has `value` in this field.
    fn matches(self, e: &Entry, value: &str) -> bool {
        let is = |o: &Option<String>| o.as_deref() == Some(value);
        match self {
            Field::Entity => is(&e.sender) || is(&e.recipient) || is(&e.actor),
            Field::Sender => is(&e.sender),
            Field::Recipient => is(&e.recipient),
            Field::Service => is(&e.service),
            Field::Action => is(&e.action),
            Field::Conversation => is(&e.conversation),
            Field::EnvelopeId => e.envelope_id.is_some_and(|id| id.to_string() == value),
            Field::Kind => e.kind.as_str() == value,
            Field::Status => status_values(e).contains(&value),
        }
    }
}

fn status_values(e: &Entry) -> Vec<&str> {
    match (e.kind, e.code.as_deref()) {
        (EventKind::Refused, Some(code)) => vec!["refused", code],
        (EventKind::Refused, None) => vec!["refused"],
        _ => vec!["ok"],
    }
}

/// The index terms of `e`: one per indexed field it has a value in.
fn terms(e: &Entry) -> Vec<(Field, String)> {
    let mut out = Vec::with_capacity(12);
    let mut parties: Vec<&str> = Vec::with_capacity(3);
    for p in [&e.sender, &e.recipient, &e.actor].into_iter().flatten() {
        if p != "*" && !parties.contains(&p.as_str()) {
            parties.push(p);
        }
    }
    for p in parties {
        out.push((Field::Entity, p.to_owned()));
    }
    for (f, v) in [
        (Field::Sender, &e.sender),
        (Field::Recipient, &e.recipient),
        (Field::Service, &e.service),
        (Field::Action, &e.action),
        (Field::Conversation, &e.conversation),
    ] {
        if let Some(v) = v {
            out.push((f, v.clone()));
        }
    }
    if let Some(id) = e.envelope_id {
        out.push((Field::EnvelopeId, id.to_string()));
    }
    out.push((Field::Kind, e.kind.as_str().to_owned()));
    for s in status_values(e) {
        out.push((Field::Status, s.to_owned()));
    }
    out
}

/// The secondary index entries of the journal entries one write adds: one key per field and
/// value, whatever the number of entries that have it. The key names the first of them
/// (`keys::journal_index`); the value lists the others, each as the LEB128 difference from
/// the one before. A key with an empty value names one entry.
///
/// One key per entry and field was most of the keys the hub wrote per envelope, and the
/// store's work grows with keys more than with bytes.
#[derive(Debug, Default)]
pub struct Postings(BTreeMap<(u8, String), Vec<u64>>);

impl Postings {
    /// Indexes `e`; entries must be added in journal order.
    pub fn add(&mut self, e: &Entry) {
        for (field, value) in terms(e) {
            let indices = self.0.entry((field.letter(), value)).or_default();
            if indices.last() != Some(&e.index) {
                indices.push(e.index);
            }
        }
    }

    /// The keys and values to write.
    pub fn into_writes(self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> {
        self.0.into_iter().filter_map(|((letter, value), indices)| {
            let (&first, rest) = indices.split_first()?;
            let mut deltas = Vec::with_capacity(rest.len());
            let mut prev = first;
            for &i in rest {
                put_leb128(&mut deltas, i - prev);
                prev = i;
            }
            Some((keys::journal_index(letter, &value, first), deltas))
        })
    }
}

fn put_leb128(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The journal indices an index key names (see [`Postings`]).
fn posting(key: &[u8], value: &[u8]) -> Result<Vec<u64>, StoreError> {
    let bad = |what: &str| StoreError::corrupt(key, format!("index posting: {what}"));
    let mut index = keys::trailing_u64(key).ok_or_else(|| bad("no index in the key"))?;
    let mut out = vec![index];
    let (mut delta, mut shift) = (0u64, 0u32);
    for &b in value {
        if shift > 63 {
            return Err(bad("a difference longer than 64 bits"));
        }
        delta |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            index = index
                .checked_add(delta)
                .filter(|_| delta > 0)
                .ok_or_else(|| bad("indices out of order"))?;
            out.push(index);
            (delta, shift) = (0, 0);
        }
    }
    if shift != 0 {
        return Err(bad("a truncated difference"));
    }
    Ok(out)
}

/// What a query asks for: every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Field conditions.
    pub fields: Vec<(Field, String)>,
    /// Entries at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Entries at or before this time.
    pub to: Option<OffsetDateTime>,
}

impl Filter {
    /// Adds a field condition.
    pub fn with(&mut self, field: Field, value: impl Into<String>) -> &mut Self {
        self.fields.push((field, value.into()));
        self
    }

    fn matches(&self, e: &Entry) -> bool {
        self.fields.iter().all(|(f, v)| f.matches(e, v)) && self.from.is_none_or(|t| e.at >= t)
    }
}

/// One entry found, with its exact stored bytes.
#[derive(Debug, Clone)]
pub struct Found {
    /// The entry.
    pub entry: Entry,
    /// Its canonical bytes, as hashed into the tree.
    pub bytes: Vec<u8>,
}

/// A page of results.
#[derive(Debug, Default)]
pub struct Page {
    /// The entries, in journal order.
    pub entries: Vec<Found>,
    /// Where to continue (`after`), if the query may have more.
    pub next: Option<u64>,
}

/// How many index keys one page may read past non-matching entries before it returns a short
/// page with a cursor: keeps every page's cost bounded whatever the filter.
const SCAN_BUDGET: usize = 20_000;

fn corrupt(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    }
}

fn entry_at(store: &dyn Store, index: u64) -> Result<Option<Found>, StoreError> {
    let key = keys::journal(index);
    match store.get(&key)? {
        Some(bytes) => Ok(Some(Found {
            entry: Entry::from_bytes(&bytes).map_err(|e| corrupt(&key, e))?,
            bytes,
        })),
        None => Ok(None),
    }
}

/// One entry by index.
///
/// # Errors
/// [`StoreError`] when the store fails or the entry is corrupt.
pub fn get(store: &dyn Store, index: u64) -> Result<Option<Found>, StoreError> {
    entry_at(store, index)
}

/// The first journal index whose entry is at or after `t` (entries are in time order).
fn first_at_or_after(store: &dyn Store, size: u64, t: OffsetDateTime) -> Result<u64, StoreError> {
    let (mut lo, mut hi) = (0u64, size);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match entry_at(store, mid)? {
            Some(f) if f.entry.at < t => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// Up to `limit` entries matching `filter`, after journal index `after`, in journal order.
/// `size` is the journal's current size.
///
/// # Errors
/// [`StoreError`] when the store fails or an entry is corrupt.
pub fn page(
    store: &dyn Store,
    filter: &Filter,
    size: u64,
    after: Option<u64>,
    limit: usize,
) -> Result<Page, StoreError> {
    let mut start = after.map_or(0, |a| a.saturating_add(1));
    if let Some(from) = filter.from {
        start = start.max(first_at_or_after(store, size, from)?);
    }
    let mut out = Page::default();
    let driver = Field::BY_SELECTIVITY
        .iter()
        .find_map(|f| filter.fields.iter().find(|(g, _)| g == f));
    let mut scanned = 0usize;
    let mut last_seen: Option<u64> = None;
    let consider = |found: Found, out: &mut Page| -> bool {
        // Returns false to stop: past the time range.
        if filter.to.is_some_and(|t| found.entry.at > t) {
            return false;
        }
        if filter.matches(&found.entry) {
            out.entries.push(found);
        }
        true
    };
    match driver {
        Some((field, value)) => {
            let prefix = keys::journal_index_prefix(field.letter(), value);
            // The key naming `start` may be one that begins before it.
            let mut pending = match start {
                0 => None,
                s => store.last_below(&prefix, &keys::journal_index(field.letter(), value, s))?,
            };
            let mut cursor: Option<Vec<u8>> = None;
            'walk: loop {
                let batch = match pending.take() {
                    Some(first) => vec![first],
                    None => store.scan(&prefix, cursor.as_deref(), 512)?,
                };
                if batch.is_empty() {
                    return Ok(out);
                }
                for (key, value) in &batch {
                    for index in posting(key, value)? {
                        if index < start {
                            continue;
                        }
                        if index >= size {
                            return Ok(out);
                        }
                        last_seen = Some(index);
                        scanned += 1;
                        let Some(found) = entry_at(store, index)? else {
                            continue;
                        };
                        if !consider(found, &mut out) {
                            return Ok(out);
                        }
                        if out.entries.len() >= limit || scanned >= SCAN_BUDGET {
                            break 'walk;
                        }
                    }
                }
                cursor = batch.last().map(|(k, _)| k.clone());
            }
        }
        None => {
            let mut index = start;
            while index < size {
                last_seen = Some(index);
                scanned += 1;
                let Some(found) = entry_at(store, index)? else {
                    break;
                };
                if !consider(found, &mut out) {
                    return Ok(out);
                }
                if out.entries.len() >= limit || scanned >= SCAN_BUDGET {
                    break;
                }
                index += 1;
            }
            if index >= size {
                return Ok(out);
            }
        }
    }
    out.next = last_seen;
    Ok(out)
}

/// Parses a filter value that must be a UUID.
///
/// # Errors
/// A message naming the bad value.
pub fn parse_uuid(s: &str) -> Result<String, String> {
    Uuid::parse_str(s)
        .map(|u| u.to_string())
        .map_err(|e| format!("`{s}` is not a UUID: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, FjallStore};

    fn entry(index: u64, kind: EventKind, sender: &str, recipient: &str, at: i64) -> Entry {
        let mut e = Entry::new(
            index,
            kind,
            OffsetDateTime::from_unix_timestamp(1_800_000_000 + at).unwrap(),
            "0".repeat(64),
        );
        e.sender = Some(sender.into());
        e.recipient = Some(recipient.into());
        e.service = Some("residenza.cambio".into());
        e.action = Some("richiesta".into());
        if kind == EventKind::Refused {
            e.code = Some("sender-not-allowed".into());
            e.actor = Some(sender.into());
        }
        e
    }

    /// A store holding `entries`, written as the engine writes them: in groups, here of
    /// `group` entries each, with one index key per field and value in each group.
    fn store_in_groups(entries: &[Entry], group: usize) -> (tempfile::TempDir, FjallStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = FjallStore::open(dir.path()).unwrap();
        for chunk in entries.chunks(group.max(1)) {
            let mut b = Batch::default();
            let mut postings = Postings::default();
            for e in chunk {
                b.put(keys::journal(e.index), e.to_bytes().unwrap());
                postings.add(e);
            }
            for (k, v) in postings.into_writes() {
                b.put(k, v);
            }
            s.apply(b).unwrap();
        }
        (dir, s)
    }

    fn store_with(entries: &[Entry]) -> (tempfile::TempDir, FjallStore) {
        store_in_groups(entries, 13)
    }

    /// Every page, in order, of the entries `f` matches.
    fn all_pages(store: &FjallStore, f: &Filter, size: u64, limit: usize) -> Vec<u64> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let p = page(store, f, size, after, limit).unwrap();
            all.extend(p.entries.iter().map(|e| e.entry.index));
            match p.next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    #[test]
    fn index_keys_of_a_store_before_postings_still_answer() {
        // One key per entry and field, with an empty value: how stores were written before.
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        let mut b = Batch::default();
        for i in 0..40u64 {
            let s = if i % 4 == 0 {
                "comune:001272"
            } else {
                "comune:004078"
            };
            let e = entry(i, EventKind::Accepted, s, "anpr:ministero", i as i64);
            b.put(keys::journal(i), e.to_bytes().unwrap());
            for (field, value) in terms(&e) {
                b.put(keys::journal_index(field.letter(), &value, i), Vec::new());
            }
        }
        store.apply(b).unwrap();
        let mut f = Filter::default();
        f.with(Field::Sender, "comune:001272");
        assert_eq!(
            all_pages(&store, &f, 40, 3),
            (0..40).step_by(4).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_corrupt_posting_is_named_not_misread() {
        let key = keys::journal_index(b's', "comune:001272", 7);
        assert_eq!(posting(&key, &[]).unwrap(), vec![7]);
        assert_eq!(posting(&key, &[1, 0x81, 0x01]).unwrap(), vec![7, 8, 137]);
        for bad in [&[0x80][..], &[0][..], &[0xff; 11][..]] {
            let e = posting(&key, bad).unwrap_err().to_string();
            assert!(e.contains("index posting"), "{bad:?}: {e}");
        }
    }

    proptest::proptest! {
        /// Postings carry any increasing indices through their encoding.
        #[test]
        fn postings_round_trip(first in 0u64..1 << 40, gaps in proptest::collection::vec(1u64..1 << 35, 0..50)) {
            let mut e = entry(first, EventKind::Accepted, "comune:001272", "anpr:ministero", 0);
            let mut postings = Postings::default();
            let mut want = vec![first];
            postings.add(&e);
            for g in gaps {
                e.index += g;
                want.push(e.index);
                postings.add(&e);
            }
            for (k, v) in postings.into_writes() {
                proptest::prop_assert_eq!(posting(&k, &v).unwrap(), want.clone());
            }
        }

        /// Paging by an indexed field finds the same entries whatever the groups they were
        /// written in and the page size.
        #[test]
        fn pages_do_not_depend_on_groups(group in 1usize..40, limit in 1usize..20, senders in proptest::collection::vec(0u8..3, 1..120)) {
            let entries: Vec<Entry> = senders
                .iter()
                .enumerate()
                .map(|(i, s)| entry(i as u64, EventKind::Accepted, &format!("comune:00{s}"), "anpr:ministero", i as i64))
                .collect();
            let (_d, store) = store_in_groups(&entries, group);
            let mut f = Filter::default();
            f.with(Field::Sender, "comune:001");
            let want: Vec<u64> = (0..senders.len() as u64).filter(|&i| senders[i as usize] == 1).collect();
            proptest::prop_assert_eq!(all_pages(&store, &f, senders.len() as u64, limit), want);
        }
    }

    #[test]
    fn filters_page_and_time_ranges() {
        let mut entries = Vec::new();
        for i in 0..300u64 {
            let (s, r) = if i % 3 == 0 {
                ("comune:001272", "anpr:ministero")
            } else {
                ("comune:004078", "anpr:ministero")
            };
            let kind = if i % 10 == 0 {
                EventKind::Refused
            } else {
                EventKind::Accepted
            };
            entries.push(entry(i, kind, s, r, i as i64));
        }
        let (_d, store) = store_with(&entries);
        let mut f = Filter::default();
        f.with(Field::Sender, "comune:001272");
        assert_eq!(
            all_pages(&store, &f, 300, 7),
            (0..300).filter(|i| i % 3 == 0).collect::<Vec<_>>()
        );

        let mut f = Filter::default();
        f.with(Field::Status, "sender-not-allowed")
            .with(Field::Entity, "comune:004078");
        let p = page(&store, &f, 300, None, 1000).unwrap();
        assert!(p.next.is_none());
        assert_eq!(
            p.entries.iter().map(|e| e.entry.index).collect::<Vec<_>>(),
            (0..300)
                .filter(|i| i % 10 == 0 && i % 3 != 0)
                .collect::<Vec<_>>()
        );

        let f = Filter {
            from: Some(OffsetDateTime::from_unix_timestamp(1_800_000_100).unwrap()),
            to: Some(OffsetDateTime::from_unix_timestamp(1_800_000_104).unwrap()),
            ..Filter::default()
        };
        let p = page(&store, &f, 300, None, 1000).unwrap();
        assert_eq!(
            p.entries.iter().map(|e| e.entry.index).collect::<Vec<_>>(),
            vec![100, 101, 102, 103, 104]
        );
    }
}
