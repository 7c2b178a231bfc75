//! `mobilita.viabilita`, roads and mobility news: comuni and provinces publish events
//! (roadworks, closures, public events, traffic) with place, period and severity as `event`
//! envelopes; the hub fans each out to the topic's subscribers (the portal, the comuni, the
//! provinces), and delivers what a subscriber missed while it was down when it comes back.
//!
//! - [`ufficio`]: the publisher, a traffic office — publish, update (the next revision),
//!   end (over or withdrawn), with durable event ids and revisions;
//! - [`annunci`]: the news an office declares in its configuration, published at start;
//! - [`bacheca`]: the board of events per publisher, the same whatever order and however many
//!   times the messages arrive (revisions order it, not the delivery);
//! - [`abbonato`]: the subscriber, which keeps the board in the connector's store and lists
//!   the active events by area and time.
//!
//! Two reference back offices run them in `snodo-connector`: `viabilita` (a comune's or
//! province's traffic office, which publishes and keeps the board of the others' news) and
//! `bacheca-viabilita` (the board alone: the portal).

pub mod abbonato;
pub mod annunci;
pub mod bacheca;
pub mod ufficio;

pub use snodo_schemas::services::mobilita_viabilita::SERVICE;

use std::sync::Arc;

use crate::adapter::reference::{Context, Installed};
use crate::back_office::data;
use crate::dispatch::DispatcherBuilder;

/// Checks the data of the `viabilita` back office.
///
/// # Errors
/// A message naming the field at fault.
pub fn controlla_ufficio(value: &serde_json::Value) -> Result<(), String> {
    data::<annunci::Impostazioni>(value)?.controlla()
}

/// `snodo-connector`'s `viabilita`: the traffic office of the entity — its board of the
/// others' news, and a task that publishes what `[adapter.data]` declares.
///
/// # Errors
/// A message naming what is wrong with the data or the store.
pub fn install_ufficio(ctx: &Context, builder: DispatcherBuilder) -> Result<Installed, String> {
    let impostazioni: annunci::Impostazioni = data(&ctx.data)?;
    impostazioni.controlla()?;
    let abbonato = abbonato::Abbonato::open(&ctx.store).map_err(|e| e.to_string())?;
    let ufficio = Arc::new(
        ufficio::Ufficio::open(ctx.client.clone(), ctx.store.clone(), ctx.clock.clone())
            .map_err(|e| e.to_string())?,
    );
    let shutdown = ctx.shutdown.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = annunci::allinea_tutti(&ufficio, &impostazioni.annunci) => {}
            () = crate::shutdown::stopped(shutdown) => {}
        }
    });
    Ok((abbonato.install(builder), vec![task]))
}

/// Checks the data of the `bacheca-viabilita` back office (it takes none).
///
/// # Errors
/// A message naming the unknown field.
pub fn controlla_bacheca(value: &serde_json::Value) -> Result<(), String> {
    data::<Nessuno>(value).map(|_| ())
}

/// `snodo-connector`'s `bacheca-viabilita`: the board of every publisher's news.
///
/// # Errors
/// A message when the data is not empty or the store fails.
pub fn install_bacheca(ctx: &Context, builder: DispatcherBuilder) -> Result<Installed, String> {
    data::<Nessuno>(&ctx.data)?;
    let abbonato = abbonato::Abbonato::open(&ctx.store).map_err(|e| e.to_string())?;
    Ok((abbonato.install(builder), Vec::new()))
}

/// The data of a back office that takes none.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Nessuno {}
