//! `anagrafe.variazioni`, the registry feed: the connector side of the comune that sends its
//! registry variations as numbered batches and of the registry that applies them in order —
//! a trait per role and the routes that turn envelopes into calls on it.
//!
//! A comune sends `lotto` 1, 2, 3… (a sequence per comune); the registry answers each with
//! `lotto-esito` (applied, already applied, out of sequence) and, for a gap, sends
//! `richiesta-reinvio`, which the comune answers by sending the missing batches again. A full
//! load comes as `caricamento-iniziale` parts, each answered by `caricamento-esito`.

use std::sync::Arc;

use snodo_schemas::services::anagrafe_variazioni::{
    CaricamentoEsito, CaricamentoIniziale, Lotto, LottoEsito, RichiestaReinvio,
};
use tokio::sync::Notify;

use crate::client::HubClient;
use crate::dispatch::DispatcherBuilder;
use crate::inbound::Inbound;
use crate::residenza_cambio::Result;
use crate::service::route;

/// A comune that sends its variations.
pub trait Mittente: Send + Sync + 'static {
    /// The registry's answer to a batch.
    fn lotto_esito(&self, m: &Inbound, e: LottoEsito) -> Result;
    /// The registry misses batches: send them again.
    fn richiesta_reinvio(&self, m: &Inbound, r: RichiestaReinvio) -> Result;
    /// The registry's answer to a part of the initial load.
    fn caricamento_esito(&self, m: &Inbound, e: CaricamentoEsito) -> Result;
}

/// The registry that receives the feed.
pub trait Registro: Send + Sync + 'static {
    /// A numbered batch of variations.
    fn lotto(&self, m: &Inbound, l: Lotto) -> Result;
    /// A part of a comune's full load.
    fn caricamento_iniziale(&self, m: &Inbound, c: CaricamentoIniziale) -> Result;
}

/// Routes a sending comune's messages to `bo`.
#[must_use]
pub fn install_mittente(
    bo: &Arc<dyn Mittente>,
    client: &HubClient,
    committed: Option<Arc<Notify>>,
    b: DispatcherBuilder,
) -> DispatcherBuilder {
    let x = bo.clone();
    let b = route(b, client, committed.clone(), move |m, e| {
        x.lotto_esito(m, e)
    });
    let x = bo.clone();
    let b = route(b, client, committed.clone(), move |m, r| {
        x.richiesta_reinvio(m, r)
    });
    let x = bo.clone();
    route(b, client, committed, move |m, e| x.caricamento_esito(m, e))
}

/// Routes the registry's messages to `bo`.
#[must_use]
pub fn install_registro(
    bo: &Arc<dyn Registro>,
    client: &HubClient,
    b: DispatcherBuilder,
) -> DispatcherBuilder {
    let x = bo.clone();
    let b = route(b, client, None, move |m, l| x.lotto(m, l));
    let x = bo.clone();
    route(b, client, None, move |m, c| x.caricamento_iniziale(m, c))
}
