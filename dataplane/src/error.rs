//! Startup errors: one variant per thing an operator can fix, each displayed as one line.

use std::io;

/// Why the dataplane could not start on an interface queue.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The interface does not exist (in this network namespace).
    #[error("no such interface: {iface}")]
    NoSuchInterface {
        /// The name asked for.
        iface: String,
    },
    /// The queue number is not below the interface's receive-queue count.
    #[error("queue {queue} out of range: {iface} has {queues} receive queue(s)")]
    QueueOutOfRange {
        /// The interface.
        iface: String,
        /// The queue asked for.
        queue: u32,
        /// How many receive queues the driver reports.
        queues: u32,
    },
    /// The kernel refused a BPF or AF_XDP step (`EPERM`/`EACCES`): the process is not
    /// root, or root without the capabilities (e.g. a systemd `CapabilityBoundingSet`
    /// that lacks them).
    #[error(
        "not permitted to {what}: run as root (effective uid 0) keeping CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_SYS_ADMIN and CAP_IPC_LOCK"
    )]
    NoPrivileges {
        /// What was refused.
        what: &'static str,
    },
    /// The process does not run as root, which Sluice's AF_XDP backend requires (it is
    /// checked before anything is attempted; capabilities without root are not enough).
    #[error("not permitted to {what}: the AF_XDP backend must run as root (effective uid 0); capabilities without root are not supported")]
    NotRoot {
        /// What needs root.
        what: &'static str,
    },
    /// Neither native nor generic XDP could be attached.
    #[error("XDP unsupported on {iface}: {detail}")]
    XdpUnsupported {
        /// The interface.
        iface: String,
        /// The kernel's answer.
        detail: String,
    },
    /// Another XDP program is attached (`EBUSY`/`EEXIST`).
    #[error("another XDP program is attached to {iface}; remove it with `ip link set dev {iface} xdp off`")]
    ProgramAttached {
        /// The interface.
        iface: String,
    },
    /// Another AF_XDP socket is bound to the queue.
    #[error("queue {queue} of {iface} is already bound by another AF_XDP socket")]
    QueueBusy {
        /// The interface.
        iface: String,
        /// The queue.
        queue: u32,
    },
    /// A configuration value was rejected before touching the system.
    /// Starting DPDK, its mbuf pool, port or a queue failed (the DPDK backend).
    #[error("{0}")]
    Dpdk(String),
    #[error("invalid dataplane configuration: {0}")]
    Config(String),
    /// Any other system error, with what was being done.
    #[error("{what} failed: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The system's answer.
        #[source]
        source: io::Error,
    },
}

impl StartError {
    /// Maps an OS error from step `what` on `iface` to the variant an operator acts on:
    /// `EPERM`/`EACCES` to [`StartError::NoPrivileges`], `ENODEV` to
    /// [`StartError::NoSuchInterface`], anything else to [`StartError::Os`].
    pub fn from_os(what: &'static str, iface: &str, source: io::Error) -> StartError {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => StartError::NoPrivileges { what },
            Some(libc::ENODEV) | Some(libc::ENXIO) => StartError::NoSuchInterface {
                iface: iface.to_string(),
            },
            _ => StartError::Os { what, source },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn from_os_eperm_no_privileges() {
        let err = StartError::from_os("load", "eth0", io::Error::from_raw_os_error(libc::EPERM));
        assert!(matches!(err, StartError::NoPrivileges { what: "load" }));
    }

    #[test]
    fn from_os_enodev_no_such_interface() {
        let err = StartError::from_os("bind", "eth9", io::Error::from_raw_os_error(libc::ENODEV));
        assert!(matches!(err, StartError::NoSuchInterface { ref iface } if iface == "eth9"));
    }

    #[test]
    fn from_os_other_errno_os_with_context() {
        let err = StartError::from_os("bind", "eth0", io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(err.to_string().starts_with("bind failed: "));
    }

    #[test]
    fn display_every_variant_single_line() {
        let all = [
            StartError::NoSuchInterface { iface: "x".into() },
            StartError::QueueOutOfRange {
                iface: "x".into(),
                queue: 4,
                queues: 2,
            },
            StartError::NoPrivileges { what: "load" },
            StartError::NotRoot { what: "load" },
            StartError::XdpUnsupported {
                iface: "x".into(),
                detail: "d".into(),
            },
            StartError::ProgramAttached { iface: "x".into() },
            StartError::QueueBusy {
                iface: "x".into(),
                queue: 0,
            },
            StartError::Config("c".into()),
            StartError::Dpdk("DPDK port p: rte_eth_dev_start failed: x".into()),
            StartError::Os {
                what: "w",
                source: io::Error::from_raw_os_error(libc::EIO),
            },
        ];
        for err in all {
            let line = err.to_string();
            assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
        }
    }
}
