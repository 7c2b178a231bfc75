//! A journal entry: one event about one envelope, and the canonical bytes that are its leaf in
//! the Merkle tree.
//!
//! The bytes *are* the evidence: an entry's canonical form is `serde_json::to_vec` of
//! [`Entry`], fields in declaration order, absent fields omitted. [`Entry::from_bytes`] takes
//! only bytes in that exact form, so one event has one encoding and one leaf hash.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::merkle::{self, Hash};

/// What happened to an envelope (DESIGN.md, "Journal").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The hub received bytes that claim to be an envelope.
    Received,
    /// The hub refused them; `code` and `detail` say why.
    Refused,
    /// The hub accepted the envelope and queued it for its recipient; a receipt was issued.
    Accepted,
    /// The envelope was handed to its recipient (leased from the inbox or pushed).
    Delivered,
    /// The recipient acknowledged it.
    Acknowledged,
    /// A response answered it.
    Answered,
    /// It expired before delivery.
    Expired,
    /// Delivery gave up; it went to the dead-letter queue.
    DeadLettered,
    /// An auditor queried the journal; `detail` is the query, `actor` the auditor.
    Queried,
    /// The envelope's exact bytes were pruned after the retention period; its entries and
    /// digest stay.
    Pruned,
}

impl EventKind {
    /// Every kind, in the order of an envelope's life.
    pub const ALL: [EventKind; 10] = [
        EventKind::Received,
        EventKind::Refused,
        EventKind::Accepted,
        EventKind::Delivered,
        EventKind::Acknowledged,
        EventKind::Answered,
        EventKind::Expired,
        EventKind::DeadLettered,
        EventKind::Queried,
        EventKind::Pruned,
    ];

    /// The name in entries and filters: `received`, …, `dead_lettered`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Received => "received",
            EventKind::Refused => "refused",
            EventKind::Accepted => "accepted",
            EventKind::Delivered => "delivered",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Answered => "answered",
            EventKind::Expired => "expired",
            EventKind::DeadLettered => "dead_lettered",
            EventKind::Queried => "queried",
            EventKind::Pruned => "pruned",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, EntryError> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| EntryError::UnknownKind(shorten(s)))
    }
}

/// One event in the journal.
///
/// Fields are in the order of the canonical encoding; do not reorder them, or every leaf hash
/// changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the journal: the entry's leaf index in the Merkle tree.
    pub index: u64,
    /// What happened.
    pub kind: EventKind,
    /// When, in UTC; written as RFC 3339.
    #[serde(with = "rfc3339_utc")]
    pub at: OffsetDateTime,
    /// The envelope's `id`, unless the input was too broken to name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope_id: Option<Uuid>,
    /// The envelope's `sender`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The envelope's `recipient` (`*` for a published event), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The envelope's `service`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The envelope's `action`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The envelope's `conversation`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// Lowercase hex SHA-256 of the exact bytes received: ties the entry to the envelope kept.
    pub digest: String,
    /// The refusal code (as in the problem+json answer), for `refused` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A human-readable detail: the refusal reason, the delivery error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Who triggered the event, for deliveries and acknowledgements (an entity id, a hub node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// Why an entry could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The bytes are not the JSON of an entry (syntax, a missing or unknown field, a bad value).
    #[error("journal entry is malformed: {0}")]
    Malformed(String),
    /// The bytes decode, but are not the entry's canonical encoding (spacing, field order, an
    /// explicit `null`, another spelling of the same time or id…).
    #[error(
        "journal entry is not in canonical form: its bytes differ from the encoding of what they say"
    )]
    NotCanonical,
    /// The digest is not a SHA-256 in lowercase hex.
    #[error("journal entry digest `{0}` is not 64 lowercase hex digits")]
    Digest(String),
    /// The time cannot be written as RFC 3339 in UTC.
    #[error("journal entry time {0}")]
    Time(String),
    /// A name that is no event kind.
    #[error("`{0}` is not a journal event kind")]
    UnknownKind(String),
}

impl Entry {
    /// An entry with only the fields every event has; set the others as known.
    #[must_use]
    pub fn new(index: u64, kind: EventKind, at: OffsetDateTime, digest: String) -> Self {
        Entry {
            index,
            kind,
            at,
            envelope_id: None,
            sender: None,
            recipient: None,
            service: None,
            action: None,
            conversation: None,
            digest,
            code: None,
            detail: None,
            actor: None,
        }
    }

    /// The digest an entry records for `bytes`: lowercase hex SHA-256.
    #[must_use]
    pub fn digest_of(bytes: &[u8]) -> String {
        hex::encode(snodo_envelopes::sha256(bytes))
    }

    /// The canonical bytes: the leaf data in the Merkle tree.
    ///
    /// # Errors
    /// [`EntryError::Digest`] when the digest is not lowercase hex SHA-256;
    /// [`EntryError::Time`] when `at` is not UTC or not within the years 0000–9999.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EntryError> {
        check_digest(&self.digest)?;
        // Only the time can fail to serialize: integers, strings and ids always do.
        serde_json::to_vec(self).map_err(|e| EntryError::Time(e.to_string()))
    }

    /// Decodes canonical bytes, refusing any other encoding of the same entry.
    ///
    /// # Errors
    /// [`EntryError::Malformed`], [`EntryError::Digest`] or [`EntryError::NotCanonical`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryError> {
        let entry: Entry =
            serde_json::from_slice(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if entry.to_bytes()? != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    /// The entry's leaf hash: [`merkle::leaf_hash`] of its canonical bytes.
    ///
    /// # Errors
    /// As [`Entry::to_bytes`].
    pub fn leaf_hash(&self) -> Result<Hash, EntryError> {
        Ok(merkle::leaf_hash(&self.to_bytes()?))
    }
}

fn check_digest(digest: &str) -> Result<(), EntryError> {
    let ok = digest.len() == 64
        && digest
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if ok {
        Ok(())
    } else {
        Err(EntryError::Digest(shorten(digest)))
    }
}

/// `s`, cut to a length fit for an error message.
pub(super) fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Writes `t` as RFC 3339 with [`snodo_envelopes::header::format_time`], refusing what that
/// cannot write so that [`snodo_envelopes::header::parse_time`] reads it back: a time not in
/// UTC, or outside the years 0000–9999.
pub(super) fn format_utc(t: OffsetDateTime) -> Result<String, String> {
    if !t.offset().is_utc() {
        return Err(format!("{t} is not in UTC"));
    }
    if !(0..=9999).contains(&t.year()) {
        return Err(format!(
            "{t} is outside the years 0000-9999 that RFC 3339 can write"
        ));
    }
    Ok(snodo_envelopes::header::format_time(t))
}

/// Serde for `at`: RFC 3339 in UTC.
mod rfc3339_utc {
    use serde::{Deserialize as _, Deserializer, Serializer, de, ser};
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_utc(*t).map_err(ser::Error::custom)?)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        snodo_envelopes::header::parse_time("at", &s).map_err(|e| match e {
            snodo_envelopes::Error::InvalidField { reason, .. } => {
                de::Error::custom(format!("`at`: {reason}"))
            }
            other => de::Error::custom(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn accepted() -> Entry {
        Entry {
            envelope_id: Some(Uuid::from_u128(0x0193_5b1c_9d2e_7a00_8000_0000_0000_002a)),
            sender: Some("comune:001272".into()),
            recipient: Some("anpr:ministero".into()),
            service: Some("residenza.cambio".into()),
            action: Some("richiesta".into()),
            conversation: Some("pratica-42".into()),
            ..Entry::new(
                7,
                EventKind::Accepted,
                datetime!(2025-03-01 10:00:00.25 UTC),
                DIGEST.into(),
            )
        }
    }

    #[test]
    fn canonical_bytes_are_compact_json_in_field_order_without_absent_fields() {
        assert_eq!(
            String::from_utf8(accepted().to_bytes().unwrap()).unwrap(),
            r#"{"index":7,"kind":"accepted","at":"2025-03-01T10:00:00.25Z","envelope_id":"01935b1c-9d2e-7a00-8000-00000000002a","sender":"comune:001272","recipient":"anpr:ministero","service":"residenza.cambio","action":"richiesta","conversation":"pratica-42","digest":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}"#
        );
        let refused = Entry {
            code: Some("envelope-malformed".into()),
            detail: Some("malformed XML envelope: unexpected end".into()),
            ..Entry::new(
                0,
                EventKind::Refused,
                datetime!(2025-03-01 10:00 UTC),
                DIGEST.into(),
            )
        };
        assert_eq!(
            String::from_utf8(refused.to_bytes().unwrap()).unwrap(),
            r#"{"index":0,"kind":"refused","at":"2025-03-01T10:00:00Z","digest":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","code":"envelope-malformed","detail":"malformed XML envelope: unexpected end"}"#
        );
        let delivered = Entry {
            actor: Some("anpr:ministero".into()),
            ..Entry::new(
                9,
                EventKind::DeadLettered,
                datetime!(2025-03-01 10:00 UTC),
                DIGEST.into(),
            )
        };
        assert!(
            String::from_utf8(delivered.to_bytes().unwrap())
                .unwrap()
                .contains(r#""kind":"dead_lettered","#)
        );
    }

    #[test]
    fn bytes_round_trip_and_hash_as_a_leaf() {
        let e = accepted();
        let bytes = e.to_bytes().unwrap();
        assert_eq!(Entry::from_bytes(&bytes).unwrap(), e);
        assert_eq!(e.leaf_hash().unwrap(), merkle::leaf_hash(&bytes));
        assert_eq!(Entry::digest_of(b"test"), DIGEST);
    }

    #[test]
    fn other_encodings_of_the_same_entry_are_refused() {
        let canonical = String::from_utf8(accepted().to_bytes().unwrap()).unwrap();
        let variants = [
            canonical.replace(',', ", "),
            format!("{canonical}\n"),
            canonical.replace(
                r#""index":7,"kind":"accepted""#,
                r#""kind":"accepted","index":7"#,
            ),
            canonical.replace(r#""index":7,"#, r#""index":7,"code":null,"#),
            canonical.replace("10:00:00.25Z", "10:00:00.250Z"),
            canonical.replace("10:00:00.25Z", "10:00:00.25+00:00"),
            canonical.replace("01935b1c-9d2e", "01935B1C-9D2E"),
            canonical.replace("comune", r"\u0063omune"),
            canonical.replace(r#""index":7"#, r#""index":7.0"#),
        ];
        for v in variants {
            let got = Entry::from_bytes(v.as_bytes());
            assert!(
                matches!(
                    got,
                    Err(EntryError::NotCanonical) | Err(EntryError::Malformed(_))
                ),
                "{v}: {got:?}"
            );
        }
        assert_eq!(
            Entry::from_bytes(canonical.replace(',', ", ").as_bytes()),
            Err(EntryError::NotCanonical)
        );
    }

    #[test]
    fn refusals_name_the_fault() {
        let canonical = String::from_utf8(accepted().to_bytes().unwrap()).unwrap();
        let err = |s: String| Entry::from_bytes(s.as_bytes()).unwrap_err().to_string();
        assert!(
            err(canonical.replace(r#""index":7,"#, r#""index":7,"extra":1,"#))
                .starts_with("journal entry is malformed: unknown field `extra`"),
        );
        assert!(
            err(canonical.replace("accepted", "approved")).contains("unknown variant `approved`")
        );
        assert!(err(canonical.replace("Z\"", "+01:00\"")).contains("is not in UTC"));
        assert!(
            err(canonical.replace(r#""index":7,"#, r#""index":7,"index":8,"#))
                .contains("duplicate field `index`")
        );
        assert_eq!(
            err(canonical.replace(DIGEST, &DIGEST.to_uppercase())),
            format!(
                "journal entry digest `{}` is not 64 lowercase hex digits",
                DIGEST.to_uppercase()
            )
        );
        assert!(err(String::new()).starts_with("journal entry is malformed: EOF"));
        assert!(Entry::from_bytes(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn what_cannot_be_read_back_is_not_written() {
        let mut e = accepted();
        e.at = datetime!(2025-03-01 12:00 +02:00);
        assert_eq!(
            e.to_bytes().unwrap_err().to_string(),
            "journal entry time 2025-03-01 12:00:00.0 +02:00:00 is not in UTC"
        );
        e.at = datetime!(-0001-12-31 0:00 UTC);
        assert!(
            e.to_bytes()
                .unwrap_err()
                .to_string()
                .contains("outside the years 0000-9999")
        );
        let mut e = accepted();
        e.digest = "abc".into();
        assert_eq!(e.to_bytes(), Err(EntryError::Digest("abc".into())));
    }

    #[test]
    fn kinds_have_snake_case_names() {
        for k in EventKind::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
        }
        assert_eq!(
            "lost".parse::<EventKind>().unwrap_err().to_string(),
            "`lost` is not a journal event kind"
        );
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        prop::option::of(any::<String>())
    }

    prop_compose! {
        fn entries()(
            index in any::<u64>(), kind in prop::sample::select(EventKind::ALL.to_vec()),
            secs in -62_167_219_200i64..253_402_300_800, nanos in 0u32..1_000_000_000,
            id in prop::option::of(any::<u128>()), digest in any::<[u8; 32]>(),
            sender in text(), recipient in text(), service in text(), action in text(),
            conversation in text(), code in text(), detail in text(), actor in text(),
        ) -> Entry {
            let at = OffsetDateTime::from_unix_timestamp(secs).unwrap()
                .replace_nanosecond(nanos).unwrap();
            Entry {
                envelope_id: id.map(Uuid::from_u128), sender, recipient, service, action,
                conversation, code, detail, actor,
                ..Entry::new(index, kind, at, hex::encode(digest))
            }
        }
    }

    proptest! {
        #[test]
        fn every_entry_round_trips_through_its_bytes(e in entries()) {
            let bytes = e.to_bytes().unwrap();
            prop_assert_eq!(Entry::from_bytes(&bytes).unwrap(), e);
        }

        #[test]
        fn a_changed_byte_never_reads_as_the_same_entry(
            e in entries(), at in any::<prop::sample::Index>(), x in 1u8..=255,
        ) {
            let mut bytes = e.to_bytes().unwrap();
            let i = at.index(bytes.len());
            bytes[i] ^= x;
            if let Ok(other) = Entry::from_bytes(&bytes) {
                prop_assert_ne!(other, e);
            }
        }
    }
}
