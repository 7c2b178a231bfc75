//! The connector framework of snodo: what every citizen service needs on the client side of
//! the hub, generic over the services' message types.
//!
//! - [`client`]: the hub client — sign and submit with retries and verified receipts, wait
//!   for responses, lease, acknowledge and return inbox envelopes.
//! - [`push`]: the HTTPS endpoint where the hub pushes envelopes.
//! - [`inbound`]: incoming envelopes, verified before anything sees them.
//! - [`dispatch`]: the runtime — routing by service and action, acknowledgement after the
//!   durable effect, idempotence by envelope id, a durable outbox.
//! - [`clock`] and [`working_days`]: time that tests drive, and Italian working days.
//! - [`store`]: typed durable state in sled, with atomic multi-key updates; [`agenda`]:
//!   durable deadlines that fire on a clock; [`storia`]: a practice's states in time order,
//!   whatever the order they arrive in.
//! - [`catalog`]: the message types a connector checks before sending.
//! - [`mail`]: e-mail to officials, by SMTP or as `.eml` files.
//! - [`pagamenti`] and [`tributi`]: the payment provider and property tax (tax office and
//!   the portal's role), with [`typed`], what typed reference back offices share.
//! - [`contravvenzioni`]: traffic fines (the comune's police office, the prefecture and the
//!   portal's role), paid through [`pagamenti`].
//! - [`edilizia`]: building permits (the comune's building office and the portal's role),
//!   fees paid through [`pagamenti`].
//! - [`config`], [`adapter`] and [`connector`]: the `snodo-connector` program, which runs one
//!   entity's connectors with an adapter to the municipal system (`dir`, `http`, `reference`).
//! - [`service`]: typed messages between back offices and envelopes; the services
//!   [`residenza_cambio`] (change of residence) and [`anagrafe_variazioni`] (registry feed),
//!   each a trait per role; [`back_office`]: the reference back offices of every role.
//! - [`viabilita`]: roads and mobility news — the traffic office that publishes events, and
//!   the subscriber's board, correct in whatever order the hub delivers.
//! - [`ztl`]: limited-traffic-zone permits (the comune's ZTL office and the portal's role),
//!   checked with ANPR and the motor registry, the fee paid through [`pagamenti`].

pub mod adapter;
pub mod agenda;
pub mod anagrafe_variazioni;
pub mod back_office;
pub mod catalog;
pub mod client;
pub mod clock;
pub mod config;
pub mod connector;
pub mod contravvenzioni;
pub mod dispatch;
pub mod edilizia;
pub mod inbound;
pub mod mail;
pub mod pagamenti;
pub mod push;
pub mod residenza_cambio;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod storia;
pub mod tributi;
pub mod typed;
pub mod viabilita;
pub mod working_days;
pub mod ztl;

pub use client::{
    Answer, ClientError, Delivery, HubClient, HubClientConfig, RetryPolicy, Signed, Submitted,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use dispatch::{Dispatcher, Effects, Handler, HandlerError};
pub use inbound::{Inbound, Sink};
pub use store::{Store, Tree, Update};
