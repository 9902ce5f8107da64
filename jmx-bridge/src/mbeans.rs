//! What the bridge reads from a target, as text for the helper class, and how its answer becomes
//! points: the spec lists the connection (`url`, or `class` for a local JVM found by main class)
//! and the extra `beans:` of the section; the answer is `OK` then one line per value
//! (`name<TAB>value<TAB>int|float<TAB>stack|rate[<TAB>tag=value…]`), or `ERROR<TAB>message`.

use puypuy_common::jmx::JmxTarget;
use puypuy_common::{Point, Style, Value};

pub fn spec(target: &JmxTarget) -> String {
    let mut s = format!("id={}\n", target.section);
    if let Some(u) = &target.url {
        s.push_str(&format!("url={u}\n"));
    }
    if let Some(c) = &target.class {
        s.push_str(&format!("class={c}\n"));
    }
    if let Some(u) = &target.jmx_user {
        s.push_str(&format!("user={u}\npass={}\n", target.jmx_pass.as_deref().unwrap_or("")));
    }
    for b in &target.beans {
        let style = if b.style == Style::Rate { "rate" } else { "stack" };
        s.push_str(&format!("bean={}\t{}\t{style}\n", b.object_name, b.attribute));
    }
    s
}

/// The points of an answer, or the target's error.
pub fn parse_answer(answer: &str, target: &JmxTarget, timestamp: u64) -> Result<Vec<Point>, String> {
    let mut lines = answer.lines();
    match lines.next() {
        Some("OK") => {}
        Some(l) if l.starts_with("ERROR") => return Err(l.trim_start_matches("ERROR").trim().to_string()),
        other => return Err(format!("unexpected answer from the helper: {other:?}")),
    }
    let mut points = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 4 {
            continue;
        }
        let value = match f[2] {
            "int" => f[1].parse::<i64>().ok().map(Value::Int),
            _ => f[1].parse::<f64>().ok().filter(|v| v.is_finite()).map(Value::Float),
        };
        let Some(value) = value else { continue };
        let style = if f[3] == "rate" { Style::Rate } else { Style::Stack };
        let mut p = Point::new(f[0], timestamp, value, "jmx").with_style(style);
        if let Some(n) = &target.name {
            p = p.with_tag("jmx", n.clone());
        }
        for tag in &f[4..] {
            if let Some((k, v)) = tag.split_once('=') {
                p = p.with_tag(k, v);
            }
        }
        points.push(p);
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn target() -> JmxTarget {
        JmxTarget {
            name: Some("tomcat".into()),
            section: "JMX:tomcat".into(),
            url: Some("service:jmx:rmi:///jndi/rmi://127.0.0.1:9010/jmxrmi".into()),
            class: None,
            jmx_user: None,
            jmx_pass: None,
            os_user: None,
            beans: vec![],
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn answer_lines_become_points() {
        let answer = "OK\njmx_heap_used\t1234\tint\tstack\njmx_gc_collection_time\t15\tint\trate\tgc=G1 Young Generation\njmx_processcpuload\t1.5\tfloat\tstack\n";
        let points = parse_answer(answer, &target(), 100).expect("an OK answer");
        assert_eq!(points.len(), 3);
        assert_eq!(points[0], Point::int("jmx_heap_used", 100, 1234, "jmx").with_tag("jmx", "tomcat"));
        assert_eq!(points[1].style, Style::Rate);
        assert_eq!(points[1].tags[1], ("gc".to_string(), "G1 Young Generation".to_string()));
        assert_eq!(points[2].value, Value::Float(1.5));
        assert_eq!(
            parse_answer("ERROR\tConnectException: refused", &target(), 1).expect_err("an ERROR answer"),
            "ConnectException: refused"
        );
    }
}
