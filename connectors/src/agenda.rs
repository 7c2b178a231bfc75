//! Durable deadlines for back offices: "register within 2 working days", "silence confirms
//! after 45 days". An [`Agenda`] keeps each deadline in the store (so a restart keeps it), in
//! due order, and [`Agenda::next_due`] waits on a [`Clock`] for the first one to come — with a
//! [`crate::ManualClock`], a term of days passes as soon as a test advances the clock.

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::shutdown::{Shutdown, stopped};
use crate::store::{Store, StoreError, Tree, Update};

/// One deadline: when, what it is about (its key), and what to do (its value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadline<V> {
    /// When it falls due.
    pub due: OffsetDateTime,
    /// What it is about (a practice id); unique within the agenda.
    pub key: String,
    /// What the back office recorded with it.
    pub value: V,
}

/// Deadlines of `V` values in due order, in one store tree (and an index by key).
pub struct Agenda<V> {
    /// `DUE/KEY` → value, `DUE` as 20 zero-padded digits of Unix milliseconds (+ an offset,
    /// so that dates before 1970 sort too).
    by_due: Tree<V>,
    /// `KEY` → the `DUE/KEY` entry, to cancel or move a deadline by its key.
    by_key: Tree<String>,
    /// Woken when a deadline is added, so a waiter looks again.
    changed: Notify,
}

impl<V> std::fmt::Debug for Agenda<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agenda")
            .field("deadlines", &self.by_key)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since 1970 shifted to be non-negative for any date `time` holds.
const SHIFT_MS: i128 = 400_000_000_000_000;

fn due_key(due: OffsetDateTime, key: &str) -> String {
    let ms = due.unix_timestamp_nanos() / 1_000_000 + SHIFT_MS;
    format!("{ms:020}/{key}")
}

fn due_of(entry: &str) -> Option<OffsetDateTime> {
    let (ms, _) = entry.split_once('/')?;
    let ms: i128 = ms.parse().ok()?;
    OffsetDateTime::from_unix_timestamp_nanos((ms - SHIFT_MS) * 1_000_000).ok()
}

impl<V: Serialize + DeserializeOwned> Agenda<V> {
    /// The agenda `name` in `store` (two trees, `NAME.due` and `NAME.key`).
    ///
    /// # Errors
    /// [`StoreError`] when the trees cannot be opened.
    pub fn open(store: &Store, name: &str) -> Result<Self, StoreError> {
        Ok(Agenda {
            by_due: store.tree(&format!("{name}.due"))?,
            by_key: store.tree(&format!("{name}.key"))?,
            changed: Notify::new(),
        })
    }

    /// Stages, in `update`, the deadline `key` at `due` (replacing any earlier deadline of
    /// the same key), so that it is set atomically with the back office's other changes.
    /// Call [`Agenda::wake`] once the update is applied.
    ///
    /// # Errors
    /// [`StoreError`] when the value cannot be encoded or the store fails.
    pub fn schedule(
        &self,
        update: &mut Update,
        due: OffsetDateTime,
        key: &str,
        value: &V,
    ) -> Result<(), StoreError> {
        if let Some(old) = self.by_key.get(key)? {
            update.remove(&self.by_due, &old);
        }
        let entry = due_key(due, key);
        update.put(&self.by_due, &entry, value)?;
        update.put(&self.by_key, key, &entry)?;
        Ok(())
    }

    /// Stages the removal of the deadline `key` (a done practice), if there is one.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn cancel(&self, update: &mut Update, key: &str) -> Result<(), StoreError> {
        if let Some(old) = self.by_key.get(key)? {
            update.remove(&self.by_due, &old);
            update.remove(&self.by_key, key);
        }
        Ok(())
    }

    /// Tells a waiting [`Agenda::next_due`] that the deadlines changed.
    pub fn wake(&self) {
        self.changed.notify_waiters();
    }

    /// The deadline `key`, if set.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn get(&self, key: &str) -> Result<Option<Deadline<V>>, StoreError> {
        let Some(entry) = self.by_key.get(key)? else {
            return Ok(None);
        };
        let (Some(due), Some(value)) = (due_of(&entry), self.by_due.get(&entry)?) else {
            return Ok(None);
        };
        Ok(Some(Deadline {
            due,
            key: key.to_owned(),
            value,
        }))
    }

    /// Every deadline due at or before `now`, earliest first (they stay until cancelled).
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn due(&self, now: OffsetDateTime) -> Result<Vec<Deadline<V>>, StoreError> {
        let mut out = Vec::new();
        for (entry, value) in self.by_due.scan("")? {
            let Some(due) = due_of(&entry) else { continue };
            if due > now {
                break;
            }
            let key = entry
                .split_once('/')
                .map(|(_, k)| k.to_owned())
                .unwrap_or_default();
            out.push(Deadline { due, key, value });
        }
        Ok(out)
    }

    /// The earliest deadline, if any.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn first(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self
            .by_due
            .scan("")?
            .into_iter()
            .next()
            .and_then(|(entry, _)| due_of(&entry)))
    }

    /// Waits until at least one deadline is due on `clock` and returns the due ones, or
    /// `None` at shutdown. A deadline scheduled meanwhile (and [`Agenda::wake`]d) is seen.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub async fn next_due(
        &self,
        clock: &dyn Clock,
        shutdown: Shutdown,
    ) -> Result<Option<Vec<Deadline<V>>>, StoreError> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let due = self.due(clock.now())?;
            if !due.is_empty() {
                return Ok(Some(due));
            }
            let first = self.first()?;
            tokio::select! {
                () = async {
                    match first {
                        Some(at) => clock.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = &mut changed => {}
                () = stopped(shutdown.clone()) => return Ok(None),
            }
        }
    }

    /// Calls `act` with each deadline as it falls due on `clock`, until `shutdown`. A deadline
    /// `act` fails on stays where it is (`act` removes what it applied) and is tried again a
    /// second later; `what` names the deadlines in the log.
    pub async fn serve<F, Fut, T, E>(
        &self,
        clock: &dyn Clock,
        shutdown: Shutdown,
        what: &str,
        mut act: F,
    ) where
        F: FnMut(Deadline<V>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        loop {
            match self.next_due(clock, shutdown.clone()).await {
                Ok(None) => break,
                Ok(Some(due)) => {
                    for d in due {
                        let key = d.key.clone();
                        if let Err(e) = act(d).await {
                            tracing::warn!(%what, %key, error = %e, "A deadline not applied yet.");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%what, error = %e, "Cannot read the agenda.");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::working_days::add_working_days;
    use std::sync::Arc;
    use time::Duration;
    use time::macros::datetime;

    #[tokio::test]
    async fn terms_of_days_fire_in_order_when_the_clock_reaches_them() {
        let store = Store::temporary().unwrap();
        let agenda = Arc::new(Agenda::<String>::open(&store, "termini").unwrap());
        let clock = ManualClock::new(datetime!(2027-03-25 10:00 UTC));
        let start = clock.now();
        // Registration within 2 working days (Easter Monday skipped), a 45-day check.
        let register = add_working_days(start.date(), 2)
            .unwrap()
            .with_hms(0, 0, 0)
            .unwrap()
            .assume_utc();
        assert_eq!(register.date(), time::macros::date!(2027 - 03 - 30));
        let mut u = Update::new();
        agenda
            .schedule(
                &mut u,
                start + Duration::days(45),
                "P-1/check",
                &"silence confirms".into(),
            )
            .unwrap();
        agenda
            .schedule(&mut u, register, "P-1/register", &"register".into())
            .unwrap();
        store.apply(u).unwrap();

        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let waiter = {
            let (agenda, clock, shutdown) = (agenda.clone(), clock.clone(), shutdown.clone());
            tokio::spawn(async move { agenda.next_due(&clock, shutdown).await })
        };
        clock.advance(Duration::days(4));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "nothing is due on the 29th");
        clock.advance(Duration::days(1));
        let due = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].key, "P-1/register");
        assert_eq!(due[0].due, register);

        // Done: cancelled. The check is the next, 45 days after the start.
        let mut u = Update::new();
        agenda.cancel(&mut u, "P-1/register").unwrap();
        store.apply(u).unwrap();
        assert_eq!(agenda.first().unwrap(), Some(start + Duration::days(45)));
        clock.set(start + Duration::days(45));
        let due = agenda
            .next_due(&clock, shutdown.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(due[0].value, "silence confirms");

        // Moving a deadline replaces it; shutdown ends a wait.
        let mut u = Update::new();
        agenda
            .schedule(
                &mut u,
                start + Duration::days(90),
                "P-1/check",
                &"later".into(),
            )
            .unwrap();
        store.apply(u).unwrap();
        assert_eq!(agenda.get("P-1/check").unwrap().unwrap().value, "later");
        assert!(agenda.due(clock.now()).unwrap().is_empty());
        let _ = stop.send(true);
        assert!(agenda.next_due(&clock, shutdown).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_deadline_added_while_waiting_is_seen() {
        let store = Store::temporary().unwrap();
        let agenda = Arc::new(Agenda::<u32>::open(&store, "a").unwrap());
        let clock = ManualClock::new(datetime!(2027-01-01 00:00 UTC));
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let waiter = {
            let (agenda, clock) = (agenda.clone(), clock.clone());
            tokio::spawn(async move { agenda.next_due(&clock, shutdown).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut u = Update::new();
        agenda
            .schedule(&mut u, clock.now() + Duration::hours(1), "k", &7)
            .unwrap();
        store.apply(u).unwrap();
        agenda.wake();
        clock.advance(Duration::hours(2));
        let due = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(due[0].value, 7);
    }

    #[test]
    fn due_keys_sort_as_times_before_and_after_1970() {
        let a = due_key(datetime!(1960-01-01 00:00 UTC), "x");
        let b = due_key(datetime!(1970-01-01 00:00:00.001 UTC), "x");
        let c = due_key(datetime!(2027-01-01 00:00 UTC), "x");
        assert!(a < b && b < c);
        assert_eq!(due_of(&c), Some(datetime!(2027-01-01 00:00 UTC)));
    }
}
