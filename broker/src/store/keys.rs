//! The key spaces of the hub's store. Every key starts with a one-letter space and a slash;
//! numbers are big-endian so that key order is numeric order.
//!
//! | space | key | value |
//! |---|---|---|
//! | `m/` | envelope seq | envelope record (JSON) |
//! | `r/` | envelope seq | the exact signed bytes received |
//! | `i/` | sender, envelope id | envelope seq (idempotency) |
//! | `u/` | envelope id, seq | nothing (lookup by id) |
//! | `h/` | envelope seq, journal index | nothing: the envelope's history |
//! | `q/` | recipient, seq | nothing: ready for delivery to that recipient |
//! | `d/` | recipient, seq | delivery record (JSON): leased, pushed, acknowledged… |
//! | `l/` | lease token | lease (JSON) |
//! | `x/` | lease expiry (ms), token | nothing: leases by expiry |
//! | `t/` | envelope expiry (ms), seq | nothing: envelopes by expiry |
//! | `w/` | retry time (ms), recipient, seq | nothing: pushes waiting to be retried |
//! | `v/` | recipient, seq | nothing: the dead-letter queue |
//! | `j/` | journal index | journal entry (canonical bytes) |
//! | `y/` | field, value, journal index | the further journal indices with that value, written in the same batch (LEB128 differences; empty: none): the journal's secondary indexes |
//! | `n/` | level, index | Merkle tree node hash |
//! | `k/` | tree size | signed checkpoint (JSON) |
//! | `s/` | name | hub state (journal size, next seq) |
//! | `p/` | envelope seq | outbound route (JSON): accepted, not yet confirmed by RabbitMQ |
//! | `z/` | recipient, sender, envelope id | digest: delivered on some node (amqp transport) |

use uuid::Uuid;

fn join(space: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    k.extend_from_slice(space);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// An envelope's record.
#[must_use]
pub fn envelope(seq: u64) -> Vec<u8> {
    join(b"m/", &[&seq.to_be_bytes()])
}

/// An envelope's exact received bytes.
#[must_use]
pub fn raw(seq: u64) -> Vec<u8> {
    join(b"r/", &[&seq.to_be_bytes()])
}

/// Idempotency: sender and envelope id.
#[must_use]
pub fn idempotency(sender: &str, id: &Uuid) -> Vec<u8> {
    join(b"i/", &[sender.as_bytes(), id.as_bytes()])
}

/// Lookup by envelope id alone (ids are unique per sender, so several may share one).
#[must_use]
pub fn by_id(id: &Uuid, seq: u64) -> Vec<u8> {
    join(b"u/", &[id.as_bytes(), &seq.to_be_bytes()])
}

/// The prefix of [`by_id`] for one id.
#[must_use]
pub fn by_id_prefix(id: &Uuid) -> Vec<u8> {
    let mut k = join(b"u/", &[id.as_bytes()]);
    k.push(0);
    k
}

/// One journal entry in an envelope's history.
#[must_use]
pub fn history(seq: u64, index: u64) -> Vec<u8> {
    join(b"h/", &[&seq.to_be_bytes(), &index.to_be_bytes()])
}

/// The prefix of an envelope's history.
#[must_use]
pub fn history_prefix(seq: u64) -> Vec<u8> {
    let mut k = join(b"h/", &[&seq.to_be_bytes()]);
    k.push(0);
    k
}

/// The prefix of a recipient's ready queue.
#[must_use]
pub fn queue_prefix(recipient: &str) -> Vec<u8> {
    let mut k = join(b"q/", &[recipient.as_bytes()]);
    k.push(0);
    k
}

/// One envelope ready for `recipient`.
#[must_use]
pub fn queue(recipient: &str, seq: u64) -> Vec<u8> {
    join(b"q/", &[recipient.as_bytes(), &seq.to_be_bytes()])
}

/// The queue prefix ([`queue_prefix`]) of queue key `key`; none for any other key.
#[must_use]
pub fn queue_of(key: &[u8]) -> Option<&[u8]> {
    let inbox = key.strip_prefix(b"q/".as_slice())?;
    let cut = inbox.len().checked_sub(8)?;
    (cut > 0 && inbox[cut - 1] == 0).then(|| &key[..2 + cut])
}

/// The amqp transport's outbox: an accepted envelope not yet confirmed by RabbitMQ.
#[must_use]
pub fn outbox(seq: u64) -> Vec<u8> {
    join(b"p/", &[&seq.to_be_bytes()])
}

/// The amqp transport's delivered markers: `recipient` has taken (sender, id) on some node.
#[must_use]
pub fn delivered(recipient: &str, sender: &str, id: &Uuid) -> Vec<u8> {
    join(
        b"z/",
        &[recipient.as_bytes(), sender.as_bytes(), id.as_bytes()],
    )
}

/// The delivery of one envelope to one recipient.
#[must_use]
pub fn delivery(recipient: &str, seq: u64) -> Vec<u8> {
    join(b"d/", &[recipient.as_bytes(), &seq.to_be_bytes()])
}

/// A lease, by token.
#[must_use]
pub fn lease(token: &str) -> Vec<u8> {
    join(b"l/", &[token.as_bytes()])
}

/// A lease, by expiry.
#[must_use]
pub fn lease_expiry(expires_ms: i64, token: &str) -> Vec<u8> {
    join(b"x/", &[&expires_ms.to_be_bytes(), token.as_bytes()])
}

/// An envelope, by expiry.
#[must_use]
pub fn expiry(expires_ms: i64, seq: u64) -> Vec<u8> {
    join(b"t/", &[&expires_ms.to_be_bytes(), &seq.to_be_bytes()])
}

/// A push to retry at `due_ms`.
#[must_use]
pub fn retry(due_ms: i64, recipient: &str, seq: u64) -> Vec<u8> {
    join(
        b"w/",
        &[
            &due_ms.to_be_bytes(),
            recipient.as_bytes(),
            &seq.to_be_bytes(),
        ],
    )
}

/// An envelope dead-lettered for `recipient`.
#[must_use]
pub fn dead_letter(recipient: &str, seq: u64) -> Vec<u8> {
    join(b"v/", &[recipient.as_bytes(), &seq.to_be_bytes()])
}

/// A journal entry.
#[must_use]
pub fn journal(index: u64) -> Vec<u8> {
    join(b"j/", &[&index.to_be_bytes()])
}

/// A secondary index of the journal: entries whose `field` (one letter) has `value`, from
/// entry `index` on (see `journal::query::Postings`).
#[must_use]
pub fn journal_index(field: u8, value: &str, index: u64) -> Vec<u8> {
    join(b"y/", &[&[field], value.as_bytes(), &index.to_be_bytes()])
}

/// The prefix of [`journal_index`] for one field and value.
#[must_use]
pub fn journal_index_prefix(field: u8, value: &str) -> Vec<u8> {
    let mut k = join(b"y/", &[&[field], value.as_bytes()]);
    k.push(0);
    k
}

/// A Merkle tree node.
#[must_use]
pub fn node(level: u32, index: u64) -> Vec<u8> {
    join(b"n/", &[&level.to_be_bytes(), &index.to_be_bytes()])
}

/// A signed checkpoint, by tree size.
#[must_use]
pub fn checkpoint(size: u64) -> Vec<u8> {
    join(b"k/", &[&size.to_be_bytes()])
}

/// Hub state: the journal size and next envelope sequence, written with every batch.
pub const STATE: &[u8] = b"s/state";

/// The big-endian number at the end of a key.
#[must_use]
pub fn trailing_u64(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_key_names_its_inbox_and_no_other_key_does() {
        let k = queue("comune:001272", 42);
        assert_eq!(queue_of(&k), Some(queue_prefix("comune:001272").as_slice()));
        assert_eq!(queue_of(&queue_prefix("comune:001272")), None);
        assert_eq!(queue_of(&envelope(42)), None);
        assert_eq!(queue_of(b"q/\0\0\0\0\0\0\0\0"), None);
    }
}
