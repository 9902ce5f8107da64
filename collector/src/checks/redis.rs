//! Redis `INFO` (`[Redis] host port pass`). Gauges `redis_connected_clients redis_blocked_clients
//! redis_used_memory redis_used_memory_rss redis_used_memory_peak redis_uptime_in_seconds
//! redis_rdb_changes_since_last_save redis_rdb_bgsave_in_progress redis_rdb_last_bgsave_time_sec
//! redis_rdb_current_bgsave_time_sec`, `redis_mem_fragmentation_ratio` (float); counters really
//! sent as rates (the old check sent their raw value) `redis_total_commands_processed
//! redis_total_connections_received redis_expired_keys redis_evicted_keys redis_keyspace_hits
//! redis_keyspace_misses redis_total_net_input_bytes redis_total_net_output_bytes`; per database
//! `redis_keys` and `redis_expires` with a `db` tag (`db0`…).
//!
//! Commands are sent as RESP arrays of bulk strings
//! (<https://redis.io/docs/latest/develop/reference/protocol-spec/>), each argument with its length,
//! never as an inline line: `AUTH` with the password `s3 cr\r\nit` is the bytes
//! `*2\r\n$4\r\nAUTH\r\n$9\r\ns3 cr\r\nit\r\n`. Inline, a space would split the password into two
//! arguments and a CR/LF would end the command and start another one chosen by the password.

use std::io::{BufRead, BufReader, Write};

use puypuy_common::services::{ServiceConfig, ServiceKind};
use puypuy_common::Point;

use super::service::{connect, int_of, Metrics, ServiceCheck};

const GAUGES: [&str; 10] = [
    "connected_clients",
    "blocked_clients",
    "used_memory",
    "used_memory_rss",
    "used_memory_peak",
    "uptime_in_seconds",
    "rdb_changes_since_last_save",
    "rdb_bgsave_in_progress",
    "rdb_last_bgsave_time_sec",
    "rdb_current_bgsave_time_sec",
];
const COUNTERS: [&str; 8] = [
    "total_commands_processed",
    "total_connections_received",
    "expired_keys",
    "evicted_keys",
    "keyspace_hits",
    "keyspace_misses",
    "total_net_input_bytes",
    "total_net_output_bytes",
];

pub fn parse(text: &str, m: &mut Metrics) -> Result<(), String> {
    let mut seen = false;
    for line in text.lines() {
        let Some((key, value)) = line.trim_end().split_once(':') else { continue };
        if GAUGES.contains(&key) {
            if let Some(v) = int_of(value) {
                m.int(format!("redis_{key}"), v);
                seen = true;
            }
        } else if COUNTERS.contains(&key) {
            if let Some(v) = int_of(value) {
                m.counter(format!("redis_{key}"), v);
            }
        } else if key == "mem_fragmentation_ratio" {
            if let Ok(v) = value.parse::<f64>() {
                m.float("redis_mem_fragmentation_ratio", v);
            }
        } else if key.starts_with("db") && key[2..].bytes().all(|b| b.is_ascii_digit()) {
            for part in value.split(',') {
                match part.split_once('=') {
                    Some(("keys", v)) => m.int_tagged("redis_keys", int_of(v).unwrap_or(0), &[("db", key)]),
                    Some(("expires", v)) => m.int_tagged("redis_expires", int_of(v).unwrap_or(0), &[("db", key)]),
                    _ => {}
                }
            }
        }
    }
    if seen {
        Ok(())
    } else {
        Err("no known INFO field".into())
    }
}

pub struct Redis(pub ServiceConfig);

/// Appends one command to `out` as a RESP array of bulk strings: `*<count>\r\n`, then for each
/// argument `$<length>\r\n<bytes>\r\n`. Any byte may be in an argument.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads one RESP reply: `+OK`, `-ERR …`, or a bulk string `$N` followed by N bytes.
fn read_reply(reader: &mut impl BufRead) -> Result<String, String> {
    let mut first = String::new();
    reader.read_line(&mut first).map_err(|e| format!("read: {e}"))?;
    let first = first.trim_end();
    if let Some(err) = first.strip_prefix('-') {
        return Err(err.to_string());
    }
    if let Some(len) = first.strip_prefix('$') {
        let len: usize = len.parse().map_err(|_| format!("bad bulk length {len:?}"))?;
        if len > 16 * 1024 * 1024 {
            return Err("INFO answer over 16 MiB".into());
        }
        let mut buf = vec![0u8; len + 2];
        std::io::Read::read_exact(reader, &mut buf).map_err(|e| format!("read: {e}"))?;
        buf.truncate(len);
        return String::from_utf8(buf).map_err(|_| "INFO answer is not UTF-8".into());
    }
    if first.is_empty() {
        return Err("connection closed".into());
    }
    Ok(first.to_string())
}

impl ServiceCheck for Redis {
    fn collect(&mut self, timestamp: u64) -> Result<Vec<Point>, String> {
        let c = &self.0;
        let where_ = format!("{}:{}", c.host, c.port);
        let mut stream = connect(&c.host, c.port, c.timeout)?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut request = Vec::new();
        if !c.pass.is_empty() {
            encode_command(&[b"AUTH", c.pass.as_bytes()], &mut request);
            stream.write_all(&request).map_err(|e| format!("{where_}: {e}"))?;
            read_reply(&mut reader)
                .map_err(|e| format!("{where_}: authentication failed ({e}): check [{}] pass", c.section))?;
            request.clear();
        }
        encode_command(&[b"INFO"], &mut request);
        stream.write_all(&request).map_err(|e| format!("{where_}: {e}"))?;
        let text = read_reply(&mut reader).map_err(|e| format!("{where_}: {e}"))?;
        let mut m = Metrics::new(ServiceKind::Redis, c.instance.clone(), timestamp);
        parse(&text, &mut m).map_err(|e| format!("{where_}: not a Redis INFO answer: {e}"))?;
        Ok(m.points)
    }
}

/// For tests: the INFO text inside a recorded RESP bulk reply. A recording that is not one fails
/// the test here, instead of being parsed as an empty answer.
#[cfg(test)]
pub fn unwrap_bulk(raw: &str) -> String {
    let mut reader = BufReader::new(raw.as_bytes());
    read_reply(&mut reader).unwrap_or_else(|e| panic!("not a recorded RESP bulk reply: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        out
    }

    // Regression: AUTH was written inline (`AUTH <pass>\r\n`), so a password with a space was two
    // arguments and one with CR/LF ended the command there and sent the rest as a command of its own.
    #[test]
    fn auth_sends_a_password_with_space_and_crlf_as_one_bulk_string() {
        assert_eq!(
            command(&[b"AUTH", b"pa ss\r\nFLUSHALL"]),
            b"*2\r\n$4\r\nAUTH\r\n$15\r\npa ss\r\nFLUSHALL\r\n".to_vec()
        );
    }

    #[test]
    fn info_is_an_array_of_one() {
        assert_eq!(command(&[b"INFO"]), b"*1\r\n$4\r\nINFO\r\n".to_vec());
    }

    #[test]
    fn reply_read_error_is_reported_not_read_as_empty() {
        let mut cut = BufReader::new(&b"$100\r\nshort"[..]);
        assert!(read_reply(&mut cut).expect_err("a cut bulk reply").starts_with("read: "));
        let mut closed = BufReader::new(&b""[..]);
        assert_eq!(read_reply(&mut closed), Err("connection closed".to_string()));
        let mut refused = BufReader::new(&b"-WRONGPASS invalid username-password pair\r\n"[..]);
        assert_eq!(read_reply(&mut refused), Err("WRONGPASS invalid username-password pair".to_string()));
    }
}
