//! The shipper as a local relay: text protocols other programs already speak, turned into points
//! that go through the same pipeline (rates, tags, batching, spool). One pure parser per protocol;
//! one file per transport ([`tcp`], [`udp`], [`http`]); [`inputs`] starts them and counts.

pub mod graphite;
mod http;
pub mod inputs;
pub mod line_protocol;
pub mod opentsdb_json;
mod tcp;
pub mod telnet;
mod udp;

pub use inputs::{start, InputStats};
