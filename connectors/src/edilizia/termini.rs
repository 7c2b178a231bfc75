//! The terms of a building practice in calendar days: 90 days for the decision on a permit, 30
//! for the check of a SCIA, counted from the day after the protocol. A request for
//! integrations interrupts the term once: it stops, and starts again whole from the day the
//! integrations come; a later request does not touch it.

use serde::{Deserialize, Serialize};
use snodo_schemas::formats::Data;
use time::OffsetDateTime;

use crate::back_office::{dopo, mezzanotte};
use crate::dispatch::HandlerError;

/// Days for the decision on a building permit.
pub const GIORNI_DECISIONE: u16 = 90;

/// Days for the check of a SCIA.
pub const GIORNI_CONTROLLO_SCIA: u16 = 30;

/// A term that runs from a day, and can be interrupted once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termine {
    /// Its length in days.
    pub giorni: u16,
    /// The day it runs from (not counted): the protocol's, or the integrations' once it was
    /// interrupted.
    pub decorre: Data,
    /// True once a request for integrations interrupted it: it cannot be again.
    pub interrotto: bool,
    /// True while interrupted and waiting for the integrations.
    pub fermo: bool,
}

impl Termine {
    /// A term of `giorni` days running from `dal`.
    #[must_use]
    pub fn nuovo(giorni: u16, dal: Data) -> Self {
        Termine {
            giorni,
            decorre: dal,
            interrotto: false,
            fermo: false,
        }
    }

    /// Its last day; none while it is stopped.
    ///
    /// # Errors
    /// [`HandlerError::Reject`] past the calendar.
    pub fn ultimo_giorno(&self) -> Result<Option<Data>, HandlerError> {
        if self.fermo {
            return Ok(None);
        }
        dopo(self.decorre, i64::from(self.giorni)).map(Some)
    }

    /// When it has passed (midnight starting the day after its last); none while stopped.
    ///
    /// # Errors
    /// [`HandlerError::Reject`] past the calendar.
    pub fn scade(&self) -> Result<Option<OffsetDateTime>, HandlerError> {
        match self.ultimo_giorno()? {
            Some(ultimo) => Ok(Some(mezzanotte(dopo(ultimo, 1)?))),
            None => Ok(None),
        }
    }

    /// A request for integrations: the first interrupts the term (it stops; returns true),
    /// any later one leaves it running as it is (returns false).
    pub fn richiesta_integrazione(&mut self) -> bool {
        if self.interrotto {
            return false;
        }
        self.interrotto = true;
        self.fermo = true;
        true
    }

    /// The integrations came on `il`: a stopped term runs again, whole, from that day; a
    /// running one is not touched.
    pub fn integrazione(&mut self, il: Data) {
        if self.fermo {
            self.fermo = false;
            self.decorre = il;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn d(s: &str) -> Data {
        Data::parse(s).unwrap()
    }

    #[test]
    fn ninety_days_from_the_day_after_the_protocol() {
        let t = Termine::nuovo(GIORNI_DECISIONE, d("2026-03-02"));
        assert_eq!(t.ultimo_giorno().unwrap(), Some(d("2026-05-31")));
        assert_eq!(t.scade().unwrap(), Some(datetime!(2026-06-01 00:00 UTC)));
        let scia = Termine::nuovo(GIORNI_CONTROLLO_SCIA, d("2026-12-15"));
        assert_eq!(scia.ultimo_giorno().unwrap(), Some(d("2027-01-14")));
    }

    #[test]
    fn the_first_request_interrupts_and_the_term_restarts_whole_from_the_integrations() {
        let mut t = Termine::nuovo(GIORNI_DECISIONE, d("2026-03-02"));
        assert!(t.richiesta_integrazione());
        assert_eq!(t.ultimo_giorno().unwrap(), None, "stopped while waiting");
        assert_eq!(t.scade().unwrap(), None);
        t.integrazione(d("2026-04-10"));
        assert_eq!(t.ultimo_giorno().unwrap(), Some(d("2026-07-09")));
        assert!(t.interrotto && !t.fermo);
    }

    #[test]
    fn a_second_request_does_not_interrupt_again() {
        let mut t = Termine::nuovo(GIORNI_DECISIONE, d("2026-03-02"));
        assert!(t.richiesta_integrazione());
        t.integrazione(d("2026-04-10"));
        assert!(!t.richiesta_integrazione());
        assert_eq!(t.ultimo_giorno().unwrap(), Some(d("2026-07-09")));
        // Its integrations do not restart it either.
        t.integrazione(d("2026-05-20"));
        assert_eq!(t.ultimo_giorno().unwrap(), Some(d("2026-07-09")));
    }

    #[test]
    fn a_term_past_the_calendar_is_an_error_not_a_panic() {
        let t = Termine::nuovo(GIORNI_DECISIONE, d("9999-12-01"));
        assert!(t.ultimo_giorno().is_err());
    }
}
