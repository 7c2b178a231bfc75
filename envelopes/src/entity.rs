//! Entity identities (`class:code`) and envelope recipients.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The SAN URI prefix that names an entity in its certificate.
pub const ENTITY_URI_PREFIX: &str = "urn:snodo:entity:";

/// A member of the federation, named `class:code`: `comune:001272`, `anpr:ministero`.
///
/// The class is lowercase ASCII letters (1–32); the code is 1–64 ASCII letters, digits, `-` or
/// `_`. Both are case-sensitive as written.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityId(String);

impl EntityId {
    /// Parses and validates `class:code`.
    ///
    /// # Errors
    /// [`Error::InvalidField`] naming `field` when the syntax is wrong.
    pub fn parse_field(s: &str, field: &'static str) -> Result<Self> {
        let Some((class, code)) = s.split_once(':') else {
            return Err(Error::invalid(
                field,
                format!("`{s}` is not of the form class:code"),
            ));
        };
        if class.is_empty() || class.len() > 32 || !class.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(Error::invalid(
                field,
                format!("entity class `{class}` must be 1 to 32 lowercase letters"),
            ));
        }
        if code.is_empty()
            || code.len() > 64
            || !code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::invalid(
                field,
                format!("entity code `{code}` must be 1 to 64 letters, digits, '-' or '_'"),
            ));
        }
        Ok(EntityId(s.to_owned()))
    }

    /// The class, before the colon (`comune`).
    #[must_use]
    pub fn class(&self) -> &str {
        self.0.split_once(':').map_or("", |(c, _)| c)
    }

    /// The code, after the colon (`001272`).
    #[must_use]
    pub fn code(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, c)| c)
    }

    /// The identity as written: `class:code`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SAN URI that names this entity in a certificate.
    #[must_use]
    pub fn uri(&self) -> String {
        format!("{ENTITY_URI_PREFIX}{}", self.0)
    }

    /// The entity a certificate SAN URI names, if it is an entity URI.
    #[must_use]
    pub fn from_uri(uri: &str) -> Option<Self> {
        uri.strip_prefix(ENTITY_URI_PREFIX)
            .and_then(|rest| rest.parse().ok())
    }

    /// The file stem used for this entity's key and certificate: `class-code`.
    #[must_use]
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.class(), self.code())
    }
}

impl FromStr for EntityId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        EntityId::parse_field(s, "entity")
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({})", self.0)
    }
}

impl Serialize for EntityId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntityId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whom an envelope is for: one entity, or every subscriber of its topic (`*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// One entity.
    Entity(EntityId),
    /// Every subscriber of the service/action topic; only for `event` envelopes.
    Broadcast,
}

impl Recipient {
    /// Parses an entity id or `*`.
    ///
    /// # Errors
    /// [`Error::InvalidField`] for `recipient` when the syntax is wrong.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "*" {
            Ok(Recipient::Broadcast)
        } else {
            EntityId::parse_field(s, "recipient").map(Recipient::Entity)
        }
    }

    /// The entity, unless this is a broadcast.
    #[must_use]
    pub fn entity(&self) -> Option<&EntityId> {
        match self {
            Recipient::Entity(e) => Some(e),
            Recipient::Broadcast => None,
        }
    }

    /// The recipient as written in a header.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Recipient::Entity(e) => e.as_str(),
            Recipient::Broadcast => "*",
        }
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<EntityId> for Recipient {
    fn from(e: EntityId) -> Self {
        Recipient::Entity(e)
    }
}

impl Serialize for Recipient {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Recipient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Recipient::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_federation_names() {
        for ok in [
            "comune:001272",
            "anpr:ministero",
            "provincia:TO",
            "pagopa:nodo",
        ] {
            let e: EntityId = ok.parse().unwrap();
            assert_eq!(e.as_str(), ok);
            assert_eq!(EntityId::from_uri(&e.uri()), Some(e));
        }
    }

    #[test]
    fn refuses_bad_syntax_with_the_reason() {
        for (bad, why) in [
            ("comune", "class:code"),
            ("Comune:1", "lowercase"),
            (":1", "lowercase"),
            ("comune:", "1 to 64"),
            ("comune:a b", "1 to 64"),
            ("comune:x:y", "1 to 64"),
        ] {
            let err = bad.parse::<EntityId>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn broadcast_is_a_star() {
        assert_eq!(Recipient::parse("*").unwrap(), Recipient::Broadcast);
        assert!(Recipient::parse("**").is_err());
    }
}
