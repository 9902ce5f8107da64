//! The script-runner: finds `check_*` executables in the scripts folder ([`discover`]), runs them
//! on a fixed schedule with a timeout that kills the script's whole process group ([`run`]), and
//! turns their output into points ([`parse`]); a script's repeated warnings are rate-limited
//! ([`throttle`]).

pub mod discover;
pub mod guard;
pub mod parse;
pub mod run;
pub mod throttle;
