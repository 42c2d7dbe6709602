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
    if env::var_os("CARGO_FEATURE_DPDK").is_some() {
        dpdk::build();
    }
}

/// The `dpdk` feature: compiles `csrc/dpdk_shim.c` against DPDK (pkg-config `libdpdk`, which
/// also emits the link flags) and generates the Rust declarations of the shim and of the
/// DPDK functions the device calls directly into `OUT_DIR/dpdk_sys.rs`.
#[cfg(feature = "dpdk")]
mod dpdk {
    use std::env;
    use std::path::PathBuf;

    const SHIM: &str = "csrc/dpdk_shim.c";
    const HEADER: &str = "csrc/dpdk_shim.h";

    pub fn build() {
        let lib = match pkg_config::Config::new()
            .atleast_version("22.11")
            .probe("libdpdk")
        {
            Ok(lib) => lib,
            Err(e) => {
                eprintln!(
                    "the `dpdk` feature needs DPDK >= 22.11's development files \
                     (apt install libdpdk-dev): {e}"
                );
                std::process::exit(1);
            }
        };
        // pkg-config's cflags carry `-include rte_config.h` and the -march DPDK was built for.
        let cflags = std::process::Command::new("pkg-config")
            .args(["--cflags", "libdpdk"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut args: Vec<String> = lib
            .include_paths
            .iter()
            .map(|p| format!("-I{}", p.display()))
            .collect();
        let mut words = cflags.split_whitespace();
        while let Some(w) = words.next() {
            if w == "-include" {
                if let Some(f) = words.next() {
                    args.push("-include".into());
                    args.push(f.into());
                }
            } else if w.starts_with("-march") || w.starts_with("-D") {
                args.push(w.into());
            }
        }
        let mut cc = cc::Build::new();
        cc.file(SHIM).warnings(true).opt_level(3);
        for a in &args {
            cc.flag(a);
        }
        cc.compile("sluice_dpdk_shim");

        let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("dpdk_sys.rs");
        let bindings = bindgen::Builder::default()
            .header(HEADER)
            .clang_args(&args)
            .allowlist_function("sluice_dpdk_.*")
            .allowlist_function("rte_eal_init|rte_eal_cleanup")
            .allowlist_function("rte_thread_register|rte_thread_unregister")
            .allowlist_function("rte_strerror")
            .allowlist_function("rte_pktmbuf_pool_create|rte_mempool_free")
            .allowlist_function("rte_mempool_in_use_count|rte_mempool_avail_count")
            .allowlist_function("rte_eth_dev_get_port_by_name|rte_eth_dev_stop|rte_eth_dev_close")
            .allowlist_function("rte_eth_stats_get|rte_eth_xstats_get|rte_eth_xstats_get_names")
            .allowlist_function("rte_eth_dev_count_avail")
            .allowlist_type("sluice_dpdk_port_info")
            .opaque_type("rte_mempool|rte_mbuf")
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false)
            .generate()
            .unwrap_or_else(|e| {
                eprintln!("bindgen over DPDK's headers failed: {e}");
                std::process::exit(1);
            });
        if let Err(e) = bindings.write_to_file(&out) {
            eprintln!("writing {}: {e}", out.display());
            std::process::exit(1);
        }
        println!("cargo:rerun-if-changed={SHIM}");
        println!("cargo:rerun-if-changed={HEADER}");
    }
}

#[cfg(not(feature = "dpdk"))]
mod dpdk {
    pub fn build() {}
}
