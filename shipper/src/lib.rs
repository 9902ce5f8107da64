//! The shipper: the only PuyPuy process that talks to the backend. It receives frames from the
//! producers on a Unix socket ([`receive`]), turns counters into rates ([`rate`]), adds the host's
//! tags ([`tags`]), batches and delivers with retries ([`pipeline`], [`transport`]) through one pure
//! encoder per backend ([`backends`]).

pub mod backends;
pub mod pipeline;
pub mod rate;
pub mod receive;
pub mod relay;
pub mod self_metrics;
pub mod send;
pub mod spool;
pub mod tags;
pub mod transport;
