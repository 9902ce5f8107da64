//! Loading and validating `config.ini`, the old PuyPuy's file, read unchanged.
//!
//! The file is Python ConfigParser style: `key: value` or `key = value`, spaces around the separator,
//! `#`/`;` comment lines, backslashes and quotes kept verbatim, indented continuation lines. Every
//! process validates the *whole* file at start and every problem is reported at once with file,
//! section, key (or line, for a syntax error), the bad value and what was expected. Every optional
//! key has a default, listed in README.md.
//!
//! [`reader`] is the leaf every section's module builds on; [`load`] puts the sections together.

pub mod jmx;
pub mod load;
pub mod outputs;
pub mod reader;
pub mod relay;
pub mod self_config;
pub mod services;
pub mod tags;
pub mod tsdb;

pub use load::{print_values, Config, PRINTABLE_KEYS};
pub use outputs::{Balance, CarbonDestination, Hashing, Routing};
pub use reader::{parse_bool, parse_ini, resolve, split_instance, ConfigError, ConfigErrors, SectionReader};
pub use relay::{parse_listen, RelayConfig};
pub use self_config::{SelfConfig, SystemCheck};
pub use tsdb::{Backend, Tsdb};
