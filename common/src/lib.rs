//! Parts every PuyPuy process shares: the metric model ([`point`]), the `config.ini` loader and
//! validator ([`config`]), the frame format spoken on the shipper's Unix socket ([`frame`]), the
//! producers' sender client ([`client`]), command-line handling ([`cli`]), logging ([`logging`])
//! and the host name as the old agent computed it ([`hostname`]).

pub mod cli;
pub mod client;
pub mod config;
pub mod frame;
pub mod hostname;
pub mod logging;
pub mod point;
pub mod producer;
pub mod schedule;

pub use config::{jmx, services, Config, ConfigError};
pub use point::{Point, Style, Value};
