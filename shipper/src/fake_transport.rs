//! A scripted backend for the delivery tests: each send takes the next answer of a script
//! (accept, fail, stall) and the backend keeps what it accepted, so a test can say exactly which
//! points arrived, how often and in which requests.
//!
//! A point tagged `bad=1` is one the backend refuses as invalid. How it refuses follows the real
//! backends: OpenTSDB and KairosDB refuse the whole request and keep nothing
//! ([`Refusal::WholeRequest`], the delivery loop then bisects), InfluxDB keeps the valid lines and
//! answers `partial write` ([`Refusal::PartialWrite`]).
//!
//! Like the HTTP backends, it can take at most [`Backend::max_points`] points per request. Given
//! more in one send, it makes several requests, each taking its own answer, and stops at the first
//! that is not accepted, as `HttpTransport` did before the delivery loop cut batches itself: the
//! send's one answer then spoke for requests that had been accepted, so their points were sent
//! again or set aside. The delivery loop must never give it more than
//! [`Transport::max_points_per_request`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use puypuy_common::Point;

use crate::tags::HostTagging;
use crate::transport::{ErrorKind, OnRejection, SendError, Transport};

/// The answer to one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Keep the points (refusing the bad ones as the backend's [`Refusal`] says).
    Accept,
    /// A retryable failure at once (connection refused, 503).
    Fail,
    /// Slow, then a timeout: nothing kept.
    Stall,
}

/// How the backend refuses a request holding a bad point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// OpenTSDB, KairosDB: 400 and nothing of the request kept.
    WholeRequest,
    /// InfluxDB: 400 `partial write`, the valid points kept.
    PartialWrite,
}

#[derive(Default)]
pub struct Backend {
    /// Every point kept, in order of arrival.
    pub kept: Vec<Point>,
    /// The number of points of each request, whatever its answer.
    pub requests: Vec<usize>,
    /// Every point of the requests it refused (400), whether a partial write kept some or not.
    pub refused: Vec<Point>,
    /// How many points of `kept` came from requests it refused: the good points of partial writes.
    pub kept_from_refused: usize,
    /// Whose host tags the points of each send were to leave with.
    pub taggings: Vec<HostTagging>,
    /// The most points one request may hold; `None`: no limit.
    pub max_points: Option<usize>,
    script: VecDeque<Answer>,
}

/// The test's handle on the backend, shared with the transport.
#[derive(Clone, Default)]
pub struct FakeBackend(Arc<Mutex<Backend>>);

impl FakeBackend {
    /// Answers for the next sends, in order; once they are used up, every send is accepted.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state().script.extend(answers);
    }

    pub fn state(&self) -> MutexGuard<'_, Backend> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn transport(&self, refusal: Refusal, stall: Duration) -> Box<dyn Transport> {
        Box::new(FakeTransport { backend: self.clone(), refusal, stall })
    }
}

pub fn is_bad(p: &Point) -> bool {
    p.tags.iter().any(|(k, v)| k == "bad" && v == "1")
}

struct FakeTransport {
    backend: FakeBackend,
    refusal: Refusal,
    stall: Duration,
}

impl FakeTransport {
    /// One request.
    fn request(&mut self, points: &[Point]) -> Result<(), SendError> {
        let answer = {
            let mut state = self.backend.state();
            state.requests.push(points.len());
            state.script.pop_front().unwrap_or(Answer::Accept)
        };
        match answer {
            Answer::Fail => Err(SendError::Retryable(ErrorKind::Unreachable, "fake: connection refused".into())),
            Answer::Stall => {
                std::thread::sleep(self.stall);
                Err(SendError::Retryable(ErrorKind::Timeout, "fake: timed out".into()))
            }
            Answer::Accept => {
                let bad = points.iter().filter(|p| is_bad(p)).count();
                let mut state = self.backend.state();
                if bad == 0 {
                    state.kept.extend_from_slice(points);
                    return Ok(());
                }
                state.refused.extend_from_slice(points);
                if self.refusal == Refusal::PartialWrite {
                    state.kept.extend(points.iter().filter(|p| !is_bad(p)).cloned());
                    state.kept_from_refused += points.len() - bad;
                    return Err(SendError::Rejected(format!("fake: partial write: dropped={bad}")));
                }
                Err(SendError::Rejected("fake: 400 invalid point".into()))
            }
        }
    }
}

impl Transport for FakeTransport {
    fn send(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError> {
        self.backend.state().taggings.push(tagging);
        for request in points.chunks(self.max_points_per_request()) {
            self.request(request)?;
        }
        Ok(())
    }

    fn max_points_per_request(&self) -> usize {
        self.backend.state().max_points.unwrap_or(usize::MAX).max(1)
    }

    fn describe(&self) -> String {
        "fake backend".into()
    }

    fn describe_backend(&self) -> String {
        "Fake".into()
    }

    fn on_rejection(&self) -> OnRejection {
        match self.refusal {
            Refusal::WholeRequest => OnRejection::Bisect,
            Refusal::PartialWrite => OnRejection::SetAside,
        }
    }
}
