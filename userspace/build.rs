//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! The object's path comes from `LANLINK_EBPF_OBJ` (xtask sets it). Without
//! it an empty placeholder is embedded, so `cargo check`, clippy and unit
//! tests work without bpf-linker; such an agent refuses to start with a clear
//! error.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LANLINK_EBPF_OBJ");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("lanlink.bpf.o");
    match env::var_os("LANLINK_EBPF_OBJ") {
        Some(src) => {
            let src = PathBuf::from(src);
            println!("cargo:rerun-if-changed={}", src.display());
            fs::copy(&src, &out)
                .unwrap_or_else(|e| panic!("cannot copy eBPF object {}: {e}", src.display()));
        }
        None => {
            println!(
                "cargo:warning=LANLINK_EBPF_OBJ is not set: embedding an empty eBPF object (use `cargo xtask build`)"
            );
            fs::write(&out, b"").expect("write placeholder object");
        }
    }
}
