//! The leaf of the config module: the file's syntax (Python ConfigParser, checked line by line
//! so that every syntax error carries its line number), the error type, the [`SectionReader`] that
//! every section's reader uses to read typed values and record problems, path resolution, and the
//! checks that apply to every section alike (keys given twice, unknown keys with a did-you-mean).
//! It imports nothing from the other config modules, so they all build on it without a circle.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Empty for problems with the file as a whole.
    pub section: String,
    pub key: Option<String>,
    pub message: String,
    /// The line of a syntax error (1-based).
    pub line: Option<usize>,
}

impl ConfigError {
    /// A problem with the file as a whole (cannot be read, …).
    pub fn whole_file(file: &Path, message: String) -> ConfigError {
        ConfigError { file: file.to_path_buf(), section: String::new(), key: None, message, line: None }
    }

    /// A problem with one section or one of its keys.
    pub fn in_section(file: &Path, section: &str, key: Option<&str>, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            section: section.to_string(),
            key: key.map(str::to_string),
            message,
            line: None,
        }
    }
}

impl fmt::Display for ConfigError {
    /// `FILE: [SECTION] KEY: MESSAGE`, or `FILE:LINE: MESSAGE` for a syntax error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if !self.section.is_empty() {
            write!(f, "[{}]", self.section)?;
            if let Some(k) = &self.key {
                write!(f, " {k}")?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one file; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A syntax error: its line (1-based) and what is wrong.
pub type SyntaxError = (usize, String);

/// Parses text the way Python's `ConfigParser(interpolation=None)` does, and refuses what it
/// refuses, each with its line number: a line that is neither `key: value` nor `key = value`, an
/// empty or unclosed section header, a key before the first section. (rust-ini alone would join
/// such a line to the lines after it, silently losing the next key.) As ConfigParser, a header
/// ends at its last `]` (`[Redis] ; note` is `[Redis]`) and keys are lower-cased (`Batch_Points`
/// is `batch_points`).
pub fn parse_ini(text: &str) -> Result<Ini, Vec<SyntaxError>> {
    let (problems, normalized) = check_syntax(text);
    if !problems.is_empty() {
        return Err(problems);
    }
    let options = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        ..Default::default()
    };
    Ini::load_from_str_opt(&normalized, options).map_err(|e| vec![(e.line, e.msg.to_string())])
}

/// Only `section` of `text` (its header and lines; the others blanked, so line numbers stay), for
/// reading one section of a file whose other sections may be broken.
pub fn only_section(text: &str, section: &str) -> String {
    let mut keep = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            keep = header_name(trimmed) == Some(section);
        }
        if keep {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The name of a section header line (trimmed): from after its `[` to its last `]`, as
/// ConfigParser's `\[(?P<header>.+)\]`; `None` when there is no `]` or nothing between.
pub fn header_name(trimmed: &str) -> Option<&str> {
    let inner = trimmed.strip_prefix('[')?;
    let close = inner.rfind(']')?;
    Some(&inner[..close]).filter(|name| !name.is_empty())
}

/// The line-by-line checks of [`parse_ini`], and the text rust-ini is given: the same lines, with
/// headers cut at their last `]` and keys lower-cased, as ConfigParser reads them.
fn check_syntax(text: &str) -> (Vec<SyntaxError>, String) {
    let mut problems = Vec::new();
    let mut normalized = String::with_capacity(text.len());
    let mut in_section = false;
    // An indented line right after a key (blank lines allowed between) continues its value.
    let mut continuation_allowed = false;
    for (index, raw) in text.split('\n').enumerate() {
        if index > 0 {
            normalized.push('\n');
        }
        let number = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim();
        let indented = line.starts_with([' ', '\t']);
        if trimmed.is_empty()
            || trimmed.starts_with('#')
            || trimmed.starts_with(';')
            || (indented && continuation_allowed)
        {
            normalized.push_str(raw);
            continue;
        }
        if trimmed.starts_with('[') {
            continuation_allowed = false;
            // What follows still gets checked, as if it were in some section.
            in_section = true;
            match header_name(trimmed) {
                Some(name) => {
                    normalized.push('[');
                    normalized.push_str(name);
                    normalized.push(']');
                }
                None => problems.push((number, format!("{trimmed:?} is not a section header (expected [NAME])"))),
            }
            continue;
        }
        let Some(separator) = line.find([':', '=']) else {
            problems.push((
                number,
                format!("{trimmed:?} is neither `key: value` nor `key = value` (a separator is missing)"),
            ));
            continuation_allowed = false;
            continue;
        };
        let key = line[..separator].trim();
        if key.is_empty() {
            problems.push((number, format!("{trimmed:?} has no key before its separator")));
        } else if !in_section {
            problems.push((number, format!("key {key:?} comes before any [SECTION] header")));
        }
        normalized.push_str(&key.to_lowercase());
        normalized.push_str(&line[separator..]);
        continuation_allowed = true;
    }
    (problems, normalized)
}

/// Reads one section's keys and records problems, so that every problem is reported, not the first.
pub struct SectionReader<'a> {
    pub file: &'a Path,
    pub section: &'a str,
    pub props: Option<&'a ini::Properties>,
    pub errors: &'a mut Vec<ConfigError>,
}

impl<'a> SectionReader<'a> {
    pub fn new(file: &'a Path, ini: &'a Ini, section: &'a str, errors: &'a mut Vec<ConfigError>) -> Self {
        SectionReader { file, section, props: ini.section(Some(section)), errors }
    }

    pub fn error(&mut self, key: Option<&str>, message: String) {
        self.errors.push(ConfigError::in_section(self.file, self.section, key, message));
    }

    /// The trimmed value, `None` when the key is absent.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.props.and_then(|p| p.get(key)).map(str::trim)
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    /// A secret: `KEY` itself, or read from the file named by `KEY_file` (relative to the config's
    /// folder; one trailing newline removed), or from the environment variable named by `KEY_env`.
    pub fn secret(&mut self, key: &str, base: &Path) -> Option<String> {
        let file_key = format!("{key}_file");
        let env_key = format!("{key}_env");
        if let Some(path) = self.get(&file_key).filter(|p| !p.is_empty()) {
            let full = resolve(base, path);
            return match std::fs::read_to_string(&full) {
                Ok(text) => Some(text.strip_suffix('\n').unwrap_or(&text).trim_end_matches('\r').to_string()),
                Err(e) => {
                    self.error(Some(&file_key), format!("cannot read {}: {e}", full.display()));
                    None
                }
            };
        }
        if let Some(var) = self.get(&env_key).filter(|v| !v.is_empty()) {
            return match std::env::var(var) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.error(Some(&env_key), format!("environment variable {var} is not set"));
                    None
                }
            };
        }
        self.get(key).map(str::to_string)
    }

    /// A PEM file of certificates (`ca_file`), relative to the config's folder: an error naming the
    /// key when it cannot be read or holds no certificate, never a silent empty trust store.
    pub fn pem_file(&mut self, key: &str, base: &Path) -> Option<PathBuf> {
        let raw = self.get(key).filter(|v| !v.is_empty())?;
        let path = resolve(base, raw);
        match std::fs::read_to_string(&path) {
            Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => Some(path),
            Ok(_) => {
                self.error(Some(key), format!("{} holds no PEM certificate", path.display()));
                None
            }
            Err(e) => {
                self.error(Some(key), format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    pub fn number<T>(&mut self, key: &str, default: T, min: T) -> T
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let Some(raw) = self.get(key) else { return default };
        match raw.parse::<T>() {
            Ok(v) if v >= min => v,
            Ok(_) => {
                self.error(Some(key), format!("{raw:?} is too small (expected a whole number of at least {min})"));
                default
            }
            Err(_) => {
                self.error(Some(key), format!("{raw:?} is not a number (expected a whole number of at least {min})"));
                default
            }
        }
    }

    pub fn boolean(&mut self, key: &str, default: bool) -> bool {
        let Some(raw) = self.get(key) else { return default };
        match parse_bool(raw) {
            Some(b) => b,
            None => {
                self.error(Some(key), format!("{raw:?} is not a boolean (expected True/False, yes/no, on/off or 1/0)"));
                default
            }
        }
    }
}

/// ConfigParser's `getboolean`, any case.
pub fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// Resolves a path from the config: relative paths are relative to the config file's folder.
pub fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Python's ConfigParser refuses a key given twice in a section, and a section given twice; so do
/// we, rather than silently using one of the values.
pub fn check_duplicates(file: &Path, ini: &Ini, errors: &mut Vec<ConfigError>) {
    let mut error = |section: &str, key: Option<&str>, message: &str| {
        errors.push(ConfigError::in_section(file, section, key, message.to_string()))
    };
    let mut seen_sections = HashSet::new();
    for name in ini.sections().flatten() {
        if !seen_sections.insert(name) {
            continue;
        }
        let all: Vec<&ini::Properties> = ini.section_all(Some(name)).collect();
        if all.len() > 1 {
            error(name, None, "section given more than once (merge them into one)");
        }
        for props in all {
            let mut seen_keys = HashSet::new();
            for (key, _) in props.iter() {
                if seen_keys.insert(key) && props.get_all(key).count() > 1 {
                    error(name, Some(key), "given more than once (keep one)");
                }
            }
        }
    }
}

/// Warns about every key of `section` that is not in `known`.
pub fn warn_unknown_keys(ini: &Ini, section: &str, known: &[&str], warnings: &mut Vec<String>) {
    if let Some(props) = ini.section(Some(section)) {
        for (key, _) in props.iter() {
            if !known.contains(&key) {
                warnings.push(format!("[{section}] {key}: unknown key, ignored{}", did_you_mean(key, known)));
            }
        }
    }
}

/// `[Mysql]` for `[MySQL]`, `[MySQL:db]` for the `MySQL` check's instance `db`: the name before
/// the first `:` and the instance after it.
pub fn split_instance(section: &str) -> (&str, Option<&str>) {
    match section.split_once(':') {
        Some((base, instance)) => (base, Some(instance)),
        None => (section, None),
    }
}

/// `" (did you mean max_cache?)"` when one of `known` is close to `name` (same letters in another
/// case, or at most two edits away), else "".
pub fn did_you_mean(name: &str, known: &[&str]) -> String {
    let lower = name.to_lowercase();
    let limit = if lower.len() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_lowercase()), *k))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default()
}
