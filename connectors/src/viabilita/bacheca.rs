//! The board of mobility news a subscriber keeps: per publisher and event, the highest revision
//! received and the end of the event once one came. Applying the same messages in any order
//! gives the same board, so it does not matter in which order the hub delivers them after an
//! outage, nor how many times.
//!
//! The rules, for one publisher's event:
//! - an `evento` with a revision above the one held replaces it; one at or below it is stale
//!   or a repeat, and is ignored (a revision names one content: a second content under the
//!   same number would be the publisher's fault);
//! - a `fine-evento` ends the event for good: later revisions, whenever they arrive, do not
//!   bring it back (the publisher refuses to update an event it ended), and a second end is a
//!   repeat;
//! - an end that arrives before the event itself is kept, so that the event never shows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use snodo_envelopes::EntityId;
use snodo_schemas::formats::{CodiceIstat, Istante};
use snodo_schemas::services::mobilita_viabilita::{Evento, FineEvento, Gravita};

/// One message of the service, as the board takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notizia {
    /// An event, new or a revision.
    Evento(Evento),
    /// The end of an event.
    Fine(FineEvento),
}

impl Notizia {
    /// The publisher's identifier of the event it is about.
    #[must_use]
    pub fn id(&self) -> &str {
        match self {
            Notizia::Evento(e) => &e.id,
            Notizia::Fine(f) => &f.id,
        }
    }
}

/// What applying a message did to the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effetto {
    /// A new event shows.
    Nuovo,
    /// An event shows its newer revision.
    Aggiornato,
    /// An event was ended (or its end arrived first, and it will never show).
    Terminato,
    /// A revision at or below the one held: stale, or a repeat.
    Superato,
    /// A message about an event already ended: its revision is kept, the event stays ended.
    GiaTerminato,
}

impl Effetto {
    /// Whether the message changed nothing the board shows.
    #[must_use]
    pub fn ignorato(self) -> bool {
        matches!(self, Effetto::Superato | Effetto::GiaTerminato)
    }
}

/// What the board holds of one event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scheda {
    /// The highest revision received, if any came.
    pub evento: Option<Evento>,
    /// Its end, once one came.
    pub fine: Option<FineEvento>,
}

impl Scheda {
    /// Applies `notizia` (about this event) and says what it did.
    pub fn applica(&mut self, notizia: Notizia) -> Effetto {
        match notizia {
            Notizia::Evento(e) => {
                let held = self.evento.as_ref().map_or(0, |h| h.versione);
                if e.versione <= held {
                    return if self.fine.is_some() {
                        Effetto::GiaTerminato
                    } else {
                        Effetto::Superato
                    };
                }
                let was = self.evento.replace(e);
                match (&self.fine, was) {
                    (Some(_), _) => Effetto::GiaTerminato,
                    (None, None) => Effetto::Nuovo,
                    (None, Some(_)) => Effetto::Aggiornato,
                }
            }
            Notizia::Fine(f) => {
                if self.fine.is_some() {
                    return Effetto::GiaTerminato;
                }
                self.fine = Some(f);
                Effetto::Terminato
            }
        }
    }

    /// The event as it shows now: its latest revision, unless it ended.
    #[must_use]
    pub fn attivo(&self) -> Option<&Evento> {
        match (&self.evento, &self.fine) {
            (Some(e), None) => Some(e),
            _ => None,
        }
    }
}

/// An area a subscriber looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// One comune.
    Comune(CodiceIstat),
    /// Every comune of a province, by the province part of the ISTAT code (`001`, Torino).
    Provincia(String),
}

impl Area {
    /// Whether the comune `c` is in the area.
    #[must_use]
    pub fn contiene(&self, c: &CodiceIstat) -> bool {
        match self {
            Area::Comune(x) => x == c,
            Area::Provincia(p) => c.provincia() == p,
        }
    }
}

/// Which active events a listing shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filtro {
    /// Events with a place in one of these areas; every area when empty.
    pub aree: Vec<Area>,
    /// Events that are still on at or after this instant (open-ended ones always are).
    pub dal: Option<Istante>,
    /// Events that start at or before this instant.
    pub al: Option<Istante>,
    /// Events at least this disruptive.
    pub gravita_minima: Option<Gravita>,
    /// Events of this publisher only.
    pub pubblicato_da: Option<EntityId>,
}

impl Filtro {
    /// Every active event.
    #[must_use]
    pub fn tutti() -> Filtro {
        Filtro::default()
    }

    /// The events on at instant `t` anywhere.
    #[must_use]
    pub fn in_corso(t: Istante) -> Filtro {
        Filtro {
            dal: Some(t.clone()),
            al: Some(t),
            ..Filtro::default()
        }
    }

    /// Whether `publisher`'s event `e` passes.
    #[must_use]
    pub fn ammette(&self, publisher: &EntityId, e: &Evento) -> bool {
        if self.pubblicato_da.as_ref().is_some_and(|p| p != publisher) {
            return false;
        }
        if self.gravita_minima.is_some_and(|g| e.gravita < g) {
            return false;
        }
        if !self.aree.is_empty()
            && !e
                .luoghi
                .iter()
                .any(|l| self.aree.iter().any(|a| a.contiene(&l.comune)))
        {
            return false;
        }
        if let (Some(dal), Some(fine)) = (&self.dal, &e.periodo.fine)
            && fine < dal
        {
            return false;
        }
        if let Some(al) = &self.al
            && e.periodo.inizio > *al
        {
            return false;
        }
        true
    }
}

/// An active event on the board.
#[derive(Clone, Debug, PartialEq)]
pub struct Voce {
    /// Who published it.
    pub pubblicato_da: EntityId,
    /// Its latest revision.
    pub evento: Evento,
}

/// Every publisher's events, as a subscriber knows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bacheca {
    /// `(publisher, event id)` → what is known of it.
    schede: BTreeMap<(EntityId, String), Scheda>,
}

impl Bacheca {
    /// An empty board.
    #[must_use]
    pub fn new() -> Bacheca {
        Bacheca::default()
    }

    /// Applies `publisher`'s `notizia`.
    pub fn applica(&mut self, publisher: &EntityId, notizia: Notizia) -> Effetto {
        self.schede
            .entry((publisher.clone(), notizia.id().to_owned()))
            .or_default()
            .applica(notizia)
    }

    /// What is known of `publisher`'s event `id`.
    #[must_use]
    pub fn scheda(&self, publisher: &EntityId, id: &str) -> Option<&Scheda> {
        self.schede.get(&(publisher.clone(), id.to_owned()))
    }

    /// The active events that pass `filtro`, by start, then publisher and id.
    #[must_use]
    pub fn attivi(&self, filtro: &Filtro) -> Vec<Voce> {
        let mut voci: Vec<Voce> = self
            .schede
            .iter()
            .filter_map(|((p, _), s)| s.attivo().map(|e| (p, e)))
            .filter(|(p, e)| filtro.ammette(p, e))
            .map(|(p, e)| Voce {
                pubblicato_da: p.clone(),
                evento: e.clone(),
            })
            .collect();
        voci.sort_by(|a, b| {
            (&a.evento.periodo.inizio, &a.pubblicato_da, &a.evento.id).cmp(&(
                &b.evento.periodo.inizio,
                &b.pubblicato_da,
                &b.evento.id,
            ))
        });
        voci
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use snodo_schemas::formats::Elenco;
    use snodo_schemas::services::dati::Intervallo;
    use snodo_schemas::services::mobilita_viabilita::{Luogo, MotivoFine, TipoEvento};

    use super::*;

    fn istante(s: &str) -> Istante {
        Istante::parse(s).unwrap()
    }

    fn evento(id: &str, versione: u32, comune: &str, inizio: &str, fine: Option<&str>) -> Evento {
        Evento {
            id: id.into(),
            versione,
            tipo: TipoEvento::Lavori,
            titolo: format!("{id} r{versione}"),
            descrizione: None,
            luoghi: Elenco::new(vec![Luogo {
                comune: CodiceIstat::parse(comune).unwrap(),
                strada: "Corso Francia".into(),
                da: None,
                a: None,
                coordinate: None,
            }])
            .unwrap(),
            periodo: Intervallo {
                inizio: istante(inizio),
                fine: fine.map(istante),
            },
            gravita: if versione.is_multiple_of(2) {
                Gravita::Alta
            } else {
                Gravita::Media
            },
            pubblicato_il: istante("2026-03-02T09:00:00Z"),
        }
    }

    fn fine(id: &str) -> FineEvento {
        FineEvento {
            id: id.into(),
            motivo: MotivoFine::Annullato,
            il: istante("2026-03-03T09:00:00Z"),
        }
    }

    fn turin() -> EntityId {
        "comune:001272".parse().unwrap()
    }

    #[test]
    fn revisions_replace_stale_ones_and_repeats_are_ignored() {
        let mut s = Scheda::default();
        let e = |v| Notizia::Evento(evento("A", v, "001272", "2026-03-02T08:00:00Z", None));
        assert_eq!(s.applica(e(1)), Effetto::Nuovo);
        assert_eq!(s.applica(e(3)), Effetto::Aggiornato);
        assert_eq!(s.applica(e(2)), Effetto::Superato);
        assert_eq!(s.applica(e(3)), Effetto::Superato);
        assert_eq!(s.attivo().map(|e| e.versione), Some(3));
        assert_eq!(s.applica(Notizia::Fine(fine("A"))), Effetto::Terminato);
        assert_eq!(s.attivo(), None);
        assert_eq!(s.applica(e(4)), Effetto::GiaTerminato);
        assert_eq!(s.applica(Notizia::Fine(fine("A"))), Effetto::GiaTerminato);
        assert_eq!(s.attivo(), None);
        assert_eq!(s.evento.as_ref().map(|e| e.versione), Some(4));
    }

    #[test]
    fn an_end_that_comes_first_keeps_the_event_from_showing() {
        let mut b = Bacheca::new();
        assert_eq!(
            b.applica(&turin(), Notizia::Fine(fine("A"))),
            Effetto::Terminato
        );
        let e = evento("A", 1, "001272", "2026-03-02T08:00:00Z", None);
        assert_eq!(
            b.applica(&turin(), Notizia::Evento(e)),
            Effetto::GiaTerminato
        );
        assert!(b.attivi(&Filtro::tutti()).is_empty());
    }

    #[test]
    fn listing_by_area_time_severity_and_publisher() {
        let cuneo: EntityId = "comune:004078".parse().unwrap();
        let mut b = Bacheca::new();
        let e = |id, v, c, i, f| Notizia::Evento(evento(id, v, c, i, f));
        b.applica(
            &turin(),
            e(
                "T1",
                1,
                "001272",
                "2026-03-02T08:00:00Z",
                Some("2026-03-05T18:00:00Z"),
            ),
        );
        b.applica(&turin(), e("T2", 2, "001272", "2026-04-01T00:00:00Z", None));
        b.applica(
            &cuneo,
            e(
                "C1",
                1,
                "004078",
                "2026-03-01T00:00:00Z",
                Some("2026-03-01T23:59:59Z"),
            ),
        );
        let ids =
            |f: &Filtro| -> Vec<String> { b.attivi(f).into_iter().map(|v| v.evento.id).collect() };
        assert_eq!(ids(&Filtro::tutti()), ["C1", "T1", "T2"]);
        assert_eq!(
            ids(&Filtro::in_corso(istante("2026-03-03T12:00:00Z"))),
            ["T1"]
        );
        assert_eq!(
            ids(&Filtro::in_corso(istante("2026-05-01T12:00:00Z"))),
            ["T2"]
        );
        let area = |a| Filtro {
            aree: vec![a],
            ..Filtro::default()
        };
        assert_eq!(ids(&area(Area::Provincia("004".into()))), ["C1"]);
        assert_eq!(
            ids(&area(Area::Comune(CodiceIstat::parse("001272").unwrap()))),
            ["T1", "T2"]
        );
        let grave = Filtro {
            gravita_minima: Some(Gravita::Alta),
            ..Filtro::default()
        };
        assert_eq!(ids(&grave), ["T2"]);
        let di = Filtro {
            pubblicato_da: Some(cuneo),
            ..Filtro::default()
        };
        assert_eq!(ids(&di), ["C1"]);
    }

    /// A publisher's history: events with their revisions 1..=n, some ended.
    fn storia() -> impl Strategy<Value = Vec<(EntityId, Notizia)>> {
        let publishers = ["comune:001272", "comune:001024", "provincia:TO"];
        prop::collection::vec((0..3usize, 0..4usize, 1..5u32, any::<bool>()), 1..8).prop_map(
            move |events| {
                let mut out = Vec::new();
                for (p, id, revisions, ended) in events {
                    let publisher: EntityId = publishers[p].parse().unwrap();
                    let id = format!("E{id}");
                    for v in 1..=revisions {
                        let e = evento(&id, v, "001272", "2026-03-02T08:00:00Z", None);
                        out.push((publisher.clone(), Notizia::Evento(e)));
                    }
                    if ended {
                        out.push((publisher, Notizia::Fine(fine(&id))));
                    }
                }
                out
            },
        )
    }

    proptest! {
        /// Any delivery order of the same messages, each possibly delivered twice, ends in the
        /// board that delivery in publication order gives.
        #[test]
        fn any_delivery_order_ends_in_the_same_board(
            (history, order, repeats) in storia().prop_flat_map(|h| {
                let n = h.len();
                (
                    Just(h),
                    Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                    prop::collection::vec(0..n, 0..n + 1),
                )
            })
        ) {
            let mut in_order = Bacheca::new();
            for (p, n) in history.clone() {
                in_order.applica(&p, n);
            }
            let mut shuffled = Bacheca::new();
            for i in order.iter().copied().chain(repeats) {
                let (p, n) = history[i].clone();
                shuffled.applica(&p, n);
            }
            prop_assert_eq!(in_order.attivi(&Filtro::tutti()), shuffled.attivi(&Filtro::tutti()));
            prop_assert_eq!(&in_order, &shuffled);
        }
    }
}
