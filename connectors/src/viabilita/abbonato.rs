//! The subscriber's role (the portal, a neighbouring comune, the province): it takes every
//! publisher's `evento` and `fine-evento` from its inbox and keeps the [`Bacheca`] in the
//! connector's store, then lists the active events by area and time.
//!
//! Each message that changes the board is stored under its own key (`publisher/event/v0…0N`,
//! `publisher/event/fine`) and the board is folded from them when read: two deliveries of the
//! same event handled at once (pushed and pulled together) cannot overwrite each other, and
//! the fold gives the same board in any order. A revision stored removes the lower ones of
//! the same event, which the fold would pass over anyway.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use snodo_envelopes::EntityId;
use snodo_schemas::services::mobilita_viabilita::{Evento, FineEvento};

use super::SERVICE;
use super::bacheca::{Bacheca, Filtro, Notizia, Scheda, Voce};
use crate::dispatch::{DispatcherBuilder, Effects, HandlerError};
use crate::inbound::Inbound;
use crate::service;
use crate::store::{Store, StoreError, Tree};
use crate::typed::Route;

/// The tree of the messages the board is folded from.
pub const NOTIZIE_TREE: &str = "viabilita.notizie";

/// One stored message, with its publisher.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ricevuta {
    /// Who published it (the envelope's signed sender).
    pub da: EntityId,
    /// The message.
    pub notizia: Notizia,
}

/// A subscriber of `mobilita.viabilita`.
#[derive(Debug)]
pub struct Abbonato {
    /// `publisher/event/v…` and `publisher/event/fine` → the message.
    notizie: Tree<Ricevuta>,
}

/// The key prefix of `publisher`'s event `id`: the id with `%` and `/` escaped, so that no id
/// can reach into another's keys.
fn prefisso(publisher: &EntityId, id: &str) -> String {
    format!(
        "{publisher}/{}/",
        id.replace('%', "%25").replace('/', "%2F")
    )
}

fn chiave(publisher: &EntityId, notizia: &Notizia) -> String {
    let p = prefisso(publisher, notizia.id());
    match notizia {
        Notizia::Evento(e) => format!("{p}v{:010}", e.versione),
        Notizia::Fine(_) => format!("{p}fine"),
    }
}

impl Abbonato {
    /// The subscriber keeping its board in `store`.
    ///
    /// # Errors
    /// [`StoreError`] when its tree cannot be opened.
    pub fn open(store: &Store) -> Result<Arc<Self>, StoreError> {
        Ok(Arc::new(Abbonato {
            notizie: store.tree(NOTIZIE_TREE)?,
        }))
    }

    /// Routes the service's two events to this subscriber.
    #[must_use]
    pub fn install(self: &Arc<Self>, builder: DispatcherBuilder) -> DispatcherBuilder {
        builder
            .route(SERVICE, "evento", Route::handler(self, Abbonato::on_evento))
            .route(
                SERVICE,
                "fine-evento",
                Route::handler(self, Abbonato::on_fine),
            )
    }

    fn on_evento(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let e: Evento = service::read(inbound)?;
        self.ricevi(inbound, Notizia::Evento(e), effects)
    }

    fn on_fine(&self, inbound: &Inbound, effects: &mut Effects) -> Result<(), HandlerError> {
        let f: FineEvento = service::read(inbound)?;
        self.ricevi(inbound, Notizia::Fine(f), effects)
    }

    /// Stages `notizia` when it changes the board, with the removal of the revisions it
    /// supersedes.
    fn ricevi(
        &self,
        inbound: &Inbound,
        notizia: Notizia,
        effects: &mut Effects,
    ) -> Result<(), HandlerError> {
        let da = inbound.sender().clone();
        if notizia.id().is_empty() {
            return Err(HandlerError::Reject("an event without an id".into()));
        }
        let held = self
            .notizie
            .scan(&prefisso(&da, notizia.id()))
            .map_err(service::retry)?;
        let mut scheda = Scheda::default();
        for (_, r) in &held {
            scheda.applica(r.notizia.clone());
        }
        let before = scheda.clone();
        let key = chiave(&da, &notizia);
        let effetto = scheda.applica(notizia.clone());
        let (id, versione) = match &notizia {
            Notizia::Evento(e) => (e.id.as_str(), Some(e.versione)),
            Notizia::Fine(f) => (f.id.as_str(), None),
        };
        tracing::info!(envelope_id = %inbound.id(), publisher = %da, event = id, ?versione, ?effetto, "Mobility news applied to the board.");
        if scheda == before {
            return Ok(());
        }
        if let Notizia::Evento(_) = &notizia {
            for (k, r) in &held {
                if matches!(r.notizia, Notizia::Evento(_)) && *k != key {
                    effects.update.remove(&self.notizie, k);
                }
            }
        }
        effects
            .update
            .put(&self.notizie, &key, &Ricevuta { da, notizia })
            .map_err(service::retry)
    }

    /// The whole board.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn bacheca(&self) -> Result<Bacheca, StoreError> {
        let mut b = Bacheca::new();
        for (_, r) in self.notizie.scan("")? {
            b.applica(&r.da, r.notizia);
        }
        Ok(b)
    }

    /// The active events that pass `filtro`, by start.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn attivi(&self, filtro: &Filtro) -> Result<Vec<Voce>, StoreError> {
        Ok(self.bacheca()?.attivi(filtro))
    }

    /// What is known of `publisher`'s event `id` (ended ones too).
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn scheda(&self, publisher: &EntityId, id: &str) -> Result<Option<Scheda>, StoreError> {
        let held = self.notizie.scan(&prefisso(publisher, id))?;
        if held.is_empty() {
            return Ok(None);
        }
        let mut s = Scheda::default();
        for (_, r) in held {
            s.applica(r.notizia);
        }
        Ok(Some(s))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use snodo_envelopes::{Envelope, Format, Profile, Recipient};
    use snodo_schemas::formats::{CodiceIstat, Elenco, Istante};
    use snodo_schemas::services::dati::Intervallo;
    use snodo_schemas::services::mobilita_viabilita::{Gravita, Luogo, MotivoFine, TipoEvento};

    use super::*;

    fn istante(s: &str) -> Istante {
        Istante::parse(s).unwrap()
    }

    fn evento(id: &str, versione: u32) -> Evento {
        Evento {
            id: id.into(),
            versione,
            tipo: TipoEvento::Chiusura,
            titolo: format!("{id} r{versione}"),
            descrizione: None,
            luoghi: Elenco::new(vec![Luogo {
                comune: CodiceIstat::parse("001090").unwrap(),
                strada: "Corso Francia".into(),
                da: None,
                a: None,
                coordinate: None,
            }])
            .unwrap(),
            periodo: Intervallo {
                inizio: istante("2026-03-02T08:00:00Z"),
                fine: None,
            },
            gravita: Gravita::Alta,
            pubblicato_il: istante("2026-03-02T09:00:00Z"),
        }
    }

    /// An envelope as the dispatcher hands it over (the signature is not looked at here).
    fn inbound(publisher: &str, notizia: &Notizia) -> Inbound {
        let (action, body) = match notizia {
            Notizia::Evento(e) => ("evento", serde_json::to_value(e).unwrap()),
            Notizia::Fine(f) => ("fine-evento", serde_json::to_value(f).unwrap()),
        };
        let envelope = Envelope::builder(
            publisher.parse().unwrap(),
            Recipient::Broadcast,
            SERVICE,
            action,
        )
        .profile(Profile::Event)
        .json(body)
        .build()
        .unwrap();
        Inbound {
            envelope,
            raw: bytes::Bytes::new(),
            format: Format::Json,
        }
    }

    /// Handles `inbound` as the dispatcher would, applying its effects.
    fn deliver(store: &Store, a: &Abbonato, inbound: &Inbound) {
        let mut effects = Effects::default();
        match inbound.envelope.header.action.as_str() {
            "evento" => a.on_evento(inbound, &mut effects).unwrap(),
            _ => a.on_fine(inbound, &mut effects).unwrap(),
        }
        store.apply(effects.update).unwrap();
    }

    #[test]
    fn ids_with_slashes_stay_apart_and_superseded_revisions_are_dropped() {
        let store = Store::temporary().unwrap();
        let a = Abbonato::open(&store).unwrap();
        for n in [
            Notizia::Evento(evento("a", 1)),
            Notizia::Evento(evento("a/v0000000002", 1)),
            Notizia::Evento(evento("a%2F", 1)),
            Notizia::Evento(evento("a", 2)),
            Notizia::Evento(evento("a", 1)),
        ] {
            deliver(&store, &a, &inbound("comune:001272", &n));
        }
        let ids: Vec<(String, u32)> = a
            .attivi(&Filtro::tutti())
            .unwrap()
            .into_iter()
            .map(|v| (v.evento.id, v.evento.versione))
            .collect();
        assert_eq!(
            ids,
            [
                ("a".to_owned(), 2),
                ("a%2F".to_owned(), 1),
                ("a/v0000000002".to_owned(), 1)
            ]
        );
        // One key per event: revision 1 of `a` went when revision 2 came.
        assert_eq!(a.notizie.len(), 3);
    }

    proptest! {
        /// The stored board, fed a publisher's messages in any order and some twice, is the
        /// board of the same messages in publication order.
        #[test]
        fn the_stored_board_is_the_same_in_any_delivery_order(
            (history, order) in prop::collection::vec((0..3usize, 1..4u32, any::<bool>()), 1..5)
                .prop_map(|events| {
                    let mut out = Vec::new();
                    for (i, (id, revisions, ended)) in events.into_iter().enumerate() {
                        let publisher = if i % 2 == 0 { "comune:001272" } else { "provincia:TO" };
                        let id = format!("E{id}");
                        for v in 1..=revisions {
                            out.push((publisher, Notizia::Evento(evento(&id, v))));
                        }
                        if ended {
                            out.push((publisher, Notizia::Fine(FineEvento {
                                id,
                                motivo: MotivoFine::Concluso,
                                il: istante("2026-03-03T09:00:00Z"),
                            })));
                        }
                    }
                    out
                })
                .prop_flat_map(|h| {
                    let n = h.len();
                    let order = (0..2 * n).map(|i| i % n).collect::<Vec<_>>();
                    (Just(h), Just(order).prop_shuffle())
                })
        ) {
            let mut expected = Bacheca::new();
            for (p, n) in &history {
                expected.applica(&p.parse().unwrap(), n.clone());
            }
            let store = Store::temporary().unwrap();
            let a = Abbonato::open(&store).unwrap();
            for i in order {
                let (p, n) = &history[i];
                deliver(&store, &a, &inbound(p, n));
            }
            prop_assert_eq!(a.bacheca().unwrap(), expected);
        }
    }
}
