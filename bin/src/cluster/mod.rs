//! Cluster mode: pub/sub across gateway nodes over NATS core (`[cluster]`).
//!
//! One thread per process (`sluice-cluster`, a single-threaded tokio runtime) owns the
//! NATS client; workers never touch it.
//! - **Out:** the broker hands it every publication made on this node (ingest or a
//!   client's `publish`) after queueing it locally, through a bounded queue it never
//!   waits on; the thread publishes it once on `<prefix>.<topic>` with this node's name
//!   and the publish time in headers. Not connected, or the queue full: dropped for the
//!   other nodes and counted (local delivery is unaffected).
//! - **In:** the thread subscribes to a topic's subject while some worker has a local
//!   subscriber of it ([`interest`]), and hands what arrives from other nodes to the
//!   broker, which delivers it locally like any publication (and does not publish it
//!   again). The connection is made with NATS's `no_echo`, and a message carrying this
//!   node's name is ignored besides.
//!
//! Guarantee: at most once across nodes. Per topic, what one node publishes reaches
//! every other node in its publish order (one broker, one FIFO queue, one NATS
//! connection); messages of different nodes may interleave differently on each node.

pub mod interest;
pub mod subject;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::{Client, ConnectOptions, HeaderMap};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::config::{Cluster as ClusterConfig, Config};
use crate::gateway::broker::{Origin, PublishRequest, Publisher};
use crate::gateway::{WorkerHandle, WorkerMsg};
use crate::metrics::ClusterMetrics;
use interest::{Action, Interest};

/// The header naming the publishing node.
pub const NODE_HEADER: &str = "Sluice-Node";
/// The header with the publish time, microseconds since the Unix epoch.
pub const TIME_HEADER: &str = "Sluice-Published-Us";

/// What became of a publication offered to the other nodes (the ingest answer's
/// `cluster` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    /// Handed to the NATS client without error. Core NATS has no acknowledgement: this
    /// does not say another node received it.
    Sent,
    /// Not connected to NATS: dropped for the other nodes.
    NotConnected,
    /// The outbound queue was full: dropped for the other nodes.
    QueueFull,
    /// The NATS client refused it.
    Failed,
}

impl Handed {
    /// The ingest answer's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Handed::Sent => "sent",
            Handed::NotConnected => "dropped_not_connected",
            Handed::QueueFull => "dropped_queue_full",
            Handed::Failed => "failed",
        }
    }
}

/// One local publication for the other nodes.
#[derive(Debug)]
pub struct Outgoing {
    topic: Arc<str>,
    data: String,
    published_us: u64,
    done: Option<crossbeam_channel::Sender<Handed>>,
}

/// The broker's side: offers local publications to the cluster thread, never waiting.
#[derive(Clone, Debug)]
pub struct Outbound {
    tx: mpsc::Sender<Outgoing>,
    metrics: Arc<ClusterMetrics>,
}

impl Outbound {
    /// Offers a local publication; a full queue drops it for the other nodes (counted,
    /// and `done` is answered at once).
    pub fn offer(
        &self,
        topic: Arc<str>,
        data: String,
        done: Option<crossbeam_channel::Sender<Handed>>,
    ) {
        let out = Outgoing {
            topic,
            data,
            published_us: unix_us(),
            done,
        };
        if let Err(e) = self.tx.try_send(out) {
            self.metrics.dropped("queue_full");
            let out = match e {
                mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
            };
            if let Some(d) = out.done {
                let _ = d.try_send(Handed::QueueFull);
            }
        }
    }
}

/// A worker's reports of its topics (one per worker, held by its `Worker`).
#[derive(Clone, Debug)]
pub struct InterestTx {
    worker: usize,
    tx: mpsc::Sender<Report>,
    /// Set when a report did not fit: the worker owes a whole snapshot.
    lost: Arc<AtomicBool>,
}

impl InterestTx {
    /// This worker has (`on`) or no longer has a local subscriber of `topic`.
    pub fn changed(&self, topic: &Arc<str>, on: bool) {
        if self.lost.load(Ordering::Relaxed) {
            // Later reports would be applied on a stale view: wait for the snapshot.
            return;
        }
        let r = Report::Changed {
            worker: self.worker,
            topic: Arc::clone(topic),
            on,
        };
        if self.tx.try_send(r).is_err() {
            self.lost.store(true, Ordering::Relaxed);
        }
    }

    /// Sends the worker's whole topic set (asked for by [`WorkerMsg::InterestResync`]
    /// after a lost report); stays owed when it does not fit either.
    pub fn snapshot(&self, topics: Vec<Arc<str>>) {
        let r = Report::Snapshot {
            worker: self.worker,
            topics,
        };
        if self.tx.try_send(r).is_ok() {
            self.lost.store(false, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
enum Report {
    Changed {
        worker: usize,
        topic: Arc<str>,
        on: bool,
    },
    Snapshot {
        worker: usize,
        topics: Vec<Arc<str>>,
    },
}

/// The connection state `/healthz` reads.
#[derive(Debug, Default)]
pub struct Status {
    connected: AtomicBool,
    /// When the state last changed, ms since the Unix epoch.
    since_ms: AtomicU64,
}

impl Status {
    fn set(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        self.since_ms.store(unix_us() / 1000, Ordering::Relaxed);
    }

    /// `None` while connected to NATS; otherwise the `/healthz` line saying since when.
    pub fn degraded(&self) -> Option<String> {
        if self.connected.load(Ordering::Relaxed) {
            return None;
        }
        let since = self.since_ms.load(Ordering::Relaxed);
        let ago = (unix_us() / 1000).saturating_sub(since);
        Some(format!(
            "degraded: cluster: not connected to NATS since unix_ms {since} ({:.1} s ago); \
             local delivery continues, publications to other nodes are dropped\n",
            ago as f64 / 1000.0
        ))
    }
}

/// What starting the cluster gives the rest of the process.
#[derive(Debug)]
pub struct Started {
    /// For the broker.
    pub outbound: Outbound,
    /// For each worker, by index.
    pub interest: Vec<InterestTx>,
    /// For `/healthz`.
    pub status: Arc<Status>,
    /// This node's name.
    pub node: Arc<str>,
}

/// Starts the cluster thread for `workers` (their queues carry the resync requests);
/// remote publications go to `publisher`.
pub fn start(
    config: &Arc<Config>,
    metrics: Arc<ClusterMetrics>,
    workers: Vec<WorkerHandle>,
    publisher: Publisher,
) -> anyhow::Result<Started> {
    let cfg = config.cluster.clone();
    let node: Arc<str> = Arc::from(node_name(&cfg).as_str());
    let (out_tx, out_rx) = mpsc::channel(cfg.outbound_queue);
    // Room for every worker's burst of subscription changes between two drains.
    let (rep_tx, rep_rx) = mpsc::channel(REPORT_QUEUE);
    let interest = (0..workers.len())
        .map(|worker| InterestTx {
            worker,
            tx: rep_tx.clone(),
            lost: Arc::new(AtomicBool::new(false)),
        })
        .collect::<Vec<_>>();
    let status = Arc::new(Status::default());
    status.set(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cluster runtime: {e}"))?;
    let link = Link {
        cfg,
        node: Arc::clone(&node),
        metrics: Arc::clone(&metrics),
        status: Arc::clone(&status),
        publisher,
        workers,
        lost: interest.iter().map(|i| Arc::clone(&i.lost)).collect(),
        max_bytes: config.control.max_publish_bytes,
    };
    std::thread::Builder::new()
        .name("sluice-cluster".into())
        .spawn(move || runtime.block_on(link.run(out_rx, rep_rx)))
        .map_err(|e| anyhow::anyhow!("starting cluster thread: {e}"))?;
    Ok(Started {
        outbound: Outbound {
            tx: out_tx,
            metrics,
        },
        interest,
        status,
        node,
    })
}

/// Reports queued between the cluster thread's drains (all workers together).
const REPORT_QUEUE: usize = 65_536;
/// How often lingering subscriptions and owed snapshots are looked at.
const TICK: Duration = Duration::from_millis(50);
/// Messages from NATS waiting for the cluster thread.
const INBOUND_QUEUE: usize = 4096;

fn node_name(cfg: &ClusterConfig) -> String {
    if !cfg.node.is_empty() {
        return cfg.node.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".to_string());
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!("{host}-{:08x}", u32::from_le_bytes(r))
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

struct Link {
    cfg: ClusterConfig,
    node: Arc<str>,
    metrics: Arc<ClusterMetrics>,
    status: Arc<Status>,
    publisher: Publisher,
    workers: Vec<WorkerHandle>,
    lost: Vec<Arc<AtomicBool>>,
    max_bytes: usize,
}

/// One NATS subscription's forwarding task, and how to end it.
struct Held {
    cancel: oneshot::Sender<()>,
}

impl Link {
    async fn options(&self) -> anyhow::Result<ConnectOptions> {
        let mut o = match &self.cfg.credentials_file {
            Some(f) => ConnectOptions::with_credentials_file(f)
                .await
                .map_err(|e| anyhow::anyhow!("cluster.credentials_file {f}: {e}"))?,
            None => ConnectOptions::new(),
        };
        if let Some(t) = &self.cfg.token {
            o = o.token(t.clone());
        }
        if let (Some(u), Some(p)) = (&self.cfg.user, &self.cfg.password) {
            o = o.user_and_password(u.clone(), p.clone());
        }
        if let Some(ca) = &self.cfg.tls_ca_file {
            o = o.add_root_certificates(ca.into()).require_tls(true);
        }
        let max = Duration::from_millis(self.cfg.reconnect_max_delay_ms);
        let status = Arc::clone(&self.status);
        let metrics = Arc::clone(&self.metrics);
        let seen = Arc::new(AtomicBool::new(false));
        Ok(o.name(format!("sluice {}", self.node))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(move |attempts| {
                // 10 ms, doubling, up to the configured maximum.
                let exp = u32::try_from(attempts.min(16)).unwrap_or(16);
                Duration::from_millis(10u64 << exp).min(max)
            })
            .event_callback(move |event| {
                let status = Arc::clone(&status);
                let metrics = Arc::clone(&metrics);
                let seen = Arc::clone(&seen);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            if seen.swap(true, Ordering::Relaxed) {
                                metrics.reconnects.inc();
                            }
                            status.set(true);
                            metrics.connected.set(1);
                            info!("cluster: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            status.set(false);
                            metrics.connected.set(0);
                            warn!("cluster: disconnected from NATS, reconnecting");
                        }
                        other => warn!(event = %other, "cluster: NATS event"),
                    }
                }
            }))
    }

    async fn run(self, mut out_rx: mpsc::Receiver<Outgoing>, mut rep_rx: mpsc::Receiver<Report>) {
        let client = match self.options().await {
            Ok(o) => match o.connect(self.cfg.servers.clone()).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "cluster: cannot start the NATS client; other nodes are unreachable");
                    return;
                }
            },
            Err(e) => {
                warn!(error = %e, "cluster: bad NATS options; other nodes are unreachable");
                return;
            }
        };
        let linger = Duration::from_millis(self.cfg.unsubscribe_linger_ms);
        let mut interest = Interest::new(self.workers.len(), linger);
        let mut held: HashMap<Arc<str>, Held> = HashMap::new();
        let (in_tx, mut in_rx) = mpsc::channel::<(Arc<str>, async_nats::Message)>(INBOUND_QUEUE);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Unbiased: a node that publishes without pause still takes other nodes'
            // publications and its workers' reports.
            tokio::select! {
                out = out_rx.recv() => match out {
                    Some(out) => self.publish(&client, out).await,
                    // The broker is gone: the process is stopping.
                    None => break,
                },
                Some(report) = rep_rx.recv() => {
                    let now = Instant::now();
                    let actions = match report {
                        Report::Changed { worker, topic, on } => {
                            interest.changed(worker, topic, on, now).into_iter().collect()
                        }
                        Report::Snapshot { worker, topics } => interest.snapshot(worker, topics, now),
                    };
                    for a in actions {
                        self.act(&client, a, &mut held, &in_tx).await;
                    }
                    self.metrics.subscriptions.set(i64::try_from(interest.held()).unwrap_or(i64::MAX));
                }
                Some((topic, msg)) = in_rx.recv() => self.receive(topic, msg).await,
                _ = tick.tick() => {
                    for a in interest.expired(Instant::now()) {
                        self.act(&client, a, &mut held, &in_tx).await;
                    }
                    self.metrics.subscriptions.set(i64::try_from(interest.held()).unwrap_or(i64::MAX));
                    for (w, lost) in self.lost.iter().enumerate() {
                        if lost.load(Ordering::Relaxed) {
                            if let Some(h) = self.workers.get(w) {
                                // Answered with a Report::Snapshot once the worker gets to it.
                                let _ = h.offer(WorkerMsg::InterestResync);
                            }
                        }
                    }
                }
            }
        }
    }

    async fn publish(&self, client: &Client, out: Outgoing) {
        let handed = if client.connection_state() == async_nats::connection::State::Connected {
            let mut headers = HeaderMap::new();
            headers.insert(NODE_HEADER, &*self.node);
            headers.insert(TIME_HEADER, out.published_us.to_string().as_str());
            let subject = subject::for_topic(&self.cfg.subject_prefix, &out.topic);
            match client
                .publish_with_headers(subject, headers, Bytes::from(out.data))
                .await
            {
                Ok(()) => {
                    self.metrics.published.inc();
                    Handed::Sent
                }
                Err(e) => {
                    warn!(error = %e, "cluster: publish failed");
                    self.metrics.dropped("publish_failed");
                    Handed::Failed
                }
            }
        } else {
            self.metrics.dropped("not_connected");
            Handed::NotConnected
        };
        if let Some(d) = out.done {
            let _ = d.try_send(handed);
        }
    }

    async fn act(
        &self,
        client: &Client,
        action: Action,
        held: &mut HashMap<Arc<str>, Held>,
        in_tx: &mpsc::Sender<(Arc<str>, async_nats::Message)>,
    ) {
        match action {
            Action::Subscribe(topic) => {
                let subject = subject::for_topic(&self.cfg.subject_prefix, &topic);
                match client.subscribe(subject).await {
                    Ok(mut sub) => {
                        let (cancel, mut cancelled) = oneshot::channel();
                        let tx = in_tx.clone();
                        let t = Arc::clone(&topic);
                        tokio::spawn(async move {
                            loop {
                                tokio::select! {
                                    m = sub.next() => match m {
                                        Some(m) => if tx.send((Arc::clone(&t), m)).await.is_err() { break },
                                        None => break,
                                    },
                                    _ = &mut cancelled => {
                                        let _ = sub.unsubscribe().await;
                                        break;
                                    }
                                }
                            }
                        });
                        held.insert(topic, Held { cancel });
                    }
                    Err(e) => {
                        warn!(error = %e, topic = %topic, "cluster: subscribe failed");
                        self.metrics.dropped("subscribe_failed");
                    }
                }
            }
            Action::Unsubscribe(topic) => {
                if let Some(h) = held.remove(&topic) {
                    let _ = h.cancel.send(());
                }
            }
        }
    }

    async fn receive(&self, topic: Arc<str>, msg: async_nats::Message) {
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        if header(NODE_HEADER).as_deref() == Some(&*self.node) {
            // Our own message (no_echo should have kept it away).
            return;
        }
        if msg.payload.len() > self.max_bytes {
            self.metrics.dropped("too_large");
            return;
        }
        let Ok(data) = String::from_utf8(msg.payload.to_vec()) else {
            self.metrics.dropped("not_utf8");
            return;
        };
        if let Some(at) = header(TIME_HEADER).and_then(|v| v.parse::<u64>().ok()) {
            let delay = unix_us().saturating_sub(at);
            self.metrics.delay.observe(delay as f64 / 1e6);
        }
        let mut req = PublishRequest {
            topic: topic.to_string(),
            data,
            done: None,
            origin: Origin::Remote,
            cluster_done: None,
        };
        // The broker never waits for workers, so its queue drains quickly: wait for room
        // rather than drop (backpressure towards NATS).
        loop {
            match self.publisher.try_send(req) {
                Ok(()) => {
                    self.metrics.received.inc();
                    return;
                }
                Err(Some(back)) => {
                    req = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(None) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn interest_report_lost_then_only_a_snapshot_clears_it() {
        let (tx, mut rx) = mpsc::channel(1);
        let i = InterestTx {
            worker: 3,
            tx,
            lost: Arc::new(AtomicBool::new(false)),
        };
        let a: Arc<str> = Arc::from("a");
        i.changed(&a, true);
        // The queue is full: this one is lost, and later changes wait for a snapshot.
        i.changed(&a, false);
        assert!(i.lost.load(Ordering::Relaxed));
        assert!(matches!(
            rx.try_recv(),
            Ok(Report::Changed {
                worker: 3,
                on: true,
                ..
            })
        ));
        i.changed(&a, true);
        assert!(rx.try_recv().is_err(), "skipped while a snapshot is owed");
        i.snapshot(vec![Arc::clone(&a)]);
        assert!(!i.lost.load(Ordering::Relaxed));
        match rx.try_recv() {
            Ok(Report::Snapshot { worker: 3, topics }) => assert_eq!(topics, vec![a]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn outbound_full_queue_answers_dropped_and_counts() {
        let metrics = Arc::new(crate::metrics::Metrics::build(true));
        let m = Arc::clone(metrics.cluster.as_ref().unwrap());
        let (tx, _rx) = mpsc::channel(1);
        let out = Outbound { tx, metrics: m };
        out.offer(Arc::from("t"), "one".into(), None);
        let (done, answer) = crossbeam_channel::bounded(1);
        out.offer(Arc::from("t"), "two".into(), Some(done));
        assert_eq!(answer.try_recv(), Ok(Handed::QueueFull));
        assert!(metrics
            .render()
            .contains("sluice_cluster_dropped_total{reason=\"queue_full\"} 1"));
    }

    #[test]
    fn status_degraded_until_connected() {
        let s = Status::default();
        s.set(false);
        assert!(s
            .degraded()
            .unwrap()
            .starts_with("degraded: cluster: not connected"));
        s.set(true);
        assert_eq!(s.degraded(), None);
    }
}
