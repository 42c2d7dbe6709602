//! The broker thread: the single sequencer of publications. It frames each message once
//! and sends the same [`Publication`] to every worker, so every worker sees every topic's
//! messages in the same order.

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::protocol::Reply;
use super::{Ack, Publication, WorkerHandle, WorkerMsg};
use crate::metrics::Metrics;

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
            if !w.send(WorkerMsg::Deliver(Arc::clone(&publication), ack.clone())) {
                // The worker is gone (shutting down): count it as done with no subscribers.
                if let Some(a) = &ack {
                    a.worker_done(0);
                }
            }
        }
    }
}
