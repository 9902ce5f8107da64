//! The shipper as a local relay: text protocols other programs already speak, turned into points
//! that go through the same pipeline (rates, tags, batching, spool). One pure parser per protocol;
//! [`server`] holds the listeners and their limits.

pub mod graphite;
pub mod line_protocol;
pub mod opentsdb_json;
pub mod server;
pub mod telnet;
