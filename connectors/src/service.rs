//! What the citizen services share between a back office and the hub: typed messages read
//! from verified envelopes, typed messages turned into envelopes, handlers that route one
//! message type to a back-office call, and the commit of work that no envelope started (a
//! deadline, an official's decision) with the envelopes it sends, through the durable outbox.

use std::sync::Arc;

use serde_json::Value;
use snodo_envelopes::{Body, EntityId, Envelope, Format, Profile, Recipient};
use snodo_schemas::Payload;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::client::HubClient;
use crate::dispatch::{DispatcherBuilder, Effects, Handler, HandlerError, OUTBOX_TREE, Outgoing};
use crate::inbound::{BoxFuture, Inbound};
use crate::store::{Store, StoreError, Tree, Update};

/// Why a back office could not do what it was asked outside an envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The request makes no sense in the state of the back office (an unknown practice, a
    /// decision on a practice not waiting for one): the message says what.
    #[error("{0}")]
    Refused(String),
    /// A message could not be built or signed.
    #[error("{0}")]
    Message(String),
    /// The hub refused a message: its problem code and detail.
    #[error("the hub refused the message ({code}): {detail}")]
    Hub {
        /// The hub's problem code (`body-schema-invalid`, `unknown-recipient`…).
        code: String,
        /// What the hub said.
        detail: String,
    },
    /// The hub could not be reached; the message stays in the outbox and is sent later.
    #[error("the hub is unreachable; the message will be sent later: {0}")]
    Unreachable(String),
}

impl ServiceError {
    /// Whether trying again later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, ServiceError::Store(_) | ServiceError::Unreachable(_))
    }
}

impl From<ServiceError> for HandlerError {
    fn from(e: ServiceError) -> Self {
        if e.is_retryable() {
            HandlerError::Retry(e.to_string())
        } else {
            HandlerError::Reject(e.to_string())
        }
    }
}

/// A store failure inside a handler: the envelope comes back later.
pub fn retry(e: StoreError) -> HandlerError {
    HandlerError::Retry(e.to_string())
}

/// One message a back office sends, before it is an envelope.
#[derive(Clone, Debug, PartialEq)]
pub struct Invio {
    /// To whom.
    pub to: EntityId,
    /// The service.
    pub service: &'static str,
    /// The action.
    pub action: &'static str,
    /// The body, checked against its schema.
    pub body: Value,
    /// The conversation (the practice) it belongs to.
    pub conversation: String,
    /// Request, response or oneway.
    pub profile: Profile,
    /// The envelope a response answers.
    pub in_reply_to: Option<Uuid>,
}

impl Invio {
    /// A oneway message `message` to `to` in `conversation`.
    ///
    /// # Errors
    /// [`ServiceError::Message`] when the message breaks its own schema (a value built in code
    /// that the schema is stricter about), naming the field.
    pub fn new<T: Payload>(
        to: &EntityId,
        conversation: &str,
        message: &T,
    ) -> Result<Invio, ServiceError> {
        let body =
            snodo_schemas::to_json(message).map_err(|e| ServiceError::Message(e.to_string()))?;
        Ok(Invio {
            to: to.clone(),
            service: T::SERVICE,
            action: T::ACTION,
            body,
            conversation: conversation.to_owned(),
            profile: Profile::Oneway,
            in_reply_to: None,
        })
    }

    /// The same message as a request.
    #[must_use]
    pub fn request(mut self) -> Invio {
        self.profile = Profile::Request;
        self
    }

    /// The same message as the response to envelope `id`.
    #[must_use]
    pub fn reply_to(mut self, id: Uuid) -> Invio {
        self.profile = Profile::Response;
        self.in_reply_to = Some(id);
        self
    }

    /// The envelope of this message from `client`'s entity; its body in the form of the
    /// client's envelopes (an XML envelope carries the message's XML form).
    ///
    /// # Errors
    /// [`ServiceError::Message`] when the header is invalid (a conversation that is not a
    /// token, say) or the body has no XML form.
    pub fn envelope(&self, client: &HubClient) -> Result<Envelope, ServiceError> {
        let b = client
            .envelope(
                Recipient::Entity(self.to.clone()),
                self.service,
                self.action,
            )
            .conversation(self.conversation.clone())
            .profile(self.profile);
        let mut b = match client.format() {
            Format::Json => b.json(self.body.clone()),
            Format::Xml => {
                let schema = snodo_schemas::Catalog::global()
                    .get(self.service, self.action)
                    .ok_or_else(|| {
                        ServiceError::Message(format!(
                            "{}/{} is no message of the catalog",
                            self.service, self.action
                        ))
                    })?;
                b.xml(
                    schema
                        .json_to_xml(&self.body)
                        .map_err(|e| ServiceError::Message(e.to_string()))?,
                )
            }
        };
        if let Some(id) = self.in_reply_to {
            b = b.in_reply_to(id);
        }
        b.build().map_err(|e| ServiceError::Message(e.to_string()))
    }
}

/// What a back office does in answer to a message, a deadline or an official: its state
/// changes, staged, and the messages it sends once they are durable.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Changes to the store, applied atomically with the outbox.
    pub update: Update,
    /// Messages to send.
    pub send: Vec<Invio>,
}

impl Outcome {
    /// Nothing to do.
    #[must_use]
    pub fn new() -> Self {
        Outcome::default()
    }

    /// Adds a message.
    pub fn send(&mut self, invio: Invio) {
        self.send.push(invio);
    }
}

/// Reads the body of a verified envelope as message `T`, in either form.
///
/// # Errors
/// [`HandlerError::Reject`] naming the fields at fault: such a body can never be processed.
pub fn read<T: Payload>(inbound: &Inbound) -> Result<T, HandlerError> {
    let parsed = match &inbound.envelope.body {
        Body::Json(v) => snodo_schemas::from_json::<T>(v),
        Body::Xml(x) => snodo_schemas::from_xml::<T>(x),
    };
    parsed.map_err(|e| HandlerError::Reject(e.to_string()))
}

/// A back-office call for one message type.
pub type Call<T> = dyn Fn(&Inbound, T) -> Result<Outcome, HandlerError> + Send + Sync;

/// The handler of one message type: reads the body as `T`, calls the back office, and turns
/// its outcome into the dispatcher's effects; `committed` (if any) is notified once they are
/// durable (a mail sender, say).
struct Typed<T> {
    client: HubClient,
    call: Box<Call<T>>,
    committed: Option<Arc<Notify>>,
}

impl<T: Payload + Send + Sync + 'static> Handler for Typed<T> {
    fn handle<'a>(
        &'a self,
        inbound: &'a Inbound,
        effects: &'a mut Effects,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let message = read::<T>(inbound)?;
            let outcome = (self.call)(inbound, message)?;
            for invio in &outcome.send {
                effects.send(invio.envelope(&self.client)?);
            }
            effects.update.extend(outcome.update);
            Ok(())
        })
    }

    fn committed<'a>(&'a self, _inbound: &'a Inbound) -> BoxFuture<'a, Result<(), HandlerError>> {
        if let Some(n) = &self.committed {
            n.notify_one();
        }
        Box::pin(async { Ok(()) })
    }
}

/// Routes message `T` to `call` on `builder`, sending what it answers from `client`.
#[must_use]
pub fn route<T: Payload + Send + Sync + 'static>(
    builder: DispatcherBuilder,
    client: &HubClient,
    committed: Option<Arc<Notify>>,
    call: impl Fn(&Inbound, T) -> Result<Outcome, HandlerError> + Send + Sync + 'static,
) -> DispatcherBuilder {
    builder.route(
        T::SERVICE,
        T::ACTION,
        Arc::new(Typed {
            client: client.clone(),
            call: Box::new(call),
            committed,
        }),
    )
}

/// Commits work that no envelope started — a deadline, an official's act — with what it
/// sends: the messages are signed and put in the connector's outbox in the same atomic,
/// flushed update as the state changes, then submitted (what the hub does not receipt now,
/// the connector's outbox drain sends later).
#[derive(Clone, Debug)]
pub struct Committer {
    client: HubClient,
    store: Store,
    outbox: Tree<Outgoing>,
}

impl Committer {
    /// A committer sending as `client` through `store`'s outbox.
    ///
    /// # Errors
    /// [`StoreError`] when the outbox tree cannot be opened.
    pub fn new(client: HubClient, store: Store) -> Result<Self, StoreError> {
        Ok(Committer {
            outbox: store.tree(OUTBOX_TREE)?,
            client,
            store,
        })
    }

    /// The client messages are sent with.
    #[must_use]
    pub fn client(&self) -> &HubClient {
        &self.client
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Applies `outcome` and sends its messages; returns their envelope ids.
    ///
    /// # Errors
    /// [`ServiceError::Store`] when nothing was applied; [`ServiceError::Hub`] when the hub
    /// refused a message (the state change stands: the refusal is the hub's answer to it);
    /// [`ServiceError::Unreachable`] when a message waits in the outbox.
    pub async fn commit(&self, outcome: Outcome) -> Result<Vec<Uuid>, ServiceError> {
        let mut update = outcome.update;
        let mut signed = Vec::new();
        for invio in &outcome.send {
            let s = self
                .client
                .sign(&invio.envelope(&self.client)?)
                .map_err(|e| ServiceError::Message(e.to_string()))?;
            update.put(
                &self.outbox,
                &s.id.to_string(),
                &Outgoing::of(&s).map_err(ServiceError::Message)?,
            )?;
            signed.push(s);
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.apply(update))
            .await
            .map_err(|e| {
                ServiceError::Store(StoreError::Sled(sled::Error::Unsupported(e.to_string())))
            })??;
        let ids = signed.iter().map(|s| s.id).collect();
        let mut first_error = None;
        for result in crate::dispatch::submit_outgoing(&self.client, &self.outbox, &signed).await {
            match result {
                Ok(_) => {}
                Err(e) if e.is_permanent() => {
                    first_error.get_or_insert(ServiceError::Hub {
                        code: e.code().unwrap_or("refused").to_owned(),
                        detail: e.to_string(),
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(ServiceError::Unreachable(e.to_string()));
                }
            }
        }
        self.store.flush()?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(ids),
        }
    }
}
