//! wss for the load generator: the rustls client configuration (ring provider, ALPN
//! `http/1.1`) and the server name a connection verifies. Connections drive
//! `rustls::ClientConnection` sans-IO over their own non-blocking sockets (see `client`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
    Tls13ClientSessionValue,
};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, NamedGroup, RootCertStore, SignatureScheme};
use serde::Serialize;

/// How the generator speaks TLS to the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsOptions {
    /// PEM file of trust anchors (the test CA or the server's self-signed certificate).
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (benchmarks only; signatures are still checked).
    pub insecure: bool,
    /// Name to verify (and send as SNI when it is a DNS name); default: the target's host.
    pub sni: Option<String>,
    /// Keep resumption on: connections of the run share one session store, so TLS 1.3
    /// tickets from earlier connections resume later ones. Off: every handshake is full.
    pub resume: bool,
}

/// The ring provider, as the gateway uses (rustls marks it deprecated for lacking
/// post-quantum key exchange; the gateway's decision 0010 keeps it).
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client's provider: ring, with X25519 first among the key exchange groups. rustls
/// 0.23.48's ring provider lists P-384 first, and a client sends a key share for its first
/// group only; browsers, curl and OpenSSL lead with X25519, so the benchmark does too (a
/// P-384 share costs both ends several times an X25519 one in ring).
#[allow(deprecated)]
fn client_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group;
    let mut p = rustls::crypto::ring::default_provider();
    p.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(p)
}

/// Builds the client configuration for `opts`: TLS 1.3 and 1.2, ALPN `http/1.1`, trust
/// from `--ca` or none (`--insecure`), resumption as asked.
pub fn client_config(opts: &TlsOptions) -> anyhow::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(client_provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = match (&opts.ca, opts.insecure) {
        (Some(_), true) => anyhow::bail!("--ca and --insecure exclude each other"),
        (None, false) => anyhow::bail!("TLS needs --ca FILE or --insecure"),
        (Some(path), false) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?;
            for cert in certs {
                let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("trust anchor in {}", path.display()))?;
            }
            if roots.is_empty() {
                anyhow::bail!("no certificate in {}", path.display());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(client_provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = if opts.resume {
        Resumption::store(Arc::new(TicketStore::default()))
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// The name a connection to `host` (the target as given, `HOST:PORT`) verifies: `sni` if
/// set, else the host part. An IP address is verified against the certificate's IP
/// subjectAltName and sends no SNI (RFC 6066 3).
pub fn server_name(sni: Option<&str>, host: &str) -> anyhow::Result<ServerName<'static>> {
    let name = match sni {
        Some(s) => s.to_string(),
        None => host_part(host).to_string(),
    };
    ServerName::try_from(name.clone()).with_context(|| format!("bad TLS server name {name:?}"))
}

/// `host` of `host:port`, `[v6]:port` or a bare host.
fn host_part(target: &str) -> &str {
    if let Some(rest) = target.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match target.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h,
        _ => target,
    }
}

/// Most TLS 1.3 tickets kept (one target per run, so no per-server split is needed).
const MAX_TICKETS: usize = 4096;

/// The session store of `--resume`: rustls's in-memory cache keeps at most 8 TLS 1.3
/// tickets per server, fewer than the connections a run opens at once, so some handshakes
/// would be full only because the cache ran dry. This one keeps up to [`MAX_TICKETS`] (each
/// ticket used at most once, newest first) and leaves the rest to rustls's cache.
#[derive(Debug)]
struct TicketStore {
    other: ClientSessionMemoryCache,
    tls13: Mutex<VecDeque<(ServerName<'static>, Tls13ClientSessionValue)>>,
}

impl Default for TicketStore {
    fn default() -> Self {
        Self {
            other: ClientSessionMemoryCache::new(256),
            tls13: Mutex::new(VecDeque::new()),
        }
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.other.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.other.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.other.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.other.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.other.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        if let Ok(mut q) = self.tls13.lock() {
            if q.len() >= MAX_TICKETS {
                q.pop_front();
            }
            q.push_back((server_name, value));
        }
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        let mut q = self.tls13.lock().ok()?;
        let i = q.iter().rposition(|(n, _)| n == server_name)?;
        q.remove(i).map(|(_, v)| v)
    }
}

/// FOR BENCHMARKS ONLY (`--insecure`): accepts any server certificate chain and name, so
/// a self-signed test certificate needs no CA file. The handshake signatures are still
/// verified (the client does the same work as with a real verifier, less the chain).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn host_part_forms() {
        assert_eq!(host_part("localhost:9443"), "localhost");
        assert_eq!(host_part("198.18.0.1:443"), "198.18.0.1");
        assert_eq!(host_part("[::1]:443"), "::1");
        assert_eq!(host_part("example.org"), "example.org");
    }

    #[test]
    fn server_name_ip_and_dns() {
        assert!(matches!(
            server_name(None, "198.18.0.1:9443").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(Some("localhost"), "198.18.0.1:9443").unwrap(),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn config_needs_exactly_one_trust_mode() {
        let mut o = TlsOptions::default();
        assert!(client_config(&o).is_err());
        o.insecure = true;
        let c = client_config(&o).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        o.ca = Some("/nonexistent".into());
        assert!(client_config(&o).is_err());
        o.insecure = false;
        assert!(client_config(&o).is_err());
    }
}
