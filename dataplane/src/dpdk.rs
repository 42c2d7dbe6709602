//! The DPDK backend (cargo feature `dpdk`): a [`Device`] over one RX/TX queue pair of a DPDK
//! ethdev port, for NICs that AF_XDP serves poorly and for operators who already run DPDK.
//!
//! - [`Eal::init`] starts DPDK's environment once per process (its arguments come from the
//!   `[dpdk]` configuration) and gives the calling thread its CPU set back: the EAL pins its
//!   main thread, but Sluice's main thread only supervises.
//! - [`Pool`] is the mbuf pool every queue of a port receives into and transmits from
//!   (multi-producer, multi-consumer, with a per-lcore cache).
//! - [`Port`] configures and starts the port (one queue pair per worker, RSS over IPv4/TCP
//!   when there are several queues and the driver offers it), reads its RSS key and
//!   redirection table for the active-open port chooser and its statistics, and stops and
//!   closes it when the last owner drops it.
//! - [`DpdkDevice`] is one worker's queue pair. Workers are Sluice's own pinned threads,
//!   registered with the EAL (`rte_thread_register`) rather than EAL-launched lcores, so the
//!   worker loop, pinning, heartbeats and shutdown are the same as on AF_XDP; registration
//!   gives each an lcore id, which the mempool's per-lcore cache needs. A received frame is
//!   lent to the stack where it lies in its mbuf and the mbuf is freed when the callback
//!   returns; an outgoing frame is written straight into a fresh mbuf and queued until
//!   [`Device::submit`] hands the batch to `rte_eth_tx_burst` (with a bounded retry; what the
//!   driver does not take stays queued). The driver frees transmitted mbufs itself. Every
//!   mbuf the device holds goes back to the pool when it is dropped.
//!
//! See `docs/decisions/0011-dpdk-bindings.md` for the bindings and `docs/OPERATIONS.md` for
//! running on a real NIC.

use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::device::{Device, DeviceError, DeviceStats, TxQueue};
use crate::rss::RssTable;

/// The generated declarations (bindgen over `csrc/dpdk_shim.h` and DPDK's headers).
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
mod sys {
    include!(concat!(env!("OUT_DIR"), "/dpdk_sys.rs"));
}

/// Frames taken from the driver per `rte_eth_rx_burst` call.
const RX_BURST: usize = 32;
/// `rte_eth_tx_burst` calls per [`Device::submit`] before the rest waits for the next one.
const TX_TRIES: usize = 4;

/// What can go wrong starting DPDK, a pool, a port or a queue.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// `rte_eal_init` refused the arguments or the environment.
    #[error("rte_eal_init failed ({reason}) with arguments {args:?}")]
    Eal {
        /// The arguments it was given.
        args: Vec<String>,
        /// DPDK's error string.
        reason: String,
    },
    /// The EAL was started already with other arguments (it can start once per process).
    #[error("the DPDK environment is already running with arguments {running:?}")]
    EalRunning {
        /// The arguments of the running EAL.
        running: Vec<String>,
    },
    /// An argument or name contained a NUL byte.
    #[error("invalid DPDK argument {0:?}")]
    Argument(String),
    /// No ethdev port has this name.
    #[error("no DPDK port named {name:?} ({available} port(s) probed; a PCI port needs its address allowed with -a and a DPDK-capable driver such as vfio-pci, a virtual one a --vdev)")]
    NoSuchPort {
        /// The name looked up.
        name: String,
        /// Ports the EAL probed.
        available: u16,
    },
    /// Creating the mbuf pool failed.
    #[error("creating the mbuf pool {name} ({mbufs} mbufs) failed: {reason}")]
    Pool {
        /// Pool name.
        name: String,
        /// Mbufs asked for.
        mbufs: u32,
        /// DPDK's error string.
        reason: String,
    },
    /// A step of configuring or starting the port failed.
    #[error("DPDK port {port}: {step} failed: {reason}")]
    Port {
        /// Port name.
        port: String,
        /// The failing step.
        step: String,
        /// The error.
        reason: String,
    },
    /// A worker thread could not be registered with the EAL (no lcore id left).
    #[error("registering worker thread with DPDK failed: {0}")]
    Register(String),
}

impl From<DpdkError> for crate::StartError {
    fn from(e: DpdkError) -> crate::StartError {
        crate::StartError::Dpdk(e.to_string())
    }
}

fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string
    // for any value, valid until the next call on this thread; it is copied at once.
    let s = unsafe { CStr::from_ptr(sys::rte_strerror(errno.abs())) };
    s.to_string_lossy().into_owned()
}

fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's rte_errno; no arguments.
    unsafe { sys::sluice_dpdk_errno() }
}

/// The process's DPDK environment (EAL).
#[derive(Debug)]
pub struct Eal;

static EAL: Mutex<Option<Vec<String>>> = Mutex::new(None);

impl Eal {
    /// Starts the EAL with `args` (program name excluded) unless it runs already with the same
    /// arguments; it cannot run twice with different ones. When `args` choose no cores
    /// (`-l`, `-c`, `--lcores`), `-l` with the calling thread's first CPU is added so that the
    /// EAL does not start a thread per core. The calling thread's CPU set is restored after.
    pub fn init(args: &[String]) -> Result<(), DpdkError> {
        let mut running = EAL.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.as_ref() {
            if r == args {
                return Ok(());
            }
            return Err(DpdkError::EalRunning { running: r.clone() });
        }
        let before = current_affinity();
        let mut full: Vec<String> = vec!["sluice".into()];
        full.extend(args.iter().cloned());
        let chooses_cores = args
            .iter()
            .any(|a| a.starts_with("-l") || a == "-c" || a.starts_with("--lcores"));
        if !chooses_cores {
            let first = before
                .as_ref()
                .and_then(|set| (0..libc::CPU_SETSIZE as usize).find(|&c| cpu_isset(set, c)))
                .unwrap_or(0);
            full.push("-l".into());
            full.push(first.to_string());
        }
        let cstrings = full
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| DpdkError::Argument(a.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut argv: Vec<*mut libc::c_char> = cstrings
            .iter()
            .map(|c| c.as_ptr() as *mut libc::c_char)
            .collect();
        argv.push(std::ptr::null_mut());
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL; the strings
        // (`cstrings`) are never freed (leaked below). rte_eal_init may permute argv's
        // pointers but does not write through them. It runs once per process (guarded by
        // EAL's lock).
        let ret = unsafe { sys::rte_eal_init(full.len() as i32, argv.as_mut_ptr()) };
        // The EAL may keep pointers into its arguments for the life of the process (it runs
        // once per process): leak them rather than free what it may still read.
        std::mem::forget(cstrings);
        std::mem::forget(argv);
        if let Some(set) = before {
            set_affinity(&set);
        }
        if ret < 0 {
            return Err(DpdkError::Eal {
                args: args.to_vec(),
                reason: strerror(rte_errno()),
            });
        }
        *running = Some(args.to_vec());
        Ok(())
    }

    /// Releases the EAL's resources at the end of the process (`rte_eal_cleanup`), when it
    /// runs; every pool and port must be dropped before. Later DPDK calls are not allowed.
    pub fn cleanup() {
        let mut running = EAL.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            // SAFETY: the EAL was initialised; the caller dropped every port and pool, and
            // `running` is marked so that no later `init` starts it again (DPDK forbids it).
            unsafe { sys::rte_eal_cleanup() };
            *running = Some(vec!["(cleaned up)".to_string()]);
        }
    }

    /// The arguments of the running EAL, if it runs.
    pub fn running() -> Option<Vec<String>> {
        EAL.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn current_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is a valid, writable cpu_set_t of the size
    // passed.
    let ret =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    (ret == 0).then_some(set)
}

fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let _ = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
}

fn cpu_isset(set: &libc::cpu_set_t, cpu: usize) -> bool {
    // SAFETY: CPU_ISSET only reads the set; cpu < CPU_SETSIZE by the caller's range.
    unsafe { libc::CPU_ISSET(cpu, set) }
}

/// An mbuf pool (`rte_pktmbuf_pool_create`), freed on drop.
#[derive(Debug)]
pub struct Pool {
    ptr: *mut sys::rte_mempool,
    name: String,
    size: u32,
}

// SAFETY: a DPDK mempool is made for concurrent use by several threads (its default ring
// is multi-producer, multi-consumer); the pointer stays valid until `Drop`, which runs once,
// when no `Port` or device (each holding an `Arc<Pool>`) uses it any more.
unsafe impl Send for Pool {}
// SAFETY: as for Send; `&Pool` only reads counters or allocates through the thread-safe pool.
unsafe impl Sync for Pool {}

impl Pool {
    /// Per-lcore cache of the pool, in mbufs.
    pub const CACHE: u32 = 256;

    /// Creates a pool of `mbufs` mbufs with room for 2,048 bytes of frame each (DPDK's
    /// default; one frame per mbuf at the default MTU). Needs the EAL running.
    pub fn create(name: &str, mbufs: u32) -> Result<Arc<Pool>, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::Argument(name.into()))?;
        // RTE_MBUF_DEFAULT_BUF_SIZE: 2,048 bytes of data room plus the 128-byte headroom.
        const DATA_ROOM: u16 = 2048 + 128;
        let cache = Pool::CACHE.min(mbufs / 2);
        // SAFETY: cname is a valid NUL-terminated string for the call; the other arguments
        // are plain values; -1 is SOCKET_ID_ANY. Returns NULL (rte_errno set) on failure.
        let ptr =
            unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), mbufs, cache, 0, DATA_ROOM, -1) };
        if ptr.is_null() {
            return Err(DpdkError::Pool {
                name: name.into(),
                mbufs,
                reason: strerror(rte_errno()),
            });
        }
        Ok(Arc::new(Pool {
            ptr,
            name: name.into(),
            size: mbufs,
        }))
    }

    /// Mbufs taken from the pool and not yet returned (held by a queue, a device or the
    /// driver; the per-lcore caches count as free).
    pub fn in_use(&self) -> u32 {
        // SAFETY: `ptr` is a live mempool (see the type's invariant); the call only reads.
        let avail = unsafe { sys::rte_mempool_avail_count(self.ptr) };
        self.size.saturating_sub(avail)
    }

    /// Mbufs in the pool.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: `ptr` is live and no port or device uses it any more (each held an Arc).
        unsafe { sys::rte_mempool_free(self.ptr) };
    }
}

/// How to set up a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// The ethdev name: a PCI address (`0000:3b:00.0`) or a virtual device's name
    /// (`net_af_packet0`).
    pub name: String,
    /// Queue pairs (one per worker).
    pub queues: u16,
    /// Receive descriptors per queue (adjusted to the driver's limits).
    pub rx_ring: u16,
    /// Transmit descriptors per queue (adjusted to the driver's limits).
    pub tx_ring: u16,
    /// Receive frames for every MAC address (needed when the stack's MAC is not the port's).
    pub promiscuous: bool,
}

/// Port-wide counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub ipackets: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames the hardware dropped because no descriptor was free.
    pub imissed: u64,
    /// Erroneous frames received.
    pub ierrors: u64,
    /// Failed transmissions.
    pub oerrors: u64,
    /// Receive mbuf allocation failures.
    pub rx_nombuf: u64,
}

/// A started ethdev port; stopped and closed when the last `Arc` drops.
#[derive(Debug)]
pub struct Port {
    id: u16,
    name: String,
    queues: u16,
    driver: String,
    mac: [u8; 6],
    rss_hf: u64,
    pool: Arc<Pool>,
}

impl Port {
    /// Finds the port named `config.name` and configures and starts it with `config.queues`
    /// queue pairs receiving into `pool`. On failure the port is closed again, so every mbuf
    /// it took is back in `pool`.
    pub fn open(config: &PortConfig, pool: Arc<Pool>) -> Result<Arc<Port>, DpdkError> {
        let cname = CString::new(config.name.as_str())
            .map_err(|_| DpdkError::Argument(config.name.clone()))?;
        let mut id = 0u16;
        // SAFETY: cname is a valid C string for the call; `id` is a valid u16 to write.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if ret != 0 {
            return Err(DpdkError::NoSuchPort {
                name: config.name.clone(),
                // SAFETY: no arguments; reads the ethdev table.
                available: unsafe { sys::rte_eth_dev_count_avail() },
            });
        }
        let mut info = sys::sluice_dpdk_port_info::default();
        let mut step: *const libc::c_char = std::ptr::null();
        // SAFETY: `id` is a probed port; `pool.ptr` is a live mempool that outlives the port
        // (the port keeps an Arc); `info` and `step` are valid to write; the shim sets `step`
        // to a static string.
        let ret = unsafe {
            sys::sluice_dpdk_port_setup(
                id,
                config.queues,
                config.rx_ring,
                config.tx_ring,
                pool.ptr,
                i32::from(config.promiscuous),
                &mut info,
                &mut step,
            )
        };
        if ret != 0 {
            let step = if step.is_null() {
                String::from("set-up")
            } else {
                // SAFETY: the shim only stores pointers to static NUL-terminated strings.
                unsafe { CStr::from_ptr(step) }
                    .to_string_lossy()
                    .into_owned()
            };
            // Release the queues (and the receive mbufs a driver may hold in them).
            // SAFETY: `id` is a valid port; stop and close are allowed in any state.
            unsafe {
                sys::rte_eth_dev_stop(id);
                sys::rte_eth_dev_close(id);
            }
            return Err(DpdkError::Port {
                port: config.name.clone(),
                step,
                reason: strerror(ret),
            });
        }
        // SAFETY: the shim wrote a NUL-terminated string (it zeroes the struct and copies at
        // most len - 1 bytes) into the array.
        let driver = unsafe { CStr::from_ptr(info.driver.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(Arc::new(Port {
            id,
            name: config.name.clone(),
            queues: config.queues,
            driver,
            mac: info.mac,
            rss_hf: info.rss_hf,
            pool,
        }))
    }

    /// The ethdev port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The name it was opened by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The driver's name (`net_af_packet`, `net_ice`...).
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// Queue pairs configured.
    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// The port's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether RSS spreads received frames over the queues.
    pub fn rss_enabled(&self) -> bool {
        self.rss_hf != 0
    }

    /// The pool the port receives into.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The port's RSS key and redirection table (for choosing active-open source ports whose
    /// answers land on the opening worker's queue), when RSS is on and the driver reports
    /// them.
    pub fn rss(&self) -> Option<RssTable> {
        if !self.rss_enabled() {
            return None;
        }
        let mut key = [0u8; 64];
        let mut key_len = key.len() as u8;
        let mut reta = [0u16; 512];
        let mut reta_len = reta.len() as u16;
        // SAFETY: the buffers are valid for the lengths passed; the shim writes within them.
        let ret = unsafe {
            sys::sluice_dpdk_port_rss(
                self.id,
                key.as_mut_ptr(),
                &mut key_len,
                reta.as_mut_ptr(),
                &mut reta_len,
            )
        };
        if ret != 0 {
            return None;
        }
        Some(RssTable {
            key: key.get(..usize::from(key_len))?.to_vec(),
            indirection: reta
                .get(..usize::from(reta_len))?
                .iter()
                .map(|&q| u32::from(q))
                .collect(),
        })
    }

    /// Port-wide counters.
    pub fn stats(&self) -> Option<PortStats> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: `s` is a valid rte_eth_stats to write; the port is started.
        let ret = unsafe { sys::rte_eth_stats_get(self.id, &mut s) };
        (ret == 0).then_some(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// The driver's extended statistics, by name.
    pub fn xstats(&self) -> Vec<(String, u64)> {
        // SAFETY: a NULL array with size 0 asks for the count only.
        let n = unsafe { sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        if n <= 0 {
            return Vec::new();
        }
        let n = n as usize;
        let mut names = vec![sys::rte_eth_xstat_name::default(); n];
        let mut values = vec![sys::rte_eth_xstat::default(); n];
        // SAFETY: both arrays hold `n` valid elements to write.
        let got_names =
            unsafe { sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32) };
        // SAFETY: as above.
        let got = unsafe { sys::rte_eth_xstats_get(self.id, values.as_mut_ptr(), n as u32) };
        if got_names <= 0 || got <= 0 {
            return Vec::new();
        }
        values
            .iter()
            .take(got as usize)
            .filter_map(|v| {
                let name = names.get(usize::try_from(v.id).ok()?)?;
                // SAFETY: DPDK writes NUL-terminated names into the fixed arrays.
                let name = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((name.to_string_lossy().into_owned(), v.value))
            })
            .collect()
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port was started by `open`; no device uses it any more (each held an
        // Arc). Stop releases the queues' mbufs to the pool, close frees the port.
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
    }
}

// SAFETY: a Port is an id and plain data; the ethdev calls made through `&Port` (statistics,
// RSS queries) are allowed from any thread, and stop/close run once, in Drop.
unsafe impl Send for Port {}
// SAFETY: as for Send.
unsafe impl Sync for Port {}

/// The transmit half of a [`DpdkDevice`]: lends fresh mbufs and queues them for
/// [`Device::submit`].
#[derive(Debug)]
pub struct DpdkTx {
    pool: *mut sys::rte_mempool,
    pending: Vec<*mut sys::rte_mbuf>,
    limit: usize,
    room: usize,
    tx_no_buffer: u64,
    tx_too_large: u64,
}

impl DpdkTx {
    /// Frames queued and not yet handed to the driver.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

impl TxQueue for DpdkTx {
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, fill: F) -> bool {
        if len > self.room {
            self.tx_too_large += 1;
            return false;
        }
        if self.pending.len() >= self.limit {
            self.tx_no_buffer += 1;
            return false;
        }
        // SAFETY: `pool` is live while the device (and its Arc<Pool> via the port) is.
        let m = unsafe { sys::sluice_dpdk_mbuf_alloc(self.pool) };
        if m.is_null() {
            self.tx_no_buffer += 1;
            return false;
        }
        let (mut data_len, mut segs) = (0u16, 0u16);
        // SAFETY: `m` is a fresh mbuf we own; the shim writes the two lengths.
        let data = unsafe { sys::sluice_dpdk_mbuf_data(m, &mut data_len, &mut segs) };
        // SAFETY: a fresh mbuf's data starts after its headroom with `room` bytes of buffer
        // behind it (checked at open: every mbuf of the pool has the same room), and
        // len <= room. The memory is the pool's, mapped by the EAL from zero-filled pages and
        // since then only written with frame bytes, so every u8 is initialised; nothing else
        // refers to this mbuf until it is queued.
        let buf = unsafe { std::slice::from_raw_parts_mut(data, len) };
        let used = fill(buf).min(len);
        if used == 0 {
            // SAFETY: we own `m` and never use it again.
            unsafe { sys::sluice_dpdk_mbuf_free(m) };
            return true;
        }
        // SAFETY: we own `m`; used <= len <= room <= u16::MAX (room comes from a u16).
        unsafe { sys::sluice_dpdk_mbuf_set_len(m, used as u16) };
        self.pending.push(m);
        true
    }

    fn capacity(&self) -> usize {
        self.room
    }
}

/// One worker's RX/TX queue pair of a [`Port`]. Opened on the worker's own thread, which it
/// registers with the EAL; not `Send`.
#[derive(Debug)]
pub struct DpdkDevice {
    port: Arc<Port>,
    queue: u16,
    tx: DpdkTx,
    stats: DeviceStats,
    registered: bool,
}

impl DpdkDevice {
    /// Opens queue pair `queue` of `port` for the calling thread, registering the thread with
    /// the EAL (unless it is an EAL thread already). `tx_limit` bounds the frames queued
    /// between two `submit`s (the port's transmit ring size is a good value).
    pub fn open(port: Arc<Port>, queue: u16, tx_limit: usize) -> Result<DpdkDevice, DpdkError> {
        if queue >= port.queues {
            return Err(DpdkError::Port {
                port: port.name.clone(),
                step: format!("queue {queue}"),
                reason: format!("the port has {} queue pair(s)", port.queues),
            });
        }
        // SAFETY: no arguments; returns the calling thread's lcore id (LCORE_ID_ANY if none).
        let registered = if unsafe { sys::sluice_dpdk_lcore_id() } == u32::MAX {
            // SAFETY: no arguments; gives the calling thread an lcore id or fails.
            if unsafe { sys::rte_thread_register() } != 0 {
                return Err(DpdkError::Register(strerror(rte_errno())));
            }
            true
        } else {
            false
        };
        let pool = port.pool.ptr;
        // Every mbuf of a pool has the same room: measure it on one.
        // SAFETY: `pool` is live (the port holds its Arc).
        let probe = unsafe { sys::sluice_dpdk_mbuf_alloc(pool) };
        if probe.is_null() {
            if registered {
                // SAFETY: undoes the registration above, on the same thread.
                unsafe { sys::rte_thread_unregister() };
            }
            return Err(DpdkError::Port {
                port: port.name.clone(),
                step: format!("queue {queue}"),
                reason: "the mbuf pool is empty".into(),
            });
        }
        // SAFETY: `probe` is a fresh mbuf we own; freed right after.
        let room = usize::from(unsafe { sys::sluice_dpdk_mbuf_room(probe) });
        // SAFETY: we own `probe` and never use it again.
        unsafe { sys::sluice_dpdk_mbuf_free(probe) };
        let limit = tx_limit.max(RX_BURST);
        Ok(DpdkDevice {
            port,
            queue,
            tx: DpdkTx {
                pool,
                pending: Vec::with_capacity(limit),
                limit,
                room,
                tx_no_buffer: 0,
                tx_too_large: 0,
            },
            stats: DeviceStats::default(),
            registered,
        })
    }

    /// The port this queue belongs to.
    pub fn port(&self) -> &Arc<Port> {
        &self.port
    }

    /// The queue pair's index.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

impl Device for DpdkDevice {
    type Tx = DpdkTx;

    fn receive<F>(&mut self, budget: usize, mut on_frame: F) -> Result<usize, DeviceError>
    where
        F: FnMut(&mut [u8], &mut DpdkTx),
    {
        let mut done = 0;
        let mut burst: [*mut sys::rte_mbuf; RX_BURST] = [std::ptr::null_mut(); RX_BURST];
        while done < budget {
            let want = (budget - done).min(RX_BURST) as u16;
            // SAFETY: `burst` has room for `want` pointers; the queue is set up and polled by
            // this thread only (one device per queue).
            let n = unsafe {
                sys::sluice_dpdk_rx_burst(self.port.id, self.queue, burst.as_mut_ptr(), want)
            };
            for &m in burst.iter().take(usize::from(n)) {
                let (mut len, mut segs) = (0u16, 0u16);
                // SAFETY: the driver handed us `m`, a valid mbuf we now own.
                let data = unsafe { sys::sluice_dpdk_mbuf_data(m, &mut len, &mut segs) };
                if segs == 1 {
                    // SAFETY: the first segment holds `len` bytes of frame at `data`, written
                    // by the driver; we own the mbuf until it is freed below, after the
                    // callback's borrow ended.
                    let frame = unsafe { std::slice::from_raw_parts_mut(data, usize::from(len)) };
                    self.stats.rx_frames += 1;
                    on_frame(frame, &mut self.tx);
                } else {
                    // Frames larger than one mbuf (jumbo, scattered): not configured for.
                    self.stats.rx_dropped += 1;
                }
                // SAFETY: we own `m` and no reference to its data is left.
                unsafe { sys::sluice_dpdk_mbuf_free(m) };
            }
            done += usize::from(n);
            if usize::from(n) < usize::from(want) {
                break;
            }
        }
        Ok(done)
    }

    fn tx(&mut self) -> &mut DpdkTx {
        &mut self.tx
    }

    fn submit(&mut self) -> Result<usize, DeviceError> {
        let mut sent = 0usize;
        for _ in 0..TX_TRIES {
            let rest = self.tx.pending.len() - sent;
            if rest == 0 {
                break;
            }
            let n = rest.min(usize::from(u16::MAX)) as u16;
            // SAFETY: pending[sent..] holds `rest` mbufs we own; the driver takes ownership of
            // the first `k` it returns, which we then forget (drained below).
            let k = unsafe {
                sys::sluice_dpdk_tx_burst(
                    self.port.id,
                    self.queue,
                    self.tx.pending.as_mut_ptr().add(sent),
                    n,
                )
            };
            sent += usize::from(k);
            if k == 0 {
                break;
            }
        }
        self.tx.pending.drain(..sent);
        self.stats.tx_frames += sent as u64;
        if sent > 0 {
            self.stats.kicks += 1;
        }
        Ok(sent)
    }

    fn reclaim(&mut self) -> usize {
        // The driver returns transmitted mbufs to the pool itself.
        0
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, DeviceError> {
        // Poll-mode drivers have no readiness to wait on: the idle backoff's sleep.
        std::thread::sleep(timeout);
        Ok(false)
    }

    fn stats(&self) -> DeviceStats {
        DeviceStats {
            tx_no_buffer: self.tx.tx_no_buffer,
            tx_too_large: self.tx.tx_too_large,
            ..self.stats
        }
    }

    fn pending_frames<F: FnMut(&[u8])>(&mut self, mut f: F) {
        for &m in &self.tx.pending {
            let (mut len, mut segs) = (0u16, 0u16);
            // SAFETY: queued mbufs are ours, one segment each, with `len` bytes written.
            let data = unsafe { sys::sluice_dpdk_mbuf_data(m, &mut len, &mut segs) };
            // SAFETY: as above; the slice ends before the next call touches the mbuf.
            f(unsafe { std::slice::from_raw_parts(data, usize::from(len)) });
        }
    }
}

impl Drop for DpdkDevice {
    fn drop(&mut self) {
        for m in self.tx.pending.drain(..) {
            // SAFETY: queued, never handed to the driver: ours to free.
            unsafe { sys::sluice_dpdk_mbuf_free(m) };
        }
        if self.registered {
            // SAFETY: the device is dropped on the thread that opened (and registered) it:
            // it is not Send.
            unsafe { sys::rte_thread_unregister() };
        }
    }
}
