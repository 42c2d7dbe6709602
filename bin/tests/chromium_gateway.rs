//! Root lab test: headless Chromium (playwright-core, in the peer namespace) opens a page
//! (`tests/clients/gateway_page.html`, served over HTTP by `tests/clients/chromium_gateway.js`)
//! that connects to the gateway's pub/sub route, subscribes to a topic and renders every
//! delivered message into the DOM. The test publishes through the control plane
//! (`POST /publish/{topic}`) and asserts the page's rendered list equals what it sent, in order.
//! The gateway's Origin allowlist holds the page's origin; a page from another origin is
//! refused. The `_wss_` variants connect with `wss://` to the gateway's TLS port (a
//! throw-away test PKI; Chromium pins the test key with
//! `--ignore-certificate-errors-spki-list`). Everything started here is killed on drop, and
//! the lab is removed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/lab.rs"]
mod lab;
#[path = "common/tls.rs"]
mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use lab::{Lab, Sluice, STACK_IP};

/// The WebSocket port the gateway serves.
const WS_PORT: u16 = 8080;
/// Its wss:// port (the `_wss_` variants).
const WSS_PORT: u16 = 8443;
/// The control plane, inside the stack namespace.
const CONTROL: &str = "127.0.0.1:9100";
/// The port the page is served from in the peer namespace (its origin is allowlisted).
const PAGE_PORT: u16 = 8000;
/// Messages published.
const COUNT: usize = 100;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Starts `sluice run --app gateway` on `backend` (`"kernel"`: kernel sockets on the stack
/// side's address; `"afxdp"`: the userspace stack on the stack side's veth) in the lab's
/// stack namespace.
fn start_gateway(
    lab: &Lab,
    config: &std::path::Path,
    backend: &str,
    pki: Option<&tls::TestPki>,
) -> Sluice {
    let mut args: Vec<String> = vec![
        "netns".into(),
        "exec".into(),
        lab.stack_ns.clone(),
        env!("CARGO_BIN_EXE_sluice").into(),
        "run".into(),
        "--backend".into(),
        backend.into(),
        "--ip".into(),
        format!("{STACK_IP}/24"),
        "--port".into(),
        WS_PORT.to_string(),
        "--control".into(),
        CONTROL.into(),
        "--app".into(),
        "gateway".into(),
        "--config".into(),
        config.to_str().unwrap().into(),
        "--log-level".into(),
        "warn".into(),
    ];
    if let Some(pki) = pki {
        args.extend([
            "--tls-port".into(),
            WSS_PORT.to_string(),
            "--tls-cert".into(),
            tls::TestPki::arg(&pki.cert),
            "--tls-key".into(),
            tls::TestPki::arg(&pki.key),
        ]);
    }
    match backend {
        // Kernel sockets need the address on the stack side's interface.
        "kernel" => {
            let out = Command::new("ip")
                .args(["-n", &lab.stack_ns, "addr", "add"])
                .arg(format!("{STACK_IP}/24"))
                .args(["dev", &lab.stack_if])
                .output()
                .unwrap();
            assert!(out.status.success(), "ip addr add: {out:?}");
        }
        // The userspace stack owns the address: the kernel side keeps none.
        "afxdp" => args.extend(["--iface".into(), lab.stack_if.clone()]),
        other => panic!("unknown backend {other}"),
    }
    Sluice::spawn(&args)
}

/// A one-shot HTTP/1.1 request; returns (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of an unlabelled metric sample, 0 when absent.
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// `chromium_gateway.js` running in the peer namespace, in its own process group (so
/// Chromium goes with it); killed on drop.
struct Browser {
    child: Child,
    lines: Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Browser {
    fn start(
        lab: &Lab,
        pki: Option<&tls::TestPki>,
        topic: &str,
        count: usize,
        page_port: u16,
    ) -> Browser {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.peer_ns, "node"])
            .arg(repo().join("tests/clients/chromium_gateway.js"));
        match pki {
            Some(pki) => cmd
                .arg(format!("wss://{STACK_IP}:{WSS_PORT}/ws"))
                .env("SLUICE_CERT", &pki.cert),
            None => cmd.arg(format!("ws://{STACK_IP}:{WS_PORT}/ws")),
        };
        let mut child = cmd
            .arg(topic)
            .arg(count.to_string())
            .args(["--http-port", &page_port.to_string()])
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Some(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        }));
        Browser {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line, or `None` once the script exited or after `timeout`.
    fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for the exit; returns (success, stderr).
    fn finish(mut self) -> (bool, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let ok = status.is_some_and(|s| s.success());
        self.kill_group();
        let stderr = self.stderr.take().and_then(|h| h.join().ok());
        (ok, stderr.unwrap_or_default())
    }

    fn kill_group(&mut self) {
        // The group id is the child's pid (process_group(0)); `ip netns exec` execs node.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}

fn config_file(lab: &Lab) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sluice-chromium-{}.toml", lab.prefix));
    std::fs::write(
        &path,
        format!(
            "[limits]\nallowed_origins = [\"http://127.0.0.1:{PAGE_PORT}\"]\n\n\
             [[route]]\npath = \"/ws\"\nkind = \"pubsub\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn chromium_page_renders_published_messages_in_order_afxdp() {
    chromium_page_renders_published_messages_in_order("afxdp", false);
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn chromium_page_renders_published_messages_in_order_wss_afxdp() {
    chromium_page_renders_published_messages_in_order("afxdp", true);
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn chromium_page_renders_published_messages_in_order_wss_kernel() {
    chromium_page_renders_published_messages_in_order("kernel", true);
}

#[test]
#[ignore = "needs root: run by deploy/test.sh"]
fn chromium_page_renders_published_messages_in_order_kernel() {
    chromium_page_renders_published_messages_in_order("kernel", false);
}

fn chromium_page_renders_published_messages_in_order(backend: &str, wss: bool) {
    let _serial = lab::serial();
    let lab = Lab::up(1);
    let config = config_file(&lab);
    let pki = wss.then(|| tls::TestPki::new(&[&STACK_IP.to_string()]));
    let gateway = start_gateway(&lab, &config, backend, pki.as_ref());
    let _ = std::fs::remove_file(&config);

    let browser = Browser::start(&lab, pki.as_ref(), "news", COUNT, PAGE_PORT);
    let first = browser.line(Duration::from_secs(60));
    if first
        .as_deref()
        .is_none_or(|l| !l.starts_with("subscribed "))
    {
        let (_, stderr) = browser.finish();
        panic!(
            "page did not subscribe: {first:?}\n{stderr}\ngateway log: {}",
            gateway.log_text()
        );
    }
    assert_eq!(
        first.unwrap(),
        format!("subscribed origin=http://127.0.0.1:{PAGE_PORT}")
    );

    // Text a page must render literally: markup, quotes, non-ASCII, astral characters.
    let sent: Vec<String> = (0..COUNT)
        .map(|i| {
            format!(
                "#{i:03} <b>bold</b> & \"quoted\" \u{20ac} \u{1f680} {}",
                "x".repeat(i)
            )
        })
        .collect();
    let to_publish = sent.clone();
    let (metrics, statuses) = lab.in_stack(move || {
        let statuses: Vec<(u16, String)> = to_publish
            .iter()
            .map(|m| http(CONTROL, "POST", "/publish/news", m))
            .collect();
        (http(CONTROL, "GET", "/metrics", "").1, statuses)
    });
    for (status, body) in &statuses {
        assert_eq!(*status, 200, "{body}");
        assert!(body.contains("\"delivered\":1"), "{body}");
    }
    assert_eq!(metric(&metrics, "sluice_published_total"), COUNT as f64);

    let rendered = browser
        .line(Duration::from_secs(90))
        .unwrap_or_else(|| panic!("no rendered line; gateway log: {}", gateway.log_text()));
    let json = rendered
        .strip_prefix("rendered ")
        .unwrap_or_else(|| panic!("unexpected line {rendered:?}"));
    let texts: Vec<String> = serde_json::from_str(json).unwrap();
    assert_eq!(texts.len(), COUNT, "{texts:?}");
    assert_eq!(texts, sent);

    let closed = browser.line(Duration::from_secs(30)).unwrap_or_default();
    assert!(closed.starts_with("closed 1000 "), "{closed:?}");
    // Chromium offers permessage-deflate; pub/sub routes accept it without context takeover.
    assert!(
        closed.contains("permessage-deflate") && closed.contains("server_no_context_takeover"),
        "{closed:?}"
    );
    let (ok, stderr) = browser.finish();
    assert!(ok, "chromium_gateway.js failed: {stderr}");

    // The same page from an origin not on the allowlist is refused at the handshake.
    let stranger = Browser::start(&lab, pki.as_ref(), "news", 1, PAGE_PORT + 1);
    let line = stranger.line(Duration::from_secs(60));
    let (ok, stderr) = stranger.finish();
    assert!(!ok && line.is_none(), "{line:?} {stderr}");
    assert!(stderr.contains("page not subscribed"), "{stderr}");
    let metrics = lab.in_stack(|| http(CONTROL, "GET", "/metrics", "").1);
    assert!(
        metrics.contains("sluice_handshakes_total{result=\"origin\"} 1"),
        "{metrics}"
    );
    if wss {
        // Both pages came over TLS.
        assert!(
            metric(&metrics, "sluice_tls_handshakes_total{result=\"ok\"}")
                + metric(&metrics, "sluice_tls_handshakes_total{result=\"resumed\"}")
                >= 2.0,
            "{metrics}"
        );
    }
    gateway.stop();
}
