//! Routing: which destinations each batch's points go to, and a delivery loop per destination.
//!
//! The destinations are each output's (`[TSDB]` and every `[TSDB:NAME]`): one per output, except
//! that a Carbon output listing several carbon-caches has one per cache, its points placed on
//! carbon's consistent-hash ring ([`crate::ring`]) by the path they are sent under. Every point
//! goes to every output. Each destination has its own delivery loop ([`crate::delivery`]): its own
//! queue, retries, spool folder and counters, so one that is down or slow never holds the others
//! back (with several destinations a delivery loop spools what it cannot send at once instead of
//! making the router wait: [`crate::delivery::Delivery::with_spill`]).
//!
//! A frame's points may go to several destinations: each gets its part of the frame's ack
//! ([`JointAck`]), and the frame is acknowledged once every destination it maps to accepted, spooled,
//! refused or dropped its points. A frame none of whose points made a point (first rate samples)
//! is acknowledged at once.
//!
//! With a single destination (one output, one address or several HTTP servers) batches pass
//! through unchanged, to the spool folder `tmpdir/spool` and the shipper's own counters, as before
//! outputs existed. With several, each destination spools in `tmpdir/spool/OUTPUT` (HTTP outputs)
//! or `tmpdir/spool/OUTPUT@HOST_PORT_INSTANCE` (each carbon-cache), and sets refused points aside
//! in `tmpdir/rejected/` the same way. A reload keeps the delivery loop (and what it holds) of every
//! destination still configured, starts the new ones, and lets the removed ones deliver or spool
//! what they hold and stop; their spool folders wait for them to be configured again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender, TrySendError};
use puypuy_common::config::{Backend, Tsdb};
use puypuy_common::Point;

use crate::ack::JointAck;
use crate::balance::BalancedTransport;
use crate::batch::{Batch, BatchAck, Direct};
use crate::delivery::{Backoff, Delivery, DeliverySettings};
use crate::rejected::RejectedDir;
use crate::ring::CarbonRing;
use crate::spool::{DropPolicy, Spool};
use crate::stats::{DestinationList, DestinationStats, Stats};
use crate::tags::{HostTagging, HostTags};
use crate::transport::{self, CarbonTransport, Transport};

/// The queue of each of several destinations, in batches.
const SEVERAL_QUEUE: usize = 64;

/// What every destination's delivery loop is given, from `[SelfConfig]`.
#[derive(Clone)]
pub struct DeliveryEnv {
    pub tmpdir: PathBuf,
    pub max_cache: usize,
    pub max_cache_bytes: u64,
    pub policy: DropPolicy,
    pub rejected_max_files: usize,
    pub batch_points: usize,
    pub host: HostTags,
}

/// One destination as configured.
pub struct DestinationPlan {
    /// `TSDB` or `NAME`.
    pub output: String,
    /// The carbon-cache (`host:port[:instance]`) or the output's addresses.
    pub name: String,
    tsdb: Tsdb,
    /// The carbon-cache's `host:port` for a ring member.
    carbon_address: Option<String>,
}

impl DestinationPlan {
    fn key(&self) -> String {
        format!("{}@{}", self.output, self.name)
    }

    fn transport(&self, env: &DeliveryEnv) -> Box<dyn Transport> {
        if let Some(address) = &self.carbon_address {
            return Box::new(CarbonTransport::to_address(address, &self.tsdb, env.host.clone()));
        }
        let addresses = &self.tsdb.routing.addresses;
        if addresses.len() <= 1 || matches!(self.tsdb.backend, Backend::File | Backend::Prometheus) {
            return transport::from_config(&self.tsdb, env.batch_points, env.host.clone());
        }
        let servers = addresses
            .iter()
            .map(|a| {
                let tsdb = Tsdb { address: a.clone(), ..self.tsdb.clone() };
                transport::from_config(&tsdb, env.batch_points, env.host.clone())
            })
            .collect();
        Box::new(BalancedTransport::new(servers, self.tsdb.routing.balance))
    }

    /// Its spool and rejected folders: `tmpdir/spool` and `tmpdir/rejected` when it is the only one.
    fn folders(&self, env: &DeliveryEnv, only: bool) -> (PathBuf, PathBuf) {
        if only {
            return (env.tmpdir.join("spool"), env.tmpdir.join("rejected"));
        }
        let clean = |s: &str| -> String {
            s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') { c } else { '_' }).collect()
        };
        let folder = if self.carbon_address.is_some() {
            format!("{}@{}", self.output, clean(&self.name))
        } else {
            self.output.clone()
        };
        (env.tmpdir.join("spool").join(&folder), env.tmpdir.join("rejected").join(folder))
    }
}

/// How one output's points are placed on its destinations.
enum Placement {
    /// Every point to its one destination.
    Whole,
    /// Carbon's ring, on the path each point is sent under.
    Ring { ring: CarbonRing, host: HostTags, relay_prefix: bool },
}

/// The outputs of a config and their destinations.
pub struct Plan {
    outputs: Vec<(Placement, Vec<DestinationPlan>)>,
}

impl Plan {
    pub fn new(main: &Tsdb, outputs: &[Tsdb], host: &HostTags) -> Plan {
        let mut plan = Plan { outputs: Vec::new() };
        for tsdb in std::iter::once(main).chain(outputs) {
            let output = if tsdb.name.is_empty() { "TSDB".to_string() } else { tsdb.name.clone() };
            let r = &tsdb.routing;
            if tsdb.backend == Backend::Carbon && r.carbon.len() > 1 {
                let ring = CarbonRing::new(&r.carbon, r.hashing, r.replication, r.diverse_replicas);
                let destinations = r
                    .carbon
                    .iter()
                    .map(|d| DestinationPlan {
                        output: output.clone(),
                        name: d.to_string(),
                        tsdb: tsdb.clone(),
                        carbon_address: Some(d.connect_address()),
                    })
                    .collect();
                let placement = Placement::Ring { ring, host: host.clone(), relay_prefix: r.relay_prefix };
                plan.outputs.push((placement, destinations));
            } else {
                let name = if r.addresses.is_empty() { tsdb.backend.name().to_string() } else { r.addresses.join(",") };
                let carbon_address =
                    (tsdb.backend == Backend::Carbon).then(|| r.carbon.first().map(|d| d.connect_address())).flatten();
                let d = DestinationPlan { output, name, tsdb: tsdb.clone(), carbon_address };
                plan.outputs.push((Placement::Whole, vec![d]));
            }
        }
        plan
    }

    pub fn destinations(&self) -> impl Iterator<Item = &DestinationPlan> {
        self.outputs.iter().flat_map(|(_, d)| d)
    }

    fn count(&self) -> usize {
        self.destinations().count()
    }

    /// Which destinations (by position in [`Plan::destinations`]) each point goes to, into `out`;
    /// `tagging` is its batch's (a carbon path is built from the host tags).
    fn place(&self, p: &Point, tagging: HostTagging, out: &mut Vec<usize>, scratch: &mut Vec<usize>) {
        out.clear();
        let mut first = 0;
        for (placement, destinations) in &self.outputs {
            match placement {
                Placement::Whole => out.push(first),
                Placement::Ring { ring, host, relay_prefix } => {
                    let path = crate::backends::carbon::path_ref(p, host.for_points(tagging), *relay_prefix);
                    ring.destinations_of(&path, scratch);
                    out.extend(scratch.iter().map(|i| first + i));
                }
            }
            first += destinations.len();
        }
    }
}

/// Splits a batch between `n` destinations by `place`: each gets its points in order and, for
/// every frame with points among them, a part of the frame's ack covering them. A frame with no
/// point at all is acknowledged at once.
pub fn split(batch: Batch, n: usize, mut place: impl FnMut(&Point, &mut Vec<usize>)) -> Vec<Batch> {
    // Room for an even share and some: growing the parts by doubling moved every point again.
    let share = batch.points.len() / n.max(1) + batch.points.len() / 8 + 16;
    let mut parts: Vec<Batch> = (0..n)
        .map(|_| Batch {
            own: batch.own,
            tagging: batch.tagging,
            points: Vec::with_capacity(share),
            ..Batch::default()
        })
        .collect();
    let mut to = Vec::new();
    let mut points = batch.points.into_iter();
    let mut routed = 0usize;
    let mut route_until = |end: usize, parts: &mut Vec<Batch>| {
        while routed < end {
            let Some(p) = points.next() else { break };
            place(&p, &mut to);
            to.retain(|&d| d < parts.len());
            // The point moves to its last destination and is copied only for the others
            // (replication > 1, several outputs): a copy is two or three allocations.
            if let Some((&last, others)) = to.split_last() {
                for &d in others {
                    parts[d].points.push(p.clone());
                }
                parts[last].points.push(p);
            }
            routed += 1;
        }
    };
    for a in batch.acks {
        route_until(a.points.start, &mut parts);
        let starts: Vec<usize> = parts.iter().map(|b| b.points.len()).collect();
        route_until(a.points.end, &mut parts);
        let holders: Vec<usize> = (0..n).filter(|&d| parts[d].points.len() > starts[d]).collect();
        if holders.is_empty() {
            // No point of it to deliver: settled (delivered, or refused earlier).
            let status =
                if a.refused > 0 { puypuy_common::frame::ACK_REJECTED } else { puypuy_common::frame::ACK_DELIVERED };
            a.handle.ack(status);
            continue;
        }
        for (d, handle) in holders.iter().zip(JointAck::split(a.handle, holders.len())) {
            let end = parts[*d].points.len();
            parts[*d].acks.push(BatchAck { handle, points: starts[*d]..end, refused: a.refused });
        }
    }
    route_until(usize::MAX, &mut parts);
    parts
}

struct Live {
    key: String,
    tx: Sender<Batch>,
    /// Set by the router when this destination's queue is full while another's is not: it is
    /// the slow one, and spools what comes until it has caught up (see `Delivery::with_lag_flag`).
    lagging: Arc<AtomicBool>,
    new_transport: Arc<Mutex<Option<Box<dyn Transport>>>>,
    stats: Arc<Stats>,
    thread: thread::JoinHandle<()>,
}

/// The routing thread's state: the plan in use and a delivery loop per destination.
pub struct Router {
    plan: Plan,
    live: Vec<Live>,
    env: DeliveryEnv,
    /// The shipper's counters, used by the delivery loop when there is a single destination.
    stats: Arc<Stats>,
    list: DestinationList,
    grace: Duration,
    retired: Vec<thread::JoinHandle<()>>,
    /// The batcher's way around this thread to a single destination.
    direct: Direct,
}

impl Router {
    pub fn start(plan: Plan, env: DeliveryEnv, stats: Arc<Stats>, list: DestinationList, grace: Duration) -> Router {
        let mut router = Router {
            plan: Plan { outputs: Vec::new() },
            live: Vec::new(),
            env,
            stats,
            list,
            grace,
            retired: Vec::new(),
            direct: Direct::default(),
        };
        router.reload(plan, None);
        router
    }

    /// What the batcher's [`crate::batch::Outlet`] looks at to skip this thread.
    pub fn direct(&self) -> Direct {
        Arc::clone(&self.direct)
    }

    pub fn describe(&self) -> String {
        let all: Vec<String> = self.plan.destinations().map(|d| format!("{} {}", d.output, d.name)).collect();
        all.join("; ")
    }

    /// Routes batches until the batcher closes its channel, taking new plans from `control`; then
    /// lets every delivery loop finish (deliver or spool what it holds, within its grace).
    pub fn run(mut self, batches: Receiver<Batch>, control: Receiver<(Plan, DeliveryEnv)>) {
        loop {
            select! {
                recv(batches) -> b => match b {
                    Ok(b) => self.route(b),
                    Err(_) => break,
                },
                recv(control) -> c => if let Ok((plan, env)) = c {
                    self.reload(plan, Some(env));
                },
            }
        }
        // The batcher is gone: its way around must not keep a delivery loop's queue open.
        self.set_direct(None);
        for l in self.live.drain(..) {
            drop(l.tx);
            self.retired.push(l.thread);
        }
        for t in self.retired.drain(..) {
            let _ = t.join();
        }
    }

    fn route(&mut self, batch: Batch) {
        if self.live.len() == 1 {
            let _ = self.live[0].tx.send(batch);
            return;
        }
        let mut scratch = Vec::new();
        let plan = &self.plan;
        let tagging = batch.tagging;
        let parts = split(batch, self.live.len(), |p, out| plan.place(p, tagging, out, &mut scratch));
        for (part, l) in parts.into_iter().zip(&self.live) {
            if part.points.is_empty() && part.acks.is_empty() {
                continue;
            }
            l.stats.points_received.fetch_add(part.points.len() as u64, Ordering::Relaxed);
            match l.tx.try_send(part) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(part)) => {
                    // A full queue while another destination keeps up: this one is the slow one,
                    // and spools rather than hold the others back. All full is overload: wait
                    // (backpressure on the inputs, nothing spooled or dropped).
                    let others_keep_up =
                        self.live.iter().any(|o| !std::ptr::eq(o, l) && o.tx.len() < SEVERAL_QUEUE / 2);
                    if others_keep_up && !l.lagging.swap(true, Ordering::Relaxed) {
                        log::warn!("{}: behind the other destinations; spooling its share until it catches up", l.key);
                    }
                    let _ = l.tx.send(part);
                }
            }
        }
    }

    /// Puts `plan` in place: destinations kept (by output and name) get a new transport, new
    /// ones a delivery loop of their own, removed ones are let go.
    fn reload(&mut self, plan: Plan, env: Option<DeliveryEnv>) {
        // The batcher's batches come through here while the destinations change (a new one may
        // take a while to open its spool and transport): none goes to a destination being retired.
        self.set_direct(None);
        if let Some(env) = env {
            self.env = env;
        }
        let only = plan.count() == 1;
        let mut old: Vec<Live> = std::mem::take(&mut self.live);
        // A single destination uses the shipper's counters and the old folders; going from one to
        // several (or back) starts the destination afresh.
        let was_only = old.len() == 1;
        for d in plan.destinations() {
            let key = d.key();
            match old.iter().position(|l| l.key == key).filter(|_| was_only == only) {
                Some(i) => {
                    let l = old.remove(i);
                    *l.new_transport.lock().unwrap_or_else(|e| e.into_inner()) = Some(d.transport(&self.env));
                    self.live.push(l);
                }
                None => self.live.push(self.spawn(d, only)),
            }
        }
        for l in old {
            log::info!("{}: no longer configured; delivering or spooling what it holds, then stopping", l.key);
            drop(l.tx);
            self.retired.push(l.thread);
        }
        self.retired.retain(|t| !t.is_finished());
        let list = self
            .live
            .iter()
            .zip(plan.destinations())
            .map(|(l, d)| DestinationStats {
                output: d.output.clone(),
                destination: d.name.clone(),
                stats: Arc::clone(&l.stats),
            })
            .collect();
        *self.list.lock().unwrap_or_else(|e| e.into_inner()) = if only { Vec::new() } else { list };
        self.plan = plan;
        // Batches the batcher sent through this thread before may reach the destination after
        // ones it sends straight from now on; each carries its own timestamps and acks.
        self.set_direct(if only { self.live.first().map(|l| l.tx.clone()) } else { None });
    }

    fn set_direct(&self, tx: Option<Sender<Batch>>) {
        *self.direct.lock().unwrap_or_else(|e| e.into_inner()) = tx;
    }

    fn spawn(&self, d: &DestinationPlan, only: bool) -> Live {
        let env = &self.env;
        let (spool_dir, rejected_dir) = d.folders(env, only);
        let spool = match Spool::open(&spool_dir, d.tsdb.backend.name(), env.max_cache, env.max_cache_bytes, env.policy)
        {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot open the spool in {}: {e}; buffering in memory only", spool_dir.display());
                None
            }
        };
        let new_transport = Arc::new(Mutex::new(None));
        let settings = DeliverySettings {
            max_batches: env.max_cache,
            shutdown_grace: self.grace,
            spool,
            rejected: RejectedDir::new(rejected_dir, env.rejected_max_files),
            new_transport: Arc::clone(&new_transport),
            backoff: Backoff::default(),
        };
        let stats = if only { Arc::clone(&self.stats) } else { Arc::new(Stats::default()) };
        // With several destinations: room for a few seconds of batches; a destination that fails,
        // is slow to answer, or falls behind the others spools (see `route` and `Delivery`).
        let (tx, rx) = crossbeam_channel::bounded(if only { 4 } else { SEVERAL_QUEUE });
        let lagging = Arc::new(AtomicBool::new(false));
        let transport = d.transport(env);
        if !only {
            log::info!("{} {}: delivering to {}", d.output, d.name, transport.describe());
        }
        let delivery = Delivery::new(transport, settings, Arc::clone(&stats))
            .with_spill(!only)
            .with_lag_flag(Arc::clone(&lagging));
        let name = if only { "delivery".to_string() } else { format!("delivery {}", d.key()) };
        let thread = thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || delivery.run(rx))
            .unwrap_or_else(|e| panic!("cannot start a delivery thread: {e}"));
        Live { key: d.key(), tx, lagging, new_transport, stats, thread }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{AckHandle, AckTo};
    use puypuy_common::frame::{Ack, ACK_DELIVERED, ACK_DROPPED};

    fn points(ids: std::ops::Range<u64>) -> Vec<Point> {
        ids.map(|i| Point::int(format!("m{i}"), 1_700_000_000, i as i64, "t")).collect()
    }

    fn acks(rx: &crossbeam_channel::Receiver<Ack>) -> Vec<(u64, u8)> {
        rx.try_iter().map(|a| (a.seq, a.status)).collect()
    }

    #[test]
    fn a_split_batch_gives_each_destination_its_points_and_a_part_of_each_frames_ack() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut b = Batch::default();
        // Frame 1: points 0..4; frame 2: only first rate samples (no point); frame 3: 4..6.
        for (seq, ids) in [(1, 0..4), (2, 4..4), (3, 4..6)] {
            b.add_frame(points(ids), Some(AckHandle { to: AckTo::Channel(tx.clone()), seq }));
        }
        // Even ids to destination 0, odd ones to 1, and id 5 to both (replication).
        let parts = split(b, 2, |p, out| {
            let id: u64 = p.name[1..].parse().expect("id");
            out.clear();
            out.push((id % 2) as usize);
            if id == 5 {
                out.push(0);
            }
        });
        let names = |b: &Batch| b.points.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&parts[0]), ["m0", "m2", "m4", "m5"]);
        assert_eq!(names(&parts[1]), ["m1", "m3", "m5"]);
        assert_eq!(parts[0].acks.iter().map(|a| a.points.clone()).collect::<Vec<_>>(), [0..2, 2..4]);
        assert_eq!(parts[1].acks.iter().map(|a| a.points.clone()).collect::<Vec<_>>(), [0..2, 2..3]);
        // The frame without points is acknowledged at once; the others when both parts are.
        assert_eq!(acks(&rx), [(2, ACK_DELIVERED)]);
        let mut parts = parts.into_iter();
        let (first, second) = (parts.next().expect("0"), parts.next().expect("1"));
        first.ack_settled();
        assert!(acks(&rx).is_empty(), "acknowledged before every destination settled");
        second.ack_dropped();
        assert_eq!(acks(&rx), [(1, ACK_DROPPED), (3, ACK_DROPPED)]);
    }
}

#[cfg(test)]
mod direct_tests {
    use super::*;
    use crate::ack::{AckHandle, AckTo};
    use crate::batch::{run_batcher, BatcherSettings, Input, Outlet};
    use puypuy_common::config::Config;
    use puypuy_common::frame::{Ack, ACK_DELIVERED};
    use std::time::Instant;

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_batcher_feeds_a_single_destination_around_the_router_and_several_through_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |outputs: &str| {
            let text = format!(
                "[SelfConfig]\ntmpdir = {}\n[TSDB]\ntsdtype = File\npath = a.txt\n{outputs}",
                dir.path().display()
            );
            Config::from_text(&dir.path().join("config.ini"), dir.path(), &text).expect("config")
        };
        let host = HostTags::new(vec![("host".into(), "h".into())]);
        let env = DeliveryEnv {
            tmpdir: dir.path().to_path_buf(),
            max_cache: 100,
            max_cache_bytes: 1 << 20,
            policy: DropPolicy::Oldest,
            rejected_max_files: 10,
            batch_points: 100,
            host: host.clone(),
        };
        let one = load("");
        let stats = Arc::new(Stats::default());
        let router = Router::start(
            Plan::new(&one.tsdb, &one.outputs, &host),
            env.clone(),
            Arc::clone(&stats),
            DestinationList::default(),
            Duration::from_secs(1),
        );
        let direct = router.direct();
        let (batch_tx, batch_rx) = crossbeam_channel::bounded(4);
        let outlet = Outlet::new(batch_tx, router.direct());
        let (input_tx, input_rx) = crossbeam_channel::bounded(8);
        let settings = BatcherSettings { batch_points: 100, batch_wait: Duration::from_millis(1), rate_file: None };
        let batcher = thread::spawn(move || run_batcher(input_rx, outlet, settings, stats));
        let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Ack>();
        let send = |name: &str, seq: u64| {
            let points = vec![Point::int(name, 1_700_000_000, 7, "t")];
            let ack = Some(AckHandle { to: AckTo::Channel(ack_tx.clone()), seq });
            input_tx.send(Input::Points { points, ack }).expect("batcher running");
        };
        let file = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();

        // The routing thread is not running: the point reaches the file around it.
        send("straight", 1);
        let ack = ack_rx.recv_timeout(Duration::from_secs(10)).expect("ack");
        assert_eq!((ack.seq, ack.status), (1, ACK_DELIVERED));
        assert!(batch_rx.is_empty(), "the batch went to the router");
        assert!(file("a.txt").starts_with("straight,"), "{}", file("a.txt"));

        // With a second output the router splits, and the way around is closed.
        let (control_tx, control_rx) = crossbeam_channel::unbounded();
        let routing = thread::spawn(move || router.run(batch_rx, control_rx));
        let two = load("[TSDB:second]\ntsdtype = File\npath = b.txt\n");
        control_tx.send((Plan::new(&two.tsdb, &two.outputs, &host), env.clone())).expect("router running");
        wait_until("the reload", || direct.lock().expect("lock").is_none());
        send("routed", 2);
        let ack = ack_rx.recv_timeout(Duration::from_secs(10)).expect("ack");
        assert_eq!((ack.seq, ack.status), (2, ACK_DELIVERED));
        assert!(file("a.txt").contains("\nrouted,") && file("b.txt").starts_with("routed,"));

        // Back to one output: the way around opens again, to the new single destination.
        control_tx.send((Plan::new(&one.tsdb, &one.outputs, &host), env)).expect("router running");
        wait_until("the second reload", || direct.lock().expect("lock").is_some());
        send("again", 3);
        let ack = ack_rx.recv_timeout(Duration::from_secs(10)).expect("ack");
        assert_eq!((ack.seq, ack.status), (3, ACK_DELIVERED));
        assert!(file("a.txt").contains("\nagain,") && !file("b.txt").contains("again"));

        // The batcher's end ends the router, which closes the way around: every delivery loop
        // sees its queue closed and ends, and the router with them.
        input_tx.send(Input::Shutdown).expect("batcher running");
        batcher.join().expect("batcher");
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        thread::spawn(move || done_tx.send(routing.join().is_ok()));
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(true), "the router did not end");
        assert!(direct.lock().expect("lock").is_none());
    }
}
