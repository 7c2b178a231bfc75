//! The publisher's role, a comune's or province's traffic office: it publishes an event,
//! publishes each change as the next revision, and ends it (over, or withdrawn), as `event`
//! envelopes to `*` that the hub fans out to the topic's subscribers.
//!
//! Event ids (`YYYY-NNNNNN`, from a durable counter) and revisions are kept in the connector's
//! store and written in the same atomic update as the signed envelope in the outbox, so a
//! crash never reuses a revision nor loses a message: what the hub has not receipted is
//! submitted again, under the same envelope id. One operation runs at a time, so revisions of
//! an event follow each other without gaps. An event ended is not updated again: for the
//! subscribers, an end is final whatever order the messages reach them in.

use serde::{Deserialize, Serialize};
use snodo_envelopes::{Envelope, Format, Profile, Recipient};
use snodo_schemas::Payload;
use snodo_schemas::formats::Elenco;
use snodo_schemas::services::dati::Intervallo;
use snodo_schemas::services::mobilita_viabilita::{
    Evento, FineEvento, Gravita, Luogo, MotivoFine, TipoEvento,
};

use crate::back_office::istante;
use crate::client::HubClient;
use crate::clock::SharedClock;
use crate::dispatch::{OUTBOX_TREE, Outgoing};
use crate::service::ServiceError;
use crate::store::{Store, StoreError, Tree, Update};

/// An event as the office writes it, before it has an id and a revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bozza {
    /// What kind.
    pub tipo: TipoEvento,
    /// A headline.
    pub titolo: String,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descrizione: Option<String>,
    /// Where.
    pub luoghi: Elenco<Luogo, 1, 50>,
    /// When.
    pub periodo: Intervallo,
    /// How much it disrupts.
    pub gravita: Gravita,
}

impl Bozza {
    /// Whether `e` says what this draft says (its id, revision and time aside).
    #[must_use]
    pub fn uguale(&self, e: &Evento) -> bool {
        self.tipo == e.tipo
            && self.titolo == e.titolo
            && self.descrizione == e.descrizione
            && self.luoghi == e.luoghi
            && self.periodo == e.periodo
            && self.gravita == e.gravita
    }
}

/// What the office holds of an event it published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pubblicato {
    /// Its latest revision.
    pub evento: Evento,
    /// Its end, once published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine: Option<FineEvento>,
}

/// A comune's or province's traffic office.
pub struct Ufficio {
    client: HubClient,
    store: Store,
    clock: SharedClock,
    /// Event id → what was published of it.
    eventi: Tree<Pubblicato>,
    /// `eventi` → the last number given to an event.
    contatori: Tree<u64>,
    /// The office's own code of an event declared in its configuration → the event id.
    codici: Tree<String>,
    /// The connector's outbox, where envelopes wait for the hub's receipt.
    outbox: Tree<Outgoing>,
    /// One operation at a time: revisions and ids are read, then written.
    turno: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Ufficio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ufficio")
            .field("entity", self.client.entity())
            .finish_non_exhaustive()
    }
}

impl Ufficio {
    /// The office of `client`'s entity, keeping its events in `store`.
    ///
    /// # Errors
    /// [`StoreError`] when its trees cannot be opened.
    pub fn open(client: HubClient, store: Store, clock: SharedClock) -> Result<Self, StoreError> {
        Ok(Ufficio {
            eventi: store.tree("viabilita.eventi")?,
            contatori: store.tree("viabilita.contatori")?,
            codici: store.tree("viabilita.codici")?,
            outbox: store.tree(OUTBOX_TREE)?,
            client,
            store,
            clock,
            turno: tokio::sync::Mutex::new(()),
        })
    }

    /// The event `id` as published.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn evento(&self, id: &str) -> Result<Option<Pubblicato>, StoreError> {
        self.eventi.get(id)
    }

    /// Every event published, by id.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn eventi(&self) -> Result<Vec<Pubblicato>, StoreError> {
        Ok(self.eventi.scan("")?.into_iter().map(|(_, p)| p).collect())
    }

    /// Publishes `bozza` as a new event, revision 1.
    ///
    /// # Errors
    /// [`ServiceError::Message`] when it breaks the message's schema (naming the field);
    /// [`ServiceError::Hub`] when the hub refuses it (nothing is kept);
    /// [`ServiceError::Unreachable`] when it waits in the outbox (it is kept, and sent later);
    /// [`ServiceError::Store`] when nothing was done.
    pub async fn pubblica(&self, bozza: Bozza) -> Result<Evento, ServiceError> {
        self.pubblica_come(None, bozza).await
    }

    /// The event id of the office's own `codice`, once published under it.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub fn id_di(&self, codice: &str) -> Result<Option<String>, StoreError> {
        self.codici.get(codice)
    }

    /// As [`Ufficio::pubblica`]; the office's own `codice`, when given, is recorded with the
    /// event in the same update, so that [`Ufficio::id_di`] finds it after any crash (also
    /// when the hub was unreachable and the event waits in the outbox).
    ///
    /// # Errors
    /// [`ServiceError::Refused`] when `codice` names an event already; otherwise as
    /// [`Ufficio::pubblica`].
    pub async fn pubblica_come(
        &self,
        codice: Option<&str>,
        bozza: Bozza,
    ) -> Result<Evento, ServiceError> {
        let _turno = self.turno.lock().await;
        if let Some(c) = codice
            && let Some(id) = self.codici.get(c)?
        {
            return Err(ServiceError::Refused(format!(
                "`{c}` is event {id} already: update that one"
            )));
        }
        let n = self.contatori.get("eventi")?.unwrap_or(0) + 1;
        let now = self.clock.now();
        let id = format!("{}-{n:06}", now.year());
        if self.eventi.contains(&id)? {
            return Err(ServiceError::Refused(format!(
                "event {id} exists already: the counter of events went back"
            )));
        }
        let evento = self.redigi(id, 1, bozza)?;
        let mut update = Update::new();
        update.put(&self.contatori, "eventi", &n)?;
        if let Some(c) = codice {
            update.put(&self.codici, c, &evento.id)?;
        }
        self.invia(
            update,
            &evento.id,
            None,
            Pubblicato {
                evento: evento.clone(),
                fine: None,
            },
            &evento,
        )
        .await?;
        Ok(evento)
    }

    /// Publishes `bozza` as the next revision of event `id`.
    ///
    /// # Errors
    /// [`ServiceError::Refused`] for an event unknown or already ended; otherwise as
    /// [`Ufficio::pubblica`].
    pub async fn aggiorna(&self, id: &str, bozza: Bozza) -> Result<Evento, ServiceError> {
        let _turno = self.turno.lock().await;
        let held = self.aperto(id)?;
        let versione = held.evento.versione.checked_add(1).ok_or_else(|| {
            ServiceError::Refused(format!("event {id} has had every revision it can"))
        })?;
        let evento = self.redigi(id.to_owned(), versione, bozza)?;
        self.invia(
            Update::new(),
            id,
            Some(held),
            Pubblicato {
                evento: evento.clone(),
                fine: None,
            },
            &evento,
        )
        .await?;
        Ok(evento)
    }

    /// Ends event `id`: over, or withdrawn.
    ///
    /// # Errors
    /// As [`Ufficio::aggiorna`].
    pub async fn termina(&self, id: &str, motivo: MotivoFine) -> Result<FineEvento, ServiceError> {
        let _turno = self.turno.lock().await;
        let held = self.aperto(id)?;
        let fine = FineEvento {
            id: id.to_owned(),
            motivo,
            il: istante(self.clock.now()).map_err(|e| ServiceError::Message(e.to_string()))?,
        };
        let next = Pubblicato {
            evento: held.evento.clone(),
            fine: Some(fine.clone()),
        };
        self.invia(Update::new(), id, Some(held), next, &fine)
            .await?;
        Ok(fine)
    }

    /// The event `id`, which must be published and not ended.
    fn aperto(&self, id: &str) -> Result<Pubblicato, ServiceError> {
        match self.eventi.get(id)? {
            None => Err(ServiceError::Refused(format!(
                "no event {id} was published here"
            ))),
            Some(p) if p.fine.is_some() => Err(ServiceError::Refused(format!(
                "event {id} has ended: publish a new event instead"
            ))),
            Some(p) => Ok(p),
        }
    }

    fn redigi(&self, id: String, versione: u32, b: Bozza) -> Result<Evento, ServiceError> {
        Ok(Evento {
            id,
            versione,
            tipo: b.tipo,
            titolo: b.titolo,
            descrizione: b.descrizione,
            luoghi: b.luoghi,
            periodo: b.periodo,
            gravita: b.gravita,
            pubblicato_il: istante(self.clock.now())
                .map_err(|e| ServiceError::Message(e.to_string()))?,
        })
    }

    /// Records `next` for event `id` with `update`, atomically with the signed envelope of
    /// `message` in the outbox, then submits it. When the hub refuses it, `previous` is put
    /// back (the id counter stays where it went: a gap in ids is harmless).
    async fn invia<T: Payload>(
        &self,
        mut update: Update,
        id: &str,
        previous: Option<Pubblicato>,
        next: Pubblicato,
        message: &T,
    ) -> Result<(), ServiceError> {
        let sequence = u64::from(next.evento.versione) + u64::from(next.fine.is_some());
        let envelope = annuncio(
            &self.client,
            &conversazione(&self.client, id),
            sequence,
            message,
        )?;
        let signed = self
            .client
            .sign(&envelope)
            .map_err(|e| ServiceError::Message(e.to_string()))?;
        update.put(&self.eventi, id, &next)?;
        update.put(
            &self.outbox,
            &signed.id.to_string(),
            &Outgoing::of(&signed).map_err(ServiceError::Message)?,
        )?;
        self.applica(update).await?;
        match self.client.submit_signed(&signed).await {
            Ok(_) => {
                self.outbox.remove(&signed.id.to_string())?;
                tracing::info!(envelope_id = %signed.id, event = id, versione = next.evento.versione, ended = next.fine.is_some(), "Mobility news published.");
                Ok(())
            }
            Err(e) if e.is_permanent() => {
                tracing::warn!(envelope_id = %signed.id, event = id, error = %e, "Mobility news refused by the hub; not kept.");
                let mut undo = Update::new();
                undo.remove(&self.outbox, &signed.id.to_string());
                match &previous {
                    Some(p) => undo.put(&self.eventi, id, p)?,
                    None => {
                        undo.remove(&self.eventi, id);
                        for (codice, of) in self.codici.scan("")? {
                            if of == id {
                                undo.remove(&self.codici, &codice);
                            }
                        }
                    }
                }
                self.applica(undo).await?;
                Err(ServiceError::Hub {
                    code: e.code().unwrap_or("refused").to_owned(),
                    detail: e.to_string(),
                })
            }
            Err(e) => {
                tracing::warn!(envelope_id = %signed.id, event = id, error = %e, "Mobility news kept in the outbox for the hub.");
                Err(ServiceError::Unreachable(e.to_string()))
            }
        }
    }

    async fn applica(&self, update: Update) -> Result<(), ServiceError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.apply(update))
            .await
            .map_err(|e| {
                ServiceError::Store(StoreError::Sled(sled::Error::Unsupported(e.to_string())))
            })??;
        Ok(())
    }
}

/// The conversation of every message about `client`'s event `id`.
fn conversazione(client: &HubClient, id: &str) -> String {
    format!("viabilita:{}:{id}", client.entity())
}

/// The `event` envelope to `*` carrying `message`, in the client's encoding (an XML envelope
/// carries the message's XML form); `sequence` orders the messages of one event.
///
/// # Errors
/// [`ServiceError::Message`] when the message breaks its schema or the header its rules.
pub fn annuncio<T: Payload>(
    client: &HubClient,
    conversation: &str,
    sequence: u64,
    message: &T,
) -> Result<Envelope, ServiceError> {
    let body = snodo_schemas::to_json(message).map_err(|e| ServiceError::Message(e.to_string()))?;
    let b = client
        .envelope(Recipient::Broadcast, T::SERVICE, T::ACTION)
        .profile(Profile::Event)
        .conversation(conversation.to_owned())
        .sequence(sequence);
    let b = match client.format() {
        Format::Json => b.json(body),
        Format::Xml => {
            let schema = snodo_schemas::Catalog::global()
                .get(T::SERVICE, T::ACTION)
                .ok_or_else(|| {
                    ServiceError::Message(format!(
                        "{}/{} is no message of the catalog",
                        T::SERVICE,
                        T::ACTION
                    ))
                })?;
            b.xml(
                schema
                    .json_to_xml(&body)
                    .map_err(|e| ServiceError::Message(e.to_string()))?,
            )
        }
    };
    b.build().map_err(|e| ServiceError::Message(e.to_string()))
}
