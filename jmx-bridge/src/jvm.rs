//! Creating and holding the bridge's one JVM (jni invocation API), and the one JNI call the bridge
//! makes: `PuyPuyJmx.read(spec)`.
//!
//! libjvm comes from `[JMX] java_home`, else `$JAVA_HOME`, else the old `java` key, else the
//! `java` on PATH (symlinks followed). The helper class, compiled by build.rs, is written to
//! `tmpdir/jmx/` and put on the JVM's class path. Default options keep the JVM small and leave the
//! signals to Rust (`-Xrs`); `jvm_options` replaces them.

use std::path::{Path, PathBuf};

use jni::objects::{JString, JValue};
use jni::{jni_sig, jni_str, InitArgsBuilder, JNIVersion, JavaVM};

const CLASS_BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/PuyPuyJmx.class"));

pub const DEFAULT_OPTIONS: &[&str] = &[
    "-Xmx32m",
    "-Xss256k",
    "-XX:+UseSerialGC",
    "-Xrs",
    "-XX:TieredStopAtLevel=1",
    "-XX:ReservedCodeCacheSize=16m",
    "-XX:MaxMetaspaceSize=64m",
    "-Xshare:auto",
];

/// Where libjvm.so is, from the first of: java_home, $JAVA_HOME, the old `java` key, `java` on PATH.
pub fn find_libjvm(java_home: Option<&Path>, java: Option<&Path>) -> Result<PathBuf, String> {
    let from_home = |home: &Path| {
        ["lib/server/libjvm.so", "jre/lib/server/libjvm.so", "lib/amd64/server/libjvm.so"]
            .iter()
            .map(|rel| home.join(rel))
            .find(|p| p.is_file())
    };
    let home_of_java = |bin: &Path| {
        let real = std::fs::canonicalize(bin).ok()?;
        real.parent()?.parent().map(Path::to_path_buf)
    };
    if let Some(home) = java_home {
        return from_home(home)
            .ok_or_else(|| format!("[JMX] java_home: no lib/server/libjvm.so under {}", home.display()));
    }
    if let Some(home) = std::env::var_os("JAVA_HOME").map(PathBuf::from) {
        if let Some(p) = from_home(&home) {
            return Ok(p);
        }
    }
    if let Some(bin) = java {
        if let Some(p) = home_of_java(bin).and_then(|h| from_home(&h)) {
            return Ok(p);
        }
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let bin = Path::new(dir).join("java");
        if bin.is_file() {
            if let Some(p) = home_of_java(&bin).and_then(|h| from_home(&h)) {
                return Ok(p);
            }
        }
    }
    Err("no JVM found: set [JMX] java_home or $JAVA_HOME, or install a JDK (Debian: default-jdk-headless)".into())
}

pub struct Jvm {
    vm: JavaVM,
}

impl Jvm {
    pub fn start(libjvm: &Path, class_dir: &Path, options: &[String]) -> Result<Jvm, String> {
        std::fs::create_dir_all(class_dir).map_err(|e| format!("cannot create {}: {e}", class_dir.display()))?;
        std::fs::write(class_dir.join("PuyPuyJmx.class"), CLASS_BYTES)
            .map_err(|e| format!("cannot write the helper class: {e}"))?;
        let mut args = InitArgsBuilder::new().version(JNIVersion::V1_8);
        for o in options {
            args = args.option(o.clone());
        }
        args = args
            .option(format!("-Djava.class.path={}", class_dir.display()))
            .option("-Dsun.rmi.transport.tcp.responseTimeout=5000")
            .option("-Dsun.rmi.transport.connectionTimeout=5000")
            .option("-Djdk.attach.allowAttachSelf=false");
        let args = args.build().map_err(|e| format!("bad JVM options: {e}"))?;
        let path = libjvm.to_path_buf();
        let vm = JavaVM::with_libjvm(args, || Ok(path))
            .map_err(|e| format!("cannot start the JVM from {}: {e}", libjvm.display()))?;
        Ok(Jvm { vm })
    }

    /// Calls a static `String f(String)` of the helper class from the current thread.
    fn call(&self, method: &'static str, arg: &str) -> Result<String, String> {
        self.vm
            .attach_current_thread(|env| -> jni::errors::Result<String> {
                let input = env.new_string(arg)?;
                let value = match method {
                    "read" => env.call_static_method(
                        jni_str!("PuyPuyJmx"),
                        jni_str!("read"),
                        jni_sig!("(Ljava/lang/String;)Ljava/lang/String;"),
                        &[JValue::Object(&input)],
                    )?,
                    "checkObjectName" => env.call_static_method(
                        jni_str!("PuyPuyJmx"),
                        jni_str!("checkObjectName"),
                        jni_sig!("(Ljava/lang/String;)Ljava/lang/String;"),
                        &[JValue::Object(&input)],
                    )?,
                    _ => env.call_static_method(
                        jni_str!("PuyPuyJmx"),
                        jni_str!("selfInfo"),
                        jni_sig!("()Ljava/lang/String;"),
                        &[],
                    )?,
                };
                let object = value.l()?;
                let text = env.cast_local::<JString>(object)?;
                text.try_to_string(env)
            })
            .map_err(|e| format!("JNI call {method} failed: {e}"))
    }

    pub fn read(&self, spec: &str) -> Result<String, String> {
        self.call("read", spec)
    }

    pub fn self_info(&self) -> Result<String, String> {
        self.call("selfInfo", "")
    }
}
