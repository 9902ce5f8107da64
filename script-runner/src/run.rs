//! Running one script: its own process group, stdout and stderr read without blocking, a deadline.
//!
//! At the deadline the whole process group gets SIGTERM, then SIGKILL after [`KILL_GRACE`]; the
//! script is always reaped, and any process it left behind in its group is killed once it exits,
//! so no zombie and no orphaned grandchild outlives a run. What the script printed before it was
//! killed is kept. Output beyond `max_output` bytes is cut (and the rest drained so the script does
//! not block on a full pipe).

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

pub const KILL_GRACE: Duration = Duration::from_millis(500);
const STDERR_TAIL: usize = 2048;

pub use crate::guard::Groups;

#[derive(Debug, Clone)]
pub struct RunSettings {
    pub timeout: Duration,
    pub max_output: usize,
    pub env: Vec<(String, String)>,
    /// Run as this uid/gid (the runner started as root with `run_user`).
    pub user: Option<(u32, u32)>,
    pub groups: Groups,
}

#[derive(Debug, Default)]
pub struct RunResult {
    pub stdout: Vec<u8>,
    pub stderr_tail: Vec<u8>,
    /// Exit code; `None` when killed by a signal.
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub truncated: bool,
    pub duration: Duration,
}

/// Makes a pipe non-blocking, so that a read returns what is there instead of waiting for more.
fn set_nonblocking(fd: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

pub fn run_script(path: &Path, settings: &RunSettings) -> std::io::Result<RunResult> {
    let started = Instant::now();
    let mut command = Command::new(path);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .envs(settings.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(dir) = path.parent() {
        command.current_dir(dir);
    }
    if let Some((uid, gid)) = settings.user {
        command.uid(uid).gid(gid);
    }
    // No pre_exec hook: std then starts the script with posix_spawn instead of fork (see
    // crate::guard for what kills the scripts of a runner that dies).
    let mut child = spawn(&mut command)?;
    let pgid = Pid::from_raw(child.id() as i32);
    if !settings.groups.insert(pgid.as_raw()) {
        log::debug!("{} scripts running: {} is not in the guardian's table", crate::guard::SLOTS, path.display());
    }
    let mut result = RunResult::default();
    let (mut stdout, mut stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(o), Some(e)) => (Some(o), Some(e)),
        _ => {
            kill_group(pgid, &mut child, &settings.groups);
            return Err(std::io::Error::other("no pipes to the script"));
        }
    };
    for fd in [stdout.as_ref().map(AsFd::as_fd), stderr.as_ref().map(AsFd::as_fd)].into_iter().flatten() {
        // A blocking pipe would let a script that prints nothing hold the runner past its deadline.
        if let Err(e) = set_nonblocking(fd) {
            kill_group(pgid, &mut child, &settings.groups);
            return Err(std::io::Error::other(format!("cannot make the pipe from the script non-blocking: {e}")));
        }
    }
    let deadline = started + settings.timeout;
    let mut term_sent_at: Option<Instant> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        if term_sent_at.is_none() && now >= deadline {
            result.timed_out = true;
            let _ = killpg(pgid, Signal::SIGTERM);
            term_sent_at = Some(now);
        }
        if let Some(t) = term_sent_at {
            if now >= t + KILL_GRACE {
                break;
            }
        }
        if stdout.is_none() && stderr.is_none() {
            break;
        }
        let wake = match term_sent_at {
            Some(t) => t + KILL_GRACE,
            None => deadline,
        };
        let timeout_ms = wake.saturating_duration_since(now).as_millis().clamp(1, 1000) as u16;
        let polled = {
            let mut fds: Vec<PollFd<'_>> = [stdout.as_ref().map(AsFd::as_fd), stderr.as_ref().map(AsFd::as_fd)]
                .into_iter()
                .flatten()
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            poll(&mut fds, PollTimeout::from(timeout_ms))
        };
        match polled {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        if let Some(out) = stdout.as_mut() {
            match drain(out, &mut buf, &mut result.stdout, settings.max_output, &mut result.truncated) {
                Drain::Eof => stdout = None,
                Drain::More => {}
            }
        }
        if let Some(err) = stderr.as_mut() {
            let mut tail = std::mem::take(&mut result.stderr_tail);
            let mut cut = false;
            let state = drain(err, &mut buf, &mut tail, usize::MAX, &mut cut);
            if tail.len() > STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
            result.stderr_tail = tail;
            if let Drain::Eof = state {
                stderr = None;
            }
        }
    }
    // Both pipes closed (or the kill grace ran out): the script is finished or must be.
    let status = if term_sent_at.is_some() {
        match child.try_wait() {
            Ok(Some(s)) => Some(s),
            _ => {
                let _ = killpg(pgid, Signal::SIGKILL);
                child.wait().ok()
            }
        }
    } else {
        // Pipes closed before the deadline: wait for the exit, still bounded by the deadline.
        loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                _ => {
                    result.timed_out = true;
                    let _ = killpg(pgid, Signal::SIGTERM);
                    std::thread::sleep(KILL_GRACE.min(Duration::from_millis(100)));
                    let _ = killpg(pgid, Signal::SIGKILL);
                    break child.wait().ok();
                }
            }
        }
    };
    // Whatever the script left in its group (a background grandchild) goes with it.
    let _ = killpg(pgid, Signal::SIGKILL);
    settings.groups.remove(pgid.as_raw());
    if let Some(s) = status {
        result.exit_code = s.code();
        result.signal = s.signal();
    }
    result.duration = started.elapsed();
    Ok(result)
}

enum Drain {
    Eof,
    More,
}

/// Starts the script, trying again for a moment while the kernel says its file is busy (ETXTBSY).
/// That happens when the file was just written and some other process forked while it was still
/// open for writing — a deploy tool installing the script, or any multi-threaded program forking
/// in that window — and goes away as soon as that child execs or exits.
fn spawn(command: &mut Command) -> std::io::Result<Child> {
    const TRIES: u32 = 20;
    let mut tried = 1;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tried < TRIES => {
                tried += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn drain(src: &mut impl Read, buf: &mut [u8], out: &mut Vec<u8>, max: usize, truncated: &mut bool) -> Drain {
    loop {
        match src.read(buf) {
            Ok(0) => return Drain::Eof,
            Ok(n) => {
                let room = max.saturating_sub(out.len());
                if n > room {
                    *truncated = true;
                }
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Drain::More,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Drain::Eof,
        }
    }
}

/// Kills and reaps a script given up on before its run, and takes its group out of the guardian's
/// table (a group id left there could be reused by an unrelated process group later).
fn kill_group(pgid: Pid, child: &mut Child, groups: &Groups) {
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait();
    groups.remove(pgid.as_raw());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write the script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod the script");
        p
    }

    fn settings(timeout_ms: u64) -> RunSettings {
        RunSettings {
            timeout: Duration::from_millis(timeout_ms),
            max_output: 1 << 20,
            env: vec![],
            user: None,
            groups: Groups::default(),
        }
    }

    #[test]
    fn output_and_exit_code_are_collected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = script(dir.path(), "check_x", "#!/bin/sh\necho 'a 1 t stack'\necho oops >&2\nexit 3\n");
        let r = run_script(&p, &settings(5000)).expect("run");
        assert_eq!(r.stdout, b"a 1 t stack\n");
        assert_eq!(r.stderr_tail, b"oops\n");
        assert_eq!(r.exit_code, Some(3));
        assert!(!r.timed_out);
    }

    #[test]
    fn a_hanging_script_is_killed_and_keeps_what_it_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("grandchild.pid");
        let body =
            format!("#!/bin/sh\necho 'before 1 t stack'\nsleep 1000 &\necho $! > {}\nsleep 1000\n", pidfile.display());
        let p = script(dir.path(), "check_hang", &body);
        let started = Instant::now();
        let r = run_script(&p, &settings(300)).expect("run");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(r.timed_out);
        assert_eq!(r.stdout, b"before 1 t stack\n");
        let grandchild: i32 = std::fs::read_to_string(&pidfile).expect("pid file").trim().parse().expect("a pid");
        // Reaped by init or by us: either way no longer running.
        std::thread::sleep(Duration::from_millis(100));
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z"), "grandchild still alive: {stat}");
    }

    #[test]
    fn a_script_whose_file_is_still_open_for_writing_is_run_once_it_is_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = script(dir.path(), "check_busy", "#!/bin/sh\necho 'busy 1 t stack'\n");
        // While a writer holds the file, exec fails with ETXTBSY; the writer lets go after 100 ms.
        let writer = std::fs::OpenOptions::new().write(true).open(&p).expect("open for writing");
        let held = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(writer);
        });
        let r = run_script(&p, &settings(5000)).expect("run after the writer closed the file");
        held.join().expect("writer thread");
        assert_eq!(r.stdout, b"busy 1 t stack\n");
        assert_eq!(r.exit_code, Some(0));
    }

    #[test]
    fn output_over_the_cap_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = script(dir.path(), "check_big", "#!/bin/sh\nyes 'x 1 t stack' | head -c 100000\n");
        let mut s = settings(5000);
        s.max_output = 1000;
        let r = run_script(&p, &s).expect("run");
        assert_eq!(r.stdout.len(), 1000);
        assert!(r.truncated);
        assert_eq!(r.exit_code, Some(0));
    }
}
