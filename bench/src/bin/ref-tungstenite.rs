//! `ref-tungstenite`: tokio-tungstenite WebSocket echo on a current-thread tokio runtime
//! (one core, to match a one-core Sluice worker). Prints `listening ADDR` when ready.
//! With `--tls-cert`/`--tls-key` it serves wss through tokio-rustls: the ring provider as
//! in Sluice, TLS 1.3 and 1.2, ALPN `http/1.1`, session tickets on (ring `Ticketer`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(
    name = "ref-tungstenite",
    about = "tokio-tungstenite echo server (one core), optionally over tokio-rustls"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9002")]
    addr: SocketAddr,
    /// CPU to pin the runtime's thread to.
    #[arg(long)]
    pin: Option<usize>,
    /// PEM certificate chain: serve wss (TLS) instead of ws.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
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

async fn serve(stream: TcpStream, tls: Option<TlsAcceptor>) {
    let _ = stream.set_nodelay(true);
    match tls {
        None => echo(stream).await,
        Some(acceptor) => {
            if let Ok(s) = acceptor.accept(stream).await {
                echo(s).await;
            }
        }
    }
}

/// The server side of wss, configured as Sluice's `[[listen.tls]]` defaults.
fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(sluice_bench::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(cpu) = cli.pin {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
            anyhow::bail!("could not pin to CPU {cpu}");
        }
    }
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind(cli.addr).await?;
        println!("listening {}", listener.local_addr()?);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, tls.clone()));
                }
                Err(e) => eprintln!("ref-tungstenite: accept: {e}"),
            }
        }
    })
}
