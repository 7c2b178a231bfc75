//! The envelope header: the fields of the envelope contract and the rules that bind them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::entity::{EntityId, Recipient};
use crate::error::{Error, Result};

/// The messaging pattern an envelope belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Fire and forget: no answer expected.
    Oneway,
    /// Expects a `response` that names it in `in_reply_to`.
    Request,
    /// Answers a `request`.
    Response,
    /// Published to every subscriber of the topic; `recipient` is `*`.
    Event,
}

impl Profile {
    /// The profile as written in a header.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Oneway => "oneway",
            Profile::Request => "request",
            Profile::Response => "response",
            Profile::Event => "event",
        }
    }
}

impl FromStr for Profile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "oneway" => Ok(Profile::Oneway),
            "request" => Ok(Profile::Request),
            "response" => Ok(Profile::Response),
            "event" => Ok(Profile::Event),
            other => Err(Error::invalid(
                "profile",
                format!("`{other}` is not one of oneway, request, response, event"),
            )),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The media type of the envelope body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContentType {
    /// A JSON value.
    #[serde(rename = "application/json")]
    Json,
    /// An XML fragment.
    #[serde(rename = "application/xml")]
    Xml,
}

impl ContentType {
    /// The media type as written in a header.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Xml => "application/xml",
        }
    }
}

impl FromStr for ContentType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "application/json" => Ok(ContentType::Json),
            "application/xml" => Ok(ContentType::Xml),
            other => Err(Error::invalid(
                "content_type",
                format!("`{other}` is not application/json or application/xml"),
            )),
        }
    }
}

/// The header of an envelope. Field names are the contract shared by both encodings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Unique message id (UUIDv7) chosen by the sender: the unit of idempotency.
    pub id: Uuid,
    /// The entity that signed and sent the envelope.
    pub sender: EntityId,
    /// The entity it is for, or `*` for an event.
    pub recipient: Recipient,
    /// The service, such as `residenza.cambio`.
    pub service: String,
    /// The action within the service, such as `richiesta`.
    pub action: String,
    /// Shared by every message of one case (one practice, one payment).
    pub conversation: String,
    /// The id of the message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<Uuid>,
    /// The messaging pattern.
    pub profile: Profile,
    /// When the sender created the envelope (RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    pub created_at: OffsetDateTime,
    /// After this instant the envelope must not be delivered (RFC 3339, UTC).
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<OffsetDateTime>,
    /// Optional per-conversation counter for in-order delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// The media type of the body.
    pub content_type: ContentType,
}

impl Header {
    /// Checks every field's syntax and the rules between fields.
    ///
    /// # Errors
    /// [`Error::InvalidField`] naming the first field that breaks a rule.
    pub fn validate(&self) -> Result<()> {
        if self.id.get_version_num() != 7 {
            return Err(Error::invalid(
                "id",
                format!("`{}` is not a UUIDv7", self.id),
            ));
        }
        check_name("service", &self.service, true)?;
        check_name("action", &self.action, false)?;
        check_token("conversation", &self.conversation)?;
        for (field, t) in [
            ("created_at", Some(self.created_at)),
            ("expires_at", self.expires_at),
        ] {
            if t.is_some_and(|t| !t.offset().is_utc()) {
                return Err(Error::invalid(field, "must be in UTC"));
            }
            // RFC 3339 writes four-digit years only: outside them no encoding can carry it.
            if t.is_some_and(|t| !(0..=9999).contains(&t.year())) {
                return Err(Error::invalid(
                    field,
                    "must be within the years 0000 to 9999 that RFC 3339 can write",
                ));
            }
        }
        if let Some(exp) = self.expires_at
            && exp <= self.created_at
        {
            return Err(Error::invalid(
                "expires_at",
                "must be later than created_at",
            ));
        }
        match (&self.recipient, self.profile) {
            (Recipient::Broadcast, Profile::Event) => {}
            (Recipient::Broadcast, p) => {
                return Err(Error::invalid(
                    "recipient",
                    format!("`*` is only for event envelopes, not {p}"),
                ));
            }
            (Recipient::Entity(_), Profile::Event) => {
                return Err(Error::invalid(
                    "recipient",
                    "an event envelope is addressed to `*`",
                ));
            }
            (Recipient::Entity(r), _) if *r == self.sender => {
                return Err(Error::invalid(
                    "recipient",
                    "an entity cannot send to itself",
                ));
            }
            (Recipient::Entity(_), _) => {}
        }
        match (self.profile, self.in_reply_to) {
            (Profile::Response, None) => {
                return Err(Error::invalid(
                    "in_reply_to",
                    "a response must name the request it answers",
                ));
            }
            (_, Some(r)) if r == self.id => {
                return Err(Error::invalid(
                    "in_reply_to",
                    "an envelope cannot answer itself",
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// True when the envelope has expired at `now`.
    #[must_use]
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|exp| exp <= now)
    }
}

/// Service names are dot-separated segments (`residenza.cambio`); action names are one segment.
/// Segments start with a lowercase letter and continue with lowercase letters, digits, `_` or `-`.
fn check_name(field: &'static str, value: &str, dotted: bool) -> Result<()> {
    let segment_ok = |s: &str| {
        let mut b = s.bytes();
        b.next().is_some_and(|c| c.is_ascii_lowercase())
            && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
    };
    let ok = !value.is_empty()
        && value.len() <= 64
        && if dotted {
            value.split('.').all(segment_ok)
        } else {
            segment_ok(value)
        };
    if ok {
        Ok(())
    } else {
        let shape = if dotted {
            "dot-separated segments"
        } else {
            "one segment"
        };
        Err(Error::invalid(
            field,
            format!(
                "`{value}` must be {shape} of lowercase letters, digits, '_' or '-', starting with a letter, at most 64 characters"
            ),
        ))
    }
}

/// Conversation ids are 1–128 characters of letters, digits and `.`, `_`, `-`, `:`.
fn check_token(field: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-:".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("`{value}` must be 1 to 128 letters, digits, '.', '_', '-' or ':'"),
        ))
    }
}

/// Formats a timestamp as RFC 3339 in UTC.
#[must_use]
pub fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 timestamp that must be in UTC.
///
/// # Errors
/// [`Error::InvalidField`] naming `field`.
pub fn parse_time(field: &'static str, s: &str) -> Result<OffsetDateTime> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| Error::invalid(field, format!("`{s}` is not an RFC 3339 timestamp: {e}")))?;
    if !t.offset().is_utc() {
        return Err(Error::invalid(field, format!("`{s}` is not in UTC")));
    }
    Ok(t)
}

/// Header field values as read from either encoding, before they are checked together, so that
/// both name the same field in the same way when one is wrong.
#[derive(Default)]
pub(crate) struct HeaderFields {
    id: Option<String>,
    sender: Option<String>,
    recipient: Option<String>,
    service: Option<String>,
    action: Option<String>,
    conversation: Option<String>,
    in_reply_to: Option<String>,
    profile: Option<String>,
    created_at: Option<String>,
    expires_at: Option<String>,
    sequence: Option<String>,
    content_type: Option<String>,
}

impl HeaderFields {
    /// The contract's name for field `name`, if it is one.
    pub(crate) fn static_name(name: &str) -> Option<&'static str> {
        const NAMES: [&str; 12] = [
            "id",
            "sender",
            "recipient",
            "service",
            "action",
            "conversation",
            "in_reply_to",
            "profile",
            "created_at",
            "expires_at",
            "sequence",
            "content_type",
        ];
        NAMES.into_iter().find(|n| *n == name)
    }

    /// Records field `name` of a header in `format` (`XML` or `JSON`).
    pub(crate) fn set(&mut self, format: &'static str, name: &str, value: String) -> Result<()> {
        let slot = match name {
            "id" => &mut self.id,
            "sender" => &mut self.sender,
            "recipient" => &mut self.recipient,
            "service" => &mut self.service,
            "action" => &mut self.action,
            "conversation" => &mut self.conversation,
            "in_reply_to" => &mut self.in_reply_to,
            "profile" => &mut self.profile,
            "created_at" => &mut self.created_at,
            "expires_at" => &mut self.expires_at,
            "sequence" => &mut self.sequence,
            "content_type" => &mut self.content_type,
            other => {
                return Err(Error::Malformed {
                    format,
                    detail: format!("unknown header field `{other}`"),
                });
            }
        };
        if slot.is_some() {
            return Err(Error::Malformed {
                format,
                detail: format!("header field `{name}` appears twice"),
            });
        }
        *slot = Some(value);
        Ok(())
    }

    /// Parses every field, in the order of the contract, and builds the header.
    pub(crate) fn into_header(self) -> Result<Header> {
        let req = |v: Option<String>, f: &'static str| v.ok_or(Error::MissingField(f));
        let uuid = |s: &str, f: &'static str| {
            Uuid::parse_str(s).map_err(|e| Error::invalid(f, format!("`{s}` is not a UUID: {e}")))
        };
        Ok(Header {
            id: uuid(&req(self.id, "id")?, "id")?,
            sender: EntityId::parse_field(&req(self.sender, "sender")?, "sender")?,
            recipient: Recipient::parse(&req(self.recipient, "recipient")?)?,
            service: req(self.service, "service")?,
            action: req(self.action, "action")?,
            conversation: req(self.conversation, "conversation")?,
            in_reply_to: self
                .in_reply_to
                .map(|s| uuid(&s, "in_reply_to"))
                .transpose()?,
            profile: req(self.profile, "profile")?.parse::<Profile>()?,
            created_at: parse_time("created_at", &req(self.created_at, "created_at")?)?,
            expires_at: self
                .expires_at
                .map(|s| parse_time("expires_at", &s))
                .transpose()?,
            sequence: self
                .sequence
                .map(|s| {
                    s.parse::<u64>()
                        .map_err(|e| Error::invalid("sequence", format!("`{s}`: {e}")))
                })
                .transpose()?,
            content_type: req(self.content_type, "content_type")?.parse()?,
        })
    }
}

mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_time("created_at", &s).map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<T>`
    pub(super) fn serialize<S: Serializer>(
        t: &Option<OffsetDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_time(*t)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| super::parse_time("expires_at", &s))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}
