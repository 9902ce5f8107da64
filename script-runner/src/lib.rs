//! The script-runner: finds `check_*` executables in the scripts folder ([`discover`]), runs them
//! on a fixed schedule with a timeout that kills the script's whole process group ([`run`]), and
//! turns their output into points ([`parse`]); a script's repeated warnings are rate-limited
//! ([`throttle`]). The old agent's Python check modules run in one Python host process that
//! [`python`] supervises, speaking the protocol of [`host_protocol`].

pub mod discover;
pub mod guard;
pub mod host_protocol;
pub mod parse;
pub mod python;
pub mod run;
pub mod throttle;
