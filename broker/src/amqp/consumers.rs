//! The node's background consumers: delivered markers (into the store, so that no node hands
//! an entity an envelope it already took) and envelopes that expired in a queue (journaled,
//! their senders told).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;

use super::message::{self, Marker};
use super::{Amqp, inbox};
use crate::engine::{Event, Recording};
use crate::hub::Hub;
use crate::journal::entry::EventKind;
use crate::server::Shutdown;

/// How many messages one consumer holds unacknowledged.
const PREFETCH: u16 = 256;

/// Consumes `queue` until `shutdown`, handing each batch of deliveries that arrived together
/// to `handle`, which acknowledges them; reconnects with the transport.
async fn consume<F, Fut>(amqp: &Amqp, queue: &str, tag: &str, mut shutdown: Shutdown, handle: F)
where
    F: Fn(Vec<Delivery>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let Some(link) = amqp.wait_link(&mut shutdown).await else {
            return;
        };
        let started = async {
            let ch = link.connection.create_channel().await?;
            ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            let c = ch
                .basic_consume(
                    queue.into(),
                    format!("snodo-{}-{tag}", amqp.node).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((ch, c))
        };
        let (_ch, mut consumer) = match started.await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%queue, error = %e, "Consumer not started; trying again.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let first = tokio::select! {
                next = consumer.next() => next,
                _ = shutdown.changed() => return,
            };
            let Some(Ok(first)) = first else { break };
            let mut batch = vec![first];
            while batch.len() < usize::from(PREFETCH) {
                match futures_util::FutureExt::now_or_never(consumer.next()) {
                    Some(Some(Ok(d))) => batch.push(d),
                    _ => break,
                }
            }
            handle(batch).await;
        }
    }
}

/// Writes delivered markers from every node into this node's store.
pub(super) async fn markers(hub: Arc<Hub>, amqp: Arc<Amqp>, shutdown: Shutdown) {
    let queue = amqp.names.delivered_queue.clone();
    consume(&amqp, &queue, "markers", shutdown, |batch| {
        let (hub, amqp) = (hub.clone(), amqp.clone());
        async move {
            amqp.markers_pending
                .fetch_add(batch.len(), Ordering::AcqRel);
            let markers = batch
                .iter()
                .filter_map(|d| match serde_json::from_slice::<Marker>(&d.data) {
                    Ok(m) => Some((m.recipient, m.sender, m.id, m.digest)),
                    Err(e) => {
                        tracing::error!(error = %e, "An unreadable delivered marker; dropped.");
                        None
                    }
                })
                .collect();
            let r = hub
                .engine
                .report(Recording {
                    markers,
                    ..Recording::default()
                })
                .await;
            settle(&batch, r.is_ok()).await;
            amqp.markers_pending
                .fetch_sub(batch.len(), Ordering::AcqRel);
            if let Err(e) = r {
                tracing::warn!(error = %e, "Delivered markers not stored; they come back.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    })
    .await;
}

/// Journals envelopes that RabbitMQ expired in a queue (their `expires_at` passed) and tells
/// their senders; anything else dead-lettered there moves to the dead letters, journaled.
pub(super) async fn expired(hub: Arc<Hub>, amqp: Arc<Amqp>, shutdown: Shutdown) {
    let queue = amqp.names.expired.clone();
    consume(&amqp, &queue, "expired", shutdown, |batch| {
        let (hub, amqp) = (hub.clone(), amqp.clone());
        async move {
            let mut recording = Recording::default();
            let queue_prefix = amqp.names.queue("");
            for d in &batch {
                let taken = match message::decode(&d.properties) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "An unreadable expired message; dropped.");
                        continue;
                    }
                };
                let (reason, queue) = message::death(&d.properties)
                    .unwrap_or_else(|| ("expired".into(), String::new()));
                let entity = queue
                    .strip_prefix(&queue_prefix)
                    .unwrap_or(&queue)
                    .to_owned();
                if reason == "expired" {
                    inbox::expiry(&amqp, &taken, &entity, &mut recording);
                } else {
                    let rec = &taken.record;
                    let _ = amqp
                        .publish_raw(&amqp.names.dead, "", &d.data, d.properties.clone())
                        .await;
                    recording.events.push(Event {
                        kind: EventKind::DeadLettered,
                        record: rec.clone(),
                        actor: Some(entity.clone()),
                        detail: Some(format!("RabbitMQ dead-lettered it: {reason}")),
                        local: taken.origin == amqp.node,
                    });
                    recording.notices.push((
                        rec.clone(),
                        "dead-lettered".into(),
                        format!("not delivered to {entity}: {reason}"),
                    ));
                }
            }
            let r = hub.engine.report(recording).await;
            if let Err(e) = &r {
                tracing::warn!(error = %e, "Expiries not journaled; they come back.");
            }
            settle(&batch, r.is_ok()).await;
        }
    })
    .await;
}

/// Acknowledges a batch (`ok`) or puts it back.
async fn settle(batch: &[Delivery], ok: bool) {
    for d in batch {
        let _ = if ok {
            d.acker.ack(BasicAckOptions::default()).await
        } else {
            d.acker.reject(BasicRejectOptions { requeue: true }).await
        };
    }
}
