//! Root lab test of cluster mode: three gateway nodes on one NATS server (`nats-server`
//! from Debian, started here on the stack namespace's loopback and killed at the end).
//! Node 0 runs on AF_XDP in a lab (its clients in the peer namespace), nodes 1 and 2 on
//! kernel sockets in the stack namespace (their clients there too); every node's control
//! plane and cluster link reach NATS on 127.0.0.1 of the stack namespace.
//!
//! Asserted: 300 clients on 10 topics receive exactly their topics' messages of 3,000
//! publications made round-robin through the three ingest endpoints, none duplicated,
//! per publishing node in order; with NATS killed, local delivery goes on, `/healthz`
//! says degraded and the loss is counted; with NATS back, cross-node delivery resumes
//! without restarting a gateway; a node's NATS subscriptions follow its clients
//! (NATS's monitoring endpoint `/connz?subs=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/gateway.rs"]
mod gw;
#[path = "common/lab.rs"]
mod lab;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gw::{http, metric_value};
use lab::{Lab, Sluice, STACK_IP};

const NODES: usize = 3;
const PER_NODE: usize = 100;
const TOPICS: usize = 10;
const MESSAGES: usize = 3_000;
/// Publications per node while NATS is down, and again after it is back.
const PHASE: usize = 30;
const NATS: &str = "127.0.0.1:4222";
const NATS_MONITOR: &str = "127.0.0.1:8222";

fn control(node: usize) -> String {
    format!("127.0.0.1:{}", 9100 + node)
}

/// Where node `node`'s clients connect (node 0: the AF_XDP stack, from the peer side).
fn ws_addr(node: usize) -> SocketAddr {
    if node == 0 {
        SocketAddr::from((STACK_IP, 8080))
    } else {
        SocketAddr::from(([127, 0, 0, 1], 8080 + u16::try_from(node).unwrap()))
    }
}

/// Client `i`'s two topics.
fn topics_of(i: usize) -> [usize; 2] {
    let a = i % TOPICS;
    [a, (a + 1 + (i / TOPICS) % (TOPICS - 1)) % TOPICS]
}

fn node_of(i: usize) -> usize {
    i / PER_NODE
}

/// `nats-server` in the stack namespace; killed (SIGKILL) on drop.
struct NatsServer {
    child: Child,
}

impl NatsServer {
    fn start(lab: &Lab) -> NatsServer {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.stack_ns, "nats-server"])
            .args(["-a", "127.0.0.1", "-p", "4222", "-m", "8222"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server (apt install nats-server; deploy/setup.sh does)");
        let server = NatsServer { child };
        wait_until(
            lab,
            Duration::from_secs(20),
            "nats-server listening",
            || TcpStream::connect(NATS).is_ok(),
        );
        server
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` inside the stack namespace until it holds; panics after `within`.
fn wait_until(
    lab: &Lab,
    within: Duration,
    what: &str,
    f: impl Fn() -> bool + Send + Clone + 'static,
) {
    let deadline = Instant::now() + within;
    loop {
        let f = f.clone();
        if lab.in_stack(f) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn config(node: usize) -> String {
    format!(
        "[control]\naddr = \"{}\"\n\
         [limits]\nmax_connections_per_ip = 10000\n\
         [[route]]\npath = \"/ws\"\nkind = \"pubsub\"\ncompression = false\n\
         [cluster]\nenabled = true\nservers = [\"nats://{NATS}\"]\nnode = \"node{node}\"\n\
         unsubscribe_linger_ms = 200\nreconnect_max_delay_ms = 200\n",
        control(node)
    )
}

fn start_node(lab: &Lab, node: usize) -> Sluice {
    let path = std::env::temp_dir().join(format!(
        "sluice-cluster-{}-{}-{node}.toml",
        std::process::id(),
        lab.prefix
    ));
    std::fs::write(&path, config(node)).unwrap();
    let p = path.to_str().unwrap();
    let sluice = if node == 0 {
        lab.sluice("gateway", &[8080], &["--queues", "2", "--config", p])
    } else {
        let port = ws_addr(node).port().to_string();
        let args: Vec<String> = [
            "netns",
            "exec",
            &lab.stack_ns,
            env!("CARGO_BIN_EXE_sluice"),
            "run",
            "--backend",
            "kernel",
            "--ip",
            "127.0.0.1",
            "--port",
            &port,
            "--app",
            "gateway",
            "--config",
            p,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Sluice::spawn(&args)
    };
    let _ = std::fs::remove_file(&path);
    sluice
}

/// What every client has received: `(topic, data)` in arrival order.
type Inbox = Arc<Vec<Mutex<Vec<(String, String)>>>>;

/// Client `i`: connects to its node, subscribes to its topics, then records every
/// message until `stop[node]` is set (then closes).
fn client(i: usize, inbox: &Inbox, ready: &AtomicUsize, stop: &AtomicBool) -> Result<(), String> {
    let addr = ws_addr(node_of(i));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("client {i}: connect {addr}: {e}"))?;
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream)
        .map_err(|e| format!("client {i}: handshake: {e}"))?;
    for t in topics_of(i) {
        let sub = format!(r#"{{"op":"subscribe","topic":"t{t}"}}"#);
        ws.send(tungstenite::Message::text(sub))
            .map_err(|e| format!("client {i}: send: {e}"))?;
        let reply = ws.read().map_err(|e| format!("client {i}: reply: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        if v["op"] != "subscribed" {
            return Err(format!("client {i}: {v}"));
        }
    }
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    ready.fetch_add(1, Ordering::SeqCst);
    loop {
        match ws.read() {
            Ok(m) if m.is_text() => {
                let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
                if v["op"] != "message" {
                    return Err(format!("client {i}: unexpected {v}"));
                }
                inbox[i].lock().unwrap().push((
                    v["topic"].as_str().unwrap().to_string(),
                    v["data"].as_str().unwrap().to_string(),
                ));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    let _ = ws.close(None);
                    let _ = ws.flush();
                    return Ok(());
                }
            }
            Err(e) => return Err(format!("client {i}: read: {e}")),
        }
    }
}

/// Starts node `node`'s clients in `ns` (threads inherit the namespace).
fn spawn_clients(
    ns: String,
    node: usize,
    inbox: &Inbox,
    ready: &Arc<AtomicUsize>,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<Vec<Result<(), String>>> {
    let (inbox, ready, stop) = (Arc::clone(inbox), Arc::clone(ready), Arc::clone(stop));
    std::thread::spawn(move || {
        dataplane::sys::enter_netns(&ns).expect("enter namespace");
        let threads: Vec<_> = (node * PER_NODE..(node + 1) * PER_NODE)
            .map(|i| {
                let (inbox, ready, stop) =
                    (Arc::clone(&inbox), Arc::clone(&ready), Arc::clone(&stop));
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || client(i, &inbox, &ready, &stop))
                    .unwrap()
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    })
}

/// One publication: message `k` through node `node` on topic `topic`.
#[derive(Clone, Debug)]
struct Publication {
    k: usize,
    node: usize,
    topic: usize,
    /// Published while NATS was down: reaches the publishing node's clients only.
    local_only: bool,
}

impl Publication {
    fn data(&self) -> String {
        format!("n{}:{}", self.node, self.k)
    }
}

/// Publishes `pubs` in order through their nodes' ingest endpoints; returns the answers.
fn publish(lab: &Lab, pubs: Vec<Publication>) -> Vec<serde_json::Value> {
    lab.in_stack(move || {
        pubs.iter()
            .map(|p| {
                let (status, body) = http(
                    &control(p.node),
                    "POST",
                    &format!("/publish/t{}", p.topic),
                    &p.data(),
                );
                assert_eq!(status, 200, "publish {p:?}: {body}");
                serde_json::from_str(&body).unwrap()
            })
            .collect()
    })
}

fn get(lab: &Lab, addr: String, path: &'static str) -> (u16, String) {
    lab.in_stack(move || http(&addr, "GET", path, ""))
}

/// Each node's NATS subscription subjects, by connection name (`sluice nodeN`).
fn nats_subscriptions(lab: &Lab) -> HashMap<String, BTreeSet<String>> {
    let (status, body) = get(lab, NATS_MONITOR.to_string(), "/connz?subs=1");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = HashMap::new();
    for c in v["connections"].as_array().cloned().unwrap_or_default() {
        let name = c["name"].as_str().unwrap_or("").to_string();
        let subs = c["subscriptions_list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        out.insert(name, subs);
    }
    out
}

fn all_topic_subjects() -> BTreeSet<String> {
    (0..TOPICS).map(|t| format!("sluice.t{t}")).collect()
}

/// Waits until every node in `nodes` holds a NATS subscription for every topic.
fn wait_all_subscribed(lab: &Lab, nodes: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let subs = nats_subscriptions(lab);
        let done = nodes
            .iter()
            .all(|n| subs.get(&format!("sluice node{n}")) == Some(&all_topic_subjects()));
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "NATS subscriptions: {subs:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn healthz_until(lab: &Lab, node: usize, prefix: &'static str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(lab, control(node), "/healthz");
        assert_eq!(status, 200, "node {node} /healthz: {body}");
        if body.starts_with(prefix) {
            return body;
        }
        assert!(Instant::now() < deadline, "node {node} /healthz: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(lab: &Lab, node: usize) -> String {
    let (status, body) = get(lab, control(node), "/metrics");
    assert_eq!(status, 200);
    body
}

/// Which clients must receive `p`.
fn receivers(p: &Publication) -> impl Iterator<Item = usize> + '_ {
    (0..NODES * PER_NODE).filter(move |&i| {
        topics_of(i).contains(&p.topic) && (!p.local_only || node_of(i) == p.node)
    })
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn cluster_three_nodes_over_nats_exactly_once_in_order_survives_nats_restart() {
    let _serial = lab::serial();
    let lab = Lab::up(2);
    let mut nats = NatsServer::start(&lab);
    let nodes: Vec<Sluice> = (0..NODES).map(|n| start_node(&lab, n)).collect();
    for n in 0..NODES {
        healthz_until(&lab, n, "ok");
    }
    rlimit::increase_nofile_limit(4_096).unwrap();

    let inbox: Inbox = Arc::new(
        (0..NODES * PER_NODE)
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
    );
    let ready = Arc::new(AtomicUsize::new(0));
    let stops: Vec<Arc<AtomicBool>> = (0..NODES)
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let mut clients: Vec<Option<JoinHandle<_>>> = (0..NODES)
        .map(|n| {
            let ns = if n == 0 {
                lab.peer_ns.clone()
            } else {
                lab.stack_ns.clone()
            };
            Some(spawn_clients(ns, n, &inbox, &ready, &stops[n]))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::SeqCst) < NODES * PER_NODE {
        assert!(
            Instant::now() < deadline,
            "{} clients ready",
            ready.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_all_subscribed(&lab, &[0, 1, 2]);

    // 3,000 publications round-robin through the three ingest endpoints.
    let mut all = Vec::new();
    let main: Vec<Publication> = (0..MESSAGES)
        .map(|k| Publication {
            k,
            node: k % NODES,
            topic: (k / NODES) % TOPICS,
            local_only: false,
        })
        .collect();
    let answers = publish(&lab, main.clone());
    for (p, a) in main.iter().zip(&answers) {
        let local = receivers(p).filter(|&i| node_of(i) == p.node).count();
        assert_eq!(a["delivered"], local, "{p:?}: {a}");
        assert_eq!(a["cluster"], "sent", "{p:?}: {a}");
    }
    all.extend(main);

    // NATS dies: every node keeps delivering its own publications, says so, counts loss.
    nats.kill();
    for n in 0..NODES {
        let body = healthz_until(&lab, n, "degraded");
        assert!(body.contains("not connected to NATS"), "{body}");
    }
    let outage: Vec<Publication> = (0..PHASE * NODES)
        .map(|j| Publication {
            k: MESSAGES + j,
            node: j % NODES,
            topic: j % TOPICS,
            local_only: true,
        })
        .collect();
    for a in publish(&lab, outage.clone()) {
        assert_eq!(a["cluster"], "dropped_not_connected", "{a}");
    }
    all.extend(outage);
    for n in 0..NODES {
        let m = metrics(&lab, n);
        assert_eq!(
            metric_value(&m, "sluice_cluster_dropped_total{reason=\"not_connected\"}"),
            PHASE as f64,
            "node {n}"
        );
        assert_eq!(metric_value(&m, "sluice_cluster_connected"), 0.0);
    }

    // NATS is back: the same gateways reconnect and resubscribe by themselves.
    let _nats = NatsServer::start(&lab);
    for n in 0..NODES {
        healthz_until(&lab, n, "ok");
    }
    wait_all_subscribed(&lab, &[0, 1, 2]);
    let after: Vec<Publication> = (0..PHASE * NODES)
        .map(|j| Publication {
            k: MESSAGES + PHASE * NODES + j,
            node: j % NODES,
            topic: (j + 3) % TOPICS,
            local_only: false,
        })
        .collect();
    for a in publish(&lab, after.clone()) {
        assert_eq!(a["cluster"], "sent", "{a}");
    }
    all.extend(after);

    // Every client: exactly the messages of its topics (none missing, none twice), and
    // per publishing node in publish order.
    let mut expected: Vec<Vec<(String, String)>> = vec![Vec::new(); NODES * PER_NODE];
    for p in &all {
        for i in receivers(p) {
            expected[i].push((format!("t{}", p.topic), p.data()));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let short = (0..NODES * PER_NODE)
            .filter(|&i| inbox[i].lock().unwrap().len() < expected[i].len())
            .count();
        if short == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Late duplicates would arrive now.
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..NODES * PER_NODE {
        let got = inbox[i].lock().unwrap().clone();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut want = expected[i].clone();
        want.sort();
        assert_eq!(
            got_sorted.len(),
            want.len(),
            "client {i} (node {}): {} messages, expected {}",
            node_of(i),
            got.len(),
            want.len()
        );
        assert_eq!(got_sorted, want, "client {i}");
        // Per (publishing node, topic): increasing k.
        let mut last: HashMap<(String, String), usize> = HashMap::new();
        for (topic, data) in &got {
            let (node, k) = data.split_once(':').unwrap();
            let k: usize = k.parse().unwrap();
            let prev = last.insert((node.to_string(), topic.clone()), k);
            assert!(
                prev.is_none_or(|p| p < k),
                "client {i}: {data} after {prev:?} on {topic}"
            );
        }
    }
    let delivered: usize = expected.iter().map(Vec::len).sum();
    println!("{} publications, {delivered} deliveries checked", all.len());
    for n in 0..NODES {
        let m = metrics(&lab, n);
        assert!(
            metric_value(&m, "sluice_cluster_reconnects_total") >= 1.0,
            "node {n}"
        );
        assert_eq!(metric_value(&m, "sluice_cluster_connected"), 1.0);
        let others = all.iter().filter(|p| p.node != n && !p.local_only).count();
        assert_eq!(
            metric_value(&m, "sluice_cluster_received_total"),
            others as f64,
            "node {n}"
        );
        assert!(metric_value(&m, "sluice_cluster_delay_seconds_count") >= others as f64);
    }

    // Subscriptions follow clients: node 2's clients leave, its NATS subscriptions go
    // after the linger; the other nodes keep theirs.
    stops[2].store(true, Ordering::SeqCst);
    let results = clients[2].take().unwrap().join().unwrap();
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let subs = nats_subscriptions(&lab);
        if subs.get("sluice node2").is_some_and(BTreeSet::is_empty) {
            assert_eq!(subs.get("sluice node0"), Some(&all_topic_subjects()));
            assert_eq!(subs.get("sluice node1"), Some(&all_topic_subjects()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 kept its subscriptions: {subs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric_value(&metrics(&lab, 2), "sluice_cluster_subscriptions"),
        0.0
    );

    for (n, stop) in stops.iter().enumerate() {
        stop.store(true, Ordering::SeqCst);
        if let Some(c) = clients[n].take() {
            let results = c.join().unwrap();
            assert!(
                results.iter().all(Result::is_ok),
                "{:?}",
                results.iter().find(|r| r.is_err())
            );
        }
    }
    for node in nodes {
        node.stop();
    }
}
