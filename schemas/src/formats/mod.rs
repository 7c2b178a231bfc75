//! Shared formats as types that cannot hold an invalid value: each is checked when built and
//! when deserialized, and its JSON Schema carries the pattern the XSD repeats.

mod codice_fiscale;
mod comune;
mod data;
mod elenco;
mod importo;
mod nav;
mod targa;

pub use codice_fiscale::{CodiceFiscale, CodiceFiscalePersona, TipoSoggetto};
pub use comune::{Cap, CodiceBelfiore, CodiceIstat};
pub use data::{Data, Istante};
pub use elenco::Elenco;
pub use importo::{Importo, ImportoRelativo, PuntiBase};
pub use nav::{Iuv, Nav};
pub use targa::Targa;

use std::fmt;

/// A value that breaks the rules of its format: which format, the value, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {format}: {reason}")]
pub struct FormatError {
    /// The format's name (`codice fiscale`, `NAV`…).
    pub format: &'static str,
    /// The value refused, cut to a readable length.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FormatError {
    pub(crate) fn new(format: &'static str, value: &str, reason: impl fmt::Display) -> Self {
        let value = if value.chars().count() > 40 {
            let cut: String = value.chars().take(40).collect();
            format!("{cut}…")
        } else {
            value.to_owned()
        };
        FormatError {
            format,
            value,
            reason: reason.to_string(),
        }
    }
}

/// Implements `Display`, `FromStr`, `AsRef<str>`, `Serialize`, `Deserialize` and `JsonSchema` for
/// a string format `$t` whose `parse` checks every rule.
macro_rules! string_format {
    ($t:ident, $pattern:expr, $description:expr, $example:expr) => {
        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $t {
            type Err = $crate::formats::FormatError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $t::parse(s)
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl ::serde::Serialize for $t {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <::std::borrow::Cow<'de, str>>::deserialize(d)?;
                $t::parse(&s).map_err(::serde::de::Error::custom)
            }
        }

        impl ::schemars::JsonSchema for $t {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }

            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                    "examples": [$example]
                })
            }
        }
    };
}
pub(crate) use string_format;
