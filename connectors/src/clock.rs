//! Clocks: the system clock, and a manual clock that tests advance by hand so that terms of
//! days (a 45-day check, a 10-day notice) run in milliseconds; both wake sleepers at a deadline.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use time::{Duration, OffsetDateTime};
use tokio::sync::oneshot;

/// A future that completes when a clock reaches a deadline.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What time it is, and a way to wait for a time: the only source of time of connectors and
/// back offices, so that tests can drive it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant, UTC.
    fn now(&self) -> OffsetDateTime;

    /// Completes once [`Clock::now`] is at or after `deadline` (at once if it already is).
    fn sleep_until(&self, deadline: OffsetDateTime) -> Sleep<'_>;

    /// Today's date, UTC.
    fn today(&self) -> time::Date {
        self.now().date()
    }
}

/// A shared clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock; sleeping uses tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep_until(&self, deadline: OffsetDateTime) -> Sleep<'_> {
        Box::pin(async move {
            // The wall clock can be stepped while we sleep: check again after each wait.
            loop {
                let left = deadline - OffsetDateTime::now_utc();
                if left <= Duration::ZERO {
                    return;
                }
                let wait = std::time::Duration::try_from(left)
                    .unwrap_or(std::time::Duration::from_secs(1))
                    .min(std::time::Duration::from_secs(60));
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`], [`ManualClock::set`]),
/// waking the sleepers whose deadline has come, and only those: sleepers wait in deadline
/// order, so a move costs what it wakes, however many wait for later (a simulation has
/// thousands of terms pending). Clones share one time.
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<Manual>>,
}

/// The time of a [`ManualClock`] and who waits on it.
struct Manual {
    now: OffsetDateTime,
    /// By deadline, then by arrival.
    sleepers: BTreeMap<(OffsetDateTime, u64), oneshot::Sender<()>>,
    /// The next arrival number.
    next: u64,
    /// How many sleepers the last clean-up left: the next one comes at twice as many.
    kept: usize,
}

impl ManualClock {
    /// A clock stopped at `start`.
    #[must_use]
    pub fn new(start: OffsetDateTime) -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new(Manual {
                now: start,
                sleepers: BTreeMap::new(),
                next: 0,
                kept: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Manual> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the clock forward by `by` (a negative duration is ignored: time does not go back).
    pub fn advance(&self, by: Duration) {
        if by > Duration::ZERO {
            let to = self.now().saturating_add(by);
            self.set(to);
        }
    }

    /// Moves the clock to `to`, if that is not in its past.
    pub fn set(&self, to: OffsetDateTime) {
        let due = {
            let mut m = self.lock();
            if to <= m.now {
                return;
            }
            m.now = to;
            // Everything at or before `to`: the rest stays.
            let later = m.sleepers.split_off(&(to, u64::MAX));
            std::mem::replace(&mut m.sleepers, later)
        };
        for (_, wake) in due {
            let _ = wake.send(());
        }
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.lock();
        f.debug_struct("ManualClock")
            .field("now", &m.now)
            .field("sleepers", &m.sleepers.len())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        self.lock().now
    }

    fn sleep_until(&self, deadline: OffsetDateTime) -> Sleep<'_> {
        let woken = {
            let mut m = self.lock();
            if m.now >= deadline {
                None
            } else {
                // Sleepers given up (their future dropped) are cleared now and then.
                if m.sleepers.len() >= 2 * m.kept.max(512) {
                    m.sleepers.retain(|_, wake| !wake.is_closed());
                    m.kept = m.sleepers.len();
                }
                let (tx, rx) = oneshot::channel();
                let n = m.next;
                m.next += 1;
                m.sleepers.insert((deadline, n), tx);
                Some(rx)
            }
        };
        Box::pin(async move {
            if let Some(rx) = woken {
                // Sent when the deadline comes; dropped with the clock, which ends it too.
                let _ = rx.await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[tokio::test]
    async fn a_forty_five_day_term_fires_when_the_clock_is_advanced_past_it() {
        let clock = ManualClock::new(datetime!(2027-03-01 09:00 UTC));
        let deadline = clock.now() + Duration::days(45);
        let sleeper = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(deadline).await })
        };
        clock.advance(Duration::days(44));
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "fired a day early");
        clock.advance(Duration::days(1));
        tokio::time::timeout(std::time::Duration::from_secs(5), sleeper)
            .await
            .expect("the term did not fire when its day came")
            .expect("the sleeper panicked");
        assert_eq!(clock.now(), datetime!(2027-04-15 09:00 UTC));
    }

    #[tokio::test]
    async fn a_move_wakes_the_sleepers_it_reaches_and_leaves_the_later_ones_waiting() {
        let clock = ManualClock::new(datetime!(2027-03-01 09:00 UTC));
        let start = clock.now();
        let mut later = Vec::new();
        for day in 2..1000 {
            let clock = clock.clone();
            later.push(tokio::spawn(async move {
                clock.sleep_until(start + Duration::days(day)).await;
            }));
        }
        let soon = {
            let clock = clock.clone();
            tokio::spawn(async move { clock.sleep_until(start + Duration::days(1)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        clock.advance(Duration::days(1));
        tokio::time::timeout(std::time::Duration::from_secs(5), soon)
            .await
            .expect("the sleeper of day 1 did not wake")
            .unwrap();
        assert!(later.iter().all(|t| !t.is_finished()));
        assert!(format!("{clock:?}").contains("sleepers: 998"), "{clock:?}");
        clock.advance(Duration::days(997));
        for t in later.drain(..997) {
            tokio::time::timeout(std::time::Duration::from_secs(5), t)
                .await
                .expect("a due sleeper did not wake")
                .unwrap();
        }
        assert!(!later[0].is_finished(), "day 999 woke on day 998");
        // Sleepers given up are forgotten: 1,101 registered, all but the last 77 and day
        // 999 cleared when the 1,024th came.
        for _ in 0..1100 {
            drop(clock.sleep_until(start + Duration::days(5000)));
        }
        let sleeping = format!("{clock:?}");
        assert!(sleeping.contains("sleepers: 78 }"), "{sleeping}");
    }

    #[tokio::test]
    async fn a_past_deadline_returns_at_once_and_time_never_goes_back() {
        let clock = ManualClock::new(datetime!(2027-03-01 09:00 UTC));
        clock.sleep_until(datetime!(2027-02-01 00:00 UTC)).await;
        clock.set(datetime!(2026-01-01 00:00 UTC));
        clock.advance(Duration::days(-3));
        assert_eq!(clock.now(), datetime!(2027-03-01 09:00 UTC));
        assert_eq!(clock.today(), time::macros::date!(2027 - 03 - 01));
    }

    #[tokio::test]
    async fn the_system_clock_sleeps_until_a_near_deadline() {
        let clock = SystemClock;
        let deadline = clock.now() + Duration::milliseconds(30);
        clock.sleep_until(deadline).await;
        assert!(clock.now() >= deadline);
    }
}
