//! What every worker of one gateway process shares (either driver, any number of
//! workers): the configuration, the metrics, the broker thread, the control plane, and
//! each worker's bounded inbound queue.

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::app::tls::{Listeners, Tls};
use crate::cluster;
use crate::config::Config;
use crate::control;
use crate::gateway::worker::Worker;
use crate::gateway::{broker, WorkerHandle, WorkerMsg};
use crate::metrics::{ActionLabel, Metrics};

/// `--app gateway` or `--app ws-echo` on the AF_XDP backend.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// The application's name in the `listening` line.
    pub app_name: &'static str,
    /// The gateway configuration (ws-echo: one echo route).
    pub config: Config,
    /// Serve every request path with the first route (ws-echo).
    pub any_path: bool,
}

/// What every worker of one gateway process shares: the config, metrics, the broker's
/// publishing side, and each worker's inbound queue until that worker takes it.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    publisher: broker::Publisher,
    interest: Vec<cluster::InterestTx>,
    receivers: Vec<Option<Receiver<WorkerMsg>>>,
    /// Where the control plane listens (`None`: disabled).
    pub control: Option<SocketAddr>,
    any_path: bool,
    /// The wss:// ports (`[[listen.tls]]`), certificates loaded once.
    tls: Listeners,
    /// XDP counters as last recorded.
    xdp_seen: dataplane::XdpCounters,
    /// The DPDK port's counters at the last `record_dpdk`.
    dpdk_seen: std::collections::HashMap<String, u64>,
}

impl Shared {
    /// Starts the broker and the control plane for `workers` workers. `any_path` serves
    /// every request path with the first route (ws-echo); `/healthz` reads `health`.
    pub fn start(
        config: Config,
        workers: usize,
        any_path: bool,
        health: control::health::Health,
    ) -> anyhow::Result<Shared> {
        let config = Arc::new(config);
        let tls = Listeners::from_config(&config)?;
        let metrics = Arc::new(Metrics::build(config.cluster.enabled));
        tls.reload_on_sighup(Arc::clone(&metrics.tls))?;
        let mut handles = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = crossbeam_channel::bounded(config.limits.worker_queue);
            // Workers poll their queue every iteration (and sleep at most ~1 ms when idle):
            // nothing to wake.
            handles.push(WorkerHandle {
                tx,
                wake: Arc::new(|| {}),
            });
            receivers.push(Some(rx));
        }
        let publishing = start_publishing(&config, &metrics, &handles)?;
        let publisher = publishing.publisher;
        let (interest, status) = match publishing.cluster {
            Some(c) => (c.interest, Some(c.status)),
            None => (Vec::new(), None),
        };
        let control = if config.control.enabled {
            let ctx = control::Context {
                metrics: Arc::clone(&metrics),
                publisher: publisher.clone(),
                workers: handles,
                config: Arc::clone(&config),
                health,
                cluster: status,
            };
            Some(control::spawn(config.control.addr, ctx)?)
        } else {
            None
        };
        Ok(Shared {
            config,
            metrics,
            publisher,
            interest,
            receivers,
            control,
            any_path,
            tls,
            xdp_seen: dataplane::XdpCounters::default(),
            dpdk_seen: std::collections::HashMap::new(),
        })
    }

    /// Adds what the XDP program counted since the last call to the metrics.
    pub fn record_xdp(&mut self, now: dataplane::XdpCounters) {
        let seen = &mut self.xdp_seen;
        for (action, new, old) in [
            ("redirected", now.redirected, &mut seen.redirected),
            ("passed", now.passed, &mut seen.passed),
            ("dropped", now.dropped, &mut seen.dropped),
        ] {
            let counter = self.metrics.xdp_packets.get_or_create(&ActionLabel {
                action: action.to_string(),
            });
            counter.inc_by(new.saturating_sub(*old));
            *old = new.max(*old);
        }
    }

    /// Adds what the DPDK port counted since the last call (absolute counters by name, as
    /// the port reports them) to the metrics.
    pub fn record_dpdk(&mut self, now: &[(String, u64)]) {
        for (name, value) in now {
            let old = self.dpdk_seen.entry(name.clone()).or_insert(0);
            let counter = self
                .metrics
                .dpdk_port
                .get_or_create(&crate::metrics::StatLabel { stat: name.clone() });
            counter.inc_by(value.saturating_sub(*old));
            *old = (*value).max(*old);
        }
    }

    /// The parts worker `index` needs (each index once).
    pub fn part(&mut self, index: usize) -> Part {
        Part {
            index,
            config: Arc::clone(&self.config),
            metrics: Arc::clone(&self.metrics),
            publisher: self.publisher.clone(),
            interest: self.interest.get(index).cloned(),
            rx: self.receivers.get_mut(index).and_then(Option::take),
            any_path: self.any_path,
            tls: self.tls.for_worker(),
        }
    }
}

/// Everything one worker's gateway is built from.
#[derive(Debug)]
pub struct Part {
    index: usize,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    publisher: broker::Publisher,
    interest: Option<cluster::InterestTx>,
    rx: Option<Receiver<WorkerMsg>>,
    any_path: bool,
    tls: Listeners,
}

impl Part {
    /// The worker's gateway application (behind TLS on the wss:// ports) and its inbound
    /// queue.
    pub fn into_worker(self) -> (Tls<Worker>, Option<Receiver<WorkerMsg>>) {
        let mut worker = Worker::new(self.index, self.config, self.metrics, Some(self.publisher));
        if self.any_path {
            worker.serve_any_path();
        }
        if let Some(i) = self.interest {
            worker.set_interest(i);
        }
        let stats = worker.stats();
        (Tls::new(worker, self.tls, Some(stats)), self.rx)
    }
}

/// The broker, and the cluster link when `[cluster]` is on.
#[derive(Debug)]
pub struct Publishing {
    /// The broker's publishing side.
    pub publisher: broker::Publisher,
    /// The cluster link's parts (`None`: a single node).
    pub cluster: Option<cluster::Started>,
}

/// Starts the broker for `workers` and, in cluster mode, the cluster link first (it
/// hands other nodes' publications to the broker; the broker offers it local ones).
pub fn start_publishing(
    config: &Arc<Config>,
    metrics: &Arc<Metrics>,
    workers: &[WorkerHandle],
) -> anyhow::Result<Publishing> {
    let queue = broker::Queue::new(config.limits.publish_queue);
    let cluster = match &metrics.cluster {
        Some(m) if config.cluster.enabled => Some(cluster::start(
            config,
            Arc::clone(m),
            workers.to_vec(),
            queue.publisher(),
        )?),
        _ => None,
    };
    let publisher = broker::spawn_on(
        queue,
        workers.to_vec(),
        Arc::clone(metrics),
        cluster.as_ref().map(|c| c.outbound.clone()),
    )
    .map_err(|e| anyhow::anyhow!("starting broker thread: {e}"))?;
    Ok(Publishing { publisher, cluster })
}
