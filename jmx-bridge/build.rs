//! Compiles the helper class `java/PuyPuyJmx.java` with the JDK's javac into OUT_DIR; the bridge
//! embeds the class file and writes it out for its JVM at start. No class file is committed.

use std::path::PathBuf;
use std::process::Command;

fn javac() -> PathBuf {
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        let p = PathBuf::from(home).join("bin/javac");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("javac")
}

fn main() {
    println!("cargo:rerun-if-changed=java/PuyPuyJmx.java");
    println!("cargo:rerun-if-env-changed=JAVA_HOME");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let status =
        Command::new(javac()).args(["--release", "11", "-nowarn", "-d"]).arg(&out).arg("java/PuyPuyJmx.java").status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("javac failed ({s}) compiling java/PuyPuyJmx.java"),
        Err(e) => panic!("javac not found ({e}): install a JDK (Debian: default-jdk-headless) to build the jmx-bridge"),
    }
}
