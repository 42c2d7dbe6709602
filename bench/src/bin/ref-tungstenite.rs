//! `ref-tungstenite`: tokio-tungstenite WebSocket echo on a current-thread tokio runtime
//! (one core, to match a one-core Sluice worker). Prints `listening ADDR` when ready.

use std::net::SocketAddr;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(
    name = "ref-tungstenite",
    about = "tokio-tungstenite echo server (one core)"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9002")]
    addr: SocketAddr,
    /// CPU to pin the runtime's thread to.
    #[arg(long)]
    pin: Option<usize>,
}

async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(msg) = ws.next().await {
        let keep = match msg {
            Ok(m @ (Message::Binary(_) | Message::Text(_))) => ws.send(m).await.is_ok(),
            // Pings are answered and Close is answered by tungstenite itself.
            Ok(_) => true,
            Err(_) => false,
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
                Err(e) => eprintln!("ref-tungstenite: accept: {e}"),
            }
        }
    })
}
