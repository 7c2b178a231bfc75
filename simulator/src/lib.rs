//! `snodo-sim`: the Piedmont federation in motion — its members from the reference list of
//! comuni, their PKI and hub configuration ([`federation`]), the hub placed in this process,
//! in child processes or elsewhere ([`hub`]), pure load ([`bench`], [`load`]) and the checks
//! every run ends with ([`invariants`]), reported as a table or JSON ([`summary`]).

pub mod bench;
pub mod chaos;
pub mod comuni;
pub mod federation;
pub mod hub;
pub mod invariants;
pub mod load;
pub mod options;
pub mod population;
pub mod process;
pub mod rabbit;
pub mod report;
pub mod run;
pub mod scenario;
pub mod summary;
pub mod world;
