//! One logging setup for every process: `log` + `fern` to `log_file` (reopened on SIGHUP, for
//! logrotate's create mode) and to stderr when it is a terminal. Every line carries the time, the
//! level and the process name.

use std::io::IsTerminal;
use std::path::Path;

pub fn init(process: &'static str, log_file: &Path, debug: bool) -> Result<(), String> {
    let level = if debug { log::LevelFilter::Debug } else { log::LevelFilter::Info };
    if let Some(dir) = log_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the log folder {}: {e}", dir.display()))?;
    }
    let file = fern::log_reopen1(log_file, [libc::SIGHUP])
        .map_err(|e| format!("cannot open log_file {}: {e}", log_file.display()))?;
    let mut dispatch = fern::Dispatch::new()
        .format(move |out, message, record| {
            out.finish(format_args!(
                "{} {:<5} {}: {}",
                humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                record.level(),
                process,
                message
            ))
        })
        .level(level)
        // Dependencies' debug output is noise in an agent's log.
        .level_for("ureq", log::LevelFilter::Warn)
        .level_for("ureq_proto", log::LevelFilter::Warn)
        .level_for("rustls", log::LevelFilter::Warn)
        .chain(fern::Output::writer(Box::new(file), "\n"));
    if std::io::stderr().is_terminal() {
        dispatch = dispatch.chain(std::io::stderr());
    }
    dispatch.apply().map_err(|e| format!("logging already set up: {e}"))
}

/// Logging to stderr only, for `--dry-run` and tools that must not touch the log file.
/// Logging to stderr (`--dry-run`): from `level` up, or everything with `debug`.
pub fn init_stderr(process: &'static str, debug: bool, level: log::LevelFilter) {
    let level = if debug { log::LevelFilter::Debug } else { level };
    let _ = fern::Dispatch::new()
        .format(move |out, message, record| out.finish(format_args!("{:<5} {}: {}", record.level(), process, message)))
        .level(level)
        .level_for("ureq", log::LevelFilter::Warn)
        .level_for("ureq_proto", log::LevelFilter::Warn)
        .chain(std::io::stderr())
        .apply();
}
