//! Compiles the XDP steering program (`bpf/sluice_xdp.bpf.c`) with clang and generates its
//! libbpf-rs skeleton into `OUT_DIR`. Needs `clang` (apt `clang llvm`) and the kernel UAPI
//! headers (apt `linux-libc-dev`); libbpf's own `bpf_helpers.h` comes vendored with
//! libbpf-cargo.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/sluice_xdp.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("sluice_xdp.skel.rs");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
    // `-target bpf` does not search the multiarch include directory that holds <asm/types.h>.
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let result = SkeletonBuilder::new()
        .source(SRC)
        .clang_args(["-O2", "-g", "-Wall", multiarch.as_str()])
        .build_and_generate(&out);
    if let Err(err) = result {
        // A build script reports failure by panicking; print the whole chain first.
        eprintln!("building the XDP program failed: {err:#}");
        std::process::exit(1);
    }
    println!("cargo:rerun-if-changed={SRC}");
}
