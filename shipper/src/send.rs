//! `puypuy-shipper send NAME VALUE [--type T] [--rate] [--timestamp TS] [tag=value …]`: one point
//! from a script or a cron job, through the running shipper's socket. Exits 0 once the shipper has
//! taken responsibility for it (delivered or spooled), 1 with a clear message when no shipper runs
//! or it did not answer, 2 on bad arguments.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use puypuy_common::client::SenderClient;
use puypuy_common::{Config, Point, Style, Value};

const USAGE: &str = "usage: puypuy-shipper send NAME VALUE [--type T] [--rate] [--timestamp TS] [tag=value ...]";

/// Builds the point from the arguments after `send`.
pub fn parse_args(args: &[String], now: u64) -> Result<Point, String> {
    let mut positional = Vec::new();
    let mut check_type = "cli".to_string();
    let mut style = Style::Stack;
    let mut timestamp = now;
    let mut tags = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--type" => check_type = it.next().ok_or("--type needs a value")?.clone(),
            "--rate" => style = Style::Rate,
            "--timestamp" => {
                let t = it.next().ok_or("--timestamp needs a value")?;
                let v: u64 = t.parse().map_err(|_| format!("--timestamp {t:?} is not a unix timestamp"))?;
                timestamp = if t.len() >= 13 { v / 1000 } else { v };
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ if positional.len() >= 2 => match a.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => tags.push((k.to_string(), v.to_string())),
                _ => return Err(format!("{a:?} is not a tag (expected key=value)")),
            },
            _ => positional.push(a.clone()),
        }
    }
    let [name, value] = positional.as_slice() else { return Err("NAME and VALUE are required".into()) };
    let v: f64 = value.parse().map_err(|_| format!("value {value:?} is not a number"))?;
    if !v.is_finite() {
        return Err(format!("value {value:?} is not a finite number"));
    }
    Ok(Point { name: name.clone(), timestamp, value: Value::Float(v), check_type: check_type.into(), style, tags })
}

pub fn run(config: &Config, args: &[String]) -> ExitCode {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let point = match parse_args(args, now) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("puypuy-shipper send: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let socket = &config.self_config.socket;
    if let Err(e) = UnixStream::connect(socket) {
        eprintln!(
            "puypuy-shipper send: no shipper is running on {} ({e}); start it with ./puypuy.sh start shipper",
            socket.display()
        );
        return ExitCode::FAILURE;
    }
    let client = SenderClient::start(socket, "send", 1);
    client.send(vec![point]);
    if client.flush(Duration::from_secs(30)) {
        ExitCode::SUCCESS
    } else {
        eprintln!("puypuy-shipper send: the shipper on {} did not take the point within 30 s", socket.display());
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_options_and_tags() {
        let p = parse_args(
            &args(&["backup_bytes", "1234", "--type", "backup", "--rate", "--timestamp", "1700000000", "job=db"]),
            5,
        )
        .unwrap();
        assert_eq!(p.name, "backup_bytes");
        assert_eq!(p.value, Value::Float(1234.0));
        assert_eq!((p.check_type.as_ref(), p.style, p.timestamp), ("backup", Style::Rate, 1700000000));
        assert_eq!(p.tags, vec![("job".into(), "db".into())]);
        assert_eq!(parse_args(&args(&["x", "1"]), 5).unwrap().timestamp, 5);
        assert!(parse_args(&args(&["x"]), 5).is_err());
        assert!(parse_args(&args(&["x", "abc"]), 5).is_err());
        assert!(parse_args(&args(&["x", "1", "notatag"]), 5).is_err());
    }
}
