//! A throwaway PKI for the wss:// tests, made at test time (never a committed key): a test
//! CA and a server certificate it signs for `sluice.test`, `127.0.0.1` and the lab's
//! addresses, written as PEM files into a scratch directory removed on drop.
//!
//! Include with `#[path = "common/tls.rs"] mod tls;`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The CA and server files.
pub struct TestPki {
    /// The scratch directory (removed on drop).
    pub dir: PathBuf,
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server's chain (leaf, then the CA).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
    /// A second server certificate, for `other.test` only (an SNI choice).
    pub other_cert: PathBuf,
    /// Its key.
    pub other_key: PathBuf,
}

impl TestPki {
    /// A fresh CA and server certificate valid for `names` (DNS names or IP addresses)
    /// besides `sluice.test`.
    pub fn new(names: &[&str]) -> TestPki {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("sluice-pki-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(DnType::CommonName, "Sluice test CA (throwaway)");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();

        let mut sans = vec!["sluice.test".to_string()];
        sans.extend(names.iter().map(|n| n.to_string()));
        let mut leaf = CertificateParams::new(sans).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "sluice.test");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        let leaf_key = KeyPair::generate().unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

        let mut other = CertificateParams::new(vec!["other.test".to_string()]).unwrap();
        other
            .distinguished_name
            .push(DnType::CommonName, "other.test");
        other.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        other.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        other.use_authority_key_identifier_extension = true;
        let other_key = KeyPair::generate().unwrap();
        let other_cert = other.signed_by(&other_key, &issuer).unwrap();

        let pki = TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            other_cert: dir.join("other.pem"),
            other_key: dir.join("other.key"),
            dir,
        };
        std::fs::write(&pki.other_cert, other_cert.pem()).unwrap();
        std::fs::write(&pki.other_key, other_key.serialize_pem()).unwrap();
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert, format!("{}{}", leaf_cert.pem(), ca_cert.pem())).unwrap();
        std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
        pki
    }

    /// A path as a string argument.
    pub fn arg(p: &std::path::Path) -> String {
        p.to_str().unwrap().to_string()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port no one listens on now (bound and released; the tests start their server on it
/// right away).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
