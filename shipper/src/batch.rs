//! The batcher: the stage between the socket and the delivery loop. It decodes frames, turns
//! counters into rates, and gathers points into batches of at most `batch_points` (or what came
//! within `batch_ms` of a batch's first point; once waiting has joined nothing for a few batches,
//! what was queued when it opened, see [`Linger`]). A frame is never split between batches; the acks
//! of a batch's frames travel with it, each with the range of the batch's points that are its own.
//! Frames are decoded into the points of batches already sent, which the delivery loop hands back.
//! The host's tags are added later, by the encoders; points that came from a PuyPuy agent carry
//! the agent's and are batched apart ([`HostTagging::Carried`]), so that none of this host's is added.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use puypuy_common::frame::{Frame, FrameError, ACK_DELIVERED, ACK_DROPPED, ACK_REJECTED};
use puypuy_common::Point;

use crate::ack::AckHandle;
use crate::linger::Linger;
use crate::rate::RateState;
use crate::stats::Stats;
use crate::tags::HostTagging;

pub enum Input {
    Points {
        points: Vec<Point>,
        ack: Option<AckHandle>,
    },
    /// The shipper's own self-metrics: batched alone so that their drops are counted apart.
    SelfMetrics(Vec<Point>),
    /// A producer's frame payload, already checked with `Frame::check`, decoded by the batcher,
    /// which then hands the buffer back to the connection through `back` for its next frame.
    /// `tagging` is [`HostTagging::Carried`] for a PuyPuy agent's frame (`frames_listen`).
    Frame {
        payload: Vec<u8>,
        ack: AckHandle,
        back: Sender<Vec<u8>>,
        tagging: HostTagging,
    },
    /// A reloaded config's batch settings (SIGHUP; new tags come with a new transport).
    Reload {
        batch_points: usize,
        batch_wait: Duration,
    },
    Shutdown,
}

#[derive(Default)]
pub struct Batch {
    pub points: Vec<Point>,
    pub acks: Vec<BatchAck>,
    pub own: bool,
    /// Whose host tags its points leave with (this host's, or the agent's they carry).
    pub tagging: HostTagging,
    /// Where its points go once all are sent, for the batcher to decode frames into (its
    /// `PointPool`); none for a batch made elsewhere.
    pub recycle: Option<Sender<Vec<Point>>>,
}

/// The ack of one frame (or relay request) of a batch, and which of the batch's points are its own,
/// so that each frame is acknowledged by what became of its points, not of the whole batch's.
///
/// Its status: [`ACK_DELIVERED`] once its points were accepted by the backend or spooled (or it
/// had none, e.g. only first samples of rate series); [`ACK_REJECTED`] when the backend refused
/// any of them (set aside in `tmpdir/rejected/`); [`ACK_DROPPED`] when some of its points were
/// dropped. The frame protocol has no status for "partly refused" and every status makes the
/// producer forget the frame, so a frame with some points refused and the others delivered is
/// acknowledged [`ACK_REJECTED`]: resending it cannot help (the refused points would be refused
/// again, the others sent twice), and a relay client is answered 400, as InfluxDB answers a
/// partial write.
pub struct BatchAck {
    pub handle: AckHandle,
    /// Its points still to be delivered: `batch.points[points]`.
    pub points: Range<usize>,
    /// How many of its points the backend refused in earlier attempts.
    pub refused: usize,
}

impl BatchAck {
    /// The status once its points are delivered, spooled or refused.
    fn settled(&self) -> u8 {
        if self.refused > 0 {
            ACK_REJECTED
        } else {
            ACK_DELIVERED
        }
    }
}

impl Batch {
    /// Appends a frame's points and its ack (the batcher adds points as the rates make them).
    #[cfg(test)]
    pub(crate) fn add_frame(&mut self, points: Vec<Point>, ack: Option<AckHandle>) {
        let start = self.points.len();
        self.points.extend(points);
        self.add_ack(ack, start);
    }

    /// The ack of the frame whose points are `self.points[start..]`.
    pub(crate) fn add_ack(&mut self, ack: Option<AckHandle>, start: usize) {
        if let Some(handle) = ack {
            self.acks.push(BatchAck { handle, points: start..self.points.len(), refused: 0 });
        }
    }

    /// Acknowledges each frame once what is left of its points is delivered or spooled.
    pub(crate) fn ack_settled(self) {
        for a in self.acks {
            let status = a.settled();
            a.handle.ack(status);
        }
    }

    /// Acknowledges each frame once what is left of the points was dropped: dropped for the frames
    /// with points among them, as settled for the others.
    pub(crate) fn ack_dropped(self) {
        for a in self.acks {
            let status = if a.points.is_empty() { a.settled() } else { ACK_DROPPED };
            a.handle.ack(status);
        }
    }

    /// Keeps only the points for which `pending` is true, and counts in each frame's ack its points
    /// for which `refused` is true; both are indexed by the position in `self.points`.
    pub(crate) fn keep_pending(&mut self, pending: impl Fn(usize) -> bool, refused: impl Fn(usize) -> bool) {
        if !(0..self.points.len()).any(&pending) {
            // The usual end of a batch, every point sent: its points go back to the batcher, which
            // decodes frames into them (freeing them here, on another thread than the one that
            // allocated them, took a tenth of the shipper's time under load).
            for a in &mut self.acks {
                a.refused += a.points.clone().filter(|&i| refused(i)).count();
                a.points = 0..0;
            }
            let points = std::mem::take(&mut self.points);
            if let Some(recycle) = &self.recycle {
                let _ = recycle.try_send(points);
            }
            return;
        }
        // The new position of each point: how many pending ones come before it.
        let mut before = Vec::with_capacity(self.points.len() + 1);
        let mut n = 0;
        for i in 0..self.points.len() {
            before.push(n);
            n += usize::from(pending(i));
        }
        before.push(n);
        for a in &mut self.acks {
            a.refused += a.points.clone().filter(|&i| refused(i)).count();
            let at = |i: usize| before.get(i).copied().unwrap_or(n);
            a.points = at(a.points.start)..at(a.points.end);
        }
        let points = std::mem::take(&mut self.points);
        self.points = points.into_iter().enumerate().filter(|(i, _)| pending(*i)).map(|(_, p)| p).collect();
    }
}

pub struct BatcherSettings {
    pub batch_points: usize,
    pub batch_wait: Duration,
    /// Where the rate state is saved (on shutdown and every [`RATE_SAVE_EVERY`]).
    pub rate_file: Option<PathBuf>,
}

pub const RATE_SAVE_EVERY: Duration = Duration::from_secs(30);

/// The points of sent batches, handed back by the delivery loop ([`Batch::recycle`]) and decoded
/// into again ([`Frame::decode_reusing`]): under load the batcher then allocates no string per
/// point, and nothing it allocated is freed by another thread. It holds at most
/// [`RECYCLED_BATCHES`] sent batches, and as many in its channel, whatever the number of producers.
struct PointPool {
    /// The sent batch whose points the next frames are decoded into.
    spare: Vec<Point>,
    /// Sent batches waiting their turn. Keeping whole batches (instead of a capped number of
    /// points, the rest freed) rides out the bursts of a full pipeline: with 10 000 points the
    /// pool was by turns full, freeing 14% of what came back, and empty, allocating afresh.
    queued: std::collections::VecDeque<Vec<Point>>,
    /// Emptied vectors, for the next batches' points (no growing by doubling, no moves).
    empty: Vec<Vec<Point>>,
    /// The vector frames are decoded into before the rates.
    decoded: Vec<Point>,
    /// A sent batch, or an emptied vector, with room for more points than this is freed rather
    /// than kept: one burst of huge frames does not pin its memory for good.
    max_points: usize,
    sent_tx: Sender<Vec<Point>>,
    sent_rx: Receiver<Vec<Point>>,
}

/// A frame's payload buffer larger than this is not handed back to its connection for the next
/// frame (frames may reach `MAX_FRAME_BYTES`; a connection holds a few buffers for life).
const KEPT_PAYLOAD_BYTES: usize = 1 << 20;

/// Sent batches kept to decode into, and waiting in the channel; one sent when both are full is
/// freed.
const RECYCLED_BATCHES: usize = 4;
/// Below this many points left in `spare`, the next queued batch takes over (with them).
const SPARE_LOW: usize = 2_000;

impl PointPool {
    fn new(batch_points: usize) -> PointPool {
        let (sent_tx, sent_rx) = crossbeam_channel::bounded(RECYCLED_BATCHES);
        PointPool {
            max_points: PointPool::max_points(batch_points),
            spare: Vec::new(),
            queued: std::collections::VecDeque::new(),
            empty: Vec::new(),
            decoded: Vec::new(),
            sent_tx,
            sent_rx,
        }
    }

    /// The largest batch kept to decode into, for batches of `batch_points`.
    fn max_points(batch_points: usize) -> usize {
        batch_points.saturating_mul(4).max(20_000)
    }

    /// Decodes a checked payload's points into `self.decoded`.
    fn decode(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        while let Ok(sent) = self.sent_rx.try_recv() {
            if self.queued.len() < RECYCLED_BATCHES && sent.capacity() <= self.max_points {
                self.queued.push_back(sent);
            }
        }
        if self.spare.len() < SPARE_LOW {
            if let Some(mut next) = self.queued.pop_front() {
                next.append(&mut self.spare);
                let emptied = std::mem::replace(&mut self.spare, next);
                self.keep_empty(emptied);
            }
        }
        self.decoded.clear();
        Frame::decode_reusing(payload, &mut self.decoded, &mut self.spare).map(|_| ())
    }

    /// Keeps an emptied vector for a batch or a frame to come, unless it is too big or enough wait.
    fn keep_empty(&mut self, emptied: Vec<Point>) {
        if emptied.capacity() > self.max_points {
            return;
        }
        if self.decoded.capacity() < emptied.capacity() && self.decoded.is_empty() {
            let smaller = std::mem::replace(&mut self.decoded, emptied);
            return self.keep_empty(smaller);
        }
        if self.empty.len() < RECYCLED_BATCHES && emptied.capacity() > 0 {
            self.empty.push(emptied);
        }
    }

    /// Readies an empty batch to take points.
    fn open(&mut self, batch: &mut Batch) {
        if batch.recycle.is_none() {
            batch.recycle = Some(self.sent_tx.clone());
        }
        if batch.points.capacity() == 0 {
            batch.points = self.empty.pop().unwrap_or_default();
        }
    }
}

/// Where the batcher sends its batches: to the router, or straight to the delivery loop when the
/// router has put the queue of a single destination in `direct` (the one-output case: no thread
/// to wake in between, one wake-up less per batch).
pub struct Outlet {
    router: Sender<Batch>,
    direct: Direct,
}

/// The delivery queue of the only destination, while there is one (cleared by the router at the
/// start of every reload, set again at its end when one destination remains, cleared when the
/// router stops).
pub type Direct = Arc<Mutex<Option<Sender<Batch>>>>;

/// How often a batcher waiting on a full delivery queue looks whether a reload closed the way around.
const DIRECT_RECHECK: Duration = Duration::from_millis(50);

impl Outlet {
    pub fn new(router: Sender<Batch>, direct: Direct) -> Outlet {
        Outlet { router, direct }
    }

    fn send(&self, mut batch: Batch) {
        loop {
            // Cloned so that a full queue is waited on without the lock, which a reload takes.
            let Some(tx) = self.direct.lock().unwrap_or_else(|e| e.into_inner()).clone() else { break };
            match tx.send_timeout(batch, DIRECT_RECHECK) {
                Ok(()) => return,
                // A full queue: wait on, unless a reload has meanwhile closed the way around
                // (then the router places the batch on the new destinations).
                Err(SendTimeoutError::Timeout(b)) => batch = b,
                // Its delivery thread is gone, which only a panic can do while senders remain:
                // the router decides.
                Err(SendTimeoutError::Disconnected(b)) => {
                    batch = b;
                    break;
                }
            }
        }
        let _ = self.router.send(batch);
    }
}

impl From<Sender<Batch>> for Outlet {
    fn from(router: Sender<Batch>) -> Outlet {
        Outlet::new(router, Direct::default())
    }
}

/// A batch being gathered: when it opened and closes, how many inputs (frames, relay requests) it
/// took, and whether the next one waits `batch_ms` ([`Linger`]).
struct Open {
    batch: Batch,
    /// While it is open: when it opened (its first input) and when it closes.
    window: Option<(Instant, Instant)>,
    inputs: usize,
    linger: Linger,
}

impl Open {
    fn deadline(&self) -> Option<Instant> {
        self.window.map(|(_, deadline)| deadline)
    }
}

impl Open {
    fn new(tagging: HostTagging) -> Open {
        Open { batch: Batch { tagging, ..Batch::default() }, window: None, inputs: 0, linger: Linger::default() }
    }
}

pub fn run_batcher(rx: Receiver<Input>, out: impl Into<Outlet>, mut settings: BatcherSettings, stats: Arc<Stats>) {
    let out: Outlet = out.into();
    let mut rates = match &settings.rate_file {
        Some(path) => match RateState::load(path) {
            Ok(r) => {
                if !r.is_empty() {
                    log::info!("restored the rate state of {} series from {}", r.len(), path.display());
                }
                r
            }
            Err(e) => {
                log::warn!("rate state in {} not restored ({e}); counters start afresh", path.display());
                RateState::new()
            }
        },
        None => RateState::new(),
    };
    let mut last_save = Instant::now();
    let rate_file = settings.rate_file.clone();
    let save = |rates: &RateState| {
        if let Some(path) = &rate_file {
            if let Err(e) = rates.save(path) {
                log::warn!("cannot save the rate state to {}: {e}", path.display());
            }
        }
    };
    // The batch being gathered for each tagging: points that carry an agent's host tags never
    // share a batch with the others.
    let mut open: [Open; 2] = [HostTagging::ThisHost, HostTagging::Carried].map(Open::new);
    // `full`: the batch reached batch_points.
    let flush = |slot: &mut Open, full: bool| {
        let inputs = std::mem::take(&mut slot.inputs);
        if let Some((opened, _)) = slot.window.take() {
            slot.linger.sent(inputs, full, opened);
        }
        let batch = &mut slot.batch;
        if !batch.points.is_empty() || !batch.acks.is_empty() {
            let tagging = batch.tagging;
            out.send(std::mem::replace(batch, Batch { tagging, ..Batch::default() }));
        }
    };
    let mut pool = PointPool::new(settings.batch_points);
    // Gives back `points` emptied, for the next frame to be decoded into.
    let prepare = |mut points: Vec<Point>, into: &mut Vec<Point>, rates: &mut RateState| -> Vec<Point> {
        stats.points_received.fetch_add(points.len() as u64, Ordering::Relaxed);
        for p in points.drain(..) {
            if p.name.is_empty() || !p.value.is_finite() {
                stats.points_invalid.fetch_add(1, Ordering::Relaxed);
                log::warn!("dropped an invalid point (empty name or NaN/inf value): {}", p.dry_run_line());
                continue;
            }
            // A first sample adds its series to the state; other samples without a point do not.
            let series = rates.len();
            match rates.apply(p) {
                Some(p) => into.push(p),
                None if rates.len() > series => {
                    stats.points_rate_first.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    stats.points_rate_skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        points
    };
    loop {
        let message = match open.iter().filter_map(Open::deadline).min() {
            Some(d) => crate::wait::recv_until(&rx, Some(d)),
            None => crate::wait::recv_until(&rx, Some(Instant::now() + RATE_SAVE_EVERY)),
        };
        match message {
            Ok(input @ (Input::Frame { .. } | Input::Points { .. })) => {
                let (points, ack, tagging) = match input {
                    Input::Frame { payload, ack, back, tagging } => {
                        let decoded = pool.decode(&payload);
                        // A buffer grown by a large frame is freed (an empty one goes back in
                        // its place): a connection keeps its few buffers for life.
                        let payload = if payload.capacity() > KEPT_PAYLOAD_BYTES { Vec::new() } else { payload };
                        let _ = back.try_send(payload);
                        match decoded {
                            Ok(()) => (std::mem::take(&mut pool.decoded), Some(ack), tagging),
                            // Cannot happen after the connection thread's check; refused all the same.
                            Err(e) => {
                                log::error!("frame {} does not decode after its check: {e}", ack.seq);
                                ack.ack(ACK_REJECTED);
                                (Vec::new(), None, tagging)
                            }
                        }
                    }
                    Input::Points { points, ack } => (points, ack, HostTagging::ThisHost),
                    _ => (Vec::new(), None, HostTagging::ThisHost),
                };
                let slot = &mut open[usize::from(tagging == HostTagging::Carried)];
                let batch = &mut slot.batch;
                pool.open(batch);
                let start = batch.points.len();
                let emptied = prepare(points, &mut batch.points, &mut rates);
                pool.keep_empty(emptied);
                batch.add_ack(ack, start);
                let full = batch.points.len() >= settings.batch_points;
                slot.inputs += 1;
                if slot.window.is_none() {
                    let now = Instant::now();
                    slot.window = Some((now, slot.linger.deadline(now, settings.batch_wait)));
                }
                if full {
                    flush(slot, true);
                }
                // The other kind's batch goes once its time is up, not when the queue next
                // empties: under a stream of this kind that never stops, it would wait for that.
                let other = &mut open[usize::from(tagging != HostTagging::Carried)];
                if other.deadline().is_some_and(|d| d <= Instant::now()) {
                    flush(other, false);
                }
            }
            Ok(Input::Reload { batch_points, batch_wait }) => {
                open.iter_mut().for_each(|o| flush(o, false));
                open.iter_mut().for_each(|o| o.linger = Linger::default());
                pool.max_points = PointPool::max_points(batch_points);
                settings.batch_points = batch_points;
                settings.batch_wait = batch_wait;
            }
            Ok(Input::SelfMetrics(points)) => {
                let mut own = Batch { own: true, ..Batch::default() };
                prepare(points, &mut own.points, &mut rates);
                out.send(own);
            }
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                open.iter_mut().filter(|o| o.deadline().is_none_or(|d| d <= now)).for_each(|o| flush(o, false));
            }
            Ok(Input::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                open.iter_mut().for_each(|o| flush(o, false));
                save(&rates);
                return;
            }
        }
        if last_save.elapsed() >= RATE_SAVE_EVERY {
            save(&rates);
            last_save = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(ids: std::ops::Range<u64>) -> Vec<Point> {
        ids.map(|i| Point::int("m", 1_700_000_000, i as i64, "t").with_tag("id", i.to_string())).collect()
    }

    #[test]
    fn a_batch_closes_at_batch_points_without_splitting_a_frame_and_the_rest_after_batch_wait() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (out, batches) = crossbeam_channel::unbounded();
        let settings = BatcherSettings { batch_points: 5, batch_wait: Duration::from_millis(100), rate_file: None };
        let stats = Arc::new(Stats::default());
        let batcher = std::thread::spawn({
            let stats = Arc::clone(&stats);
            move || run_batcher(rx, out, settings, stats)
        });
        for i in 0..3 {
            tx.send(Input::Points { points: points(i * 2..i * 2 + 2), ack: None }).expect("send");
        }
        let fourth = Instant::now();
        tx.send(Input::Points { points: points(6..8), ack: None }).expect("send");
        // Three frames of two points reach five: one batch of six, the fourth frame waits.
        let first = batches.recv_timeout(Duration::from_secs(5)).expect("first batch");
        assert_eq!(first.points.len(), 6);
        let second = batches.recv_timeout(Duration::from_secs(5)).expect("second batch");
        assert_eq!(second.points.len(), 2);
        assert!(fourth.elapsed() >= Duration::from_millis(100), "sent before batch_wait");
        tx.send(Input::Shutdown).expect("shutdown");
        batcher.join().expect("batcher");
        assert_eq!(stats.points_received.load(Ordering::Relaxed), 8);
    }

    /// Inputs sent together share a batch; after three batches that waited batch_wait for nothing,
    /// a lone input goes at once; one within batch_wait of that batch waits again.
    #[test]
    fn a_lone_input_goes_at_once_after_three_waits_for_nothing() {
        const WAIT: Duration = Duration::from_millis(500);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (out, batches) = crossbeam_channel::unbounded();
        let settings = BatcherSettings { batch_points: 1000, batch_wait: WAIT, rate_file: None };
        let batcher = std::thread::spawn(move || run_batcher(rx, out, settings, Arc::new(Stats::default())));
        let ids = |b: &Batch| b.points.iter().map(|p| p.value.as_f64() as i64).collect::<Vec<_>>();
        let send = |range: std::ops::Range<u64>| tx.send(Input::Points { points: points(range), ack: None });
        send(0..2).expect("send");
        send(2..4).expect("send");
        let batch = batches.recv_timeout(Duration::from_secs(5)).expect("batch");
        assert_eq!(ids(&batch), [0, 1, 2, 3], "two inputs sent together, one batch");
        for i in 0..crate::linger::IDLE_WAITS as u64 {
            let sent = Instant::now();
            send(10 + i..11 + i).expect("send");
            let batch = batches.recv_timeout(Duration::from_secs(5)).expect("batch");
            assert_eq!(ids(&batch), [10 + i as i64]);
            assert!(sent.elapsed() >= WAIT, "batch {i} did not wait");
        }
        // Later than batch_wait after the last batch: nothing waiting could have joined.
        std::thread::sleep(WAIT + WAIT / 5);
        send(20..21).expect("send");
        let batch = batches.recv_timeout(WAIT * 4 / 5).expect("a lone input goes at once");
        assert_eq!(ids(&batch), [20]);
        // Within batch_wait of it: the wait is back.
        send(21..22).expect("send");
        assert!(batches.recv_timeout(WAIT / 2).is_err(), "went at once though waiting would have joined it");
        let batch = batches.recv_timeout(Duration::from_secs(5)).expect("batch");
        assert_eq!(ids(&batch), [21]);
        tx.send(Input::Shutdown).expect("shutdown");
        batcher.join().expect("batcher");
    }
    /// A frame's payload buffer goes back to its connection after the decode, unless a large
    /// frame grew it past KEPT_PAYLOAD_BYTES: then an empty one goes back in its place.
    #[test]
    fn payload_buffers_go_back_to_their_connection_unless_large() {
        use crate::ack::AckTo;
        use puypuy_common::frame::Frame;
        let (tx, rx) = crossbeam_channel::unbounded();
        let (out, _batches) = crossbeam_channel::unbounded();
        let settings = BatcherSettings { batch_points: 3, batch_wait: Duration::from_secs(60), rate_file: None };
        let batcher = std::thread::spawn(move || run_batcher(rx, out, settings, Arc::new(Stats::default())));
        let (acks, _acked) = crossbeam_channel::unbounded();
        let (back, returned) = crossbeam_channel::unbounded();
        for (seq, room) in [(1, 4096), (2, KEPT_PAYLOAD_BYTES + 1)] {
            let mut payload = Vec::with_capacity(room);
            payload.extend_from_slice(&Frame::new("a", seq, vec![Point::int("x", 1, 2, "t")]).to_bytes()[4..]);
            let ack = AckHandle { to: AckTo::Channel(acks.clone()), seq };
            tx.send(Input::Frame { payload, ack, back: back.clone(), tagging: HostTagging::ThisHost }).expect("send");
        }
        let small = returned.recv_timeout(Duration::from_secs(5)).expect("first buffer back");
        assert!(small.capacity() >= 4096, "the usual buffer is handed back: {}", small.capacity());
        let large = returned.recv_timeout(Duration::from_secs(5)).expect("second buffer back");
        assert_eq!(large.capacity(), 0, "an empty buffer in place of the large one");
        tx.send(Input::Shutdown).expect("shutdown");
        batcher.join().expect("batcher");
    }

    /// A batch whose points were all sent hands them back, and the next frames are decoded into
    /// them: same points as a fresh decode, in allocations the first batch made. One with points
    /// still pending keeps them.
    #[test]
    fn sent_points_are_handed_back_and_decoded_into() {
        use crate::ack::AckTo;
        use puypuy_common::frame::Frame;
        let (tx, rx) = crossbeam_channel::unbounded();
        let (out, batches) = crossbeam_channel::unbounded();
        let settings = BatcherSettings { batch_points: 3, batch_wait: Duration::from_secs(60), rate_file: None };
        let batcher = std::thread::spawn(move || run_batcher(rx, out, settings, Arc::new(Stats::default())));
        let (acks, acked) = crossbeam_channel::unbounded();
        let (back, _) = crossbeam_channel::unbounded();
        let frame = |seq: u64, points: Vec<Point>| Input::Frame {
            payload: Frame::new("a", seq, points).to_bytes()[4..].to_vec(),
            ack: AckHandle { to: AckTo::Channel(acks.clone()), seq },
            back: back.clone(),
            tagging: HostTagging::ThisHost,
        };
        let long = |i: i64| Point::int(format!("a_name_of_forty_characters_or_so_{i:06}"), 1, i, "t");
        tx.send(frame(1, (0..3).map(long).collect())).expect("send");
        let mut first = batches.recv_timeout(Duration::from_secs(5)).expect("first batch");
        first.keep_pending(|_| false, |_| false);
        assert!(first.points.is_empty());
        first.ack_settled();
        assert_eq!(acked.recv_timeout(Duration::from_secs(5)).expect("ack").seq, 1);
        let second_points = vec![
            Point::float("a_longer_name_than_before", 5, 0.5, "system").with_tag("k", "v").with_tag("k2", "v2"),
            Point::int("b", 6, 7, ""),
            Point::int("c", 7, 8, "t").rate(),
            Point::int("d", 8, 9, "t"),
        ];
        tx.send(frame(2, second_points.clone())).expect("send");
        let mut second = batches.recv_timeout(Duration::from_secs(5)).expect("second batch");
        // The rate point is a first sample: no point.
        let expected = [&second_points[..2], &second_points[3..]].concat();
        assert_eq!(second.points, expected);
        // A fresh decode allocates a name's length; one written over a longer name keeps its room.
        // Three of its points went into the first batch's three; the fourth is new.
        let room = long(0).name.len();
        let reused = second.points.iter().filter(|p| p.name.capacity() >= room).count();
        assert_eq!(reused, 2, "not decoded into the sent points");
        second.keep_pending(|i| i == 1, |_| false);
        assert_eq!(second.points, expected[1..2]);
        tx.send(Input::Shutdown).expect("shutdown");
        batcher.join().expect("batcher");
    }

    /// A sent batch far larger than a batch is made of (a burst of huge frames) is freed, not
    /// kept to decode into: the pool's memory stays bounded by `batch_points`.
    #[test]
    fn the_pool_keeps_sent_batches_of_usual_size_and_frees_huge_ones() {
        use puypuy_common::frame::Frame;
        let mut pool = PointPool::new(10);
        let payload = Frame::new("a", 1, points(0..1)).to_bytes()[4..].to_vec();
        pool.sent_tx.try_send(points(0..30_000)).expect("room");
        pool.sent_tx.try_send(points(0..3)).expect("room");
        pool.decode(&payload).expect("decodes");
        assert_eq!(pool.decoded, points(0..1));
        // The usual batch became the spare (one point of it decoded into), the huge one was freed.
        assert_eq!((pool.spare.len(), pool.queued.len()), (2, 0));
    }

    /// Points from a PuyPuy agent carry its host tags: they never share a batch with local points,
    /// to which this host's are added.
    /// An agent's batch goes at its deadline while local points keep the batcher's queue full
    /// (it used to wait until the queue emptied, after the local batch).
    #[test]
    fn a_batch_goes_at_its_deadline_while_the_other_kind_keeps_the_queue_full() {
        use crate::ack::AckTo;
        use puypuy_common::frame::Frame;
        let (tx, rx) = crossbeam_channel::unbounded();
        let (out, batches) = crossbeam_channel::unbounded();
        let (acks, _acked) = crossbeam_channel::unbounded();
        let (back, _) = crossbeam_channel::unbounded();
        tx.send(Input::Frame {
            payload: Frame::new("agent", 1, points(0..2)).to_bytes()[4..].to_vec(),
            ack: AckHandle { to: AckTo::Channel(acks), seq: 1 },
            back,
            tagging: HostTagging::Carried,
        })
        .expect("send");
        // Queued before the batcher starts: taking them all lasts far longer than batch_wait.
        const LOCAL: u64 = 100_000;
        for i in 0..LOCAL {
            tx.send(Input::Points { points: points(10 + i..11 + i), ack: None }).expect("send");
        }
        let settings =
            BatcherSettings { batch_points: 10_000_000, batch_wait: Duration::from_millis(1), rate_file: None };
        let batcher = std::thread::spawn(move || run_batcher(rx, out, settings, Arc::new(Stats::default())));
        let first = batches.recv_timeout(Duration::from_secs(30)).expect("first batch");
        assert_eq!((first.tagging, first.points.len()), (HostTagging::Carried, 2));
        let second = batches.recv_timeout(Duration::from_secs(30)).expect("second batch");
        assert_eq!((second.tagging, second.points.len()), (HostTagging::ThisHost, LOCAL as usize));
        tx.send(Input::Shutdown).expect("shutdown");
        batcher.join().expect("batcher");
    }

    #[test]
    fn an_agents_frames_are_batched_apart_from_local_points() {
        use crate::ack::AckTo;
        use puypuy_common::frame::Frame;
        let (tx, rx) = crossbeam_channel::unbounded();
        let (out, batches) = crossbeam_channel::unbounded();
        let settings = BatcherSettings { batch_points: 4, batch_wait: Duration::from_secs(60), rate_file: None };
        let batcher = std::thread::spawn(move || run_batcher(rx, out, settings, Arc::new(Stats::default())));
        let (acks, _acked) = crossbeam_channel::unbounded();
        let (back, _) = crossbeam_channel::unbounded();
        let frame = |seq: u64, ids: std::ops::Range<u64>, tagging| Input::Frame {
            payload: Frame::new("a", seq, points(ids)).to_bytes()[4..].to_vec(),
            ack: AckHandle { to: AckTo::Channel(acks.clone()), seq },
            back: back.clone(),
            tagging,
        };
        tx.send(frame(1, 0..2, HostTagging::Carried)).expect("send");
        tx.send(Input::Points { points: points(2..4), ack: None }).expect("send");
        tx.send(frame(2, 4..6, HostTagging::ThisHost)).expect("send");
        tx.send(frame(3, 6..8, HostTagging::Carried)).expect("send");
        let full = batches.recv_timeout(Duration::from_secs(5)).expect("the local batch");
        let ids = |b: &Batch| b.points.iter().map(|p| p.tags[0].1.clone()).collect::<Vec<_>>();
        assert_eq!(
            (full.tagging, ids(&full)),
            (HostTagging::ThisHost, vec!["2".into(), "3".into(), "4".into(), "5".into()])
        );
        let full = batches.recv_timeout(Duration::from_secs(5)).expect("the agent's batch");
        assert_eq!(
            (full.tagging, ids(&full)),
            (HostTagging::Carried, vec!["0".into(), "1".into(), "6".into(), "7".into()])
        );
        assert_eq!(
            full.acks.iter().map(|a| (a.handle.seq, a.points.clone())).collect::<Vec<_>>(),
            [(1, 0..2), (3, 2..4)]
        );
        tx.send(Input::Shutdown).expect("shutdown");
        batcher.join().expect("batcher");
    }
}
