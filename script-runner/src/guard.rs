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
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

/// Room for this many scripts running at once; more are still run and killed on timeout and on a
/// clean stop, but not by the guardian.
pub const SLOTS: usize = 1024;

/// The table of running process groups (0 = a free slot). Cheap to clone; all clones share it.
#[derive(Clone)]
pub struct Groups(Arc<Table>);

struct Table {
    ptr: *mut AtomicI32,
    len: usize,
    shared: bool,
}

// SAFETY: the table is only accessed through atomics.
unsafe impl Send for Table {}
// SAFETY: as above.
unsafe impl Sync for Table {}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from the mmap or the Box in `Groups::new` and are freed once.
        unsafe {
            if self.shared {
                libc::munmap(self.ptr.cast(), self.len * std::mem::size_of::<AtomicI32>());
            } else {
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)));
            }
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
        let bytes = SLOTS * std::mem::size_of::<AtomicI32>();
        // SAFETY: a fresh anonymous mapping; zero-filled by the kernel, which is a valid
        // AtomicI32 array.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let slots: Box<[AtomicI32]> = (0..SLOTS).map(|_| AtomicI32::new(0)).collect();
            let ptr = Box::into_raw(slots).cast::<AtomicI32>();
            return Groups(Arc::new(Table { ptr, len: SLOTS, shared: false }));
        }
        Groups(Arc::new(Table { ptr: ptr.cast(), len: SLOTS, shared: true }))
    }

    fn slots(&self) -> &[AtomicI32] {
        // SAFETY: ptr points to len initialised AtomicI32 that live as long as the Table.
        unsafe { std::slice::from_raw_parts(self.0.ptr, self.0.len) }
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
                // SAFETY: kill(2) with a negative pid signals that process group.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
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
        // SAFETY: see above; the child runs only async-signal-safe calls and ends in _exit.
        match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
            nix::unistd::ForkResult::Parent { .. } => {
                drop(read_end);
                Ok(write_end)
            }
            nix::unistd::ForkResult::Child => {
                use std::os::fd::AsRawFd;
                // SAFETY: raw system calls on fds and memory this process owns.
                unsafe {
                    libc::close(write_end.as_raw_fd());
                    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
                        libc::signal(signal, libc::SIG_IGN);
                    }
                    libc::prctl(libc::PR_SET_NAME, c"puypuy-guardian".as_ptr());
                    let mut byte = 0u8;
                    loop {
                        let n = libc::read(read_end.as_raw_fd(), (&raw mut byte).cast(), 1);
                        if n < 0 && *libc::__errno_location() == libc::EINTR {
                            continue;
                        }
                        break;
                    }
                    self.kill_all();
                    libc::_exit(0);
                }
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
}
