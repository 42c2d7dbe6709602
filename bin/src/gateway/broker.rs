//! The broker thread: the single sequencer of publications. It frames each message once
//! and offers the same [`Publication`] to every worker's bounded queue, so every worker
//! sees every topic's messages in the same order. It never waits for a worker: when one
//! worker's queue is full, that worker's subscribers miss the publication and
//! `sluice_drops_total{reason="worker_queue_full"}` counts it (docs/GATEWAY.md).

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::protocol::Reply;
use super::{Ack, Offer, Publication, WorkerHandle, WorkerMsg};
use crate::metrics::{Drop, Metrics};

/// Where a publication comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Published on this node (ingest or a client): also offered to the other nodes.
    Local,
    /// From another node over NATS: delivered locally only.
    Remote,
}

/// A message to publish.
#[derive(Debug)]
pub struct PublishRequest {
    /// The topic.
    pub topic: String,
    /// The message text.
    pub data: String,
    /// Answered with the number of subscribers once every worker queued it.
    pub done: Option<Sender<usize>>,
    /// Where it comes from.
    pub origin: Origin,
    /// Answered with what became of it for the other nodes (cluster mode only).
    pub cluster_done: Option<Sender<crate::cluster::Handed>>,
}

impl PublishRequest {
    /// A publication made on this node.
    pub fn local(topic: String, data: String) -> PublishRequest {
        PublishRequest {
            topic,
            data,
            done: None,
            origin: Origin::Local,
            cluster_done: None,
        }
    }
}

/// The publishing side of the broker, cloned into workers and the control plane.
#[derive(Clone, Debug)]
pub struct Publisher {
    tx: Sender<PublishRequest>,
}

impl Publisher {
    /// Queues without blocking (workers); false when the broker queue is full or gone.
    pub fn try_publish(&self, topic: String, data: String) -> bool {
        self.tx.try_send(PublishRequest::local(topic, data)).is_ok()
    }

    /// Queues `req` without blocking: `Err(Some(req))` when the queue is full,
    /// `Err(None)` when the broker is gone.
    pub fn try_send(&self, req: PublishRequest) -> Result<(), Option<PublishRequest>> {
        match self.tx.try_send(req) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(r)) => Err(Some(r)),
            Err(TrySendError::Disconnected(_)) => Err(None),
        }
    }

    /// Queues, blocking while the broker queue is full (control thread).
    pub fn publish(&self, req: PublishRequest) -> bool {
        self.tx.send(req).is_ok()
    }
}

/// Compression level for shared frames.
const LEVEL: u32 = 1;

/// The broker's queue, made before the broker starts so that the cluster link (which
/// needs a [`Publisher`]) can be started first.
#[derive(Debug)]
pub struct Queue {
    rx: Receiver<PublishRequest>,
    publisher: Publisher,
}

impl Queue {
    /// A queue of `capacity` requests.
    pub fn new(capacity: usize) -> Queue {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        Queue {
            rx,
            publisher: Publisher { tx },
        }
    }

    /// Its publishing side.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }
}

/// Starts the broker thread for `workers`; the queue holds `capacity` requests.
pub fn spawn(
    workers: Vec<WorkerHandle>,
    capacity: usize,
    metrics: Arc<Metrics>,
) -> std::io::Result<Publisher> {
    spawn_on(Queue::new(capacity), workers, metrics, None)
}

/// Starts the broker thread on `queue`; local publications are also offered to the other
/// nodes through `cluster` when it is set.
pub fn spawn_on(
    queue: Queue,
    workers: Vec<WorkerHandle>,
    metrics: Arc<Metrics>,
    cluster: Option<crate::cluster::Outbound>,
) -> std::io::Result<Publisher> {
    let Queue { rx, publisher } = queue;
    std::thread::Builder::new()
        .name("sluice-broker".into())
        .spawn(move || run(&rx, &workers, &metrics, cluster.as_ref()))?;
    Ok(publisher)
}

fn run(
    rx: &Receiver<PublishRequest>,
    workers: &[WorkerHandle],
    metrics: &Metrics,
    cluster: Option<&crate::cluster::Outbound>,
) {
    while let Ok(req) = rx.recv() {
        let text = Reply::Message {
            topic: &req.topic,
            data: &req.data,
        }
        .to_json();
        let topic: Arc<str> = Arc::from(req.topic.as_str());
        let publication = Arc::new(Publication::new(
            Arc::clone(&topic),
            Bytes::from(text),
            LEVEL,
        ));
        metrics.published.inc();
        let ack = req.done.map(|done| Ack::new(workers.len(), done));
        for w in workers {
            match w.offer(WorkerMsg::Deliver(Arc::clone(&publication), ack.clone())) {
                Offer::Queued => {}
                // The worker is behind: this publication is dropped for its subscribers
                // (counted), so one slow worker never stalls publication for the others.
                Offer::Full => {
                    metrics.dropped(Drop::WorkerQueueFull);
                    if let Some(a) = &ack {
                        a.worker_done(0);
                    }
                }
                // The worker is gone (shutting down): done with no subscribers.
                Offer::Gone => {
                    if let Some(a) = &ack {
                        a.worker_done(0);
                    }
                }
            }
        }
        // After the local queueing, so local order is the broker's order whatever NATS does.
        if req.origin == Origin::Local {
            if let Some(c) = cluster {
                c.offer(topic, req.data, req.cluster_done);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    fn handle(capacity: usize) -> (WorkerHandle, crossbeam_channel::Receiver<WorkerMsg>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let h = WorkerHandle {
            tx,
            wake: Arc::new(|| {}),
        };
        (h, rx)
    }

    #[test]
    fn broker_slow_worker_queue_full_dropped_counted_others_get_everything() {
        let metrics = Arc::new(Metrics::new());
        let (slow, slow_rx) = handle(1);
        let (fast, fast_rx) = handle(64);
        let publisher = spawn(vec![slow, fast], 64, Arc::clone(&metrics)).unwrap();
        for i in 0..5 {
            assert!(publisher.publish(PublishRequest::local("t".into(), format!("m{i}"))));
        }
        // The slow worker never reads, yet the other one gets every publication: the
        // broker did not wait for the slow one.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while fast_rx.len() < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(fast_rx.len(), 5, "the other worker got every publication");
        assert_eq!(
            slow_rx.len(),
            1,
            "the slow worker's queue holds what fitted"
        );
        let text = metrics.render();
        assert!(
            text.contains("sluice_drops_total{reason=\"worker_queue_full\"} 4"),
            "{text}"
        );
    }
}
