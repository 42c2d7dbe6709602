//! The AF_XDP [`Device`]: one socket bound to one interface queue, with its own UMEM.
//!
//! The UMEM's frames are split in two pools. The receive pool circulates between the fill
//! ring, the RX ring and the receive callback; the transmit pool between a free list, the
//! pending batch, the TX ring and the completion ring. Refills of the fill ring are capped at
//! the ring's free count (its produce is all-or-nothing), the TX ring is fed at most its
//! free count per submit, and the kernel is woken (`sendto`) at most once per submit and
//! only when it set the need-wakeup flag. libxdp's own XDP program load is inhibited: the
//! socket is registered in [`XdpProgram`]'s `xsks` map instead.

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue as XskTxRing, Umem};

use crate::device::{Device, DeviceError, DeviceStats, TxQueue};
use crate::error::StartError;
use crate::sys;
use crate::xdp::XdpProgram;

/// Whether to ask for zero-copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroCopy {
    /// Zero-copy if the driver supports it, copy mode otherwise.
    #[default]
    Auto,
    /// Zero-copy or fail.
    Require,
    /// Copy mode only.
    Off,
}

/// The copy mode the socket was bound in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// The NIC DMAs straight into UMEM.
    ZeroCopy,
    /// The kernel copies between its buffers and UMEM (veth, generic XDP, older drivers).
    Copy,
}

impl std::fmt::Display for CopyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyMode::ZeroCopy => "zero-copy",
            CopyMode::Copy => "copy",
        })
    }
}

/// Sizes and modes of one AF_XDP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XskConfig {
    /// Interface name.
    pub iface: String,
    /// Receive queue to bind.
    pub queue: u32,
    /// Entries of each of the four rings (a power of two).
    pub ring_size: u32,
    /// UMEM frame size in bytes (a power of two, at least 2048). Frames carry up to
    /// `frame_size - 256` bytes (the kernel's XDP headroom).
    pub frame_size: u32,
    /// UMEM frames kept for receiving (they circulate through the fill ring).
    pub rx_frames: u32,
    /// UMEM frames kept for transmitting.
    pub tx_frames: u32,
    /// Whether to ask for zero-copy.
    pub zero_copy: ZeroCopy,
}

impl XskConfig {
    /// Defaults for `iface` queue `queue`: 2048-entry rings, 2048-byte frames, 2048 frames
    /// for each direction (8 MiB of UMEM), zero-copy when available.
    pub fn new(iface: &str, queue: u32) -> XskConfig {
        XskConfig {
            iface: iface.to_string(),
            queue,
            ring_size: 2048,
            frame_size: 2048,
            rx_frames: 2048,
            tx_frames: 2048,
            zero_copy: ZeroCopy::Auto,
        }
    }
}

/// The receive half: RX ring, fill ring and the frames between them.
#[derive(Debug)]
struct XskRx {
    umem: Umem,
    ring: RxQueue,
    fill: FillQueue,
    /// Descriptors filled by the RX ring in one `receive`.
    batch: Vec<FrameDesc>,
    /// Frames the callback is done with, waiting for room on the fill ring.
    recycle: Vec<FrameDesc>,
    frames: u64,
    kicks: u64,
}

impl XskRx {
    /// Gives recycled frames back to the fill ring, no more than it has room for.
    fn refill(&mut self) -> usize {
        if self.recycle.is_empty() {
            return 0;
        }
        let want = u32::try_from(self.recycle.len()).unwrap_or(u32::MAX);
        let room = self.fill.nb_free(want).min(want) as usize;
        if room == 0 {
            return 0;
        }
        let from = self.recycle.len() - room;
        // SAFETY: every descriptor in `recycle` came off this UMEM's RX ring (or its initial
        // pool) and is no longer referenced by userspace; `room` does not exceed the free
        // count, so the all-or-nothing produce hands over exactly these frames.
        let produced = unsafe { self.fill.produce(&self.recycle[from..]) };
        if produced == room {
            self.recycle.truncate(from);
        }
        produced
    }

    /// Wakes the kernel for the fill ring when it asked for it (`need_wakeup`).
    fn kick_if_needed(&mut self) -> io::Result<()> {
        if self.fill.needs_wakeup() {
            self.kicks += 1;
            self.ring.poll(0)?;
        }
        Ok(())
    }
}

/// The transmit half of an [`XskDevice`]: lends UMEM frames, queues them for the TX ring.
#[derive(Debug)]
pub struct XskTx {
    umem: Umem,
    ring: XskTxRing,
    comp: CompQueue,
    free: Vec<FrameDesc>,
    pending: Vec<FrameDesc>,
    completed: Vec<FrameDesc>,
    /// Frames on the TX ring whose completion has not been seen yet.
    in_flight: usize,
    capacity: usize,
    frames: u64,
    no_buffer: u64,
    too_large: u64,
    kicks: u64,
}

impl XskTx {
    fn reclaim(&mut self) -> usize {
        if self.in_flight == 0 {
            return 0;
        }
        // SAFETY: `completed` holds plain descriptors that the completion ring overwrites;
        // the ring belongs to this UMEM.
        let n = unsafe { self.comp.consume(&mut self.completed) };
        self.free.extend_from_slice(&self.completed[..n]);
        self.in_flight = self.in_flight.saturating_sub(n);
        n
    }

    fn submit(&mut self) -> io::Result<usize> {
        let mut put = 0;
        if !self.pending.is_empty() {
            let want = u32::try_from(self.pending.len()).unwrap_or(u32::MAX);
            let room = self.ring.nb_free(want).min(want) as usize;
            if room > 0 {
                // SAFETY: the pending frames belong to this UMEM, were written by
                // `transmit` and are not referenced elsewhere; `room` does not exceed the
                // free count, so the all-or-nothing produce takes all of them.
                put = unsafe { self.ring.produce(&self.pending[..room]) };
                self.pending.drain(..put);
                self.in_flight += put;
                self.frames += put as u64;
            }
        }
        // In copy mode one sendto transmits at most a kernel batch (32 frames); frames left
        // on the ring get the next submit's kick even when nothing new was queued.
        if self.in_flight > 0 && self.ring.needs_wakeup() {
            self.kicks += 1;
            self.ring.wakeup()?;
        }
        Ok(put)
    }

    /// Frames queued by `transmit` and not yet on the TX ring.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Transmit buffers free right now (not counting completions not yet reclaimed).
    pub fn free_buffers(&self) -> usize {
        self.free.len()
    }
}

impl TxQueue for XskTx {
    fn transmit<F: FnOnce(&mut [u8]) -> usize>(&mut self, len: usize, fill: F) -> bool {
        if len > self.capacity {
            self.too_large += 1;
            return false;
        }
        if self.free.is_empty() {
            self.reclaim();
        }
        let Some(mut desc) = self.free.pop() else {
            self.no_buffer += 1;
            return false;
        };
        let used = {
            // SAFETY: `desc` came from this UMEM's free pool: it is neither on a ring nor
            // lent out, so this is the only reference to the frame's memory.
            let mut data = unsafe { self.umem.data_mut(&mut desc) };
            data.cursor().set_pos(len);
            if data.contents().len() != len {
                // The frame is shorter than `capacity` said (cannot happen with the layout
                // `open` sets up); refuse rather than lend a short buffer.
                None
            } else {
                let used = fill(data.contents_mut()).min(len);
                data.cursor().set_pos(used);
                Some(used)
            }
        };
        let Some(used) = used else {
            self.free.push(desc);
            self.too_large += 1;
            return false;
        };
        if used == 0 {
            self.free.push(desc);
        } else {
            self.pending.push(desc);
        }
        true
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

/// An AF_XDP socket on one queue, as a [`Device`].
#[derive(Debug)]
pub struct XskDevice {
    rx: XskRx,
    tx: XskTx,
    mode: CopyMode,
    iface: String,
    queue: u32,
}

/// The errno inside an xsk-rs error, if any.
fn errno_of(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    err.source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

/// One bind attempt's result: the UMEM with its frames and the socket's four rings.
type Bound = (
    Umem,
    Vec<FrameDesc>,
    XskTxRing,
    RxQueue,
    FillQueue,
    CompQueue,
);

impl XskDevice {
    /// Creates the UMEM, binds the socket (zero-copy first unless told otherwise), fills
    /// the fill ring, and registers the socket in `program`'s `xsks` map for its queue.
    pub fn open(config: &XskConfig, program: &XdpProgram) -> Result<XskDevice, StartError> {
        let iface = config.iface.as_str();
        sys::ifindex(iface).map_err(|e| StartError::from_os("look up", iface, e))?;
        // Drivers that do not report channels (EOPNOTSUPP) are left to the bind to judge.
        if let Ok(channels) = sys::channels(iface) {
            let queues = channels.rx_queues();
            if queues > 0 && config.queue >= queues {
                return Err(StartError::QueueOutOfRange {
                    iface: iface.to_string(),
                    queue: config.queue,
                    queues,
                });
            }
        }

        let attempts: &[(CopyMode, BindFlags)] = match config.zero_copy {
            ZeroCopy::Auto => &[
                (CopyMode::ZeroCopy, BindFlags::XDP_ZEROCOPY),
                (CopyMode::Copy, BindFlags::XDP_COPY),
            ],
            ZeroCopy::Require => &[(CopyMode::ZeroCopy, BindFlags::XDP_ZEROCOPY)],
            ZeroCopy::Off => &[(CopyMode::Copy, BindFlags::XDP_COPY)],
        };
        let mut last = None;
        for &(mode, flags) in attempts {
            match Self::bind(config, flags | BindFlags::XDP_USE_NEED_WAKEUP) {
                Ok(bound) => return Self::assemble(config, program, mode, bound),
                Err(Some(libc::EOPNOTSUPP)) if mode == CopyMode::ZeroCopy => {
                    last = Some(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
                }
                Err(Some(errno)) => return Err(Self::bind_error(config, errno)),
                Err(None) => {
                    return Err(StartError::Os {
                        what: "bind the AF_XDP socket",
                        source: io::Error::other("libxdp returned no socket"),
                    })
                }
            }
        }
        Err(StartError::Os {
            what: "bind the AF_XDP socket in zero-copy mode",
            source: last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
        })
    }

    fn bind_error(config: &XskConfig, errno: i32) -> StartError {
        match errno {
            libc::EBUSY => StartError::QueueBusy {
                iface: config.iface.clone(),
                queue: config.queue,
            },
            _ => StartError::from_os(
                "bind the AF_XDP socket",
                &config.iface,
                io::Error::from_raw_os_error(errno),
            ),
        }
    }

    /// One bind attempt on a fresh UMEM (a failed bind leaves libxdp's UMEM state behind,
    /// so a retry never reuses it). `Err` carries the errno.
    fn bind(config: &XskConfig, flags: BindFlags) -> Result<Bound, Option<i32>> {
        let frames = config.rx_frames.saturating_add(config.tx_frames);
        let frame_count = NonZeroU32::new(frames).ok_or(Some(libc::EINVAL))?;
        let ring = QueueSize::new(config.ring_size).map_err(|_| Some(libc::EINVAL))?;
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(config.frame_size).map_err(|_| Some(libc::EINVAL))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|_| Some(libc::EINVAL))?;
        let (umem, descs) = Umem::new(umem_config, frame_count, false).map_err(|e| errno_of(&e))?;
        let socket_config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(flags)
            .build();
        let name: Interface = config.iface.parse().map_err(|_| Some(libc::EINVAL))?;
        // SAFETY: the UMEM was created just above and is not shared with any other socket,
        // so the shared-UMEM precondition (inhibited program load) does not arise; the
        // inhibit flag is set anyway.
        let (tx, rx, rings) = unsafe { Socket::new(socket_config, &umem, &name, config.queue) }
            .map_err(|e| errno_of(&e))?;
        let (fill, comp) = rings.ok_or(None)?;
        Ok((umem, descs, tx, rx, fill, comp))
    }

    fn assemble(
        config: &XskConfig,
        program: &XdpProgram,
        mode: CopyMode,
        (umem, mut descs, tx_ring, rx_ring, fill, comp): Bound,
    ) -> Result<XskDevice, StartError> {
        let ring = config.ring_size as usize;
        let tx_descs = descs.split_off((config.rx_frames as usize).min(descs.len()));
        let capacity = config.frame_size.saturating_sub(256) as usize;
        let mut device = XskDevice {
            rx: XskRx {
                umem: umem.clone(),
                ring: rx_ring,
                fill,
                batch: vec![FrameDesc::default(); ring],
                recycle: descs,
                frames: 0,
                kicks: 0,
            },
            tx: XskTx {
                umem,
                ring: tx_ring,
                comp,
                free: tx_descs,
                pending: Vec::with_capacity(ring),
                completed: vec![FrameDesc::default(); ring],
                in_flight: 0,
                capacity,
                frames: 0,
                no_buffer: 0,
                too_large: 0,
                kicks: 0,
            },
            mode,
            iface: config.iface.clone(),
            queue: config.queue,
        };
        device.rx.refill();
        program
            .register(config.queue, device.socket_fd())
            .map_err(|e| {
                StartError::from_os("register the socket in the XDP map", &config.iface, e)
            })?;
        Ok(device)
    }

    /// The socket's descriptor (for the `xsks` map, or an external poller).
    pub fn socket_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor belongs to the socket the RX ring holds, which lives as
        // long as `self`; the borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(self.rx.ring.fd().as_raw_fd()) }
    }

    /// The copy mode obtained.
    pub fn copy_mode(&self) -> CopyMode {
        self.mode
    }

    /// The interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Frames waiting for room on the fill ring (normally 0).
    pub fn rx_recycle_backlog(&self) -> usize {
        self.rx.recycle.len()
    }
}

impl Device for XskDevice {
    type Tx = XskTx;

    fn receive<F>(&mut self, budget: usize, mut on_frame: F) -> Result<usize, DeviceError>
    where
        F: FnMut(&mut [u8], &mut XskTx),
    {
        let XskDevice { rx, tx, .. } = self;
        rx.refill();
        let want = budget.min(rx.batch.len());
        // SAFETY: `batch` holds plain descriptors for the RX ring to overwrite; the ring
        // belongs to this UMEM.
        let n = unsafe { rx.ring.consume(&mut rx.batch[..want]) };
        if n == 0 {
            rx.kick_if_needed()?;
            return Ok(0);
        }
        for i in 0..n {
            let mut desc = rx.batch[i];
            {
                // SAFETY: the RX ring just handed this frame to userspace; until it goes
                // back on the fill ring (after the callback) nothing else touches it.
                let mut data = unsafe { rx.umem.data_mut(&mut desc) };
                on_frame(data.contents_mut(), tx);
            }
            rx.recycle.push(desc);
        }
        rx.frames += n as u64;
        if rx.refill() > 0 {
            rx.kick_if_needed()?;
        }
        Ok(n)
    }

    fn tx(&mut self) -> &mut XskTx {
        &mut self.tx
    }

    fn submit(&mut self) -> Result<usize, DeviceError> {
        Ok(self.tx.submit()?)
    }

    fn reclaim(&mut self) -> usize {
        self.tx.reclaim()
    }

    fn pending_frames<F: FnMut(&[u8])>(&mut self, mut f: F) {
        for desc in &self.tx.pending {
            // SAFETY: pending frames were written by `transmit` and are not on any ring
            // yet, so the kernel does not touch them; this shared view ends before `submit`.
            let data = unsafe { self.tx.umem.data(desc) };
            f(data.contents());
        }
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, DeviceError> {
        let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        Ok(self.rx.ring.poll(ms)?)
    }

    fn stats(&self) -> DeviceStats {
        let kernel = self.rx.ring.fd().xdp_statistics().ok();
        DeviceStats {
            rx_frames: self.rx.frames,
            tx_frames: self.tx.frames,
            tx_no_buffer: self.tx.no_buffer,
            tx_too_large: self.tx.too_large,
            rx_dropped: kernel.map_or(0, |k| k.rx_dropped() + k.rx_ring_full()),
            kicks: self.rx.kicks + self.tx.kicks,
        }
    }
}
