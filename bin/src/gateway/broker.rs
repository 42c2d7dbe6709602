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

/// A message to publish.
#[derive(Debug)]
pub struct PublishRequest {
    /// The topic.
    pub topic: String,
    /// The message text.
    pub data: String,
    /// Answered with the number of subscribers once every worker queued it.
    pub done: Option<Sender<usize>>,
}

/// The publishing side of the broker, cloned into workers and the control plane.
#[derive(Clone, Debug)]
pub struct Publisher {
    tx: Sender<PublishRequest>,
}

impl Publisher {
    /// Queues without blocking (workers); false when the broker queue is full or gone.
    pub fn try_publish(&self, topic: String, data: String) -> bool {
        match self.tx.try_send(PublishRequest {
            topic,
            data,
            done: None,
        }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues, blocking while the broker queue is full (control thread).
    pub fn publish(&self, req: PublishRequest) -> bool {
        self.tx.send(req).is_ok()
    }
}

/// Compression level for shared frames.
const LEVEL: u32 = 1;

/// Starts the broker thread for `workers`; the queue holds `capacity` requests.
pub fn spawn(
    workers: Vec<WorkerHandle>,
    capacity: usize,
    metrics: Arc<Metrics>,
) -> std::io::Result<Publisher> {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    std::thread::Builder::new()
        .name("sluice-broker".into())
        .spawn(move || run(&rx, &workers, &metrics))?;
    Ok(Publisher { tx })
}

fn run(rx: &Receiver<PublishRequest>, workers: &[WorkerHandle], metrics: &Metrics) {
    while let Ok(req) = rx.recv() {
        let text = Reply::Message {
            topic: &req.topic,
            data: &req.data,
        }
        .to_json();
        let publication = Arc::new(Publication::new(
            Arc::from(req.topic.as_str()),
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
            assert!(publisher.publish(PublishRequest {
                topic: "t".into(),
                data: format!("m{i}"),
                done: None,
            }));
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
