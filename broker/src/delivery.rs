//! Push delivery: for every entity with an endpoint, a worker takes envelopes from its queue and
//! POSTs each, signed bytes as received, to the endpoint over mutual TLS. A 2xx answer means
//! delivered; anything else is retried with exponential backoff and full jitter until the
//! service's delivery deadline, then the envelope is dead-lettered and its sender notified.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use snodo_envelopes::EntityId;
use tokio::task::JoinHandle;

use crate::engine::{PushOutcome, Pushed};
use crate::hub::Hub;
use crate::server::Shutdown;

/// How many envelopes one worker pushes at once.
const PUSH_BATCH: usize = 8;
/// How long an idle worker waits before looking at its queue again.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often the supervisor looks for endpoints added or changed by a reload.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);

/// Runs one push worker per entity with an endpoint until `shutdown`; follows reloads.
pub async fn run(hub: Arc<Hub>, mut shutdown: Shutdown) {
    let mut workers: HashMap<EntityId, (String, JoinHandle<()>)> = HashMap::new();
    loop {
        let registry = hub.registry();
        let wanted: HashMap<EntityId, String> = registry
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
            match client_for(&hub, &id) {
                Ok(client) => {
                    tracing::info!(entity = %id, endpoint = %url, "Push worker started.");
                    let task = tokio::spawn(worker(
                        hub.clone(),
                        id.clone(),
                        url.clone(),
                        client,
                        shutdown.clone(),
                    ));
                    workers.insert(id, (url, task));
                }
                Err(e) => {
                    tracing::error!(entity = %id, error = %e, "No push client; envelopes stay queued.")
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(SUPERVISE_EVERY) => {}
            _ = shutdown.changed() => break,
        }
    }
    for (_, (_, task)) in workers {
        let _ = task.await;
    }
}

/// The mutual-TLS client that pushes to `entity`'s endpoint (checking its SAN identity).
///
/// # Errors
/// When the hub's TLS material cannot be loaded.
pub(crate) fn client_for(hub: &Hub, entity: &EntityId) -> anyhow::Result<reqwest::Client> {
    let config = hub.config();
    let tls =
        crate::tls::push_client_config(&config.tls.ca, &config.tls.cert, &config.tls.key, entity)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(config.delivery.push_timeout)
        .pool_max_idle_per_host(PUSH_BATCH)
        .build()?)
}

async fn worker(
    hub: Arc<Hub>,
    entity: EntityId,
    url: String,
    client: reqwest::Client,
    shutdown: Shutdown,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let hold = hub.config().delivery.push_timeout + Duration::from_secs(5);
        let items = match hub.engine.push_take(entity.clone(), PUSH_BATCH, hold).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(%entity, error = %e, "Cannot take envelopes to push.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if items.is_empty() {
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        }
        let pushes = items
            .into_iter()
            .map(|item| push_one(&hub, &entity, &url, &client, item));
        futures_util::future::join_all(pushes).await;
    }
}

async fn push_one(hub: &Hub, entity: &EntityId, url: &str, client: &reqwest::Client, item: Pushed) {
    let result = post(
        client,
        url,
        item.media_type,
        item.envelope_id,
        item.envelope.clone(),
    )
    .await;
    if let Err(reason) = &result {
        tracing::info!(%entity, envelope_id = %item.envelope_id, attempt = item.attempts, %reason, "Push failed.");
    }
    let outcome = outcome(hub, result, item.attempts, item.accepted_ms, &item.service);
    if let Err(e) = hub
        .engine
        .push_done(entity.clone(), item.lease, outcome)
        .await
    {
        tracing::warn!(%entity, envelope_id = %item.envelope_id, error = %e, "Push outcome not recorded; it will be pushed again.");
    }
}

/// POSTs one envelope, signed bytes as received, to `url`: the status of a 2xx answer, or
/// what went wrong.
///
/// # Errors
/// What went wrong, in words: a non-2xx status or an unreachable endpoint.
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    media_type: &str,
    envelope_id: uuid::Uuid,
    envelope: Vec<u8>,
) -> Result<u16, String> {
    let sent = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, media_type)
        .header("snodo-envelope-id", envelope_id.to_string())
        .body(envelope)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
        Ok(r) => Err(format!("the endpoint answered {}", r.status())),
        Err(e) => Err(format!("the endpoint could not be reached: {e}")),
    }
}

/// What to do after attempt `attempts` of a push of an envelope of `service` accepted at
/// `accepted_ms` (unix ms): delivered, retry after a backoff, or dead-letter it because the
/// next try would fall past the service's delivery deadline.
pub(crate) fn outcome(
    hub: &Hub,
    result: Result<u16, String>,
    attempts: u32,
    accepted_ms: i64,
    service: &str,
) -> PushOutcome {
    match result {
        Ok(status) => PushOutcome::Delivered { status },
        Err(reason) => {
            let config = hub.config();
            let backoff = backoff(
                attempts,
                config.delivery.retry_initial,
                config.delivery.retry_max,
            );
            let deadline = hub.registry().deadline(service);
            let now_ms =
                i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                    .unwrap_or(i64::MAX);
            let give_up_ms =
                accepted_ms.saturating_add(i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX));
            let next_ms =
                now_ms.saturating_add(i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX));
            if next_ms > give_up_ms {
                PushOutcome::DeadLetter { reason }
            } else {
                PushOutcome::Retry {
                    after: backoff,
                    reason,
                }
            }
        }
    }
}

/// Exponential backoff with full jitter: a random wait between half and all of
/// `initial · 2^(attempt-1)`, capped at `max`.
#[must_use]
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = exp / 2;
    let jitter = rand::rng().random_range(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX));
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..30 {
            let b = backoff(attempt, i, m);
            let exp = i.saturating_mul(1 << (attempt - 1).min(20)).min(m);
            assert!(
                b >= exp / 2 && b <= exp,
                "attempt {attempt}: {b:?} outside {:?}..={exp:?}",
                exp / 2
            );
        }
    }
}
