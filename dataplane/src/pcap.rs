//! Packet capture: [`PcapDevice`] wraps any [`Device`] and writes every frame it receives
//! and every frame it puts on the wire to a classic pcap file (`tcpdump -r` reads it).
//!
//! The hot path never waits for the disk. Records are appended to an in-memory chunk; a
//! full chunk (or a partial one every 50 ms, and whenever the worker goes idle) goes to a
//! writer thread over a bounded channel.
//! When that channel is full (the disk is slower than the traffic) the chunk is dropped and
//! its frames are counted in [`CaptureStats::dropped`]; emptied chunks come back over a
//! second channel so steady state allocates nothing. Memory is bounded by
//! `CHUNKS x CHUNK_BYTES` per capture.
//!
//! Received frames are recorded before the handler sees them (it may rewrite them in
//! place); transmitted frames are recorded at `submit`, in the order they go on the wire
//! (via [`Device::pending_frames`]), and only once even when a submit leaves some queued.
//!
//! The format is written by hand (24-byte global header, 16-byte record headers, link
//! type Ethernet, microsecond timestamps, native byte order): see
//! `docs/decisions/0003-pcap-writer.md`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::device::{Device, DeviceError, DeviceStats};

/// A chunk is handed to the writer once it holds this many bytes.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks that may wait for the writer; more are dropped (and counted).
const CHUNKS: usize = 64;
/// A partly filled chunk goes to the writer at the latest this long after the previous
/// hand-off (and whenever the worker goes idle), so the file stays current.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Largest frame recorded in full (`snaplen`); longer frames are truncated in the file.
pub const SNAPLEN: u32 = 65_535;
/// pcap link type for Ethernet.
const LINKTYPE_ETHERNET: u32 = 1;

/// The 24-byte pcap global header (version 2.4, microsecond timestamps, native order).
pub fn global_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&SNAPLEN.to_ne_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
    h
}

/// Appends one record (header and at most [`SNAPLEN`] bytes of `frame`) to `out`.
pub fn push_record(out: &mut Vec<u8>, at: Duration, frame: &[u8]) {
    let orig = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    let incl = orig.min(SNAPLEN);
    let secs = u32::try_from(at.as_secs()).unwrap_or(u32::MAX);
    out.extend_from_slice(&secs.to_ne_bytes());
    out.extend_from_slice(&at.subsec_micros().to_ne_bytes());
    out.extend_from_slice(&incl.to_ne_bytes());
    out.extend_from_slice(&orig.to_ne_bytes());
    out.extend_from_slice(frame.get(..incl as usize).unwrap_or(frame));
}

/// What a capture did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Frames handed to the writer thread.
    pub captured: u64,
    /// Frames dropped because the writer fell behind.
    pub dropped: u64,
    /// Frames the writer thread wrote to the file.
    pub written: u64,
}

/// The producing side of one capture file: the current chunk and the two channels.
#[derive(Debug)]
struct Capture {
    chunk: Vec<u8>,
    chunk_frames: u64,
    /// Wall-clock time of the last hand-off to the writer.
    flushed_at: Duration,
    full: Sender<(Vec<u8>, u64)>,
    empty: Receiver<Vec<u8>>,
    captured: u64,
    dropped: u64,
    written: Arc<AtomicU64>,
    writer: Option<JoinHandle<io::Result<()>>>,
}

impl Capture {
    fn create(path: &Path) -> io::Result<Capture> {
        let mut file = BufWriter::with_capacity(CHUNK_BYTES, File::create(path)?);
        file.write_all(&global_header())?;
        file.flush()?;
        let (full_tx, full_rx) = bounded::<(Vec<u8>, u64)>(CHUNKS);
        let (empty_tx, empty_rx) = bounded::<Vec<u8>>(CHUNKS);
        let written = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&written);
        let writer = std::thread::Builder::new()
            .name("sluice-pcap".to_string())
            .spawn(move || -> io::Result<()> {
                for (mut chunk, frames) in full_rx {
                    file.write_all(&chunk)?;
                    counter.fetch_add(frames, Ordering::Relaxed);
                    chunk.clear();
                    // A full return channel only means enough spare chunks exist.
                    let _ = empty_tx.try_send(chunk);
                }
                file.flush()
            })?;
        Ok(Capture {
            chunk: Vec::with_capacity(CHUNK_BYTES),
            chunk_frames: 0,
            flushed_at: Duration::ZERO,
            full: full_tx,
            empty: empty_rx,
            captured: 0,
            dropped: 0,
            written,
            writer: Some(writer),
        })
    }

    fn record(&mut self, at: Duration, frame: &[u8]) {
        push_record(&mut self.chunk, at, frame);
        self.chunk_frames += 1;
        if self.chunk.len() >= CHUNK_BYTES {
            self.flush();
        }
    }

    /// Hands the current chunk to the writer when [`FLUSH_EVERY`] has passed since the
    /// last hand-off.
    fn flush_if_due(&mut self, now: Duration) {
        if now.saturating_sub(self.flushed_at) >= FLUSH_EVERY {
            self.flush();
            self.flushed_at = now;
        }
    }

    /// Hands the current chunk to the writer without waiting; drops it when the writer is
    /// behind.
    fn flush(&mut self) {
        if self.chunk_frames == 0 {
            return;
        }
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK_BYTES));
        let chunk = std::mem::replace(&mut self.chunk, next);
        let frames = std::mem::take(&mut self.chunk_frames);
        match self.full.try_send((chunk, frames)) {
            Ok(()) => self.captured += frames,
            Err(
                TrySendError::Full((mut chunk, _)) | TrySendError::Disconnected((mut chunk, _)),
            ) => {
                self.dropped += frames;
                // Reuse the dropped chunk's memory for the next one.
                chunk.clear();
                self.chunk = chunk;
            }
        }
    }

    fn stats(&self) -> CaptureStats {
        CaptureStats {
            captured: self.captured,
            dropped: self.dropped,
            written: self.written.load(Ordering::Relaxed),
        }
    }

    /// Flushes, closes the channel and waits for the writer to finish the file.
    fn finish(&mut self) -> io::Result<CaptureStats> {
        if self.chunk_frames > 0 && self.writer.is_some() {
            // The last chunk may wait for the writer: this is the end, not the hot path.
            let frames = std::mem::take(&mut self.chunk_frames);
            let chunk = std::mem::take(&mut self.chunk);
            match self.full.send((chunk, frames)) {
                Ok(()) => self.captured += frames,
                Err(_) => self.dropped += frames,
            }
        }
        let (dead_tx, _) = bounded(1);
        drop(std::mem::replace(&mut self.full, dead_tx));
        if let Some(writer) = self.writer.take() {
            writer
                .join()
                .map_err(|_| io::Error::other("pcap writer thread panicked"))??;
        }
        Ok(self.stats())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        match self.finish() {
            Ok(s) => tracing::info!(
                captured = s.captured,
                written = s.written,
                pcap_dropped = s.dropped,
                "pcap closed"
            ),
            Err(e) => tracing::warn!(error = %e, "pcap writer failed"),
        }
    }
}

/// The wall clock as pcap wants it: time since the Unix epoch.
fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A [`Device`] that records every frame received and sent by `D` to a pcap file, or (made
/// with [`PcapDevice::passthrough`]) records nothing.
#[derive(Debug)]
pub struct PcapDevice<D: Device> {
    inner: D,
    capture: Option<Capture>,
    /// Frames at the head of the inner device's pending queue already recorded.
    recorded_pending: usize,
}

impl<D: Device> PcapDevice<D> {
    /// Wraps `inner`, creating (truncating) `path` and starting its writer thread.
    pub fn create(inner: D, path: &Path) -> io::Result<PcapDevice<D>> {
        Ok(PcapDevice {
            inner,
            capture: Some(Capture::create(path)?),
            recorded_pending: 0,
        })
    }

    /// Wraps `inner` without capturing (one branch per frame).
    pub fn passthrough(inner: D) -> PcapDevice<D> {
        PcapDevice {
            inner,
            capture: None,
            recorded_pending: 0,
        }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The capture's counters (`None` for a passthrough).
    pub fn capture_stats(&self) -> Option<CaptureStats> {
        self.capture.as_ref().map(Capture::stats)
    }

    /// Ends the capture: every frame recorded so far is in the file when this returns.
    pub fn finish(&mut self) -> io::Result<Option<CaptureStats>> {
        match self.capture.take() {
            Some(mut c) => {
                let stats = c.finish()?;
                // `finish` already ran; the drop's second run only logs.
                drop(c);
                Ok(Some(stats))
            }
            None => Ok(None),
        }
    }
}

impl<D: Device> Device for PcapDevice<D> {
    type Tx = D::Tx;

    fn receive<F>(&mut self, budget: usize, mut on_frame: F) -> Result<usize, DeviceError>
    where
        F: FnMut(&mut [u8], &mut D::Tx),
    {
        match &mut self.capture {
            None => self.inner.receive(budget, on_frame),
            Some(capture) => {
                let at = wall_clock();
                self.inner.receive(budget, |frame, tx| {
                    capture.record(at, frame);
                    on_frame(frame, tx);
                })
            }
        }
    }

    fn tx(&mut self) -> &mut D::Tx {
        self.inner.tx()
    }

    fn submit(&mut self) -> Result<usize, DeviceError> {
        let Some(capture) = &mut self.capture else {
            return self.inner.submit();
        };
        let at = wall_clock();
        let skip = self.recorded_pending;
        let mut index = 0usize;
        self.inner.pending_frames(|frame| {
            if index >= skip {
                capture.record(at, frame);
            }
            index += 1;
        });
        let put = self.inner.submit();
        // Frames left queued were recorded; `submit` takes from the head of the queue.
        self.recorded_pending = index.saturating_sub(*put.as_ref().unwrap_or(&0));
        capture.flush_if_due(at);
        put
    }

    fn reclaim(&mut self) -> usize {
        self.inner.reclaim()
    }

    fn wait(&mut self, timeout: Duration) -> Result<bool, DeviceError> {
        // Idle: a good moment to bring the file up to date.
        if let Some(capture) = &mut self.capture {
            capture.flush();
        }
        self.inner.wait(timeout)
    }

    fn stats(&self) -> DeviceStats {
        self.inner.stats()
    }

    fn pending_frames<F: FnMut(&[u8])>(&mut self, f: F) {
        self.inner.pending_frames(f);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::device::TxQueue;
    use crate::mem::{MemConfig, MemDevice};

    /// Parses a pcap file written in native order: (global header ok, records).
    fn read_pcap(bytes: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        assert_eq!(&bytes[..24], &global_header());
        let mut out = Vec::new();
        let mut at = 24;
        let word = |b: &[u8], i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().unwrap());
        while at < bytes.len() {
            let incl = word(bytes, at + 8);
            let orig = word(bytes, at + 12);
            let data = bytes[at + 16..at + 16 + incl as usize].to_vec();
            out.push((incl, orig, data));
            at += 16 + incl as usize;
        }
        out
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("sluice-pcap-{}-{name}.pcap", std::process::id()))
    }

    fn send(dev: &mut impl Device, byte: u8, len: usize) {
        assert!(dev.tx().transmit(len, |b| {
            b.fill(byte);
            len
        }));
    }

    #[test]
    fn pcap_rx_and_tx_frames_recorded_in_order_once() {
        let path = temp("order");
        let (mut peer, dev) = MemDevice::pair(MemConfig::default());
        let mut dev = PcapDevice::create(dev, &path).unwrap();
        send(&mut peer, 1, 60);
        send(&mut peer, 2, 61);
        peer.submit().unwrap();
        // Received frames are recorded before the handler rewrites them in place.
        let n = dev.receive(64, |f, _| f.fill(0xee)).unwrap();
        assert_eq!(n, 2);
        send(&mut dev, 3, 62);
        dev.submit().unwrap();
        dev.submit().unwrap();
        let stats = dev.finish().unwrap().unwrap();
        assert_eq!(stats.captured, 3);
        assert_eq!(stats.written, 3);
        assert_eq!(stats.dropped, 0);
        let records = read_pcap(&std::fs::read(&path).unwrap());
        let got: Vec<(u8, usize)> = records.iter().map(|r| (r.2[0], r.2.len())).collect();
        assert_eq!(got, vec![(1, 60), (2, 61), (3, 62)]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn pcap_writer_behind_chunks_dropped_and_counted_never_blocks() {
        let (full_tx, full_rx) = bounded::<(Vec<u8>, u64)>(1);
        let (_empty_tx, empty_rx) = bounded::<Vec<u8>>(1);
        // No writer thread drains `full_rx`: the second chunk finds the channel full.
        let mut c = Capture {
            chunk: Vec::new(),
            chunk_frames: 0,
            flushed_at: Duration::ZERO,
            full: full_tx,
            empty: empty_rx,
            captured: 0,
            dropped: 0,
            written: Arc::new(AtomicU64::new(0)),
            writer: None,
        };
        c.record(Duration::ZERO, &[1; 60]);
        c.flush();
        c.record(Duration::ZERO, &[2; 60]);
        c.record(Duration::ZERO, &[3; 60]);
        c.flush();
        assert_eq!(c.stats().captured, 1);
        assert_eq!(c.stats().dropped, 2);
        assert_eq!(full_rx.len(), 1);
        drop(full_rx);
    }

    #[test]
    fn pcap_oversized_frame_truncated_to_snaplen() {
        let mut out = Vec::new();
        let big = vec![9u8; SNAPLEN as usize + 10];
        push_record(&mut out, Duration::from_micros(1_500_000), &big);
        assert_eq!(out.len(), 16 + SNAPLEN as usize);
        assert_eq!(u32::from_ne_bytes(out[0..4].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(out[4..8].try_into().unwrap()), 500_000);
        assert_eq!(u32::from_ne_bytes(out[8..12].try_into().unwrap()), SNAPLEN);
        assert_eq!(
            u32::from_ne_bytes(out[12..16].try_into().unwrap()),
            SNAPLEN + 10
        );
    }

    #[test]
    fn pcap_passthrough_records_nothing() {
        let (mut peer, dev) = MemDevice::pair(MemConfig::default());
        let mut dev = PcapDevice::passthrough(dev);
        send(&mut peer, 1, 60);
        peer.submit().unwrap();
        assert_eq!(dev.receive(64, |_, _| {}).unwrap(), 1);
        assert!(dev.capture_stats().is_none());
        assert!(dev.finish().unwrap().is_none());
    }
}
