//! ipconntrack: `conntrack_cur` and `conntrack_max` from `/proc/sys/net/netfilter`; nothing at all
//! (and no error) when the kernel has no conntrack module loaded (the files do not exist). Any other
//! failure to read them is the check's error.

use puypuy_common::Point;

use crate::context::Context;

pub fn collect(ctx: &Context) -> Result<Vec<Point>, String> {
    let read = |name: &str| -> Option<Result<i64, String>> {
        let text = match ctx.read_proc(&format!("sys/net/netfilter/{name}")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return Some(Err(format!("cannot read {name}: {e}"))),
        };
        Some(text.trim().parse().map_err(|_| format!("bad number {:?} in {name}", text.trim())))
    };
    match (read("nf_conntrack_count"), read("nf_conntrack_max")) {
        (Some(cur), Some(max)) => Ok(vec![ctx.int("conntrack_cur", cur?), ctx.int("conntrack_max", max?)]),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_conntrack_module_is_no_points_and_no_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = crate::context::test_context(dir.path(), dir.path());
        assert_eq!(collect(&ctx), Ok(Vec::new()));
    }

    // Regression: any read error (not only a missing module) was taken for "no conntrack".
    #[test]
    fn a_conntrack_file_that_cannot_be_read_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let netfilter = dir.path().join("sys/net/netfilter");
        std::fs::create_dir_all(netfilter.join("nf_conntrack_count")).expect("a folder where the file should be");
        std::fs::write(netfilter.join("nf_conntrack_max"), "262144\n").expect("write");
        let ctx = crate::context::test_context(dir.path(), dir.path());
        let e = collect(&ctx).expect_err("unreadable count");
        assert!(e.starts_with("cannot read nf_conntrack_count: "), "{e}");
    }
}
