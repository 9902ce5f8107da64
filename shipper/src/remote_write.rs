//! `tsdtype: PrometheusRemoteWrite`: POSTs each request's points as a snappy-compressed
//! `WriteRequest` ([`crate::backends::remote_write`]) to `address` + `datapoints` (default
//! `/api/v1/write`), with the headers remote write 1.0 requires:
//! ```text
//! Content-Encoding: snappy
//! Content-Type: application/x-protobuf
//! User-Agent: puypuy/0.1.0
//! X-Prometheus-Remote-Write-Version: 0.1.0
//! ```
//! Snappy is the block format (not the framed one), as the spec says. Credentials: basic auth with
//! `auth`, `user`, `pass`, or `token` (`token_file`, `token_env`) as `Authorization: Bearer …`.
//!
//! Answers are sorted as for the other HTTP backends: 2xx is done; 400 (Prometheus' answer for
//! out-of-order or duplicate samples, after keeping the others) sets the request aside in
//! `rejected/`; everything else, 5xx and 429 included as the spec asks, is retried.

use std::io::Read;

use puypuy_common::config::Tsdb;
use puypuy_common::Point;

use crate::backends;
use crate::tags::{HostTagging, HostTags};
use crate::transport::{basic_authorization, http_agent, ErrorKind, OnRejection, SendError, Transport, TransportError};

pub struct RemoteWriteTransport {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
    max_points: usize,
    raw: Vec<u8>,
    body: Vec<u8>,
    encoder: snap::raw::Encoder,
    host: HostTags,
}

impl RemoteWriteTransport {
    pub fn new(tsdb: &Tsdb, max_points: usize, host: HostTags) -> Result<RemoteWriteTransport, TransportError> {
        let agent = http_agent(tsdb)?;
        let authorization = match &tsdb.token {
            Some(token) => Some(format!("Bearer {token}")),
            None => basic_authorization(tsdb),
        };
        Ok(RemoteWriteTransport {
            agent,
            url: format!("{}{}", tsdb.address, tsdb.datapoints),
            authorization,
            max_points: max_points.max(1),
            raw: Vec::new(),
            body: Vec::new(),
            encoder: snap::raw::Encoder::new(),
            host,
        })
    }
}

impl Transport for RemoteWriteTransport {
    fn send(&mut self, points: &[Point], tagging: HostTagging) -> Result<(), SendError> {
        self.raw.clear();
        backends::remote_write::encode(points, self.host.for_points(tagging), &mut self.raw);
        if self.raw.is_empty() {
            return Ok(());
        }
        self.body.resize(snap::raw::max_compress_len(self.raw.len()), 0);
        let n = self
            .encoder
            .compress(&self.raw, &mut self.body)
            .map_err(|e| SendError::Retryable(ErrorKind::Io, format!("snappy of the batch: {e}")))?;
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("User-Agent", concat!("puypuy/", env!("CARGO_PKG_VERSION")))
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let mut response = match request.send(&self.body[..n]) {
            Ok(r) => r,
            Err(e) => {
                let kind = match e {
                    ureq::Error::Timeout(_) => ErrorKind::Timeout,
                    _ => ErrorKind::Unreachable,
                };
                return Err(SendError::Retryable(kind, format!("PrometheusRemoteWrite: {e}")));
            }
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let mut text = String::new();
        if let Err(e) = response.body_mut().as_reader().take(2048).read_to_string(&mut text) {
            text = format!("(the answer's body could not be read: {e})");
        }
        let message = format!("PrometheusRemoteWrite answered {status}: {}", text.trim().replace('\n', " "));
        match status {
            400 | 413 | 422 => Err(SendError::Rejected(message)),
            _ => Err(SendError::Retryable(ErrorKind::Status, message)),
        }
    }

    fn max_points_per_request(&self) -> usize {
        self.max_points
    }

    fn describe(&self) -> String {
        format!("PrometheusRemoteWrite at {}", self.url)
    }

    fn describe_backend(&self) -> String {
        "PrometheusRemoteWrite".into()
    }

    fn on_rejection(&self) -> OnRejection {
        OnRejection::SetAside
    }
}
