//! The registration point of the reference back offices: the back offices of every kind of
//! body (comune, ANPR, motor registry, payment provider, prefecture, portal) that apply
//! `DOMAIN.md`'s rules so that a federation can run without real municipal systems.
//!
//! Each back office of [`crate::back_office`] is listed in [`AVAILABLE`];
//! `adapter.kind = "reference"` in the configuration names one by `back_office` and gives
//! its data in `[adapter.data]` (a comune's street register, say).

use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use crate::back_office::{anpr, comune, data, motorizzazione, portale};
use crate::client::HubClient;
use crate::clock::SharedClock;
use crate::dispatch::DispatcherBuilder;
use crate::service::Committer;
use crate::shutdown::Shutdown;
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
    /// Its data, `[adapter.data]` of the configuration.
    pub data: serde_json::Value,
    /// Stops the tasks it starts (terms, mail).
    pub shutdown: Shutdown,
}

impl Context {
    fn committer(&self) -> Result<Committer, String> {
        Committer::new(self.client.clone(), self.store.clone()).map_err(|e| e.to_string())
    }
}

/// What a started back office gives the connector: its routes, and the tasks it runs.
pub type Installed = (DispatcherBuilder, Vec<JoinHandle<()>>);

/// A reference back office this build can run.
#[derive(Debug)]
pub struct ReferenceBackOffice {
    /// Its name in the configuration (`comune`, `anpr`…).
    pub name: &'static str,
    /// What it is, for `--help` and errors.
    pub description: &'static str,
    /// Checks its data, naming the field at fault.
    pub check: fn(&serde_json::Value) -> Result<(), String>,
    /// Registers its handlers (one per service and action it takes) on the dispatcher and
    /// starts its tasks.
    pub install: fn(&Context, DispatcherBuilder) -> Result<Installed, String>,
}

fn check<T: DeserializeOwned>(value: &serde_json::Value) -> Result<(), String> {
    data::<T>(value).map(|_| ())
}

fn install_comune(c: &Context, b: DispatcherBuilder) -> Result<Installed, String> {
    let bo = comune::Comune::new(c.committer()?, data(&c.data)?, c.clock.clone())?;
    let tasks = bo.start(c.shutdown.clone());
    Ok((bo.install(b), tasks))
}

fn install_anpr(c: &Context, b: DispatcherBuilder) -> Result<Installed, String> {
    let bo = anpr::Anpr::new(c.committer()?, data(&c.data)?, c.clock.clone())?;
    Ok((bo.install(b), Vec::new()))
}

fn install_motorizzazione(c: &Context, b: DispatcherBuilder) -> Result<Installed, String> {
    let dati: motorizzazione::DatiMotorizzazione = data(&c.data)?;
    let bo = motorizzazione::Motorizzazione::new(c.committer()?)?;
    bo.carica(&dati).map_err(|e| e.to_string())?;
    Ok((bo.install(b), Vec::new()))
}

fn install_portale(c: &Context, b: DispatcherBuilder) -> Result<Installed, String> {
    data::<Nessuno>(&c.data)?;
    let bo = portale::Portale::new(c.committer()?, c.clock.clone())?;
    Ok((bo.install(b), Vec::new()))
}

/// The data of a back office that takes none.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Nessuno {}

/// The reference back offices of this build.
pub const AVAILABLE: &[ReferenceBackOffice] = &[
    ReferenceBackOffice {
        name: "comune",
        description: "a comune: change of residence (arrival and departure, TARI, police check, \
                      the official's mail) and its registry feed",
        check: check::<comune::DatiComune>,
        install: install_comune,
    },
    ReferenceBackOffice {
        name: "anpr",
        description: "the population registry: registrations, annulments, the registry feed",
        check: check::<anpr::DatiAnpr>,
        install: install_anpr,
    },
    ReferenceBackOffice {
        name: "motorizzazione",
        description: "the motor registry: addresses of licences and vehicles, and the \
                      vehicles' registrations the ZTL offices check",
        check: check::<motorizzazione::DatiMotorizzazione>,
        install: install_motorizzazione,
    },
    ReferenceBackOffice {
        name: "portale",
        description: "the citizens' portal: declarations, observations, states",
        check: check::<Nessuno>,
        install: install_portale,
    },
    ReferenceBackOffice {
        name: "pagopa",
        description: "the payment provider (pagamenti): debt positions, notice numbers, \
                      verify, activate, outcome, receipts, settlement flows",
        check: crate::pagamenti::controlla,
        install: crate::pagamenti::install,
    },
    ReferenceBackOffice {
        name: "tributi",
        description: "a comune's tax office (tributi.imu): calculation, tax position, \
                      variations, discrepancy reports by mail, notices and assessments",
        check: check::<crate::tributi::ufficio::Impostazioni>,
        install: crate::tributi::ufficio::install,
    },
    ReferenceBackOffice {
        name: "edilizia",
        description: "a comune's building office (edilizia.permessi): submissions with checked \
                      documents, protocol, integrations, fees, silence-assent, SCIA checks",
        check: crate::edilizia::sportello::controlla,
        install: crate::edilizia::sportello::install,
    },
    ReferenceBackOffice {
        name: "portale-edilizia",
        description: "the portal acting for citizens in edilizia.permessi, paying fees \
                      (pagamenti)",
        check: check::<crate::edilizia::portale::Impostazioni>,
        install: crate::edilizia::portale::install,
    },
    ReferenceBackOffice {
        name: "portale-tributi",
        description: "the portal acting for citizens in tributi.imu, paying notices (pagamenti)",
        check: check::<crate::tributi::portale::Impostazioni>,
        install: crate::tributi::portale::install,
    },
    ReferenceBackOffice {
        name: "viabilita",
        description: "a comune's or province's traffic office (mobilita.viabilita): publishes \
                      the news declared in its data, keeps the board of the others' news",
        check: crate::viabilita::controlla_ufficio,
        install: crate::viabilita::install_ufficio,
    },
    ReferenceBackOffice {
        name: "bacheca-viabilita",
        description: "the board of mobility news (mobilita.viabilita) of a subscriber that \
                      publishes none: the portal",
        check: crate::viabilita::controlla_bacheca,
        install: crate::viabilita::install_bacheca,
    },
    ReferenceBackOffice {
        name: "polizia-locale",
        description: "a comune's municipal police office (mobilita.contravvenzioni): fines \
                      notified with their notices, lookups, payments, appeals, enforcement \
                      after 60 days",
        check: check::<crate::contravvenzioni::comando::Impostazioni>,
        install: crate::contravvenzioni::comando::install,
    },
    ReferenceBackOffice {
        name: "prefettura",
        description: "the prefecture (mobilita.contravvenzioni): appeals against fines decided \
                      within 120 days, silence accepting them; injunctions paid at the provider",
        check: check::<crate::contravvenzioni::prefettura::Impostazioni>,
        install: crate::contravvenzioni::prefettura::install,
    },
    ReferenceBackOffice {
        name: "portale-contravvenzioni",
        description: "the portal acting for citizens in mobilita.contravvenzioni: lookups, \
                      appeals, paying fines (pagamenti)",
        check: check::<crate::contravvenzioni::portale::Impostazioni>,
        install: crate::contravvenzioni::portale::install,
    },
    ReferenceBackOffice {
        name: "ztl",
        description: "a comune's ZTL office (mobilita.ztl): permits and renewals checked with \
                      ANPR and the motor registry, fees, requests for more information, the \
                      30-day decision, expiries and revocations",
        check: check::<crate::ztl::ufficio::Impostazioni>,
        install: crate::ztl::ufficio::install,
    },
    ReferenceBackOffice {
        name: "portale-ztl",
        description: "the portal acting for citizens in mobilita.ztl, paying fees (pagamenti)",
        check: check::<crate::ztl::portale::Impostazioni>,
        install: crate::ztl::portale::install,
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
    let names: Vec<&str> = AVAILABLE.iter().map(|b| b.name).collect();
    Err(format!(
        "`{name}` is not a reference back office of this build; available: {}",
        names.join(", ")
    ))
}
