//! Lists with a least and a greatest length, checked when deserialized.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// A list of `MIN` to `MAX` items (`Elenco<Persona, 1, 20>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Elenco<T, const MIN: usize, const MAX: usize>(Vec<T>);

impl<T, const MIN: usize, const MAX: usize> Elenco<T, MIN, MAX> {
    /// The list of `items`; `None` when their number is outside `MIN..=MAX`.
    #[must_use]
    pub fn new(items: Vec<T>) -> Option<Self> {
        (MIN..=MAX).contains(&items.len()).then_some(Elenco(items))
    }

    /// The items.
    #[must_use]
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    /// The items, owned.
    #[must_use]
    pub fn into_vec(self) -> Vec<T> {
        self.0
    }

    /// How many items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (only possible when `MIN` is 0).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The items in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<'a, T, const MIN: usize, const MAX: usize> IntoIterator for &'a Elenco<T, MIN, MAX> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'de, T: Deserialize<'de>, const MIN: usize, const MAX: usize> Deserialize<'de>
    for Elenco<T, MIN, MAX>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(d)?;
        let n = items.len();
        Elenco::new(items).ok_or_else(|| {
            serde::de::Error::custom(format!("{n} items, where {MIN} to {MAX} are expected"))
        })
    }
}

impl<T: JsonSchema, const MIN: usize, const MAX: usize> JsonSchema for Elenco<T, MIN, MAX> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Elenco_{MIN}_{MAX}_{}", T::schema_name()).into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = generator.subschema_for::<Vec<T>>();
        schema.insert("minItems".into(), MIN.into());
        schema.insert("maxItems".into(), MAX.into());
        schema
    }
}
