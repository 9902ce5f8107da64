//! The jmx-bridge's sections, validated with the rest of the config: `[JMX]` and `[JMX:NAME]`
//! targets, and the bridge's own JVM settings.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::Ini;

use super::reader::{resolve, split_instance, warn_unknown_keys, ConfigError, SectionReader};
use crate::Style;

#[derive(Debug, Clone, PartialEq)]
pub struct BeanSpec {
    pub object_name: String,
    /// `Attribute` or `Attribute.key` (a CompositeData key).
    pub attribute: String,
    pub style: Style,
}

#[derive(Clone, PartialEq)]
pub struct JmxTarget {
    /// `NAME` of `[JMX:NAME]`, sent as the `jmx` tag.
    pub name: Option<String>,
    pub section: String,
    pub url: Option<String>,
    /// Main class of a local JVM found through the Attach API.
    pub class: Option<String>,
    pub jmx_user: Option<String>,
    pub jmx_pass: Option<String>,
    /// The OS user the target runs as (the old `user` key).
    pub os_user: Option<String>,
    pub beans: Vec<BeanSpec>,
    pub timeout: Duration,
}

impl std::fmt::Debug for JmxTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JmxTarget")
            .field("section", &self.section)
            .field("url", &self.url)
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct JmxConfig {
    pub targets: Vec<JmxTarget>,
    pub java_home: Option<PathBuf>,
    /// The old `java` key: path of a java binary, used to find the JVM.
    pub java: Option<PathBuf>,
    pub jvm_options: Option<Vec<String>>,
}

const KEYS: &[&str] = &[
    "url",
    "class",
    "jmx_user",
    "jmx_pass",
    "jmx_pass_file",
    "jmx_pass_env",
    "user",
    "java",
    "jmx",
    "beans",
    "java_home",
    "jvm_options",
    "timeout",
];

/// Checks the syntax of an ObjectName (pattern): `domain:key=value[,key=value…]` with `*`/`?`
/// wildcards, quoted values allowed, or `domain:*`.
pub fn check_object_name(name: &str) -> Result<(), String> {
    let (domain, props) = name.split_once(':').ok_or("no ':' between domain and key properties")?;
    if domain.contains(['\n', '=', ',']) {
        return Err(format!("invalid domain {domain:?}"));
    }
    if props.is_empty() {
        return Err("no key property after ':' (e.g. type=Memory)".into());
    }
    let mut in_quotes = false;
    let mut parts = Vec::new();
    let mut start = 0;
    let bytes = props.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b',' if !in_quotes => {
                parts.push(&props[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    parts.push(&props[start..]);
    for p in parts {
        if p == "*" {
            continue;
        }
        let (k, v) = p.split_once('=').ok_or_else(|| format!("key property {p:?} is not key=value"))?;
        if k.is_empty() || k.contains([':', '*', '?', '"']) {
            return Err(format!("invalid key {k:?}"));
        }
        if v.is_empty() {
            return Err(format!("empty value for key {k:?}"));
        }
        if !v.starts_with('"') && v.contains([':', '=', '"', '\n']) {
            return Err(format!("invalid value {v:?} (quote it)"));
        }
    }
    Ok(())
}

fn parse_beans(raw: &str) -> Result<Vec<BeanSpec>, String> {
    let mut out = Vec::new();
    for entry in raw.split(['\n', ';']).map(str::trim).filter(|e| !e.is_empty()) {
        let fields: Vec<&str> = entry.split_whitespace().collect();
        let (object_name, attribute, style) = match fields.as_slice() {
            [o, a] => (*o, *a, Style::Stack),
            [o, a, s] => {
                (*o, *a, Style::parse(s).ok_or_else(|| format!("{entry:?}: style {s:?} is neither stack nor rate"))?)
            }
            _ => return Err(format!("{entry:?} is not \"OBJECTNAME ATTRIBUTE[.KEY] [stack|rate]\"")),
        };
        check_object_name(object_name).map_err(|e| format!("bad ObjectName {object_name:?}: {e}"))?;
        out.push(BeanSpec { object_name: object_name.into(), attribute: attribute.into(), style });
    }
    Ok(out)
}

pub fn read_jmx(
    file: &Path,
    base: &Path,
    ini: &Ini,
    default_timeout: Duration,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> JmxConfig {
    let mut config = JmxConfig::default();
    for section in ini.sections().flatten() {
        let (base_name, name) = split_instance(section);
        let name = name.map(str::to_string);
        if base_name != "JMX" || config.targets.iter().any(|t| t.section == section) {
            continue;
        }
        warn_unknown_keys(ini, section, KEYS, warnings);
        let mut r = SectionReader::new(file, ini, section, errors);
        let get = |r: &SectionReader, k: &str| r.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        if let Some(h) = get(&r, "java_home") {
            config.java_home = Some(resolve(base, &h));
        }
        if let Some(j) = get(&r, "java") {
            config.java = Some(resolve(base, &j));
        }
        if let Some(o) = get(&r, "jvm_options") {
            config.jvm_options = Some(o.split_whitespace().map(str::to_string).collect());
        }
        let url = get(&r, "url");
        let class = get(&r, "class");
        if get(&r, "jmx").is_some() {
            warnings.push(format!(
                "[{section}] jmx: the Jolokia URL is no longer used; write url: service:jmx:rmi:///jndi/rmi://HOST:PORT/jmxrmi, or class: MAIN_CLASS for a local JVM"
            ));
        }
        match (&url, &class) {
            (None, None) => {
                r.error(None, "needs url: service:jmx:rmi:///jndi/rmi://HOST:PORT/jmxrmi or class: MAIN_CLASS".into())
            }
            (Some(u), _) if !u.starts_with("service:jmx:") => r.error(
                Some("url"),
                format!("{u:?} is not a JMX service URL (expected service:jmx:rmi:///jndi/rmi://HOST:PORT/jmxrmi)"),
            ),
            _ => {}
        }
        let beans = match r.get("beans") {
            None => Vec::new(),
            Some(raw) => parse_beans(raw).unwrap_or_else(|e| {
                r.error(Some("beans"), e);
                Vec::new()
            }),
        };
        let timeout = Duration::from_secs(r.number("timeout", default_timeout.as_secs().max(1), 1));
        let target = JmxTarget {
            name,
            section: section.to_string(),
            url,
            class,
            jmx_user: get(&r, "jmx_user"),
            jmx_pass: r.secret("jmx_pass", base),
            os_user: get(&r, "user"),
            beans,
            timeout,
        };
        // The bridge hands a target to its JVM helper as lines of tab-separated fields: a line
        // break or tab in a value (a password from jmx_pass_file, say) would cut or add a field.
        let values = [("url", &target.url), ("class", &target.class), ("jmx_user", &target.jmx_user)];
        for (key, value) in values.into_iter().chain([("jmx_pass", &target.jmx_pass)]) {
            if value.as_deref().is_some_and(|v| v.contains(['\n', '\r', '\t'])) {
                r.error(Some(key), "holds a line break or a tab, which the JMX bridge cannot pass on".into());
            }
        }
        if target.beans.iter().any(|b| format!("{}{}", b.object_name, b.attribute).contains(['\r', '\t'])) {
            r.error(Some("beans"), "holds a tab or a carriage return inside an ObjectName or attribute".into());
        }
        config.targets.push(target);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a password with a line break (from jmx_pass_file) was passed on as is, so
    /// it cut the line format the JVM helper reads and could inject a field.
    #[test]
    fn values_with_line_breaks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p"), "sec\nurl=x\n").unwrap();
        let ini = crate::config::parse_ini(
            "[JMX]\nurl: service:jmx:rmi:///jndi/rmi://h:1/jmxrmi\njmx_user: u\njmx_pass_file: p\n",
        )
        .unwrap();
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        read_jmx(Path::new("c.ini"), dir.path(), &ini, Duration::from_secs(1), &mut errors, &mut warnings);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].to_string(),
            "c.ini: [JMX] jmx_pass: holds a line break or a tab, which the JMX bridge cannot pass on"
        );
    }

    #[test]
    fn object_names() {
        for ok in [
            "java.lang:type=Memory",
            "java.lang:type=GarbageCollector,*",
            "Catalina:type=GlobalRequestProcessor,name=\"http-nio-8080\"",
            "*:type=Foo,name=*",
        ] {
            assert!(check_object_name(ok).is_ok(), "{ok}");
        }
        for bad in ["java.lang", "java.lang:", "java.lang:type", "a:b=c:d", "a:=x", "a:k=\"open"] {
            assert!(check_object_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn beans_lines() {
        let b = parse_beans("java.lang:type=Memory HeapMemoryUsage.used\n Catalina:type=GlobalRequestProcessor,name=* requestCount rate").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].style, Style::Rate);
        assert!(parse_beans("java.lang HeapMemoryUsage").unwrap_err().contains("bad ObjectName"));
    }
}
