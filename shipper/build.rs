//! Link flags for the binaries. `-z pack-relative-relocs` writes the relocations of this
//! position-independent executable as a compact table (DT_RELR, glibc 2.36 and later: Debian 12)
//! instead of 24 bytes each: the dynamic loader read 200–400 KiB of them at every start, pages
//! that then stayed in the process's RSS for its whole life.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
