//! What the tax and payment back offices add to [`crate::service`] (whose `read` and `retry`
//! they use): handlers that are plain functions of a back office staging the dispatcher's
//! [`Effects`] with envelopes, requests that wait for their answer (the comune asking the
//! provider for a NAV, the portal asking for a calculation), and envelopes sent on a back
//! office's own initiative through the durable outbox; and how a back office tells the
//! envelopes that are its own from those of the other back offices of its entity (the
//! requests it awaits, the positions it created), declining the rest ([`Answers`],
//! [`solo_proprie`], [`rendicontazione`]). [`Sender::commit`] is the envelope-level
//! twin of [`crate::service::Committer::commit`], which takes typed `Invio`s; the two should
//! become one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use snodo_envelopes::{Body, EntityId, Envelope, Profile, Recipient};
use snodo_schemas::Payload;

use crate::Handler;
use crate::client::{Answer, HubClient};
use crate::dispatch::{Effects, HandlerError, OUTBOX_TREE, Outgoing};
use crate::inbound::{BoxFuture, Inbound};
use crate::store::{Store, StoreError, Tree, Update};

/// How long a request waits for its answer at the hub.
pub const WAIT: Duration = Duration::from_secs(10);

/// An envelope from `client`'s entity to `to` carrying `value` as its JSON body.
///
/// # Errors
/// A message when the value breaks its schema or the header its rules.
pub fn message<T: Payload>(
    client: &HubClient,
    to: &EntityId,
    profile: Profile,
    conversation: Option<&str>,
    in_reply_to: Option<uuid::Uuid>,
    value: &T,
) -> Result<Envelope, String> {
    let body: Value = snodo_schemas::to_json(value).map_err(|e| e.to_string())?;
    let mut b = client
        .envelope(Recipient::Entity(to.clone()), T::SERVICE, T::ACTION)
        .profile(profile)
        .json(body);
    if let Some(c) = conversation {
        b = b.conversation(c.to_owned());
    }
    if let Some(id) = in_reply_to {
        b = b.in_reply_to(id);
    }
    b.build().map_err(|e| e.to_string())
}

/// The response to `inbound` carrying `value`, in its conversation.
///
/// # Errors
/// [`HandlerError::Reject`] when the answer cannot be built (a defect: the value breaks its
/// schema).
pub fn reply<T: Payload>(
    client: &HubClient,
    inbound: &Inbound,
    value: &T,
) -> Result<Envelope, HandlerError> {
    let h = &inbound.envelope.header;
    message(
        client,
        &h.sender,
        Profile::Response,
        Some(&h.conversation),
        Some(h.id),
        value,
    )
    .map_err(HandlerError::Reject)
}

/// A handler that is a function of a back office: it reads the envelope and stages its effects.
pub struct Route<B: Send + Sync + 'static> {
    back_office: Arc<B>,
    run: fn(&B, &Inbound, &mut Effects) -> Result<(), HandlerError>,
    /// Runs once the effects are durable (and on every redelivery): it must be idempotent.
    committed: Option<fn(&B)>,
}

impl<B: Send + Sync + 'static> std::fmt::Debug for Route<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").finish_non_exhaustive()
    }
}

impl<B: Send + Sync + 'static> Route<B> {
    /// The handler that runs `run` on `back_office`.
    pub fn handler(
        back_office: &Arc<B>,
        run: fn(&B, &Inbound, &mut Effects) -> Result<(), HandlerError>,
    ) -> Arc<dyn Handler> {
        Arc::new(Route {
            back_office: back_office.clone(),
            run,
            committed: None,
        })
    }

    /// As [`Route::handler`], and `committed` runs once the effects are durable (to wake a
    /// task that waits for what the handler stored); it must be idempotent.
    pub fn handler_then(
        back_office: &Arc<B>,
        run: fn(&B, &Inbound, &mut Effects) -> Result<(), HandlerError>,
        committed: fn(&B),
    ) -> Arc<dyn Handler> {
        Arc::new(Route {
            back_office: back_office.clone(),
            run,
            committed: Some(committed),
        })
    }
}

impl<B: Send + Sync + 'static> Handler for Route<B> {
    fn handle<'a>(
        &'a self,
        inbound: &'a Inbound,
        effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move { (self.run)(&self.back_office, inbound, effects) })
    }

    fn committed<'a>(&'a self, _inbound: &'a Inbound) -> BoxFuture<'a, Result<(), HandlerError>> {
        if let Some(f) = self.committed {
            f(&self.back_office);
        }
        Box::pin(async { Ok(()) })
    }
}

/// Sends envelopes on a back office's own initiative: signed, put in the connector's outbox
/// atomically with the back office's state changes, then submitted (the dispatcher's outbox
/// pass resubmits whatever the hub did not receipt: a duplicate it recognises).
#[derive(Clone, Debug)]
pub struct Sender {
    client: HubClient,
    store: Store,
    outbox: Tree<Outgoing>,
}

impl Sender {
    /// A sender for `client`'s entity, keeping its outbox in `store`.
    ///
    /// # Errors
    /// [`StoreError`] when the outbox cannot be opened.
    pub fn new(client: HubClient, store: Store) -> Result<Self, StoreError> {
        Ok(Sender {
            outbox: store.tree(OUTBOX_TREE)?,
            client,
            store,
        })
    }

    /// The hub client.
    #[must_use]
    pub fn client(&self) -> &HubClient {
        &self.client
    }

    /// Applies `effects` (state changes and envelopes to send) atomically, flushed, then
    /// submits the envelopes.
    ///
    /// # Errors
    /// A message when an envelope cannot be signed or the store fails; nothing was applied.
    /// A hub that does not receipt is not an error: the envelope stays in the outbox.
    pub async fn commit(&self, effects: Effects) -> Result<(), String> {
        let mut update = Update::new();
        let mut signed = Vec::new();
        for e in &effects.outgoing {
            let s = self.client.sign(e).map_err(|e| e.to_string())?;
            update
                .put(&self.outbox, &s.id.to_string(), &Outgoing::of(&s)?)
                .map_err(|e| e.to_string())?;
            signed.push(s);
        }
        update.extend(effects.update);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.apply(update))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        crate::dispatch::submit_outgoing(&self.client, &self.outbox, &signed).await;
        Ok(())
    }

    /// Sends the request `envelope` and waits for its answer, read as `R`: from the hub
    /// directly when it comes within [`WAIT`], else from `answers` (where the back office's
    /// handler keeps answers that reached the inbox) for up to `patience`. The request is
    /// marked as awaited in `answers` (durably, before it is sent), which is how that handler
    /// knows the answer as this back office's among the entity's others.
    ///
    /// # Errors
    /// A message when the hub refuses the request, the answer is not an `R`, or none came.
    pub async fn ask<R: Payload>(
        &self,
        envelope: &Envelope,
        answers: &Tree<Value>,
        patience: Duration,
    ) -> Result<R, String> {
        let id = envelope.header.id;
        // Marked before it is sent, so that the answer, whenever it reaches the inbox, is
        // known as this back office's (see [`Answers`]).
        let (tree, store) = (answers.clone(), self.store.clone());
        tokio::task::spawn_blocking(move || {
            tree.put(&awaited(id), &Value::Null)
                .and_then(|()| store.flush())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        match self
            .client
            .request(envelope, WAIT)
            .await
            .map_err(|e| e.to_string())?
        {
            Answer::Response { response, .. } => {
                crate::service::read::<R>(&response).map_err(|e| e.to_string())
            }
            Answer::Pending { .. } => {
                let until = tokio::time::Instant::now() + patience;
                loop {
                    if let Some(v) = answers.get(&id.to_string()).map_err(|e| e.to_string())? {
                        return kept::<R>(&v).map_err(|e| e.to_string());
                    }
                    if tokio::time::Instant::now() >= until {
                        return Err(format!(
                            "no answer to request {id} yet; it will be taken when it comes"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Reads an answer [`Answers`] kept, as `R`: an XML body is kept as its text, a JSON one as
/// itself.
fn kept<R: Payload>(v: &Value) -> Result<R, snodo_schemas::Error> {
    match v {
        Value::String(xml) => snodo_schemas::from_xml::<R>(xml),
        v => snodo_schemas::from_json::<R>(v),
    }
}

/// The key under which [`Sender::ask`] marks request `id` as awaited in its answers tree.
fn awaited(id: uuid::Uuid) -> String {
    format!("attesa/{id}")
}

/// Who decides that a position (an IUPD) is a back office's own, from its durable state.
type Owns = dyn Fn(&str) -> Result<bool, StoreError> + Send + Sync;

/// A handler that keeps the answers of a back office's requests under the id of the
/// request each answers, for [`Sender::ask`] to find. It takes only what is its own: an
/// answer to a request [`Sender::ask`] marked as awaited in the same tree, or (built with
/// [`Answers::for_positions`]) a message of the payment provider about a position the back
/// office created; it declines anything else, which is another back office's of the same
/// entity (see [`crate::dispatch`]).
pub struct Answers {
    tree: Tree<Value>,
    owns: Option<Box<Owns>>,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers")
            .field("tree", &self.tree.name())
            .field("positions", &self.owns.is_some())
            .finish()
    }
}

impl Answers {
    /// The handler keeping, in `tree`, the answers to the requests sent with
    /// [`Sender::ask`] on it.
    pub fn handler(tree: Tree<Value>) -> Arc<dyn Handler> {
        Arc::new(Answers { tree, owns: None })
    }

    /// As [`Answers::handler`], and it takes too the provider's messages about the positions
    /// `owns` says are the back office's (the answer to a request sent from a handler, a
    /// oneway `posizione-stato`): kept when they answer a request, else only logged.
    pub fn for_positions(
        tree: Tree<Value>,
        owns: impl Fn(&str) -> Result<bool, StoreError> + Send + Sync + 'static,
    ) -> Arc<dyn Handler> {
        Arc::new(Answers {
            tree,
            owns: Some(Box::new(owns)),
        })
    }

    /// Whether `inbound` is this back office's.
    fn is_own(&self, inbound: &Inbound) -> Result<bool, HandlerError> {
        if let Some(to) = inbound.envelope.header.in_reply_to
            && self
                .tree
                .contains(&awaited(to))
                .map_err(crate::service::retry)?
        {
            return Ok(true);
        }
        match (&self.owns, posizione_di(inbound)?) {
            (Some(owns), Some(iupd)) => owns(&iupd).map_err(crate::service::retry),
            _ => Ok(false),
        }
    }
}

impl Handler for Answers {
    fn handle<'a>(
        &'a self,
        inbound: &'a Inbound,
        effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let h = &inbound.envelope.header;
            if !self.is_own(inbound)? {
                return Err(HandlerError::Decline(format!(
                    "{}/{} answers no request of this back office and names none of its positions",
                    h.service, h.action
                )));
            }
            let Some(to) = h.in_reply_to else {
                tracing::debug!(envelope_id = %h.id, service = %h.service, action = %h.action, "A message about one of this office's positions; noted.");
                return Ok(());
            };
            // Kept as it came: a JSON body as itself, an XML one as its text (a JSON string,
            // which no message's JSON form is); [`kept`] reads either.
            let kept = match &inbound.envelope.body {
                Body::Json(v) => v.clone(),
                Body::Xml(x) => Value::String(x.clone()),
            };
            effects
                .update
                .put(&self.tree, &to.to_string(), &kept)
                .map_err(crate::service::retry)?;
            Ok(())
        })
    }
}

/// The position (IUPD) a message of the payment provider to a creditor is about: a
/// `ricevuta`, `posizione-creata`, `posizione-esito` or `posizione-stato`; none for any other
/// message.
///
/// # Errors
/// [`HandlerError::Reject`] when the body is not the message its action names.
pub fn posizione_di(inbound: &Inbound) -> Result<Option<String>, HandlerError> {
    use snodo_schemas::services::pagamenti as p;
    let h = &inbound.envelope.header;
    if h.service != "pagamenti" {
        return Ok(None);
    }
    Ok(match h.action.as_str() {
        "ricevuta" => Some(crate::service::read::<p::Ricevuta>(inbound)?.iupd),
        "posizione-creata" => Some(crate::service::read::<p::PosizioneCreata>(inbound)?.iupd),
        "posizione-esito" => Some(crate::service::read::<p::PosizioneEsito>(inbound)?.iupd),
        "posizione-stato" => Some(crate::service::read::<p::PosizioneStato>(inbound)?.iupd),
        _ => None,
    })
}

/// Declines `inbound` unless `own`: the message is about position `iupd`, which this office
/// did not create (another office of the same entity did).
///
/// # Errors
/// [`HandlerError::Decline`] naming the position and the office.
pub fn solo_proprie(own: bool, iupd: &str, office: &str) -> Result<(), HandlerError> {
    if own {
        Ok(())
    } else {
        Err(HandlerError::Decline(format!(
            "position {iupd} is not one of the {office}'s"
        )))
    }
}

/// Takes a creditor office's part of a settlement flow: of the payments `inbound` lists,
/// those whose IUV is in `own` (the notices the office created) are recorded in `reported`
/// (IUV → flow id) and the route's other offices are offered the rest ([`Effects::take_part`]).
/// Returns how many of the office's payments it listed.
///
/// # Errors
/// [`HandlerError::Decline`] when the flow lists none of the office's notices;
/// [`HandlerError::Reject`] when the body is no flow or the sender not `nodo`;
/// [`HandlerError::Retry`] when the store fails.
pub fn rendicontazione(
    inbound: &Inbound,
    nodo: &EntityId,
    own: &std::collections::HashSet<String>,
    reported: &Tree<String>,
    effects: &mut Effects,
    office: &str,
) -> Result<usize, HandlerError> {
    let flow: snodo_schemas::services::pagamenti::Rendicontazione = crate::service::read(inbound)?;
    let mut listed = 0usize;
    for p in flow.pagamenti.iter() {
        let iuv = p.iuv.as_str();
        if own.contains(iuv) {
            listed += 1;
            effects
                .update
                .put(reported, iuv, &flow.id_flusso)
                .map_err(crate::service::retry)?;
        }
    }
    if listed == 0 {
        return Err(HandlerError::Decline(format!(
            "flow {} lists no notice of the {office}",
            flow.id_flusso
        )));
    }
    if inbound.sender() != nodo {
        return Err(HandlerError::Reject(format!(
            "a settlement flow from {}, not from the payment provider",
            inbound.sender()
        )));
    }
    effects.take_part();
    tracing::info!(flow = %flow.id_flusso, payments = listed, office, "Settlement flow: the office's payments reported.");
    Ok(listed)
}
