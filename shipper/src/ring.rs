//! Graphite's consistent-hash ring: which carbon-caches of a cluster a metric path goes to, exactly
//! as `carbon-relay` with `RELAY_METHOD = consistent-hashing` places it, so that graphite-web
//! (which reads each metric from the cache the same ring names) and carbonate find it.
//!
//! The reference is `carbon/hashing.py` (`ConsistentHashRing`) and `carbon/routers.py`
//! (`ConsistentHashingRouter`) of graphite-carbon 1.1; the tests run them and compare. What they do:
//!
//! - Each destination `(server, port, instance)` is a node keyed `(server, instance)`, put on the
//!   ring 100 times, in the order the destinations are listed. Replica `i`'s key is
//!   `"('server', 'instance'):i"` (Python's `str` of the tuple; `None` for no instance) with
//!   `carbon_ch`, and `"i-instance"` with `fnv1a_ch`. A position already taken moves up by one
//!   until free.
//! - A position is the first 16 bits of the MD5 of the key (`carbon_ch`), or the 32-bit FNV-1a of
//!   the key folded to 16 bits, `(h >> 16) ^ (h & 0xffff)` (`fnv1a_ch`).
//! - A metric goes to the node of the first ring entry at or after its position (wrapping), then,
//!   for `replication` > 1, to the next distinct nodes walking on; with `diverse_replicas` (carbon's
//!   default) a node whose server already has a copy is passed over.

use std::collections::HashSet;

use md5::{Digest, Md5};
use puypuy_common::config::{CarbonDestination, Hashing};

/// Entries per node, carbon's `replica_count`.
const REPLICAS: usize = 100;

pub struct CarbonRing {
    /// `(position, node)`, sorted by position; positions are distinct.
    ring: Vec<(u64, usize)>,
    /// The server of each node (index into the destinations), for `diverse_replicas`.
    servers: Vec<String>,
    hashing: Hashing,
    replication: usize,
    diverse: bool,
}

impl CarbonRing {
    pub fn new(destinations: &[CarbonDestination], hashing: Hashing, replication: usize, diverse: bool) -> CarbonRing {
        let mut ring: Vec<(u64, usize)> = Vec::with_capacity(destinations.len() * REPLICAS);
        let mut taken = HashSet::new();
        for (node, d) in destinations.iter().enumerate() {
            for i in 0..REPLICAS {
                let key = match hashing {
                    Hashing::CarbonCh => format!("({}, {}):{i}", py_repr(&d.server), py_instance(&d.instance)),
                    Hashing::Fnv1aCh => format!("{i}-{}", d.instance.as_deref().unwrap_or("None")),
                };
                let mut position = u64::from(position(&key, hashing));
                while !taken.insert(position) {
                    position += 1;
                }
                let at = ring.partition_point(|e| e.0 < position);
                ring.insert(at, (position, node));
            }
        }
        CarbonRing {
            ring,
            servers: destinations.iter().map(|d| d.server.clone()).collect(),
            hashing,
            replication: replication.max(1),
            diverse,
        }
    }

    /// The destinations (indices into the list given to [`CarbonRing::new`]) of a metric path, in
    /// carbon's order, into `out` (cleared first).
    pub fn destinations_of(&self, path: &str, out: &mut Vec<usize>) {
        out.clear();
        if self.ring.is_empty() {
            return;
        }
        let nodes = self.servers.len();
        let position = u64::from(position(path, self.hashing));
        let len = self.ring.len();
        let mut index = self.ring.partition_point(|e| e.0 < position) % len;
        if self.replication == 1 {
            // The first node met is the one copy, diverse or not (carbon's get_nodes yields it
            // first and the router takes it).
            out.push(self.ring[index].1);
            return;
        }
        let last = (index + len - 1) % len;
        // get_nodes: the distinct nodes met walking on from the metric's position (it stops one
        // entry short of a full turn, as carbon's does).
        let mut met: Vec<usize> = Vec::new();
        // ConsistentHashingRouter: the first `replication` of them, or with diverse replicas the
        // first of each server until `replication` servers have one.
        let mut servers: Vec<&str> = Vec::new();
        while met.len() < nodes && index != last {
            let node = self.ring[index].1;
            if !met.contains(&node) {
                met.push(node);
                if self.diverse {
                    let server = self.servers[node].as_str();
                    if !servers.contains(&server) {
                        servers.push(server);
                        out.push(node);
                        if servers.len() >= self.replication {
                            return;
                        }
                    }
                } else {
                    out.push(node);
                    if out.len() == self.replication {
                        return;
                    }
                }
            }
            index = (index + 1) % len;
        }
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

fn position(key: &str, hashing: Hashing) -> u16 {
    match hashing {
        Hashing::CarbonCh => {
            let digest = Md5::digest(key.as_bytes());
            u16::from_be_bytes([digest[0], digest[1]])
        }
        Hashing::Fnv1aCh => {
            let h = fnv1a_32(key.as_bytes());
            ((h >> 16) ^ (h & 0xffff)) as u16
        }
    }
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

fn py_instance(instance: &Option<String>) -> String {
    instance.as_deref().map(py_repr).unwrap_or_else(|| "None".into())
}

/// Python 3's `repr` of a string: single quotes unless it holds `'` and no `"`; backslash, the
/// quote, `\t \n \r` and other control characters escaped.
fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// What carbon's own `ConsistentHashingRouter` (graphite-carbon, imported from the installed
    /// package) answers for each path: the destinations' indices, one line per path.
    fn carbon_router(
        destinations: &[&str],
        hashing: Hashing,
        replication: usize,
        diverse: bool,
        paths: &[String],
    ) -> Vec<Vec<usize>> {
        let script = r#"
import sys
from carbon.routers import ConsistentHashingRouter
from carbon.util import parseDestinations
class Settings(dict):
    __getattr__ = dict.__getitem__
dests = parseDestinations(sys.argv[1].split(','))
router = ConsistentHashingRouter(Settings(REPLICATION_FACTOR=int(sys.argv[3]), DIVERSE_REPLICAS=sys.argv[4] == '1', ROUTER_HASH_TYPE=sys.argv[2]))
for d in dests:
    router.addDestination(d)
out = []
for line in sys.stdin:
    out.append(' '.join(str(dests.index(d)) for d in router.getDestinations(line.rstrip('\n'))))
print('\n'.join(out))
"#;
        let mut child = Command::new("/usr/bin/python3")
            .args([
                "-c",
                script,
                &destinations.join(","),
                hashing.name(),
                &replication.to_string(),
                if diverse { "1" } else { "0" },
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 (with graphite-carbon: apt-get install graphite-carbon)");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = paths.join("\n") + "\n";
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().expect("python3");
        writer.join().expect("writer").expect("write paths");
        assert!(out.status.success(), "carbon's router failed (is graphite-carbon installed?)");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .map(|l| l.split_whitespace().map(|i| i.parse().expect("index")).collect())
            .collect()
    }

    fn paths() -> Vec<String> {
        let mut paths: Vec<String> =
            (0..3000).map(|i| format!("servers.web{:03}.cpu.core{}.user", i / 7, i % 7)).collect();
        paths.extend(
            ["", "a", "é.ü.日本", "x;tag=v", "with space", "back\\slash", "stats.timers.api.p99"].map(String::from),
        );
        paths
    }

    #[test]
    fn the_ring_places_every_path_where_carbons_router_does() {
        let clusters: [&[&str]; 4] = [
            &["127.0.0.1:2004:a", "127.0.0.1:2104:b", "127.0.0.1:2204:c"],
            &["10.0.0.1:2004", "10.0.0.2:2004", "10.0.0.3:2004", "10.0.0.4:2004:x"],
            &["10.0.0.1:2004:a", "10.0.0.1:2104:b", "10.0.0.2:2004:a", "10.0.0.2:2104:b", "[::1]:2004:c"],
            &["h1:2004:a", "h'q:2004:b", "h2:2004:c"],
        ];
        let paths = paths();
        for cluster in clusters {
            let parsed: Vec<CarbonDestination> =
                cluster.iter().map(|d| CarbonDestination::parse(d).expect("destination")).collect();
            for hashing in [Hashing::CarbonCh, Hashing::Fnv1aCh] {
                for replication in [1, 2, 3] {
                    for diverse in [true, false] {
                        let expected = carbon_router(cluster, hashing, replication, diverse, &paths);
                        let ring = CarbonRing::new(&parsed, hashing, replication, diverse);
                        let mut got = Vec::new();
                        for (path, want) in paths.iter().zip(&expected) {
                            ring.destinations_of(path, &mut got);
                            assert_eq!(
                                &got,
                                want,
                                "{path:?} on {cluster:?}, {}, replication {replication}, diverse {diverse}",
                                hashing.name()
                            );
                        }
                        assert_eq!(expected.len(), paths.len());
                    }
                }
            }
        }
    }

    #[test]
    fn python_repr_quotes_like_python() {
        assert_eq!(py_repr("a"), "'a'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("'\""), "'\\'\"'");
        assert_eq!(py_repr("a\\b\n"), "'a\\\\b\\n'");
    }
}
