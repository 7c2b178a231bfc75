//! `residenza.cambio`, change of residence: the connector side of each body — which messages
//! each role takes, as a trait a municipal system implements, and the routes that turn
//! envelopes into calls on it.
//!
//! The exchange (`snodo_schemas::services::residenza_cambio` has the messages): the portal
//! sends a `dichiarazione` to the comune of arrival, which answers `esito` (refused, or
//! registered within 2 working days) and sends `registrazione` to ANPR; ANPR answers
//! `registrazione-esito`, sends `cancellazione` to the comune of departure and
//! `aggiornamento-motorizzazione` to the motor registry. The comune's police check within 45
//! days (silence confirms); a negative check sends the portal a `preavviso-rigetto`, the
//! citizen has 10 days for `osservazioni`, then the comune confirms or sends `annullamento` to
//! ANPR, which answers `annullamento-esito` and sends `ripristino` to the comune of departure.
//! Every change of state reaches the portal as `stato`.

use std::sync::Arc;

use snodo_schemas::services::residenza_cambio::{
    AggiornamentoMotorizzazione, Annullamento, AnnullamentoEsito, Cancellazione, Dichiarazione,
    Esito, Osservazioni, PreavvisoRigetto, Registrazione, RegistrazioneEsito, Ripristino, Stato,
};
use tokio::sync::Notify;

use crate::client::HubClient;
use crate::dispatch::{DispatcherBuilder, HandlerError};
use crate::inbound::Inbound;
use crate::service::{Outcome, route};

/// The result of a back-office call: what it changes and sends, or why not.
pub type Result = std::result::Result<Outcome, HandlerError>;

/// A comune, in both roles: arrival (declarations, the police check, observations, the
/// answers of ANPR) and departure (its people leave, or come back after an annulment).
pub trait Comune: Send + Sync + 'static {
    /// A citizen's declaration, from the portal.
    fn dichiarazione(&self, m: &Inbound, d: Dichiarazione) -> Result;
    /// ANPR applied (or not) a registration.
    fn registrazione_esito(&self, m: &Inbound, e: RegistrazioneEsito) -> Result;
    /// ANPR applied (or not) an annulment.
    fn annullamento_esito(&self, m: &Inbound, e: AnnullamentoEsito) -> Result;
    /// The citizen's observations on a rejection notice, from the portal.
    fn osservazioni(&self, m: &Inbound, o: Osservazioni) -> Result;
    /// Departure: these people now live in another comune.
    fn cancellazione(&self, m: &Inbound, c: Cancellazione) -> Result;
    /// Departure: an annulled move; these people are back.
    fn ripristino(&self, m: &Inbound, r: Ripristino) -> Result;
}

/// The population registry.
pub trait Anpr: Send + Sync + 'static {
    /// A comune registered people who moved.
    fn registrazione(&self, m: &Inbound, r: Registrazione) -> Result;
    /// A comune annulled a registration.
    fn annullamento(&self, m: &Inbound, a: Annullamento) -> Result;
}

/// The motor registry.
pub trait Motorizzazione: Send + Sync + 'static {
    /// New address of licence holders and vehicle owners.
    fn aggiornamento(&self, m: &Inbound, a: AggiornamentoMotorizzazione) -> Result;
}

/// The portal, acting for citizens.
pub trait Portale: Send + Sync + 'static {
    /// The comune registered or refused a declaration.
    fn esito(&self, m: &Inbound, e: Esito) -> Result;
    /// A practice changed state.
    fn stato(&self, m: &Inbound, s: Stato) -> Result;
    /// A rejection notice: the citizen may answer within its term.
    fn preavviso_rigetto(&self, m: &Inbound, p: PreavvisoRigetto) -> Result;
}

/// Routes a comune's messages to `bo`; `committed` is notified after each durable change.
#[must_use]
pub fn install_comune(
    bo: &Arc<dyn Comune>,
    client: &HubClient,
    committed: Option<Arc<Notify>>,
    b: DispatcherBuilder,
) -> DispatcherBuilder {
    let c = committed;
    let (x, b) = (bo.clone(), b);
    let b = route(b, client, c.clone(), move |m, d| x.dichiarazione(m, d));
    let x = bo.clone();
    let b = route(b, client, c.clone(), move |m, e| {
        x.registrazione_esito(m, e)
    });
    let x = bo.clone();
    let b = route(b, client, c.clone(), move |m, e| x.annullamento_esito(m, e));
    let x = bo.clone();
    let b = route(b, client, c.clone(), move |m, o| x.osservazioni(m, o));
    let x = bo.clone();
    let b = route(b, client, c.clone(), move |m, o| x.cancellazione(m, o));
    let x = bo.clone();
    route(b, client, c, move |m, r| x.ripristino(m, r))
}

/// Routes ANPR's messages to `bo`.
#[must_use]
pub fn install_anpr(
    bo: &Arc<dyn Anpr>,
    client: &HubClient,
    b: DispatcherBuilder,
) -> DispatcherBuilder {
    let x = bo.clone();
    let b = route(b, client, None, move |m, r| x.registrazione(m, r));
    let x = bo.clone();
    route(b, client, None, move |m, a| x.annullamento(m, a))
}

/// Routes the motor registry's messages to `bo`.
#[must_use]
pub fn install_motorizzazione(
    bo: &Arc<dyn Motorizzazione>,
    client: &HubClient,
    b: DispatcherBuilder,
) -> DispatcherBuilder {
    let x = bo.clone();
    route(b, client, None, move |m, a| x.aggiornamento(m, a))
}

/// Routes the portal's messages to `bo`.
#[must_use]
pub fn install_portale(
    bo: &Arc<dyn Portale>,
    client: &HubClient,
    b: DispatcherBuilder,
) -> DispatcherBuilder {
    let x = bo.clone();
    let b = route(b, client, None, move |m, e| x.esito(m, e));
    let x = bo.clone();
    let b = route(b, client, None, move |m, s| x.stato(m, s));
    let x = bo.clone();
    route(b, client, None, move |m, p| x.preavviso_rigetto(m, p))
}
