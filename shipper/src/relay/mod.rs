//! The shipper as a local relay: text protocols other programs already speak, turned into points
//! that go through the same pipeline (rates, tags, batching, spool). One pure parser per protocol;
//! one file per transport ([`tcp`], [`udp`], [`http`]); [`inputs`] starts them and counts. StatsD
//! is aggregated before it becomes points: parser [`statsd`], aggregation [`statsd_aggregate`]
//! (both pure), sockets and flushes in `statsd_input`. Every network input has a door: `allow`
//! (checked in each transport), TLS ([`crate::tls`]) and, for HTTP, credentials ([`auth`], pure).

pub mod auth;
pub mod frames;
pub mod graphite;
mod http;
pub mod inputs;
pub mod line_protocol;
pub mod opentsdb_json;
pub mod statsd;
pub mod statsd_aggregate;
mod statsd_input;
mod tcp;
pub mod telnet;
mod udp;

pub use inputs::{start, InputStats, StatsdStats};
