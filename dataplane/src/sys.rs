//! Small system-call helpers: interface lookups through `ioctl` (index, MAC address,
//! channel count, the ethtool RSS configuration), the kernel's own IPv4 addresses
//! (`getifaddrs`) and entering a network namespace.
//!
//! Every lookup goes through a socket created in the calling thread's network namespace,
//! never through `/sys` (whose view belongs to whoever mounted it), so the helpers work from
//! a thread that has `setns`'d into a lab namespace.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::rss::RssTable;

/// `ETHTOOL_GCHANNELS` from `<linux/ethtool.h>`.
const ETHTOOL_GCHANNELS: u32 = 0x0000_003c;
/// `ETHTOOL_GRSSH` from `<linux/ethtool.h>`.
const ETHTOOL_GRSSH: u32 = 0x0000_0046;
/// Size of `struct ethtool_rxfh` up to its flexible `rss_config` array.
const RXFH_HEADER: usize = 24;
/// `ETH_RSS_HASH_TOP`: the Toeplitz hash function bit of `ethtool_rxfh.hfunc`.
const ETH_RSS_HASH_TOP: u8 = 1;
/// Largest indirection table or key accepted from a driver (sanity bound on allocation).
const RXFH_MAX: u32 = 1 << 16;

/// The channel (queue) counts a driver reports through `ETHTOOL_GCHANNELS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Channels {
    /// Receive-only channels.
    pub rx: u32,
    /// Transmit-only channels.
    pub tx: u32,
    /// Combined receive/transmit channels.
    pub combined: u32,
}

impl Channels {
    /// How many receive queues the interface has (receive-only plus combined).
    pub fn rx_queues(&self) -> u32 {
        self.rx.saturating_add(self.combined)
    }
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; no pointers involved.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq_for(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name must be 1-15 bytes without NUL",
        ));
    }
    // SAFETY: `ifreq` is a plain C struct (arrays and a union of integers, a sockaddr and a
    // pointer) for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// `ioctl(SIOCETHTOOL)` with `data` as the ethtool command buffer.
fn ethtool(name: &str, data: &mut [u8]) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_data = data.as_mut_ptr().cast();
    // SAFETY: `req` is a valid ifreq whose data pointer refers to `data`, which outlives the
    // call and is as large as the command it holds declares (callers size it so).
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn word(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    if let Some(src) = buf.get(at..at + 4) {
        bytes.copy_from_slice(src);
    }
    u32::from_ne_bytes(bytes)
}

fn put_word(buf: &mut [u8], at: usize, value: u32) {
    if let Some(dst) = buf.get_mut(at..at + 4) {
        dst.copy_from_slice(&value.to_ne_bytes());
    }
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// The hardware (MAC) address of interface `name`.
pub fn mac_address(name: &str) -> io::Result<[u8; 6]> {
    let sock = control_socket()?;
    let mut req = ifreq_for(name)?;
    // SAFETY: `req` is a valid ifreq naming the interface; SIOCGIFHWADDR writes a sockaddr
    // into its union, which is large enough.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR succeeded, so the union holds `ifru_hwaddr`.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

/// The driver's channel counts (`ethtool -l`). Fails with `Unsupported`-kind errors
/// (`EOPNOTSUPP`) on drivers that do not report them.
pub fn channels(name: &str) -> io::Result<Channels> {
    // struct ethtool_channels: cmd and eight u32 counts.
    let mut buf = [0u8; 36];
    put_word(&mut buf, 0, ETHTOOL_GCHANNELS);
    ethtool(name, &mut buf)?;
    Ok(Channels {
        rx: word(&buf, 20),
        tx: word(&buf, 24),
        combined: word(&buf, 32),
    })
}

/// The driver's RSS hash key and indirection table (`ethtool -x`), when it reports them and
/// uses the Toeplitz function. Fails with `EOPNOTSUPP` (or `Unsupported` for another hash
/// function or an empty table) otherwise; callers fall back to port partitioning.
pub fn rss_config(name: &str) -> io::Result<RssTable> {
    let mut head = [0u8; RXFH_HEADER];
    put_word(&mut head, 0, ETHTOOL_GRSSH);
    ethtool(name, &mut head)?;
    let (indir_size, key_size) = (word(&head, 8), word(&head, 12));
    if indir_size == 0 || key_size == 0 || indir_size > RXFH_MAX || key_size > RXFH_MAX {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "driver reports no RSS key or indirection table",
        ));
    }
    let indir_bytes = indir_size as usize * 4;
    let mut buf = vec![0u8; RXFH_HEADER + indir_bytes + key_size as usize];
    put_word(&mut buf, 0, ETHTOOL_GRSSH);
    put_word(&mut buf, 8, indir_size);
    put_word(&mut buf, 12, key_size);
    ethtool(name, &mut buf)?;
    let hfunc = buf.get(16).copied().unwrap_or(0);
    // 0 means the driver did not say; drivers that do not say use Toeplitz.
    if hfunc != 0 && hfunc & ETH_RSS_HASH_TOP == 0 {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "RSS hash function is not Toeplitz",
        ));
    }
    let indirection = (0..indir_size as usize)
        .map(|i| word(&buf, RXFH_HEADER + i * 4))
        .collect();
    let key = buf
        .get(RXFH_HEADER + indir_bytes..)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    Ok(RssTable { key, indirection })
}

/// The IPv4 addresses the kernel has on its interfaces in the calling thread's network
/// namespace (`getifaddrs(3)`, i.e. `ip -4 addr`), each with its interface's name.
pub fn ipv4_addresses() -> io::Result<Vec<(String, std::net::Ipv4Addr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success getifaddrs stores a list that we
    // free below with freeifaddrs, exactly once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cur };
        cur = entry.ifa_next;
        let addr = entry.ifa_addr;
        if addr.is_null() {
            continue;
        }
        // SAFETY: a non-null `ifa_addr` points to a sockaddr whose family field is valid.
        if i32::from(unsafe { (*addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET `ifa_addr` is a `sockaddr_in`; read_unaligned needs no alignment.
        let sin = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        let name = if entry.ifa_name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null `ifa_name` is a NUL-terminated string owned by the list.
            unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) }
                .to_string_lossy()
                .into_owned()
        };
        out.push((name, ip));
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed once; no reference
    // into the list outlives this point (names and addresses were copied).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The interface on which the kernel owns `addr` (as a local address of the calling
/// thread's network namespace, on any interface), or `None` when it owns it nowhere.
pub fn kernel_ipv4_owner(addr: std::net::Ipv4Addr) -> io::Result<Option<String>> {
    Ok(ipv4_addresses()?
        .into_iter()
        .find(|(_, a)| *a == addr)
        .map(|(name, _)| name))
}

/// Moves the calling thread (only it: network namespaces are per thread) into the named
/// network namespace, as created by `ip netns add NAME` (`/run/netns/NAME`).
pub fn enter_netns(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "namespace name must be non-empty without '/'",
        ));
    }
    let ns = File::open(format!("/run/netns/{name}"))?;
    // SAFETY: `ns` is an open namespace file descriptor for the duration of the call;
    // setns(2) only changes the calling thread's namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ifindex_loopback_found() {
        assert!(ifindex("lo").unwrap() > 0);
    }

    #[test]
    fn ifindex_unknown_name_not_found() {
        let err = ifindex("nosuchif0x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }

    #[test]
    fn ifreq_name_too_long_invalid_input() {
        let err = mac_address("a-name-of-16-chr").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn enter_netns_path_in_name_invalid_input() {
        let err = enter_netns("../etc").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn ipv4_addresses_include_loopback() {
        let all = ipv4_addresses().unwrap();
        assert!(
            all.iter()
                .any(|(name, a)| name == "lo" && *a == std::net::Ipv4Addr::LOCALHOST),
            "{all:?}"
        );
        assert_eq!(
            kernel_ipv4_owner(std::net::Ipv4Addr::LOCALHOST)
                .unwrap()
                .as_deref(),
            Some("lo")
        );
    }

    #[test]
    fn kernel_ipv4_owner_unowned_address_none() {
        // 198.18.255.254 is never assigned on these machines (the lab uses 198.18.0.x in
        // its own namespaces).
        let addr = std::net::Ipv4Addr::new(198, 18, 255, 254);
        assert_eq!(kernel_ipv4_owner(addr).unwrap(), None);
    }

    #[test]
    fn channels_word_offsets_match_struct_layout() {
        let mut buf = [0u8; 36];
        put_word(&mut buf, 20, 3);
        put_word(&mut buf, 32, 5);
        assert_eq!(word(&buf, 20) + word(&buf, 32), 8);
        assert_eq!(word(&buf, 34), 0, "reads past the end yield zero");
    }
}
