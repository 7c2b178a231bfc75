//! Example documents built from a message's JSON Schema: every member present, lists of two
//! where allowed, values from the schema's `examples`, and each alternative of a choice in turn.

use serde_json::{Map, Number, Value};

use crate::schema::{Kind, Shape};

/// The example documents of root schema `root`: as many as the widest choice has alternatives
/// (at least one), document `k` taking alternative `k` (modulo their number) of every choice.
pub(crate) fn documents(root: &Value) -> Vec<Value> {
    let shape = Shape::root(root);
    let n = widest_choice(shape, 0).max(1);
    (0..n).map(|k| build(shape, k, 0)).collect()
}

/// Nesting bound: the types are not recursive, this only keeps a defect from looping.
const MAX_DEPTH: usize = 32;

fn widest_choice(shape: Shape<'_>, depth: usize) -> usize {
    if depth > MAX_DEPTH {
        return 0;
    }
    let mut widest = shape.alternatives().map_or(0, Vec::len);
    if let Some(alternatives) = shape.alternatives() {
        for a in alternatives {
            widest = widest.max(widest_choice(shape.at(a), depth + 1));
        }
    }
    if let Some(props) = shape.properties() {
        for p in props.values() {
            widest = widest.max(widest_choice(shape.at(p), depth + 1));
        }
    }
    if let Some(items) = shape.items() {
        widest = widest.max(widest_choice(items, depth + 1));
    }
    widest
}

fn build(shape: Shape<'_>, k: usize, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    if let Some(e) = shape
        .schema
        .get("examples")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return e.clone();
    }
    if let Some(c) = shape.schema.get("const") {
        return c.clone();
    }
    if let Some(e) = shape
        .schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.get(k % e.len().max(1)))
    {
        return e.clone();
    }
    if let Some(alternatives) = shape.alternatives()
        && !alternatives.is_empty()
    {
        return build(
            shape.at(&alternatives[k % alternatives.len()]),
            k,
            depth + 1,
        );
    }
    match shape.kind() {
        Some(Kind::Object) => {
            let mut map = Map::new();
            if let Some(props) = shape.properties() {
                for (name, p) in props {
                    // A member's own examples come before those of its type.
                    let value = match p
                        .get("examples")
                        .and_then(Value::as_array)
                        .and_then(|e| e.first())
                    {
                        Some(e) => e.clone(),
                        None => build(shape.at(p), k, depth + 1),
                    };
                    map.insert(name.clone(), value);
                }
            }
            Value::Object(map)
        }
        Some(Kind::Array) => {
            let min = shape
                .number("minItems")
                .and_then(Number::as_u64)
                .unwrap_or(0);
            let max = shape
                .number("maxItems")
                .and_then(Number::as_u64)
                .unwrap_or(u64::MAX);
            let n = 2.clamp(min, max.max(min));
            let items = shape.items();
            Value::Array(
                (0..n)
                    .filter_map(|_| items.map(|i| build(i, k, depth + 1)))
                    .collect(),
            )
        }
        Some(Kind::String) => Value::String("testo di esempio".into()),
        Some(Kind::Integer) => {
            let min = shape.number("minimum").and_then(Number::as_i64);
            let max = shape.number("maximum").and_then(Number::as_i64);
            let v = min.unwrap_or(1).max(1).min(max.unwrap_or(i64::MAX));
            Value::Number(v.into())
        }
        Some(Kind::Number) => {
            let min = shape
                .number("minimum")
                .and_then(Number::as_f64)
                .unwrap_or(0.0);
            let max = shape
                .number("maximum")
                .and_then(Number::as_f64)
                .unwrap_or(f64::MAX);
            Number::from_f64(45.07_f64.clamp(min, max)).map_or(Value::Null, Value::Number)
        }
        Some(Kind::Boolean) => Value::Bool(true),
        None => Value::Null,
    }
}
