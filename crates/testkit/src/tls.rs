//! TLS material for broker tests: a throw-away CA and a certificate for 127.0.0.1 it signed,
//! made in process (no `openssl` or `keytool` needed), and the `server.properties` lines that
//! put them, with SCRAM, on a Kafka listener.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA, and a server certificate for `127.0.0.1` / `localhost` signed by it.
pub struct TestTls {
    dir: tempfile::TempDir,
    ca_pem: String,
    server_chain_pem: String,
    server_key_pem: String,
}

impl std::fmt::Debug for TestTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestTls({})", self.dir.path().display())
    }
}

impl TestTls {
    /// Makes the CA and the server certificate and writes the CA to `ca.pem`.
    ///
    /// # Errors
    /// If a key or certificate cannot be made or the file written.
    pub fn new() -> Result<Self, String> {
        let fail = |e: rcgen::Error| format!("making test certificates: {e}");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: a certificate whose issuer equals its subject reads as self-signed.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "deribit-pipeline test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(fail)?)
            .map_err(fail)?;
        let server_key = KeyPair::generate().map_err(fail)?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(fail)?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let server = server_params.signed_by(&server_key, &ca).map_err(fail)?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let ca_pem = ca.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).map_err(|e| e.to_string())?;
        Ok(TestTls {
            dir,
            server_chain_pem: format!("{}{ca_pem}", server.pem()),
            ca_pem,
            server_key_pem: server_key.serialize_pem(),
        })
    }

    /// The CA certificate file clients trust (`ssl.ca.location`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `server.properties` settings for listener `name` (as configured, any case) to serve
    /// `SASL_SSL` with this certificate and SCRAM-SHA-256 logins.
    pub fn sasl_ssl_listener_properties(&self, name: &str) -> Vec<(String, String)> {
        let prefix = format!("listener.name.{}", name.to_ascii_lowercase());
        // Java properties: a value continues over escaped newlines.
        let escape = |pem: &str| pem.trim_end().replace('\n', "\\n");
        vec![
            (format!("{prefix}.ssl.keystore.type"), "PEM".to_owned()),
            (
                format!("{prefix}.ssl.keystore.certificate.chain"),
                escape(&self.server_chain_pem),
            ),
            (
                format!("{prefix}.ssl.keystore.key"),
                escape(&self.server_key_pem),
            ),
            (
                format!("{prefix}.sasl.enabled.mechanisms"),
                "SCRAM-SHA-256".to_owned(),
            ),
            (
                format!("{prefix}.scram-sha-256.sasl.jaas.config"),
                "org.apache.kafka.common.security.scram.ScramLoginModule required;".to_owned(),
            ),
        ]
    }
}

/// The `kafka-storage format --add-scram` argument that creates SCRAM-SHA-256 user `name`.
pub fn scram_user(name: &str, password: &str) -> String {
    format!("SCRAM-SHA-256=[name={name},password={password}]")
}
