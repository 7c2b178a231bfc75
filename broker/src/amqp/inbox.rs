//! Pull delivery over RabbitMQ: `GET /v1/inbox` takes messages from the entity's queue with
//! `basic_get` and holds them unacknowledged under a lease; `ack` marks them delivered on
//! every node, journals and acknowledges them; `nack` and an expired lease put them back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicRejectOptions};
use snodo_envelopes::EntityId;
use snodo_envelopes::header::format_time;

use super::message::{self, Marker, Taken};
use super::{Amqp, AmqpError};
use crate::api::error::ApiError;
use crate::engine::{Event, Leased, Recording};
use crate::hub::Hub;
use crate::journal::entry::EventKind;
use crate::server::Shutdown;

/// How long an acknowledgement waits for RabbitMQ to take its delivered marker.
const ACK_PATIENCE: Duration = Duration::from_secs(15);

/// One pull lease: an unacknowledged delivery on this node's inbox channel.
#[derive(Debug)]
struct PullLease {
    entity: String,
    acker: Acker,
    taken: Taken,
    expires: Instant,
    /// Later copies of the same envelope, handed back by RabbitMQ while this lease holds it
    /// (its first delivery's channel was lost): settled with it, never handed out again.
    shadows: Vec<Acker>,
}

impl PullLease {
    /// Acknowledges the message and every copy of it to RabbitMQ.
    async fn ack_all(self) {
        let _ = self.acker.ack(BasicAckOptions::default()).await;
        for a in self.shadows {
            let _ = a.ack(BasicAckOptions::default()).await;
        }
    }

    /// Puts the message back in the queue (once, whichever copy RabbitMQ still holds).
    async fn reject_all(self) {
        let _ = self
            .acker
            .reject(BasicRejectOptions { requeue: true })
            .await;
        for a in self.shadows {
            let _ = a.reject(BasicRejectOptions { requeue: true }).await;
        }
    }
}

/// The pull leases this node holds.
#[derive(Debug, Default)]
pub struct Leases(Mutex<HashMap<String, PullLease>>);

impl Leases {
    /// Puts back a lease whose acknowledgement could not be recorded yet. Leases outlive a lost
    /// connection (RabbitMQ has put their messages back): their acknowledgement can still be
    /// recorded, and the delivered marker then drops the copy that comes back.
    fn keep(&self, token: &str, lease: PullLease) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(token.to_owned(), lease);
        }
    }

    /// Attaches `acker`, a copy of envelope (`sender`, `id`), to the lease of `entity` that
    /// holds that envelope, if any; gives it back otherwise.
    fn shadow(
        &self,
        entity: &str,
        sender: &str,
        id: &uuid::Uuid,
        acker: Acker,
    ) -> Result<(), Acker> {
        let Ok(mut m) = self.0.lock() else {
            return Err(acker);
        };
        match m.values_mut().find(|l| {
            l.entity == entity && l.taken.record.id == *id && l.taken.record.sender == sender
        }) {
            Some(l) => {
                l.shadows.push(acker);
                Ok(())
            }
            None => Err(acker),
        }
    }

    fn take(&self, entity: &str, token: &str) -> Option<PullLease> {
        let mut m = self.0.lock().ok()?;
        if m.get(token).is_some_and(|l| l.entity == entity) {
            m.remove(token)
        } else {
            None
        }
    }

    fn expired(&self, now: Instant) -> Vec<PullLease> {
        let Ok(mut m) = self.0.lock() else {
            return Vec::new();
        };
        let gone: Vec<String> = m
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        gone.into_iter().filter_map(|k| m.remove(&k)).collect()
    }
}

/// What to do with a message taken from an entity's queue.
pub(super) enum Screened {
    /// Hand it to the entity.
    Deliver(Taken),
    /// Its `expires_at` has passed: journal that, tell the sender, drop it.
    Expired(Taken),
    /// Not for this entity, or already taken by it on some node: drop it.
    Drop(&'static str),
}

/// Screens a message taken from `entity`'s queue.
pub(super) async fn screen(
    hub: &Hub,
    amqp: &Amqp,
    entity: &str,
    props: &lapin::BasicProperties,
    data: &[u8],
    redelivered: bool,
) -> Screened {
    let taken = match message::decode(props) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(%entity, error = %e, "A message snodo cannot read is in the queue; moved to the dead letters.");
            let _ = amqp
                .publish_raw(&amqp.names.dead, "", data, message::persistent())
                .await;
            return Screened::Drop("unreadable");
        }
    };
    let rec = &taken.record;
    if !rec.recipients.iter().any(|r| r == entity) {
        // An event its own sender subscribes to.
        return Screened::Drop("not addressed to this entity");
    }
    if redelivered {
        amqp.sync_markers().await;
    }
    match hub.engine.was_delivered(entity, &rec.sender, &rec.id) {
        Ok(true) => return Screened::Drop("already delivered"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "Cannot read the delivered markers."),
    }
    let expired = rec
        .expires_at
        .as_deref()
        .and_then(|t| snodo_envelopes::header::parse_time("expires_at", t).ok())
        .is_some_and(|t| t <= time::OffsetDateTime::now_utc());
    if expired {
        Screened::Expired(taken)
    } else {
        Screened::Deliver(taken)
    }
}

/// The journal entry and notice of an envelope that expired before `entity` took it.
pub(super) fn expiry(amqp: &Amqp, taken: &Taken, entity: &str, recording: &mut Recording) {
    let rec = &taken.record;
    recording.events.push(Event {
        kind: EventKind::Expired,
        record: rec.clone(),
        actor: Some(entity.to_owned()),
        detail: None,
        local: taken.origin == amqp.node,
    });
    let detail = format!(
        "expired at {} before {entity} took it",
        rec.expires_at.as_deref().unwrap_or("?")
    );
    recording
        .notices
        .push((rec.clone(), "expired".into(), detail));
}

/// Leases up to `limit` envelopes of `entity`'s queue for `lease_for`.
///
/// # Errors
/// 503 when RabbitMQ is unreachable; the engine's error.
pub async fn lease(
    hub: &Hub,
    amqp: &Amqp,
    entity: &EntityId,
    limit: usize,
    lease_for: Duration,
) -> Result<Vec<Leased>, ApiError> {
    let link = amqp.link().ok_or_else(|| unavailable(amqp))?;
    let queue = amqp.names.queue(entity.as_str());
    let mut out = Vec::new();
    let mut recording = Recording::default();
    let mut drops = Vec::new();
    let now = time::OffsetDateTime::now_utc();
    let expires_at = now + lease_for;
    let mut held = Vec::new();
    while out.len() < limit {
        let got = link
            .inbox
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| unavailable_because(&e))?;
        let Some(msg) = got else { break };
        let d = msg.delivery;
        match screen(
            hub,
            amqp,
            entity.as_str(),
            &d.properties,
            &d.data,
            d.redelivered,
        )
        .await
        {
            Screened::Drop(why) => {
                tracing::debug!(%entity, why, "Dropped a queued copy.");
                drops.push(d.acker);
            }
            Screened::Expired(taken) => {
                expiry(amqp, &taken, entity.as_str(), &mut recording);
                drops.push(d.acker);
            }
            Screened::Deliver(taken) => {
                let rec = &taken.record;
                let acker = match amqp
                    .leases
                    .shadow(entity.as_str(), &rec.sender, &rec.id, d.acker)
                {
                    Ok(()) => {
                        tracing::debug!(%entity, id = %rec.id, "A copy of an envelope under lease; held with it.");
                        continue;
                    }
                    Err(acker) => acker,
                };
                recording.events.push(Event {
                    kind: EventKind::Delivered,
                    record: rec.clone(),
                    actor: Some(entity.to_string()),
                    detail: Some(format!("leased until {}", format_time(expires_at))),
                    local: taken.origin == amqp.node,
                });
                let token = crate::engine::new_token();
                out.push(Leased {
                    lease: token.clone(),
                    lease_expires_at: format_time(expires_at),
                    envelope_id: rec.id,
                    sender: rec.sender.clone(),
                    media_type: rec.media_type(),
                    envelope: String::from_utf8_lossy(&d.data).into_owned(),
                });
                held.push((
                    token,
                    PullLease {
                        entity: entity.to_string(),
                        acker,
                        taken,
                        expires: Instant::now() + lease_for,
                        shadows: Vec::new(),
                    },
                ));
            }
        }
    }
    let report = hub.engine.report(recording).await;
    if let Err(e) = report {
        // Nothing handed out: every message goes back to the queue.
        for (_, l) in held {
            l.reject_all().await;
        }
        for a in drops {
            let _ = a.reject(BasicRejectOptions { requeue: true }).await;
        }
        return Err(e.into());
    }
    for a in drops {
        let _ = a.ack(BasicAckOptions::default()).await;
    }
    if let Ok(mut m) = amqp.leases.0.lock() {
        m.extend(held);
    }
    Ok(out)
}

/// Acknowledges (`ack`) or puts back (`!ack`) the envelope under `token`.
///
/// # Errors
/// `lease-unknown` when this node holds no such lease for `entity`; 503 when the delivered
/// marker could not be published (then the lease still holds and the call may be repeated).
pub async fn settle(
    hub: &Hub,
    amqp: &Amqp,
    entity: &EntityId,
    token: &str,
    ack: bool,
) -> Result<(), ApiError> {
    let lease = amqp.leases.take(entity.as_str(), token).ok_or_else(|| {
        ApiError::from(crate::engine::EngineError::UnknownLease(token.to_owned()))
    })?;
    if !ack {
        lease.reject_all().await;
        return Ok(());
    }
    // The same envelope may have been leased twice: handed out again after RabbitMQ lost the
    // first delivery's channel while the entity still worked on it. Once it is acknowledged,
    // a later lease of it is settled without a second acknowledgement in the journal.
    let rec = &lease.taken.record;
    if matches!(
        hub.engine
            .was_delivered(entity.as_str(), &rec.sender, &rec.id),
        Ok(true)
    ) {
        lease.ack_all().await;
        return Ok(());
    }
    // A marker whose confirm was lost with the connection may have been stored all the same,
    // and then the envelope is never handed out again: so the acknowledgement is not answered
    // with a failure while RabbitMQ may come back soon — publish the marker again (it is
    // idempotent) once it is.
    let started = Instant::now();
    loop {
        match delivered(hub, amqp, &lease.taken, entity.as_str(), None).await {
            Ok(()) => break,
            Err(AmqpError::Engine(e)) => {
                amqp.leases.keep(token, lease);
                return Err(e.into());
            }
            Err(e) if started.elapsed() >= ACK_PATIENCE => {
                // The lease stays, so that the entity can acknowledge again.
                amqp.leases.keep(token, lease);
                return Err(unavailable_because(&e));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    // If this fails the message comes back, and the marker drops it.
    lease.ack_all().await;
    Ok(())
}

/// Marks `taken` delivered to `entity` on every node, then journals it (`acknowledged`, or
/// `delivered` with `pushed` as detail for a push).
///
/// # Errors
/// [`AmqpError`] when the marker was not confirmed or the journal not written.
pub(super) async fn delivered(
    hub: &Hub,
    amqp: &Amqp,
    taken: &Taken,
    entity: &str,
    pushed: Option<String>,
) -> Result<(), AmqpError> {
    let rec = &taken.record;
    let marker = Marker {
        recipient: entity.to_owned(),
        sender: rec.sender.clone(),
        id: rec.id,
        digest: rec.digest.clone(),
    };
    let body = serde_json::to_vec(&marker).unwrap_or_default();
    amqp.publish_raw(&amqp.names.delivered, "", &body, message::persistent())
        .await?;
    let (kind, detail) = match pushed {
        Some(detail) => (EventKind::Delivered, Some(detail)),
        None => (EventKind::Acknowledged, None),
    };
    hub.engine
        .report(Recording {
            events: vec![Event {
                kind,
                record: rec.clone(),
                actor: Some(entity.to_owned()),
                detail,
                local: taken.origin == amqp.node,
            }],
            markers: vec![(
                entity.to_owned(),
                rec.sender.clone(),
                rec.id,
                rec.digest.clone(),
            )],
            ..Recording::default()
        })
        .await?;
    Ok(())
}

/// Puts the messages of expired leases back in their queues.
pub(super) async fn expire_leases(amqp: std::sync::Arc<Amqp>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
        for l in amqp.leases.expired(Instant::now()) {
            l.reject_all().await;
        }
    }
}

/// 503 naming why RabbitMQ is unusable.
pub fn unavailable(amqp: &Amqp) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "transport-unavailable",
        format!(
            "the hub cannot reach RabbitMQ: {}",
            amqp.unavailable()
                .unwrap_or_else(|| "connection lost".into())
        ),
    )
    .retry_after(1)
}

pub fn unavailable_because(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "transport-unavailable",
        format!("the hub cannot reach RabbitMQ: {e}"),
    )
    .retry_after(1)
}
