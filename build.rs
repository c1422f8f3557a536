//! Tells the tests what this machine can run, so that a test needing root,
//! runc or the network tools is reported *ignored* (with the reason) where
//! it cannot run, never passed:
//!
//! - `arbor_root`: built as root (the tests run as the user who builds);
//! - `arbor_runc`: `runc` is on PATH and `/bin/busybox` exists (the OCI
//!   tests build their image from it);
//! - `arbor_net`: `ip` (iproute2) is on PATH and `/bin/bash` exists.
//!
//! The tests check again when they run, and say "skipped" if a built-in
//! assumption no longer holds.

use std::{os::unix::fs::MetadataExt, path::Path};

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
        || ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(arbor_root)");
    println!("cargo::rustc-check-cfg=cfg(arbor_runc)");
    println!("cargo::rustc-check-cfg=cfg(arbor_net)");
    // Who builds, and where programs are found.
    for var in ["USER", "SUDO_USER", "PATH"] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rerun-if-changed=build.rs");
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if root {
        println!("cargo::rustc-cfg=arbor_root");
    }
    if on_path("runc") && Path::new("/bin/busybox").exists() {
        println!("cargo::rustc-cfg=arbor_runc");
    }
    if on_path("ip") && Path::new("/bin/bash").exists() {
        println!("cargo::rustc-cfg=arbor_net");
    }
}
