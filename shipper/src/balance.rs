//! Several servers of one HTTP output (`[TSDB] address = http://a:4242, http://b:4242`): one
//! destination for the delivery loop (one queue, one spool), whose requests go to one server or in
//! turn to each (`balance = failover | round_robin`). A request a server fails (unreachable,
//! timeout, 5xx…) goes to the next server at once, within the same send; only when every server
//! failed is the send a failure, and the batch spooled. A refusal (400) is the data's fault and is
//! not tried elsewhere.
//!
//! With `failover` the shipper stays on the server that last took a request and goes back to
//! trying the first one every [`PRIMARY_RETRY`].

use std::time::{Duration, Instant};

use puypuy_common::config::Balance;
use puypuy_common::Point;

use crate::tags::HostTagging;
use crate::transport::{OnRejection, SendError, Transport};

pub const PRIMARY_RETRY: Duration = Duration::from_secs(30);

pub struct BalancedTransport {
    servers: Vec<Box<dyn Transport>>,
    balance: Balance,
    /// Failover: the server in use. Round robin: the next one to start with.
    current: usize,
    left_primary: Option<Instant>,
}

impl BalancedTransport {
    /// `servers` must not be empty.
    pub fn new(servers: Vec<Box<dyn Transport>>, balance: Balance) -> BalancedTransport {
        BalancedTransport { servers, balance, current: 0, left_primary: None }
    }
}

impl Transport for BalancedTransport {
    fn send(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError> {
        let n = self.servers.len();
        let start = match self.balance {
            Balance::Failover => {
                if self.left_primary.is_some_and(|t| t.elapsed() >= PRIMARY_RETRY) {
                    self.current = 0;
                    self.left_primary = None;
                }
                self.current
            }
            Balance::RoundRobin => {
                let s = self.current;
                self.current = (self.current + 1) % n.max(1);
                s
            }
        };
        let mut last = SendError::Retryable(crate::transport::ErrorKind::Unreachable, "no server".into());
        for k in 0..n {
            let i = (start + k) % n;
            match self.servers[i].send(points, tagging) {
                Ok(()) => {
                    if self.balance == Balance::Failover && i != self.current {
                        log::warn!(
                            "{} failed; failed over to {}",
                            self.servers[self.current].describe(),
                            self.servers[i].describe()
                        );
                        self.current = i;
                        if i != 0 && self.left_primary.is_none() {
                            self.left_primary = Some(Instant::now());
                        }
                    }
                    return Ok(());
                }
                Err(e @ SendError::Rejected(_)) => return Err(e),
                Err(e) => {
                    log::debug!("{e}; trying the next server");
                    last = e;
                }
            }
        }
        Err(last)
    }

    fn max_points_per_request(&self) -> usize {
        self.servers.iter().map(|s| s.max_points_per_request()).min().unwrap_or(usize::MAX)
    }

    fn describe(&self) -> String {
        let all: Vec<String> = self.servers.iter().map(|s| s.describe()).collect();
        let how = match self.balance {
            Balance::Failover => "failover",
            Balance::RoundRobin => "round_robin",
        };
        format!("{} ({how})", all.join(", "))
    }

    fn describe_backend(&self) -> String {
        self.servers.first().map(|s| s.describe_backend()).unwrap_or_default()
    }

    fn on_rejection(&self) -> OnRejection {
        self.servers.first().map(|s| s.on_rejection()).unwrap_or(OnRejection::SetAside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_transport::{Answer, FakeBackend, Refusal};

    fn point(i: i64) -> Vec<Point> {
        vec![Point::int("m", 1_700_000_000, i, "t")]
    }

    #[test]
    fn failover_sends_a_failed_request_to_the_next_server_at_once_and_stays_there() {
        let (a, b) = (FakeBackend::default(), FakeBackend::default());
        let mut t = BalancedTransport::new(
            vec![
                a.transport(Refusal::WholeRequest, Duration::ZERO),
                b.transport(Refusal::WholeRequest, Duration::ZERO),
            ],
            Balance::Failover,
        );
        t.send(&point(1), HostTagging::ThisHost).expect("a takes it");
        a.script([Answer::Fail]);
        t.send(&point(2), HostTagging::ThisHost).expect("b takes it at once");
        t.send(&point(3), HostTagging::ThisHost).expect("b again");
        assert_eq!((a.state().kept.len(), b.state().kept.len()), (1, 2));
    }

    #[test]
    fn round_robin_takes_turns_and_skips_a_dead_server() {
        let (a, b) = (FakeBackend::default(), FakeBackend::default());
        let mut t = BalancedTransport::new(
            vec![
                a.transport(Refusal::WholeRequest, Duration::ZERO),
                b.transport(Refusal::WholeRequest, Duration::ZERO),
            ],
            Balance::RoundRobin,
        );
        for i in 0..4 {
            t.send(&point(i), HostTagging::ThisHost).expect("sent");
        }
        assert_eq!((a.state().kept.len(), b.state().kept.len()), (2, 2));
        a.script([Answer::Fail, Answer::Fail]);
        for i in 4..8 {
            t.send(&point(i), HostTagging::ThisHost).expect("sent");
        }
        assert_eq!((a.state().kept.len(), b.state().kept.len()), (2, 6));
        a.script([Answer::Fail; 4]);
        b.script([Answer::Fail; 4]);
        assert!(
            matches!(t.send(&point(9), HostTagging::ThisHost), Err(SendError::Retryable(..))),
            "every server failed"
        );
    }
}
