//! The registration point of the reference back offices: the back offices of every kind of
//! body (comune, ANPR, motor registry, payment provider, prefecture, portal) that apply
//! `DOMAIN.md`'s rules so that a federation can run without real municipal systems.
//!
//! A service module adds its back office to [`AVAILABLE`]; `adapter.kind = "reference"` in
//! the configuration names one by `back_office`. This build's services bring none yet, so the
//! list is empty and the configuration refuses every name with a message saying so.

use crate::client::HubClient;
use crate::clock::SharedClock;
use crate::dispatch::DispatcherBuilder;
use crate::store::Store;

/// What a reference back office is given when it starts.
#[derive(Clone, Debug)]
pub struct Context {
    /// The hub client of the entity it acts for.
    pub client: HubClient,
    /// The connector's store, for its durable state.
    pub store: Store,
    /// The clock its terms run on.
    pub clock: SharedClock,
    /// Its own settings (`[adapter.settings]`), `null` when none are given.
    pub settings: serde_json::Value,
    /// The connector's shutdown signal, for the tasks it starts.
    pub shutdown: crate::shutdown::Shutdown,
}

/// A reference back office this build can run.
#[derive(Debug)]
pub struct ReferenceBackOffice {
    /// Its name in the configuration (`comune`, `anpr`…).
    pub name: &'static str,
    /// What it is, for `--help` and errors.
    pub description: &'static str,
    /// Registers its handlers (one per service and action it takes) on the dispatcher.
    pub install: fn(&Context, DispatcherBuilder) -> Result<DispatcherBuilder, String>,
}

/// The reference back offices of this build.
pub const AVAILABLE: &[ReferenceBackOffice] = &[
    ReferenceBackOffice {
        name: "pagopa",
        description: "the payment provider (pagamenti): debt positions, notices, payments, receipts",
        install: crate::pagamenti::install,
    },
    ReferenceBackOffice {
        name: "tributi",
        description: "a comune's tax office (tributi.imu): calculation, tax position, variations, reports, notices",
        install: crate::tributi::ufficio::install,
    },
    ReferenceBackOffice {
        name: "portale-tributi",
        description: "the portal acting for citizens in tributi.imu and paying notices (pagamenti)",
        install: crate::tributi::portale::install,
    },
];

/// The reference back office called `name`.
///
/// # Errors
/// A message naming what exists (or that nothing does yet).
pub fn find(name: &str) -> Result<&'static ReferenceBackOffice, String> {
    if let Some(found) = AVAILABLE.iter().find(|b| b.name == name) {
        return Ok(found);
    }
    if AVAILABLE.is_empty() {
        return Err(format!(
            "no reference back office is available in this build (asked for `{name}`): they \
             arrive with the citizen services; use the `dir` or `http` adapter"
        ));
    }
    let names: Vec<&str> = AVAILABLE.iter().map(|b| b.name).collect();
    Err(format!(
        "`{name}` is not a reference back office of this build; available: {}",
        names.join(", ")
    ))
}
