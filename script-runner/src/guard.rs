//! The process groups of the scripts running now, and the guardian that kills them if the runner
//! dies without doing it itself (SIGKILL, OOM killer, a crash).
//!
//! Scripts are started with `posix_spawn` (a `vfork`-like clone that copies no page tables),
//! which is four times cheaper for the runner than `fork` + `exec`: 0.23 against 0.90 ms of
//! runner CPU per run in `./tests/bench.sh --only scripts`. `posix_spawn` cannot set
//! `PR_SET_PDEATHSIG` in the child, so scripts no longer die with the runner by themselves.
//! Instead, at start-up, the runner forks a guardian: a copy of itself that blocks reading a pipe
//! whose only write end the runner holds. The running scripts' process groups are kept in a table
//! of shared memory (a `MAP_SHARED` mapping made before the fork). However the runner ends, the
//! kernel closes its end of the pipe, the guardian's read returns, and it sends SIGKILL to every
//! process group still in the table — grandchildren a script left in its group included — and
//! exits. The guardian ignores SIGTERM, SIGINT and SIGHUP (they are meant for the runner) and
//! costs nothing while the runner lives.

use std::io;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::sys::signal::{killpg, signal, SigHandler, Signal};
use nix::unistd::Pid;

/// Room for this many scripts running at once; more are still run and killed on timeout and on a
/// clean stop, but not by the guardian.
pub const SLOTS: usize = 1024;

/// The table of running process groups (0 = a free slot). Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct Groups(Arc<Table>);

struct Table {
    ptr: NonNull<AtomicI32>,
    len: usize,
    shared: bool,
}

// SAFETY: the memory behind `ptr` is owned by the Table alone (nothing else frees or aliases it
// mutably) and is only read and written through `AtomicI32`, so moving the Table to another
// thread cannot race.
unsafe impl Send for Table {}
// SAFETY: `&Table` only hands out `&[AtomicI32]`, which any number of threads may use at once.
unsafe impl Sync for Table {}

impl Drop for Table {
    fn drop(&mut self) {
        if self.shared {
            // SAFETY: ptr and len are the mapping made in `Groups::new`, unmapped only here, once,
            // when the last clone of `Groups` goes; no slice of it outlives the Table.
            // munmap fails only for an invalid range, which this is not; nothing to do about it here.
            let _ = unsafe { munmap(self.ptr.cast(), self.len * std::mem::size_of::<AtomicI32>()) };
        } else {
            // SAFETY: ptr and len come from `Box::leak` of a boxed slice of exactly len items in
            // `Groups::new`, and are turned back into that Box only here, once.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) });
        }
    }
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Groups").field(&self.running()).finish()
    }
}

impl Default for Groups {
    fn default() -> Self {
        Groups::new()
    }
}

impl Groups {
    /// A table in shared anonymous memory, so that a guardian forked afterwards sees it; in
    /// private memory if that mapping is refused.
    pub fn new() -> Groups {
        const BYTES: NonZeroUsize = match NonZeroUsize::new(SLOTS * std::mem::size_of::<AtomicI32>()) {
            Some(n) => n,
            None => panic!("SLOTS is not zero"),
        };
        // SAFETY: a fresh anonymous mapping that aliases no Rust object; the kernel zero-fills it,
        // and zeroed bytes are a valid AtomicI32 array, suitably aligned (page-aligned).
        let mapped =
            unsafe { mmap_anonymous(None, BYTES, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED) };
        match mapped {
            Ok(ptr) => Groups(Arc::new(Table { ptr: ptr.cast(), len: SLOTS, shared: true })),
            Err(_) => {
                let slots: Box<[AtomicI32]> = (0..SLOTS).map(|_| AtomicI32::new(0)).collect();
                let ptr = NonNull::from(Box::leak(slots)).cast::<AtomicI32>();
                Groups(Arc::new(Table { ptr, len: SLOTS, shared: false }))
            }
        }
    }

    fn slots(&self) -> &[AtomicI32] {
        // SAFETY: ptr points to len initialised AtomicI32 (zero-filled mapping or boxed slice)
        // that stay allocated as long as the Table, which the returned borrow of self keeps alive.
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr(), self.0.len) }
    }

    /// Records a running group; false when the table is full.
    pub fn insert(&self, pgid: i32) -> bool {
        self.slots().iter().any(|s| s.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::Relaxed).is_ok())
    }

    pub fn remove(&self, pgid: i32) {
        for s in self.slots() {
            if s.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }

    /// The groups recorded now.
    pub fn running(&self) -> Vec<i32> {
        self.slots().iter().map(|s| s.load(Ordering::SeqCst)).filter(|&p| p > 0).collect()
    }

    /// SIGKILL to every recorded group (the runner is stopping).
    pub fn kill_all(&self) {
        for s in self.slots() {
            let pgid = s.load(Ordering::SeqCst);
            if pgid > 0 {
                // The group may be gone already (ESRCH): nothing left to kill.
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
    }

    /// Forks the guardian. Returns the write end of its pipe, which the runner must keep open
    /// for as long as it lives (it is close-on-exec, so scripts do not inherit it).
    ///
    /// Call it before the runner starts any thread: the child then is a plain copy of a
    /// single-threaded process. It still only makes raw system calls and never allocates.
    pub fn start_guardian(&self) -> io::Result<std::os::fd::OwnedFd> {
        if !self.0.shared {
            return Err(io::Error::other("no shared memory for the table of running scripts"));
        }
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        // SAFETY: after a fork the child may only make async-signal-safe calls until it execs or
        // exits (other threads' locks may be held forever). The child branch below makes only
        // system calls, allocates nothing, and ends in _exit without returning to the caller.
        match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
            nix::unistd::ForkResult::Parent { .. } => {
                drop(read_end);
                Ok(write_end)
            }
            nix::unistd::ForkResult::Child => {
                // Nothing here allocates or takes a lock: the child of a fork may only make
                // async-signal-safe calls, and every call below is a plain system call.
                drop(write_end);
                for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGPIPE] {
                    // SAFETY: SIG_IGN installs no handler, so no Rust code can run as one; this is
                    // the only thread of the child, so nothing races on the dispositions.
                    let _ = unsafe { signal(sig, SigHandler::SigIgn) };
                }
                let _ = nix::sys::prctl::set_name(c"puypuy-guardian");
                let mut byte = [0u8; 1];
                // Returns at EOF (the runner is gone) or on an error other than EINTR.
                while let Err(Errno::EINTR) = nix::unistd::read(&read_end, &mut byte) {}
                self.kill_all();
                // SAFETY: _exit ends this process at once, without running the atexit handlers and
                // stdio flushes of the runner it is a copy of (which exit would run twice).
                unsafe { libc::_exit(0) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_and_freed() {
        let g = Groups::new();
        assert!(g.insert(101));
        assert!(g.insert(202));
        assert_eq!(g.running(), vec![101, 202]);
        g.remove(101);
        assert_eq!(g.running(), vec![202]);
        assert!(g.insert(303));
        assert_eq!(g.running(), vec![303, 202]);
        g.remove(999);
        assert_eq!(g.running(), vec![303, 202]);
    }

    #[test]
    fn a_full_table_refuses() {
        let g = Groups::new();
        for i in 1..=SLOTS as i32 {
            assert!(g.insert(i));
        }
        assert!(!g.insert(5000));
        g.remove(7);
        assert!(g.insert(5000));
    }

    #[test]
    fn guardian_kills_the_recorded_groups_once_the_runner_end_of_its_pipe_closes() {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        use std::time::{Duration, Instant};
        let groups = Groups::new();
        let mut script =
            std::process::Command::new("sleep").arg("60").process_group(0).spawn().expect("start sleep as a script");
        assert!(groups.insert(script.id() as i32));
        let runner_end = groups.start_guardian().expect("fork the guardian");
        // What the kernel does for a runner that dies, however it dies.
        drop(runner_end);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match script.try_wait().expect("wait for the script") {
                Some(status) => break status,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                None => {
                    let _ = script.kill();
                    panic!("the guardian did not kill the script's group within 10 s");
                }
            }
        };
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    }
}
