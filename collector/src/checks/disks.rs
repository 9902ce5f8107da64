//! disks: block devices and filesystems.
//!
//! Devices are the entries of `/sys/block` except `loop*` and `ram*` (so sd, vd, nvme, dm, md, zram
//! are in), read from `/proc/diskstats`: counters `drive_DEV_bytes_read` and `drive_DEV_bytes_write`
//! (sectors × 512, sent as bytes per second) and `drive_DEV_io_percent` (milliseconds spent doing
//! I/O ÷ 10, so its rate is the percentage of time the device was busy).
//!
//! Filesystems are the `/proc/mounts` entries whose source is a `/dev/` block device (loop devices
//! excepted), each device once, with statvfs on the mount point: `drive_PART_bytes_used`,
//! `drive_PART_bytes_available`, `drive_PART_percent_used` (used ÷ (used + available) × 100, as
//! `df` computes it). PART is the device's file name (`sda1`, `nvme0n1p2`, `vg-root` for
//! `/dev/mapper/vg-root`).

use std::path::PathBuf;

use puypuy_common::Point;

use crate::context::{round2, Context};

#[derive(Debug, PartialEq, Eq)]
pub struct DiskStat {
    pub device: String,
    pub sectors_read: i64,
    pub sectors_written: i64,
    pub io_ms: i64,
}

pub fn parse_diskstats(text: &str) -> Vec<DiskStat> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 14 {
                return None;
            }
            Some(DiskStat {
                device: f[2].to_string(),
                sectors_read: f[5].parse().ok()?,
                sectors_written: f[9].parse().ok()?,
                io_ms: f[12].parse().ok()?,
            })
        })
        .collect()
}

/// `(device file name, mount point)` for block-device filesystems, each device once.
pub fn parse_mounts(text: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(source), Some(mount)) = (f.next(), f.next()) else { continue };
        let Some(dev) = source.strip_prefix("/dev/") else { continue };
        if dev.starts_with("loop") {
            continue;
        }
        let name = dev.rsplit('/').next().unwrap_or(dev).to_string();
        if name.is_empty() || out.iter().any(|(n, _)| *n == name) {
            continue;
        }
        out.push((name, PathBuf::from(unescape_octal(mount))));
    }
    out
}

/// /proc/mounts writes space, tab, newline and backslash in paths as `\040`-style octal.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount table, parsed, from an open `mounts` file kept between cycles.
struct MountTable {
    path: PathBuf,
    file: std::fs::File,
    mounts: Vec<(String, PathBuf)>,
}

static MOUNTS: std::sync::Mutex<Option<MountTable>> = std::sync::Mutex::new(None);

/// The block-device filesystems of `proc_root/mounts`. Having the kernel format the whole mount
/// table was the costliest read of a cycle (40 µs here), and it seldom changes: as proc(5)
/// documents, an open `/proc/mounts` reports POLLPRI | POLLERR once the table changed, so the
/// file is read again only then. Files outside procfs (recorded snapshots) are read every time.
fn mounts(ctx: &Context) -> std::io::Result<Vec<(String, PathBuf)>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let path = ctx.proc_root.join("mounts");
    let mut cache = MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(table) = cache.as_ref().filter(|t| t.path == path) {
        let mut fds = [PollFd::new(table.file.as_fd(), PollFlags::POLLPRI)];
        // No event (0) keeps the table; a change, or poll failing, reads it again.
        if matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0)) {
            return Ok(table.mounts.clone());
        }
    }
    let mut file = std::fs::File::open(&path)?;
    let mounts = parse_mounts(&crate::context::read_all(&mut file)?);
    *cache = crate::context::on_procfs(&file).then(|| MountTable { path, file, mounts: mounts.clone() });
    Ok(mounts)
}

/// The block devices listed last: the folder, the device names of diskstats they were listed
/// for, and the list.
struct BlockList {
    folder: PathBuf,
    stat_devices: Vec<String>,
    devices: Vec<String>,
}

static BLOCK_DEVICES: std::sync::Mutex<Option<BlockList>> = std::sync::Mutex::new(None);

/// The block devices of `sys_root/block`, sorted; an unreadable folder is an error, not "no devices".
/// A sysfs folder is listed again only when the devices of diskstats changed (a disk added or
/// removed is listed there too): listing it every cycle was five syscalls for nothing. A folder
/// outside sysfs (a recorded snapshot) is listed every time.
fn block_devices(ctx: &Context, stats: &[DiskStat]) -> std::io::Result<Vec<String>> {
    use nix::sys::statfs::{statfs, SYSFS_MAGIC};
    let folder = ctx.sys_root.join("block");
    let mut cache = BLOCK_DEVICES.lock().unwrap_or_else(|e| e.into_inner());
    let same_devices = |list: &BlockList| {
        list.folder == folder
            && list.stat_devices.len() == stats.len()
            && list.stat_devices.iter().zip(stats).all(|(a, b)| *a == b.device)
    };
    if let Some(list) = cache.as_ref().filter(|l| same_devices(l)) {
        return Ok(list.devices.clone());
    }
    let mut devices: Vec<String> = std::fs::read_dir(&folder)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .collect();
    devices.sort();
    let on_sysfs = statfs(&folder).is_ok_and(|fs| fs.filesystem_type() == SYSFS_MAGIC);
    *cache = on_sysfs.then(|| BlockList {
        folder,
        stat_devices: stats.iter().map(|s| s.device.clone()).collect(),
        devices: devices.clone(),
    });
    Ok(devices)
}

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
    let mut points = Vec::new();
    let mut problems = Vec::new();
    match ctx.read_proc("diskstats") {
        Ok(text) => {
            let stats = parse_diskstats(&text);
            let devices = block_devices(ctx, &stats).unwrap_or_else(|e| {
                problems.push(format!("cannot list {}: {e}", ctx.sys_root.join("block").display()));
                Vec::new()
            });
            for dev in devices {
                if let Some(s) = stats.iter().find(|s| s.device == dev) {
                    points.push(ctx.counter(format!("drive_{dev}_bytes_read"), s.sectors_read * 512));
                    points.push(ctx.counter(format!("drive_{dev}_bytes_write"), s.sectors_written * 512));
                    points.push(
                        Point::float(format!("drive_{dev}_io_percent"), ctx.timestamp, s.io_ms as f64 / 10.0, "system")
                            .rate(),
                    );
                }
            }
        }
        Err(e) => problems.push(format!("cannot read diskstats: {e}")),
    }
    match mounts(ctx) {
        Ok(mounts) => {
            for (part, mount) in mounts {
                match (ctx.statfs)(&mount) {
                    Ok(u) => {
                        points.push(ctx.int(format!("drive_{part}_bytes_used"), u.used as i64));
                        points.push(ctx.int(format!("drive_{part}_bytes_available"), u.available as i64));
                        let total = u.used + u.available;
                        if total > 0 {
                            points.push(ctx.float(
                                format!("drive_{part}_percent_used"),
                                round2(u.used as f64 * 100.0 / total as f64),
                            ));
                        }
                    }
                    Err(e) => log::debug!("disks: statvfs {}: {e}", mount.display()),
                }
            }
        }
        Err(e) => problems.push(format!("cannot read mounts: {e}")),
    }
    if points.is_empty() && !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On this host's /sys the list is kept while diskstats names the same devices, and listed
    /// again when they change: either way it is what a fresh listing gives. (The cache itself is
    /// shared by the tests of this process, so only what it returns is compared.)
    #[test]
    fn block_devices_of_sysfs_are_listed_again_only_when_diskstats_changes() {
        let (proc_root, sys_root) = (std::path::Path::new("/proc"), std::path::Path::new("/sys"));
        let ctx = crate::context::test_context(proc_root, sys_root);
        let fresh = || {
            let mut names: Vec<String> = std::fs::read_dir("/sys/block")
                .expect("/sys/block")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                .collect();
            names.sort();
            names
        };
        let mut stats = parse_diskstats(&std::fs::read_to_string("/proc/diskstats").expect("diskstats"));
        assert_eq!(block_devices(&ctx, &stats).expect("list"), fresh());
        assert_eq!(block_devices(&ctx, &stats).expect("kept"), fresh());
        stats.push(DiskStat { device: "new0".into(), sectors_read: 0, sectors_written: 0, io_ms: 0 });
        assert_eq!(block_devices(&ctx, &stats).expect("listed again"), fresh());
    }

    // Regression: an unreadable /sys/block was read as "no block devices", without a word.
    #[test]
    fn unreadable_sys_block_is_reported_not_taken_for_no_devices() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("diskstats"), "   8       0 sda 1 0 2 0 3 0 4 0 0 5 0\n").expect("write");
        let ctx = crate::context::test_context(dir.path(), dir.path());
        let e = collect(&ctx).expect_err("no points and two problems");
        assert!(e.starts_with(&format!("cannot list {}: ", dir.path().join("block").display())), "{e}");
    }

    #[test]
    fn mounts_keep_block_devices_once_and_unescape_paths() {
        let text = "/dev/vda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n/dev/vda1 /var/x ext4 rw 0 0\n/dev/mapper/vg-home /my\\040home xfs rw 0 0\n/dev/loop0 /snap squashfs ro 0 0\n";
        assert_eq!(
            parse_mounts(text),
            vec![("vda1".to_string(), PathBuf::from("/")), ("vg-home".to_string(), PathBuf::from("/my home"))]
        );
    }

    /// The cache is one static, and the snapshot tests run `disks` on recorded roots in parallel,
    /// which replaces it: the steps below run alone, in a process of this test binary of their own.
    ///
    /// Regression: this test used to compare two reads of `/proc/mounts` with a fresh one, which
    /// passed just as well with the cache removed.
    #[test]
    fn mount_table_from_procfs_is_kept_until_the_kernel_signals_a_change() {
        let (_, module) = module_path!().split_once("::").expect("crate::module");
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", &format!("{module}::mount_table_cache_alone"), "--ignored", "--test-threads=1"])
            .output()
            .expect("run this test binary");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }

    /// A shell in a mount namespace of its own (so that no mount elsewhere on the host signals a
    /// change to its table) that mounts a tmpfs on `point` when told to.
    struct PrivateMountNamespace {
        child: std::process::Child,
        stdout: std::io::BufReader<std::process::ChildStdout>,
    }

    impl PrivateMountNamespace {
        fn start(point: &std::path::Path) -> PrivateMountNamespace {
            use std::process::{Command, Stdio};
            let mut cmd = Command::new("unshare");
            if !nix::unistd::geteuid().is_root() {
                cmd.arg("--map-root-user");
            }
            let script = "echo ready; read go; mount -t tmpfs puypuy-change \"$0\" && echo mounted; exec sleep 600";
            let mut child = cmd
                .args(["--mount", "--propagation", "private", "sh", "-c", script])
                .arg(point)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("unshare (util-linux) runs a shell in a new mount namespace");
            let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
            let mut ns = PrivateMountNamespace { child, stdout };
            ns.expect_line("ready");
            ns
        }

        fn expect_line(&mut self, want: &str) {
            use std::io::BufRead;
            let mut line = String::new();
            let _ = self.stdout.read_line(&mut line);
            assert_eq!(
                line.trim(),
                want,
                "the shell in a new mount namespace failed (unshare --mount needs root, or user namespaces)"
            );
        }

        /// Mounts the tmpfs: the kernel then signals POLLPRI on every open `mounts` of the namespace.
        fn change(&mut self) {
            use std::io::Write;
            writeln!(self.child.stdin.as_mut().expect("stdin"), "go").expect("tell the shell to mount");
            self.expect_line("mounted");
        }

        fn mounts_file(&self) -> PathBuf {
            PathBuf::from(format!("/proc/{}/mounts", self.child.id()))
        }
    }

    impl Drop for PrivateMountNamespace {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    #[ignore = "run in a process of its own by mount_table_from_procfs_is_kept_until_the_kernel_signals_a_change"]
    fn mount_table_cache_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let point = dir.path().join("point");
        std::fs::create_dir(&point).expect("mount point");
        let mut ns = PrivateMountNamespace::start(&point);
        // The proc root's `mounts` leads to the namespace's table on procfs, then is replaced.
        let root = dir.path().join("proc");
        std::fs::create_dir(&root).expect("proc root");
        std::os::unix::fs::symlink(ns.mounts_file(), root.join("mounts")).expect("symlink");
        let ctx = crate::context::test_context(&root, &root);
        let first = mounts(&ctx).expect("first read");
        assert_eq!(first, parse_mounts(&std::fs::read_to_string(ns.mounts_file()).expect("the namespace's mounts")));
        std::fs::remove_file(root.join("mounts")).expect("remove the symlink");
        std::fs::write(root.join("mounts"), "/dev/vdz9 /replaced ext4 rw 0 0\n").expect("write");
        let replaced = vec![("vdz9".to_string(), PathBuf::from("/replaced"))];
        assert_ne!(first, replaced);
        assert_eq!(mounts(&ctx).expect("kept"), first, "read again though the kernel signalled no change");
        assert_eq!(mounts(&ctx).expect("kept"), first, "read again though the kernel signalled no change");
        ns.change();
        assert_eq!(mounts(&ctx).expect("after a change"), replaced, "the kept table outlived a signalled change");
    }

    #[test]
    fn mount_table_outside_procfs_is_read_every_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = crate::context::test_context(dir.path(), dir.path());
        std::fs::write(dir.path().join("mounts"), "/dev/vda1 / ext4 rw 0 0\n").expect("write");
        assert_eq!(mounts(&ctx).expect("first"), vec![("vda1".to_string(), PathBuf::from("/"))]);
        std::fs::write(dir.path().join("mounts"), "/dev/vdb1 /data ext4 rw 0 0\n").expect("write");
        assert_eq!(mounts(&ctx).expect("second"), vec![("vdb1".to_string(), PathBuf::from("/data"))]);
    }
}
