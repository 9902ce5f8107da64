//! The shipper: the only PuyPuy process that talks to the backend. It receives frames from the
//! producers on a Unix socket ([`receive`]), turns counters into rates ([`rate`]) and batches them
//! ([`batch`]), adds the host's tags ([`tags`]) and delivers with retries, spooling and replay
//! ([`delivery`], [`spool`], [`rejected`], [`transport`]) through one pure encoder per backend
//! ([`backends`]), to every output and, for a Carbon cluster, to the caches carbon's ring names
//! ([`route`], [`ring`], [`balance`]). Acks go back to the producers through [`ack`]; [`stats`] counts it all.

pub mod ack;
pub mod backends;
pub mod balance;
pub mod batch;
#[cfg(test)]
mod conservation_tests;
pub mod delivery;
pub mod exposition;
#[cfg(test)]
mod fake_transport;
pub mod forward;
mod linger;
pub mod rate;
pub mod receive;
pub mod rejected;
pub mod relay;
pub mod remote_write;
pub mod ring;
pub mod route;
pub mod self_metrics;
pub mod send;
pub mod spool;
pub mod stats;
pub mod tags;
pub mod tls;
pub mod transport;
pub mod wait;
