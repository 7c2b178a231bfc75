//! Clocks: the system clock, and a manual clock that tests advance by hand so that terms of
//! days (a 45-day check, a 10-day notice) run in milliseconds; both wake sleepers at a deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use tokio::sync::watch;

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

/// A clock that moves only when told: [`ManualClock::advance`] and [`ManualClock::set`] wake
/// every sleeper whose deadline has come, in no particular order. Clones share one time.
#[derive(Clone)]
pub struct ManualClock {
    /// The current instant; sleepers watch it.
    now: Arc<watch::Sender<OffsetDateTime>>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &*self.now.borrow())
            .finish()
    }
}

impl ManualClock {
    /// A clock stopped at `start`.
    #[must_use]
    pub fn new(start: OffsetDateTime) -> Self {
        ManualClock {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    /// Moves the clock forward by `by` (a negative duration is ignored: time does not go back).
    pub fn advance(&self, by: Duration) {
        if by > Duration::ZERO {
            self.now.send_modify(|t| *t = t.saturating_add(by));
        }
    }

    /// Moves the clock to `to`, if that is not in its past.
    pub fn set(&self, to: OffsetDateTime) {
        self.now.send_if_modified(|t| {
            if to > *t {
                *t = to;
                true
            } else {
                false
            }
        });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline: OffsetDateTime) -> Sleep<'_> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, which outlives this future.
            let _ = rx.wait_for(|t| *t >= deadline).await;
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
