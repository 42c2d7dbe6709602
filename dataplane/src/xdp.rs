//! Sluice's XDP steering program (`bpf/sluice_xdp.bpf.c`, compiled by `build.rs`): loading,
//! configuring, attaching through a bpf_link, registering AF_XDP sockets, and reading its
//! per-CPU counters.
//!
//! The program redirects to the receiving queue's AF_XDP socket only ARP for the stack's
//! IPv4 address, ICMP to it and TCP to it (optionally only to configured destination
//! ports); everything else gets `XDP_PASS`. It is attached with `BPF_LINK_CREATE`, so the
//! attachment lives exactly as long as the link's file descriptor: dropping
//! [`XdpProgram`] detaches it, and so does the death of the process, however it dies.

use std::io;
use std::mem::MaybeUninit;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{libbpf_sys, ErrorKind, MapCore, MapFlags, MapHandle};

use crate::error::StartError;
use crate::sys;

#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations,
    missing_docs,
    unsafe_op_in_unsafe_fn,
    unused_qualifications
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/sluice_xdp.skel.rs"));
}

/// Counter slots of the program's `counters` map (see the C source).
const COUNTER_REDIRECTED: u32 = 0;
const COUNTER_PASSED: u32 = 1;
const COUNTER_DROPPED: u32 = 2;
/// 32-bit words of the TCP port bitmap.
const PORT_WORDS: u32 = 65536 / 32;
/// Entries of the `xsks` map: the highest queue number plus one that can be served.
pub const MAX_QUEUES: u32 = 256;

/// The XDP attach mode that was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Driver (native) XDP: the program runs in the driver before any skb exists.
    Native,
    /// Generic (skb) XDP: the program runs after the skb is built; works on any device.
    Generic,
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// Which attach modes to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpModeRequest {
    /// Native first, generic when the driver has no native XDP.
    #[default]
    Auto,
    /// Native only.
    Native,
    /// Generic only.
    Generic,
}

/// What the program steers to the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// The stack's IPv4 address.
    pub ipv4: Ipv4Addr,
    /// TCP destination ports to redirect; empty means every port.
    pub tcp_ports: Vec<RangeInclusive<u16>>,
    /// Which attach modes to try.
    pub mode: XdpModeRequest,
}

/// The program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XdpCounters {
    /// Frames redirected to an AF_XDP socket.
    pub redirected: u64,
    /// Frames passed to the kernel (not the stack's).
    pub passed: u64,
    /// Frames for the stack dropped because no socket was bound on their queue.
    pub dropped: u64,
}

/// Sluice's XDP program, loaded and attached to one interface. Dropping it detaches it.
#[derive(Debug)]
pub struct XdpProgram {
    // Declared first so it is dropped first: closing the link detaches the program.
    link: OwnedFd,
    iface: String,
    ifindex: u32,
    mode: XdpMode,
    xsks: MapHandle,
    config: MapHandle,
    tcp_ports: MapHandle,
    counters: MapHandle,
}

fn libbpf_error(what: &'static str, iface: &str, err: libbpf_rs::Error) -> StartError {
    if err.kind() == ErrorKind::PermissionDenied {
        StartError::NoPrivileges { what }
    } else {
        StartError::from_os(what, iface, io::Error::other(format!("{err:#}")))
    }
}

/// The 65536-bit bitmap of `ranges`, as the program's `tcp_ports` words.
fn port_bitmap(ranges: &[RangeInclusive<u16>]) -> Vec<u32> {
    let mut words = vec![0u32; PORT_WORDS as usize];
    for range in ranges {
        for port in range.clone() {
            if let Some(word) = words.get_mut(usize::from(port >> 5)) {
                *word |= 1 << (port & 31);
            }
        }
    }
    words
}

fn config_value(ipv4: Ipv4Addr, port_filter: bool) -> [u8; 8] {
    let mut value = [0u8; 8];
    // The program compares against the address in network byte order as it sits in the
    // packet: the octets in order.
    value[..4].copy_from_slice(&ipv4.octets());
    value[4..].copy_from_slice(&u32::from(port_filter).to_ne_bytes());
    value
}

/// `BPF_LINK_CREATE` for XDP on `ifindex` with `flags`; the returned descriptor is the link.
fn link_create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let target = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as libbpf_sys::size_t,
        flags,
        ..Default::default()
    };
    // SAFETY: `prog` is a valid program descriptor for the call's duration and `opts` is a
    // fully initialised options struct whose `sz` is its own size; libbpf reads nothing else.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), target, libbpf_sys::BPF_XDP, &opts)
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a non-negative return is a new link descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Errors after which another attach mode is worth trying.
fn mode_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    )
}

impl XdpProgram {
    /// Loads the program, configures it from `config`, and attaches it to `iface` in the
    /// first mode of `config.mode` the interface accepts.
    pub fn attach(iface: &str, config: &XdpConfig) -> Result<XdpProgram, StartError> {
        let ifindex = sys::ifindex(iface).map_err(|e| StartError::from_os("look up", iface, e))?;

        let mut object = MaybeUninit::uninit();
        let open = skel::SluiceXdpSkelBuilder::default()
            .open(&mut object)
            .map_err(|e| libbpf_error("open the XDP program", iface, e))?;
        let loaded = open
            .load()
            .map_err(|e| libbpf_error("load the XDP program", iface, e))?;
        let handle = |map: &libbpf_rs::MapMut<'_>| {
            MapHandle::try_from(map).map_err(|e| libbpf_error("open an XDP map", iface, e))
        };
        let xsks = handle(&loaded.maps.xsks)?;
        let config_map = handle(&loaded.maps.config)?;
        let tcp_ports = handle(&loaded.maps.tcp_ports)?;
        let counters = handle(&loaded.maps.counters)?;
        let prog = loaded
            .progs
            .sluice_xdp
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| StartError::from_os("duplicate the program descriptor", iface, e))?;
        // The maps and the program stay alive through their own descriptors; the skeleton
        // (and libbpf's object) is not needed past this point.
        drop(loaded);

        let filter = !config.tcp_ports.is_empty();
        if filter {
            write_bitmap(&tcp_ports, &port_bitmap(&config.tcp_ports))
                .map_err(|e| StartError::from_os("configure the XDP port map", iface, e))?;
        }
        config_map
            .update(
                &0u32.to_ne_bytes(),
                &config_value(config.ipv4, filter),
                MapFlags::ANY,
            )
            .map_err(|e| libbpf_error("configure the XDP program", iface, e))?;

        let modes: &[(XdpMode, u32)] = match config.mode {
            XdpModeRequest::Auto => &[
                (XdpMode::Native, libbpf_sys::XDP_FLAGS_DRV_MODE),
                (XdpMode::Generic, libbpf_sys::XDP_FLAGS_SKB_MODE),
            ],
            XdpModeRequest::Native => &[(XdpMode::Native, libbpf_sys::XDP_FLAGS_DRV_MODE)],
            XdpModeRequest::Generic => &[(XdpMode::Generic, libbpf_sys::XDP_FLAGS_SKB_MODE)],
        };
        let mut last = None;
        for &(mode, flags) in modes {
            match link_create(prog.as_fd(), ifindex, flags) {
                Ok(link) => {
                    return Ok(XdpProgram {
                        link,
                        iface: iface.to_string(),
                        ifindex,
                        mode,
                        xsks,
                        config: config_map,
                        tcp_ports,
                        counters,
                    })
                }
                Err(err) if mode_unsupported(&err) => last = Some(err),
                Err(err) => return Err(attach_error(iface, err)),
            }
        }
        Err(StartError::XdpUnsupported {
            iface: iface.to_string(),
            detail: last.map_or_else(|| "no mode to try".to_string(), |e| e.to_string()),
        })
    }

    /// The interface the program is attached to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The bpf_link's descriptor (closing it, by dropping `self`, detaches the program).
    pub fn link_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }

    /// The attach mode obtained.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Points queue `queue`'s slot of the `xsks` map at AF_XDP socket `socket`. The kernel
    /// removes the entry by itself when the socket is closed.
    pub fn register(&self, queue: u32, socket: BorrowedFd<'_>) -> io::Result<()> {
        if queue >= MAX_QUEUES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "queue beyond the xsks map",
            ));
        }
        self.xsks
            .update(
                &queue.to_ne_bytes(),
                &socket.as_raw_fd().to_ne_bytes(),
                MapFlags::ANY,
            )
            .map_err(|e| io::Error::other(format!("{e:#}")))
    }

    /// Empties queue `queue`'s slot: frames for the stack on that queue are then dropped.
    pub fn unregister(&self, queue: u32) -> io::Result<()> {
        self.xsks
            .delete(&queue.to_ne_bytes())
            .map_err(|e| io::Error::other(format!("{e:#}")))
    }

    /// Replaces the TCP port filter; an empty list redirects every port.
    pub fn set_tcp_ports(&self, ipv4: Ipv4Addr, ranges: &[RangeInclusive<u16>]) -> io::Result<()> {
        let filter = !ranges.is_empty();
        write_bitmap(&self.tcp_ports, &port_bitmap(ranges))?;
        self.config
            .update(
                &0u32.to_ne_bytes(),
                &config_value(ipv4, filter),
                MapFlags::ANY,
            )
            .map_err(|e| io::Error::other(format!("{e:#}")))
    }

    /// The counters, summed over CPUs.
    pub fn counters(&self) -> io::Result<XdpCounters> {
        let read = |slot: u32| -> io::Result<u64> {
            let per_cpu = self
                .counters
                .lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)
                .map_err(|e| io::Error::other(format!("{e:#}")))?
                .unwrap_or_default();
            Ok(per_cpu
                .iter()
                .map(|v| {
                    let mut bytes = [0u8; 8];
                    if let Some(src) = v.get(..8) {
                        bytes.copy_from_slice(src);
                    }
                    u64::from_ne_bytes(bytes)
                })
                .sum())
        };
        Ok(XdpCounters {
            redirected: read(COUNTER_REDIRECTED)?,
            passed: read(COUNTER_PASSED)?,
            dropped: read(COUNTER_DROPPED)?,
        })
    }

    /// Detaches the program now (the same as dropping it).
    pub fn detach(self) {
        drop(self);
    }
}

fn write_bitmap(map: &MapHandle, words: &[u32]) -> io::Result<()> {
    for (index, word) in words.iter().enumerate() {
        let key = u32::try_from(index).unwrap_or(u32::MAX);
        map.update(&key.to_ne_bytes(), &word.to_ne_bytes(), MapFlags::ANY)
            .map_err(|e| io::Error::other(format!("{e:#}")))?;
    }
    Ok(())
}

fn attach_error(iface: &str, err: io::Error) -> StartError {
    match err.raw_os_error() {
        Some(libc::EBUSY) | Some(libc::EEXIST) => StartError::ProgramAttached {
            iface: iface.to_string(),
        },
        _ => StartError::from_os("attach the XDP program", iface, err),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn port_bitmap_range_sets_exact_bits() {
        let words = port_bitmap(&[80..=81, 65535..=65535]);
        assert_eq!(words[2], (1 << 16) | (1 << 17));
        assert_eq!(words[2047], 1 << 31);
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 3);
    }

    #[test]
    fn port_bitmap_empty_all_zero() {
        assert!(port_bitmap(&[]).iter().all(|&w| w == 0));
    }

    #[test]
    fn config_value_address_in_wire_order() {
        let value = config_value(Ipv4Addr::new(198, 18, 0, 2), true);
        assert_eq!(&value[..4], &[198, 18, 0, 2]);
        assert_eq!(u32::from_ne_bytes(value[4..].try_into().unwrap()), 1);
    }

    #[test]
    fn attach_error_ebusy_program_attached() {
        let err = attach_error("v0", io::Error::from_raw_os_error(libc::EBUSY));
        assert!(matches!(err, StartError::ProgramAttached { .. }));
    }

    #[test]
    fn mode_unsupported_eopnotsupp_true_ebusy_false() {
        assert!(mode_unsupported(&io::Error::from_raw_os_error(
            libc::EOPNOTSUPP
        )));
        assert!(!mode_unsupported(&io::Error::from_raw_os_error(
            libc::EBUSY
        )));
    }
}
