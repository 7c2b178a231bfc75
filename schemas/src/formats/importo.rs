//! Money as integer euro cents, and proportions in hundredths of a percent.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// An amount of money in euro cents, never negative (`80800` is €808.00).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Importo(u64);

impl Importo {
    /// Zero euro.
    pub const ZERO: Importo = Importo(0);

    /// `cents` euro cents.
    #[must_use]
    pub const fn centesimi(cents: u64) -> Self {
        Importo(cents)
    }

    /// Whole euro.
    #[must_use]
    pub const fn euro(euro: u64) -> Option<Self> {
        match euro.checked_mul(100) {
            Some(c) => Some(Importo(c)),
            None => None,
        }
    }

    /// The amount in cents.
    #[must_use]
    pub const fn in_centesimi(self) -> u64 {
        self.0
    }

    /// The sum, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, other: Importo) -> Option<Importo> {
        self.0.checked_add(other.0).map(Importo)
    }

    /// The difference, or `None` below zero.
    #[must_use]
    pub fn checked_sub(self, other: Importo) -> Option<Importo> {
        self.0.checked_sub(other.0).map(Importo)
    }
}

impl fmt::Display for Importo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "€{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl JsonSchema for Importo {
    fn schema_name() -> Cow<'static, str> {
        "Importo".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": 0,
            "description": "An amount in euro cents, not negative (80800 is 808.00 euro).",
            "examples": [80800]
        })
    }
}

/// An amount in euro cents that may be negative: a balance, a credit, an adjustment.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ImportoRelativo(i64);

impl ImportoRelativo {
    /// `cents` euro cents.
    #[must_use]
    pub const fn centesimi(cents: i64) -> Self {
        ImportoRelativo(cents)
    }

    /// The amount in cents.
    #[must_use]
    pub const fn in_centesimi(self) -> i64 {
        self.0
    }
}

impl fmt::Display for ImportoRelativo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        write!(f, "{sign}€{}.{:02}", a / 100, a % 100)
    }
}

impl JsonSchema for ImportoRelativo {
    fn schema_name() -> Cow<'static, str> {
        "ImportoRelativo".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "description": "An amount in euro cents that may be negative (a balance or a credit).",
            "examples": [-1200]
        })
    }
}

/// A proportion in hundredths of a percent, 0 to 10000: a tax rate (`86` is 0.86%) or an
/// ownership share (`5000` is half).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PuntiBase(u16);

impl PuntiBase {
    /// The whole: 100%.
    pub const TUTTO: PuntiBase = PuntiBase(10_000);

    /// `bp` hundredths of a percent; `None` above 10000.
    #[must_use]
    pub const fn new(bp: u16) -> Option<Self> {
        if bp <= 10_000 {
            Some(PuntiBase(bp))
        } else {
            None
        }
    }

    /// The value in hundredths of a percent.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PuntiBase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u16::deserialize(d)?;
        PuntiBase::new(v).ok_or_else(|| {
            serde::de::Error::custom(super::FormatError::new(
                "proportion",
                &v.to_string(),
                "hundredths of a percent are 0 to 10000",
            ))
        })
    }
}

impl JsonSchema for PuntiBase {
    fn schema_name() -> Cow<'static, str> {
        "PuntiBase".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": 0,
            "maximum": 10000,
            "description": "Hundredths of a percent, 0 to 10000 (86 is 0.86%, 10000 is the whole).",
            "examples": [86]
        })
    }
}
