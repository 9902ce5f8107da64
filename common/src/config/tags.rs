//! `[Tags]` (extra tags for every point) and `[Open Files]` (`NAME: PIDFILE` entries whose
//! processes' open descriptors the collector counts): two sections whose keys are the user's own.

use std::path::{Path, PathBuf};

use ini::Ini;

use super::reader::{resolve, ConfigError, SectionReader};

/// `[Tags]`, in file order; `host` and `type` are refused.
pub fn read_tags(file: &Path, ini: &Ini, errors: &mut Vec<ConfigError>) -> Vec<(String, String)> {
    let mut r = SectionReader::new(file, ini, "Tags", errors);
    let Some(props) = r.props else { return Vec::new() };
    let mut tags = Vec::new();
    for (key, value) in props.iter() {
        if ["host", "type"].contains(&key) {
            r.error(Some(key), "is set by PuyPuy itself and cannot be overridden here".into());
            continue;
        }
        tags.push((key.to_string(), value.trim().to_string()));
    }
    tags
}
/// `[Open Files]`: each `NAME: PIDFILE`, the path resolved against the config's folder.
pub fn read_open_files(file: &Path, base: &Path, ini: &Ini, errors: &mut Vec<ConfigError>) -> Vec<(String, PathBuf)> {
    let mut r = SectionReader::new(file, ini, "Open Files", errors);
    let Some(props) = r.props else { return Vec::new() };
    let mut out = Vec::new();
    for (name, value) in props.iter() {
        let value = value.trim();
        if value.is_empty() {
            r.error(Some(name), "missing the pid file (expected NAME: /path/to/pidfile)".into());
            continue;
        }
        out.push((name.to_string(), resolve(base, value)));
    }
    out
}
