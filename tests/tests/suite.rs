//! The integration suite: the real PuyPuy binaries against real servers on loopback.

#[path = "suite/backends.rs"]
mod backends;
#[path = "suite/bench.rs"]
mod bench;
#[path = "suite/config_errors.rs"]
mod config_errors;
#[path = "suite/destinations.rs"]
mod destinations;
#[path = "suite/differential.rs"]
mod differential;
#[path = "suite/doors.rs"]
mod doors;
#[path = "suite/faults.rs"]
mod faults;
#[path = "suite/fleet.rs"]
mod fleet;
#[path = "suite/jmx.rs"]
mod jmx;
#[path = "suite/ops.rs"]
mod ops;
#[path = "suite/package.rs"]
mod package;
#[path = "suite/prometheus.rs"]
mod prometheus;
#[path = "suite/python_checks.rs"]
mod python_checks;
#[path = "suite/rates.rs"]
mod rates;
#[path = "suite/relay.rs"]
mod relay;
#[path = "suite/scripts.rs"]
mod scripts;
#[path = "suite/services.rs"]
mod services;
#[path = "suite/socket.rs"]
mod socket;
#[path = "suite/statsd.rs"]
mod statsd;
#[path = "suite/supervisor.rs"]
mod supervisor;
#[path = "suite/tls.rs"]
mod tls;
