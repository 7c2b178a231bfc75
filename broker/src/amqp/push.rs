//! Push delivery over RabbitMQ: for every entity with an endpoint, a consumer on its queue
//! (manual acknowledgements, `basic_qos` prefetch) POSTs each envelope to the endpoint. A 2xx
//! answer marks it delivered everywhere, journals it and acknowledges it; a failure sends it to
//! a retry queue that holds it for the backoff and returns it; past the service's deadline it
//! goes to the dead letters and its sender is told.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use snodo_envelopes::EntityId;
use tokio::task::JoinHandle;

use super::inbox::{self, Screened};
use super::message;
use super::topology::{Names, retry_bucket};
use super::{Amqp, AmqpError};
use crate::engine::{Event, PushOutcome, Recording};
use crate::hub::Hub;
use crate::journal::entry::EventKind;
use crate::server::Shutdown;

/// How often the supervisor looks for endpoints added or changed by a reload.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

/// Runs one push consumer per entity with an endpoint until `shutdown`; follows reloads.
pub(super) async fn run(hub: Arc<Hub>, amqp: Arc<Amqp>, mut shutdown: Shutdown) {
    let mut workers: HashMap<EntityId, (String, JoinHandle<()>)> = HashMap::new();
    loop {
        let wanted: HashMap<EntityId, String> = hub
            .registry()
            .entities()
            .filter_map(|e| e.endpoint.as_ref().map(|u| (e.id.clone(), u.to_string())))
            .collect();
        workers.retain(|id, (url, task)| {
            let keep = wanted.get(id) == Some(url) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, url) in wanted {
            if workers.contains_key(&id) {
                continue;
            }
            match crate::delivery::client_for(&hub, &id) {
                Ok(client) => {
                    let task = tokio::spawn(consume(
                        hub.clone(),
                        amqp.clone(),
                        id.clone(),
                        url.clone(),
                        client,
                        shutdown.clone(),
                    ));
                    workers.insert(id, (url, task));
                }
                Err(e) => {
                    tracing::error!(entity = %id, error = %e, "No push client; envelopes stay queued.");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(SUPERVISE_EVERY) => {}
            _ = shutdown.changed() => break,
        }
    }
    for (_, (_, task)) in workers {
        task.abort();
    }
}

async fn consume(
    hub: Arc<Hub>,
    amqp: Arc<Amqp>,
    entity: EntityId,
    url: String,
    client: reqwest::Client,
    mut shutdown: Shutdown,
) {
    let queue = amqp.names.queue(entity.as_str());
    loop {
        let Some(link) = amqp.wait_link(&mut shutdown).await else {
            return;
        };
        let started = async {
            let ch = link.connection.create_channel().await?;
            ch.basic_qos(amqp.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = ch
                .basic_consume(
                    queue.as_str().into(),
                    format!("snodo-{}-push", amqp.node).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((ch, consumer))
        };
        let (_ch, mut consumer) = match started.await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%entity, error = %e, "Push consumer not started; trying again.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(%entity, endpoint = %url, "Push consumer started.");
        loop {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(d)) => {
                        tokio::spawn(push_one(
                            hub.clone(),
                            amqp.clone(),
                            entity.clone(),
                            url.clone(),
                            client.clone(),
                            d,
                        ));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(%entity, error = %e, "Push consumer interrupted.");
                        break;
                    }
                    None => break,
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn push_one(
    hub: Arc<Hub>,
    amqp: Arc<Amqp>,
    entity: EntityId,
    url: String,
    client: reqwest::Client,
    d: Delivery,
) {
    let screened = inbox::screen(
        &hub,
        &amqp,
        entity.as_str(),
        &d.properties,
        &d.data,
        d.redelivered,
    )
    .await;
    let result = match screened {
        Screened::Drop(_) => Ok(()),
        Screened::Expired(taken) => {
            let mut recording = Recording::default();
            inbox::expiry(&amqp, &taken, entity.as_str(), &mut recording);
            hub.engine.report(recording).await.map_err(AmqpError::from)
        }
        Screened::Deliver(taken) => attempt(&hub, &amqp, &entity, &url, &client, &d, taken).await,
    };
    match result {
        Ok(()) => {
            let _ = d.acker.ack(BasicAckOptions::default()).await;
        }
        Err(e) => {
            tracing::warn!(%entity, error = %e, "Push not settled; the message goes back to the queue.");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = d.acker.reject(BasicRejectOptions { requeue: true }).await;
        }
    }
}

async fn attempt(
    hub: &Hub,
    amqp: &Amqp,
    entity: &EntityId,
    url: &str,
    client: &reqwest::Client,
    d: &Delivery,
    taken: message::Taken,
) -> Result<(), AmqpError> {
    let rec = &taken.record;
    let attempts = taken.attempts + 1;
    let result = crate::delivery::post(client, url, rec.media_type(), rec.id, d.data.clone()).await;
    if let Err(reason) = &result {
        tracing::info!(%entity, envelope_id = %rec.id, attempt = attempts, %reason, "Push failed.");
    }
    let accepted_ms = snodo_envelopes::header::parse_time("accepted_at", &rec.accepted_at)
        .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
        .unwrap_or_default();
    let key = Names::routing_key(entity.as_str(), &rec.service, &rec.action);
    match crate::delivery::outcome(hub, result, attempts, accepted_ms, &rec.service) {
        PushOutcome::Delivered { status } => {
            let detail = format!("pushed; the endpoint answered {status} (attempt {attempts})");
            inbox::delivered(hub, amqp, &taken, entity.as_str(), Some(detail)).await
        }
        PushOutcome::Retry { after, .. } => {
            let bucket = retry_bucket(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
            let props = message::retry_properties(&taken, attempts, bucket);
            amqp.publish_raw(&amqp.names.retry, &key, &d.data, props)
                .await
        }
        PushOutcome::DeadLetter { reason } => {
            let props = message::retry_properties(&taken, attempts, 0);
            amqp.publish_raw(&amqp.names.dead, &key, &d.data, props)
                .await?;
            let detail = format!("not delivered to {entity} after {attempts} attempts: {reason}");
            hub.engine
                .report(Recording {
                    events: vec![Event {
                        kind: EventKind::DeadLettered,
                        record: rec.clone(),
                        actor: Some(entity.to_string()),
                        detail: Some(format!("after {attempts} attempts: {reason}")),
                        local: taken.origin == amqp.node,
                    }],
                    notices: vec![(rec.clone(), "dead-lettered".into(), detail)],
                    ..Recording::default()
                })
                .await?;
            Ok(())
        }
    }
}
