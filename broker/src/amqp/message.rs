//! What travels through RabbitMQ: an accepted envelope (its exact signed bytes as the body,
//! its record in a header) and a delivered marker.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::engine::{EnvelopeRecord, Outbound};

/// Header: the envelope's record (JSON), as the accepting node journaled it.
const RECORD: &str = "snodo-record";
/// Header: the node that accepted the envelope.
const ORIGIN: &str = "snodo-origin";
/// Header: push attempts so far.
const ATTEMPTS: &str = "snodo-attempts";
/// Header: the retry queue a delayed push waits in (matched by the retry exchange).
pub(super) const DELAY: &str = "snodo-delay";

/// Persistent (written to disk by RabbitMQ before its confirm).
const PERSISTENT: u8 = 2;

/// The properties of an accepted envelope's message.
pub(super) fn properties(out: &Outbound, node: &str) -> BasicProperties {
    let rec = &out.record;
    let mut headers = FieldTable::default();
    headers.insert(
        RECORD.into(),
        AMQPValue::LongString(LongString::from(out.record_json.clone())),
    );
    headers.insert(ORIGIN.into(), AMQPValue::LongString(node.into()));
    let mut props = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ShortString::from(rec.media_type()))
        .with_message_id(ShortString::from(rec.id.to_string()))
        .with_headers(headers);
    if let Some(ms) = rec
        .expires_at
        .as_deref()
        .and_then(|t| snodo_envelopes::header::parse_time("expires_at", t).ok())
        .map(|t| {
            (t - time::OffsetDateTime::now_utc())
                .whole_milliseconds()
                .max(0)
        })
    {
        // RabbitMQ expires it in the queue and dead-letters it to the expired exchange.
        props = props.with_expiration(ShortString::from(ms.to_string()));
    }
    props
}

/// The properties of a push retry: the same headers, the attempt count, the delay bucket.
pub(super) fn retry_properties(taken: &Taken, attempts: u32, delay_ms: u64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        RECORD.into(),
        AMQPValue::LongString(LongString::from(
            serde_json::to_vec(&taken.record).unwrap_or_default(),
        )),
    );
    headers.insert(
        ORIGIN.into(),
        AMQPValue::LongString(taken.origin.as_str().into()),
    );
    headers.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(i64::from(attempts)));
    headers.insert(
        DELAY.into(),
        AMQPValue::LongString(delay_ms.to_string().into()),
    );
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type(ShortString::from(taken.record.media_type()))
        .with_message_id(ShortString::from(taken.record.id.to_string()))
        .with_headers(headers)
}

/// Plain persistent properties (markers, dead letters keep the envelope's headers).
pub(super) fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(PERSISTENT)
}

/// An envelope taken from a queue, decoded.
#[derive(Debug, Clone)]
pub(super) struct Taken {
    /// Its record, as journaled by the accepting node.
    pub record: EnvelopeRecord,
    /// The accepting node.
    pub origin: String,
    /// Push attempts before this one.
    pub attempts: u32,
}

/// Decodes an envelope message's headers.
///
/// # Errors
/// What is missing or malformed (a message snodo did not publish).
pub(super) fn decode(props: &BasicProperties) -> Result<Taken, String> {
    let headers = props
        .headers()
        .as_ref()
        .ok_or("the message has no headers")?;
    let h = headers.inner();
    let record = match h.get(RECORD) {
        Some(AMQPValue::LongString(s)) => serde_json::from_slice::<EnvelopeRecord>(s.as_bytes())
            .map_err(|e| format!("header {RECORD}: {e}"))?,
        _ => return Err(format!("the message has no {RECORD} header")),
    };
    let origin = match h.get(ORIGIN) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        _ => return Err(format!("the message has no {ORIGIN} header")),
    };
    let attempts = match h.get(ATTEMPTS) {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    Ok(Taken {
        record,
        origin,
        attempts,
    })
}

/// Why RabbitMQ dead-lettered a message and from which queue (`x-death`'s latest record).
pub(super) fn death(props: &BasicProperties) -> Option<(String, String)> {
    let headers = props.headers().as_ref()?;
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        return None;
    };
    let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() else {
        return None;
    };
    let field = |name: &str| match first.inner().get(name) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    };
    Some((field("reason")?, field("queue")?))
}

/// A delivered marker: `recipient` took envelope (`sender`, `id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Marker {
    pub recipient: String,
    pub sender: String,
    pub id: Uuid,
    pub digest: String,
}
