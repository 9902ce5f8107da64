//! One pure encoder per backend: points in, bytes out, no I/O. Each file documents the exact wire
//! format and how names and tags are cleaned to the characters its backend accepts.

pub mod carbon;
pub mod influxdb;
pub mod influxdb2;
pub mod kairosdb;
pub mod opentsdb;
pub mod prometheus;
pub mod puypuy;
pub mod remote_write;
mod tsdb_json;
