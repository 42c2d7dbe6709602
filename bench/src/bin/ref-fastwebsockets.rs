//! `ref-fastwebsockets`: fastwebsockets WebSocket echo on a current-thread tokio runtime
//! (one core, to match a one-core Sluice worker). Prints `listening ADDR` when ready.
//!
//! The HTTP upgrade is answered directly on the socket (the generator's own handshake
//! parser), then the socket is handed to `fastwebsockets::WebSocket::after_handshake`; this
//! skips hyper, which only the upgrade would need.

use std::net::SocketAddr;

use clap::Parser;
use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
use sluice_bench::wsframe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(
    name = "ref-fastwebsockets",
    about = "fastwebsockets echo server (one core)"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9003")]
    addr: SocketAddr,
    /// CPU to pin the runtime's thread to.
    #[arg(long)]
    pin: Option<usize>,
}

/// Reads and answers the opening handshake; `None` if it was invalid or the peer left.
async fn handshake(stream: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        match wsframe::parse_upgrade_request(&buf) {
            Ok(Some(req)) => {
                // RFC 6455 4.1: the client MUST wait for the server's answer before sending
                // frames, so nothing may follow the request.
                if req.len != buf.len() {
                    return None;
                }
                stream
                    .write_all(&wsframe::upgrade_response(&req.key))
                    .await
                    .ok()?;
                return Some(());
            }
            Ok(None) => {}
            Err(_) => {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return None;
            }
        }
    }
}

async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if handshake(&mut stream).await.is_none() {
        return;
    }
    let mut ws = FragmentCollector::new(WebSocket::after_handshake(stream, Role::Server));
    loop {
        let Ok(frame) = ws.read_frame().await else {
            return;
        };
        let keep = match frame.opcode {
            OpCode::Close => false,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await.is_ok(),
            // Pings are answered by fastwebsockets (auto pong).
            _ => true,
        };
        if !keep {
            return;
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(cpu) = cli.pin {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            anyhow::bail!("could not pin to CPU {cpu}");
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(cli.addr).await?;
        println!("listening {}", listener.local_addr()?);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(echo(stream));
                }
                Err(e) => eprintln!("ref-fastwebsockets: accept: {e}"),
            }
        }
    })
}
