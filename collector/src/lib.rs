//! The collector: PuyPuy's built-in system checks, run on a fixed wall-clock schedule and handed
//! to the shipper through the sender client.

pub mod checks;
pub mod context;

#[cfg(test)]
mod snapshot_tests;

#[cfg(test)]
mod service_tests;
