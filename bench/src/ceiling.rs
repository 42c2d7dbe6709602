//! The generator's own ceiling: the same load against a trivial responder on loopback, run
//! by the generator itself, so a report can show the client was not the bottleneck.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use crate::report::Report;
use crate::responder::{self, ResponderConfig};
use crate::settings::Settings;

/// Where and how the loopback responder runs.
#[derive(Debug, Clone, Default)]
pub struct CeilingOptions {
    /// CPU to pin the responder thread to.
    pub responder_pin: Option<usize>,
    /// Busy-poll in the responder.
    pub responder_spin: bool,
}

/// Runs `settings` (its target is replaced) against a loopback responder of the same
/// protocol started on its own thread, and returns the report of kind `ceiling`.
pub fn ceiling(settings: &Settings, opts: &CeilingOptions) -> anyhow::Result<Report> {
    settings.validate()?;
    if settings.tls.is_some() {
        anyhow::bail!("the ceiling responder speaks no TLS");
    }
    let mut cfg = ResponderConfig::new(settings.proto);
    cfg.spin = opts.responder_spin;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    let pin = opts.responder_pin;
    let stop2 = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("ceiling-responder".into())
        .spawn(move || -> anyhow::Result<()> {
            if let Some(cpu) = pin {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    anyhow::bail!("could not pin the responder to CPU {cpu}");
                }
            }
            let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
            responder::bind_and_serve(addr, &cfg, &stop2, |a| {
                let _ = tx.send(a);
            })?;
            Ok(())
        })?;
    let addr = match rx.recv() {
        Ok(a) => a,
        Err(_) => {
            return match handle.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(anyhow::anyhow!("the responder did not start")),
            }
        }
    };
    let mut s = settings.clone();
    s.target = addr;
    s.host = addr.to_string();
    let report = crate::client::run_kind("ceiling", &s);
    stop.store(true, Ordering::Relaxed);
    match handle.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.context("responder failed")),
        Err(_) => anyhow::bail!("the responder thread panicked"),
    }
    report
}
