//! The RabbitMQ topology, declared idempotently at every connection and after every reload:
//!
//! | name | kind | what |
//! |---|---|---|
//! | `P.envelopes` | topic exchange | routing key `<recipient>.<service>.<action>` |
//! | `P.events` | topic exchange | routing key `<service>.<action>`, bound by each subscriber |
//! | `P.q.<entity>` | quorum queue | the entity's inbox; expired messages go to `P.expired` |
//! | `P.retry` | headers exchange | to the retry queue named by header `snodo-delay` |
//! | `P.retry.<ms>` | quorum queue | holds a push retry `ms`, then back to `P.envelopes` |
//! | `P.expired` | fanout exchange and quorum queue | envelopes that expired in a queue |
//! | `P.dead` | fanout exchange and quorum queue | dead letters: pushes that never succeeded |
//! | `P.delivered` | fanout exchange | delivered markers, to every node |
//! | `P.delivered.<node>` | quorum queue | this node's copy of the markers |

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::registry::Registry;

/// The retry queues' delays, in milliseconds; a backoff waits in the longest that fits.
pub(super) const RETRY_DELAYS_MS: [u64; 12] = [
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
];

/// The names of the exchanges and queues.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
    /// Envelopes to one recipient.
    pub envelopes: String,
    /// Events to a topic's subscribers.
    pub events: String,
    /// Push retries.
    pub retry: String,
    /// Expired envelopes (exchange and queue).
    pub expired: String,
    /// Dead letters (exchange and queue).
    pub dead: String,
    /// Delivered markers (exchange).
    pub delivered: String,
    /// This node's queue of delivered markers.
    pub delivered_queue: String,
}

impl Names {
    /// The names under `prefix` for node `node`.
    #[must_use]
    pub fn new(prefix: &str, node: &str) -> Self {
        Names {
            prefix: prefix.to_owned(),
            envelopes: format!("{prefix}.envelopes"),
            events: format!("{prefix}.events"),
            retry: format!("{prefix}.retry"),
            expired: format!("{prefix}.expired"),
            dead: format!("{prefix}.dead"),
            delivered: format!("{prefix}.delivered"),
            delivered_queue: format!("{prefix}.delivered.{node}"),
        }
    }

    /// The inbox queue of `entity`.
    #[must_use]
    pub fn queue(&self, entity: &str) -> String {
        format!("{}.q.{entity}", self.prefix)
    }

    fn retry_queue(&self, ms: u64) -> String {
        format!("{}.retry.{ms}", self.prefix)
    }

    /// The routing key of an envelope to `recipient` (entity ids hold no dots).
    #[must_use]
    pub fn routing_key(recipient: &str, service: &str, action: &str) -> String {
        format!("{recipient}.{service}.{action}")
    }

    /// The routing key of an event of `service`/`action`.
    #[must_use]
    pub fn topic_key(service: &str, action: &str) -> String {
        format!("{service}.{action}")
    }

    /// The recipient named by a routing key.
    #[must_use]
    pub fn recipient_of(routing_key: &str) -> &str {
        routing_key.split('.').next().unwrap_or_default()
    }
}

/// The retry delay bucket for a backoff of `ms`: the longest delay not above it.
#[must_use]
pub(super) fn retry_bucket(ms: u64) -> u64 {
    RETRY_DELAYS_MS
        .iter()
        .rev()
        .copied()
        .find(|d| *d <= ms)
        .unwrap_or(RETRY_DELAYS_MS[0])
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Arguments of a quorum queue whose dead letters go to `dlx`, at least once.
fn quorum(dlx: Option<&str>) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), text("quorum"));
    if let Some(dlx) = dlx {
        t.insert("x-dead-letter-exchange".into(), text(dlx));
        // At-least-once dead-lettering needs reject-publish overflow.
        t.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        t.insert("x-overflow".into(), text("reject-publish"));
    }
    t
}

fn durable() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), lapin::Error> {
    ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args)
        .await
        .map(|_| ())
}

async fn bind(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) -> Result<(), lapin::Error> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
}

/// Declares everything (idempotent): exchanges, the node's marker queue, the retry and
/// dead-letter queues, and an inbox queue per registered entity with its bindings.
///
/// # Errors
/// The broker's refusal (for instance a queue that exists with other arguments).
pub(super) async fn declare(
    ch: &Channel,
    names: &Names,
    registry: &Registry,
) -> Result<(), lapin::Error> {
    for (name, kind) in [
        (&names.envelopes, ExchangeKind::Topic),
        (&names.events, ExchangeKind::Topic),
        (&names.retry, ExchangeKind::Headers),
        (&names.expired, ExchangeKind::Fanout),
        (&names.dead, ExchangeKind::Fanout),
        (&names.delivered, ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(name.as_str().into(), kind, durable(), FieldTable::default())
            .await?;
    }
    for name in [&names.expired, &names.dead] {
        queue(ch, name, quorum(None)).await?;
        bind(ch, name, name, "", FieldTable::default()).await?;
    }
    queue(ch, &names.delivered_queue, quorum(None)).await?;
    bind(
        ch,
        &names.delivered_queue,
        &names.delivered,
        "",
        FieldTable::default(),
    )
    .await?;
    for ms in RETRY_DELAYS_MS {
        let name = names.retry_queue(ms);
        let mut args = quorum(Some(&names.envelopes));
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(ms).unwrap_or(i64::MAX)),
        );
        queue(ch, &name, args).await?;
        let mut matching = FieldTable::default();
        matching.insert("x-match".into(), text("all"));
        matching.insert(super::message::DELAY.into(), text(&ms.to_string()));
        bind(ch, &name, &names.retry, "", matching).await?;
    }
    for e in registry.entities() {
        let id = e.id.as_str();
        let q = names.queue(id);
        queue(ch, &q, quorum(Some(&names.expired))).await?;
        bind(
            ch,
            &q,
            &names.envelopes,
            &format!("{id}.#"),
            FieldTable::default(),
        )
        .await?;
    }
    for (service, action, subscribers) in registry.topics() {
        for s in subscribers {
            bind(
                ch,
                &names.queue(s.as_str()),
                &names.events,
                &Names::topic_key(service, action),
                FieldTable::default(),
            )
            .await?;
        }
    }
    Ok(())
}

/// Deletes what [`declare`] made under `names` for `entities` and the nodes `nodes`: for
/// test and benchmark federations, which must not leave queues behind. Missing objects are
/// skipped.
///
/// # Errors
/// When no channel can be opened.
pub async fn delete_all(
    connection: &lapin::Connection,
    names: &Names,
    entities: &[&str],
    nodes: &[&str],
) -> Result<(), lapin::Error> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let mut queues: Vec<String> = entities.iter().map(|e| names.queue(e)).collect();
    queues.extend([names.expired.clone(), names.dead.clone()]);
    queues.extend(nodes.iter().map(|n| format!("{}.{n}", names.delivered)));
    queues.extend(RETRY_DELAYS_MS.iter().map(|ms| names.retry_queue(*ms)));
    for q in queues {
        // A channel each: deleting what is absent closes the channel.
        let ch = connection.create_channel().await?;
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [
        &names.envelopes,
        &names.events,
        &names.retry,
        &names.expired,
        &names.dead,
        &names.delivered,
    ] {
        let ch = connection.create_channel().await?;
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    Ok(())
}

/// Messages ready in `queue` (not counting those delivered and unacknowledged).
///
/// # Errors
/// The broker's refusal.
pub(super) async fn ready_count(ch: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(q.message_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_buckets_never_wait_longer_than_the_backoff_except_the_shortest() {
        assert_eq!(retry_bucket(0), 250);
        assert_eq!(retry_bucket(999), 500);
        assert_eq!(retry_bucket(1_000), 1_000);
        assert_eq!(retry_bucket(10_000_000), 512_000);
    }

    #[test]
    fn routing_keys_name_the_recipient_first() {
        let k = Names::routing_key("comune:001272", "residenza.cambio", "richiesta");
        assert_eq!(k, "comune:001272.residenza.cambio.richiesta");
        assert_eq!(Names::recipient_of(&k), "comune:001272");
    }
}
