//! The checks at the end of every run: every receipted envelope delivered exactly once (its
//! recipient drains its inbox), and the journal of every node exported through the auditor
//! API and verified by the code of `snodo audit verify`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use snodo_broker::audit::bundle::verify_file_nodes;
use snodo_broker::audit::client::{Filters, JournalClient, export_nodes};
use snodo_connectors::{HubClient, HubClientConfig, RetryPolicy};
use snodo_envelopes::EntityId;
use uuid::Uuid;

use crate::federation::Federation;

/// What the recipients' inboxes held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Envelopes delivered (counting repeats).
    pub delivered: usize,
    /// Receipted envelopes never delivered.
    pub lost: Vec<Uuid>,
    /// Envelopes delivered more than once.
    pub duplicates: Vec<Uuid>,
    /// Envelopes delivered that were neither receipted nor of unknown fate.
    pub unexpected: Vec<Uuid>,
}

impl Delivered {
    /// Compares what was delivered with what was receipted; `unknown` are envelopes whose
    /// request failed without an answer (they may or may not have been accepted).
    #[must_use]
    pub fn compare(receipted: &[Uuid], unknown: &[Uuid], seen: &[Uuid]) -> Delivered {
        let mut count: HashMap<Uuid, usize> = HashMap::with_capacity(seen.len());
        for id in seen {
            *count.entry(*id).or_default() += 1;
        }
        let receipted_set: HashSet<&Uuid> = receipted.iter().collect();
        let unknown: HashSet<&Uuid> = unknown.iter().collect();
        let mut duplicates: Vec<Uuid> = count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect();
        duplicates.sort_unstable();
        let mut unexpected: Vec<Uuid> = count
            .keys()
            .filter(|id| !receipted_set.contains(id) && !unknown.contains(id))
            .copied()
            .collect();
        unexpected.sort_unstable();
        Delivered {
            delivered: seen.len(),
            lost: receipted
                .iter()
                .filter(|id| !count.contains_key(*id))
                .copied()
                .collect(),
            duplicates,
            unexpected,
        }
    }
}

/// A hub client for `entity` of `fed` at `url`.
///
/// # Errors
/// When its key or certificate cannot be read.
pub fn client(fed: &Federation, entity: &EntityId, url: &str) -> anyhow::Result<HubClient> {
    let (cert, key) = fed.cert_and_key(entity);
    let mut c = HubClientConfig::new(url.to_owned(), fed.pki().join("ca.crt"), cert, key);
    c.retry = RetryPolicy {
        attempts: 8,
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
    };
    Ok(HubClient::new(&c)?)
}

/// Drains `entity`'s inbox through the hub at `url`: leases, verifies and acknowledges
/// until `expected` envelopes arrived and then nothing more for `quiet`, or until nothing
/// arrived for `patience`. Returns the ids in delivery order.
///
/// # Errors
/// When the hub cannot be reached or refuses.
pub async fn drain(
    fed: &Federation,
    entity: &EntityId,
    url: &str,
    expected: usize,
    quiet: Duration,
    patience: Duration,
) -> anyhow::Result<Vec<Uuid>> {
    let c = client(fed, entity, url)?;
    let mut seen = Vec::with_capacity(expected);
    let mut last = Instant::now();
    loop {
        let batch = c
            .lease(100, Duration::from_secs(120))
            .await
            .with_context(|| format!("draining {entity}'s inbox"))?;
        if batch.is_empty() {
            let idle = last.elapsed();
            if (seen.len() >= expected && idle >= quiet) || idle >= patience {
                return Ok(seen);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        last = Instant::now();
        let mut acks = tokio::task::JoinSet::new();
        for d in batch {
            seen.push(d.inbound.envelope.header.id);
            let c = c.clone();
            acks.spawn(async move { c.ack(&d.lease).await });
        }
        while let Some(r) = acks.join_next().await {
            r.context("an acknowledgement task")?
                .with_context(|| format!("acknowledging in {entity}'s inbox"))?;
        }
    }
}

/// What the journal verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalCheck {
    /// Entries verified, over every node.
    pub entries: u64,
    /// Raw envelopes verified.
    pub envelopes: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// Seconds the offline verification took.
    pub verify_seconds: String,
}

/// Exports the journal of every node in `nodes` through the auditor API of the hub at `url`
/// (after waiting for a checkpoint that covers the run) into `out`, and verifies it offline.
///
/// # Errors
/// The verification failure, naming the entry; or why the export failed.
pub async fn verify_journal(
    fed: &Federation,
    url: &str,
    nodes: &[String],
    out: &Path,
) -> anyhow::Result<JournalCheck> {
    let (cert, key) = fed.auditor();
    let client = JournalClient::new(url, &fed.pki().join("ca.crt"), &cert, &key)?;
    // The export stops at the latest checkpoint: let one be signed over everything.
    let sizes = async |c: &JournalClient| c.latest_checkpoint().await.map(|s| s.checkpoint.size);
    let before = sizes(&client).await.unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if sizes(&client).await.unwrap_or(0) > before {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    if nodes.len() > 1 {
        export_nodes(&client, nodes, &Filters::default(), None, out).await?;
    } else {
        snodo_broker::audit::client::export(&client, &Filters::default(), None, out).await?;
    }
    let started = Instant::now();
    let reports = verify_file_nodes(out, Some(&fed.pki().join("ca.crt")), None)?;
    let secs = started.elapsed().as_secs_f64();
    Ok(JournalCheck {
        entries: reports.iter().map(|r| r.entries.count).sum(),
        envelopes: reports.iter().map(|r| r.envelopes.count).sum(),
        checkpoints: reports.iter().map(|r| r.checkpoints.count).sum(),
        verify_seconds: format!("{secs:.2}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn comparison_finds_every_loss_and_repeat(
            n in 1usize..40,
            lose in proptest::collection::btree_set(0usize..40, 0..10),
            repeat in proptest::collection::btree_set(0usize..40, 0..10),
        ) {
            let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
            let mut seen = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                if !lose.contains(&i) { seen.push(*id); }
                if repeat.contains(&i) { seen.push(*id); }
            }
            let stray = Uuid::now_v7();
            seen.push(stray);
            let d = Delivered::compare(&ids, &[], &seen);
            let lost: Vec<Uuid> = ids.iter().enumerate().filter(|(i, _)| lose.contains(i) && !repeat.contains(i)).map(|(_, id)| *id).collect();
            prop_assert_eq!(d.lost, lost);
            prop_assert_eq!(d.duplicates.len(), ids.iter().enumerate().filter(|(i, _)| repeat.contains(i) && !lose.contains(i)).count());
            prop_assert_eq!(d.unexpected, vec![stray]);
            let d = Delivered::compare(&ids, &[stray], &seen);
            prop_assert!(d.unexpected.is_empty());
        }
    }
}

/// What the journal says of delivery: every accepted envelope to one recipient must be
/// acknowledged by it exactly once, or handed once to the request waiting for it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JournalDeliveries {
    /// Envelopes accepted.
    pub accepted: u64,
    /// Acknowledgements, and responses handed to a waiting request.
    pub acknowledged: u64,
    /// Refusals.
    pub refused: u64,
    /// Accepted, never acknowledged.
    pub unacknowledged: Vec<Uuid>,
    /// Acknowledged more than once.
    pub repeated: Vec<Uuid>,
    /// Refusals by code.
    pub refusals: std::collections::BTreeMap<String, u64>,
    /// Envelopes accepted, by service.
    pub by_service: std::collections::BTreeMap<String, u64>,
}

/// Reads every entry of each node's journal through the auditor API of the hub at `url`
/// and counts acceptances and acknowledgements per envelope.
///
/// # Errors
/// When the journal cannot be read.
pub async fn journal_deliveries(
    fed: &Federation,
    url: &str,
    nodes: &[String],
) -> anyhow::Result<JournalDeliveries> {
    use snodo_broker::journal::entry::EventKind;
    let (cert, key) = fed.auditor();
    let client = JournalClient::new(url, &fed.pki().join("ca.crt"), &cert, &key)?;
    let mut accepted: HashMap<Uuid, bool> = HashMap::new();
    let mut acks: HashMap<Uuid, u64> = HashMap::new();
    let mut out = JournalDeliveries::default();
    for node in nodes {
        let c = if nodes.len() > 1 {
            client.for_node(node)
        } else {
            client.clone()
        };
        let mut entries = c.entries(&Filters::default()).await?;
        while let Some(item) = entries.next().await? {
            let e = item.entry;
            match (e.kind, e.envelope_id) {
                (EventKind::Accepted, Some(id)) => {
                    out.accepted += 1;
                    *out.by_service
                        .entry(e.service.clone().unwrap_or_default())
                        .or_default() += 1;
                    accepted.insert(id, e.recipient.as_deref() != Some("*"));
                }
                (EventKind::Delivered, Some(id))
                    if e.detail.as_deref() == Some(snodo_broker::engine::DELIVERED_TO_WAITER) =>
                {
                    out.acknowledged += 1;
                    *acks.entry(id).or_default() += 1;
                }
                (EventKind::Acknowledged, Some(id)) => {
                    out.acknowledged += 1;
                    *acks.entry(id).or_default() += 1;
                }
                (EventKind::Refused, _) => {
                    out.refused += 1;
                    *out.refusals.entry(e.code.unwrap_or_default()).or_default() += 1;
                }
                _ => {}
            }
        }
    }
    for (id, single) in &accepted {
        match acks.get(id).copied().unwrap_or(0) {
            0 => out.unacknowledged.push(*id),
            n if n > 1 && *single => out.repeated.push(*id),
            _ => {}
        }
    }
    out.unacknowledged.sort_unstable();
    out.repeated.sort_unstable();
    Ok(out)
}
