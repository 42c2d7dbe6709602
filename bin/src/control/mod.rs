//! The control plane: a small HTTP server on a kernel socket (default 127.0.0.1:9100).
//!
//! - `GET /metrics`: Prometheus text 0.0.4, or OpenMetrics 1.0 when `Accept` prefers it.
//! - `GET /healthz`: `200 ok` while every worker's poll loop is alive; 503 naming each
//!   stalled, exited or panicked worker and since when otherwise ([`health`]).
//! - `POST /publish/{topic}`: the backend ingest; the body (UTF-8) is the message. Answers
//!   200 `{"topic":..,"delivered":N}` only once the message is queued to every subscriber
//!   on every worker; 503 when that does not happen within `control.publish_timeout_ms`.
//! - `GET /stat`: JSON with the per-connection table (what `sluice stat` prints).

pub mod health;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};
use tracing::warn;

use crate::config::Config;
use crate::gateway::broker::{PublishRequest, Publisher};
use crate::gateway::protocol::valid_topic;
use crate::gateway::{ConnInfo, WorkerHandle, WorkerMsg};
use crate::metrics::{self, Metrics};

/// Threads answering control requests (a publish waits for its ack on its thread).
const THREADS: usize = 4;

/// What the control plane talks to.
#[derive(Clone, Debug)]
pub struct Context {
    /// The metrics to render.
    pub metrics: Arc<Metrics>,
    /// The broker's ingest side.
    pub publisher: Publisher,
    /// Every worker (for `/stat`).
    pub workers: Vec<WorkerHandle>,
    /// The configuration.
    pub config: Arc<Config>,
    /// The workers' heartbeats (for `/healthz`).
    pub health: health::Health,
    /// Cluster mode: the NATS link's state (for `/healthz`).
    pub cluster: Option<Arc<crate::cluster::Status>>,
}

/// Whether `req` carries `Authorization: Bearer <token>` (compared in constant time).
fn authorized(req: &Request, token: Option<&str>) -> bool {
    use subtle::ConstantTimeEq as _;
    let Some(token) = token else {
        return true;
    };
    req.headers()
        .iter()
        .filter(|h| h.field.equiv("Authorization"))
        .filter_map(|h| h.value.as_str().strip_prefix("Bearer "))
        .any(|given| bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())))
}

/// Starts the control server on `addr`; returns the bound address.
pub fn spawn(addr: SocketAddr, ctx: Context) -> anyhow::Result<SocketAddr> {
    let token: Option<Arc<str>> = ctx
        .config
        .control
        .bearer()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .map(Arc::from);
    let server = Server::http(addr).map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    let server = Arc::new(server);
    for i in 0..THREADS {
        let server = Arc::clone(&server);
        let ctx = ctx.clone();
        let token = token.clone();
        std::thread::Builder::new()
            .name(format!("sluice-control-{i}"))
            .spawn(move || {
                for req in server.incoming_requests() {
                    handle(req, &ctx, token.as_deref());
                }
            })?;
    }
    Ok(bound)
}

fn text(
    status: u16,
    body: impl Into<String>,
    content_type: &str,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut r = Response::from_string(body.into()).with_status_code(status);
    if let Ok(h) = Header::from_bytes("Content-Type", content_type) {
        r = r.with_header(h);
    }
    r
}

fn handle(mut req: Request, ctx: &Context, token: Option<&str>) {
    let url = req.url().split('?').next().unwrap_or("").to_string();
    let method = req.method().clone();
    // Ingest and the connection table need the token; metrics and health stay open.
    let guarded = url == "/stat" || url.starts_with("/publish/");
    let response = match (&method, url.as_str()) {
        _ if guarded && !authorized(&req, token) => {
            let mut r = text(
                401,
                "unauthorized: Authorization: Bearer TOKEN required\n",
                "text/plain",
            );
            if let Ok(h) = Header::from_bytes("WWW-Authenticate", "Bearer") {
                r = r.with_header(h);
            }
            r
        }
        (Method::Get, "/metrics") => {
            // Prometheus negotiates: OpenMetrics only when the Accept header prefers it.
            let accept = req
                .headers()
                .iter()
                .find(|h| h.field.equiv("Accept"))
                .map(|h| h.value.as_str().to_string())
                .unwrap_or_default();
            if metrics::wants_openmetrics(&accept) {
                text(
                    200,
                    ctx.metrics.render(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                text(
                    200,
                    ctx.metrics.render_prometheus(),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            }
        }
        (Method::Get, "/healthz") => {
            let degraded = ctx.cluster.as_ref().and_then(|c| c.degraded());
            match (ctx.health.problems(), degraded) {
                (None, None) => text(200, "ok\n", "text/plain"),
                // Serving, but cut off from the other nodes: still 200, so a load
                // balancer does not take every node out when the bus is down.
                (None, Some(d)) => text(200, d, "text/plain"),
                (Some(body), d) => text(503, body + d.as_deref().unwrap_or(""), "text/plain"),
            }
        }
        (Method::Get, "/stat") => {
            let rows = snapshot(ctx);
            let body = serde_json::json!({ "connections": rows });
            text(200, body.to_string(), "application/json")
        }
        (Method::Post, path) if path.starts_with("/publish/") => publish(&mut req, path, ctx),
        _ => text(404, "not found\n", "text/plain"),
    };
    if let Err(e) = req.respond(response) {
        warn!(error = %e, "control response failed");
    }
}

fn publish(req: &mut Request, path: &str, ctx: &Context) -> Response<std::io::Cursor<Vec<u8>>> {
    let topic = path.trim_start_matches("/publish/");
    if !valid_topic(topic) {
        return text(400, "bad topic\n", "text/plain");
    }
    let limit = ctx.config.control.max_publish_bytes;
    let mut body = Vec::new();
    let read = req
        .as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body);
    if read.is_err() {
        return text(400, "cannot read body\n", "text/plain");
    }
    if body.len() > limit {
        return text(413, "body too large\n", "text/plain");
    }
    let Ok(data) = String::from_utf8(body) else {
        return text(415, "body must be UTF-8 text\n", "text/plain");
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (ctx_tx, ctx_rx) = crossbeam_channel::bounded(1);
    let clustered = ctx.cluster.is_some();
    let mut req = PublishRequest::local(topic.to_string(), data);
    req.done = Some(tx);
    req.cluster_done = clustered.then_some(ctx_tx);
    if !ctx.publisher.publish(req) {
        return text(503, "broker stopped\n", "text/plain");
    }
    let timeout = Duration::from_millis(ctx.config.control.publish_timeout_ms);
    let start = std::time::Instant::now();
    match rx.recv_timeout(timeout) {
        Ok(n) => {
            // Core NATS has no acknowledgement: "sent" means handed to the NATS client
            // without error, not received by another node.
            let mut answer = serde_json::json!({ "topic": topic, "delivered": n });
            if clustered {
                let left = timeout.saturating_sub(start.elapsed());
                let cluster = ctx_rx
                    .recv_timeout(left)
                    .map_or("pending", crate::cluster::Handed::as_str);
                answer["cluster"] = cluster.into();
            }
            text(200, answer.to_string(), "application/json")
        }
        Err(_) => {
            ctx.metrics.dropped(crate::metrics::Drop::PublishTimeout);
            text(503, "not queued within the timeout\n", "text/plain")
        }
    }
}

fn snapshot(ctx: &Context) -> Vec<ConnInfo> {
    let mut rows = Vec::new();
    for w in &ctx.workers {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if w.tx.try_send(WorkerMsg::Snapshot(tx)).is_err() {
            continue;
        }
        (w.wake)();
        if let Ok(mut r) = rx.recv_timeout(Duration::from_secs(2)) {
            rows.append(&mut r);
        }
    }
    rows
}

/// A blocking `GET path` against the control plane; returns the body.
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)
        .map_err(|e| anyhow::anyhow!("cannot reach the control plane at {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("malformed HTTP response from {addr}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        anyhow::bail!("{addr}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// `sluice stat`: prints the counters and the per-connection table.
pub fn stat(addr: &str, token: Option<&str>) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let metrics = http_get(addr, "/metrics", token)?;
    writeln!(out, "counters:")?;
    for line in metrics.lines() {
        if line.starts_with('#') || line.contains("_bucket{") || line.is_empty() {
            continue;
        }
        writeln!(out, "  {line}")?;
    }
    let stat: serde_json::Value = serde_json::from_str(&http_get(addr, "/stat", token)?)?;
    let rows: Vec<ConnInfo> =
        serde_json::from_value(stat.get("connections").cloned().unwrap_or_default())
            .unwrap_or_default();
    writeln!(out, "connections: {}", rows.len())?;
    // The AF_XDP backend adds the TCP engine's view of each connection (like `ss -ti`).
    let tcp = rows.iter().any(|r| r.tcp.is_some());
    write!(
        out,
        "{:<3} {:<22} {:<10} {:<9} {:>6} {:>8} {:>8} {:>10} {:>10} {:>8} {:>6} {:>6}",
        "w",
        "peer",
        "route",
        "state",
        "topics",
        "msg_in",
        "msg_out",
        "bytes_in",
        "bytes_out",
        "queued",
        "drops",
        "age_s"
    )?;
    if tcp {
        write!(
            out,
            " {:<12} {:>8} {:>9} {:>7} {:>7}",
            "tcp_state", "cwnd", "srtt_us", "rto_ms", "retrans"
        )?;
    }
    writeln!(out)?;
    for r in rows {
        write!(
            out,
            "{:<3} {:<22} {:<10} {:<9} {:>6} {:>8} {:>8} {:>10} {:>10} {:>8} {:>6} {:>6}",
            r.worker,
            r.peer,
            r.route,
            r.state,
            r.topics,
            r.msgs_in,
            r.msgs_out,
            r.bytes_in,
            r.bytes_out,
            r.queued,
            r.drops,
            r.age_s
        )?;
        if let Some(t) = &r.tcp {
            let srtt = t.srtt_us.map_or_else(|| "-".to_string(), |v| v.to_string());
            write!(
                out,
                " {:<12} {:>8} {:>9} {:>7} {:>7}",
                t.state, t.cwnd, srtt, t.rto_ms, t.retransmits
            )?;
        }
        writeln!(out)?;
    }
    // One write; a reader that went away (`sluice stat | head`) is not an error.
    let mut stdout = std::io::stdout().lock();
    match std::io::Write::write_all(&mut stdout, out.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
