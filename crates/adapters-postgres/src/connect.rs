//! Opening a session: TLS as `sslmode` says, the connection driven by its own task, and the
//! session set up the way every statement of the store expects (search path, time limits).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::debug;

use crate::error::{Error, Result};
use crate::url::{DatabaseUrl, TlsMode};

/// How long a session may sit inside a transaction without sending anything. A writer stopped
/// mid-transaction (a frozen or paused process) would otherwise hold the position rows it
/// locked, and the instance that took its partitions over would wait for it for ever.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one statement may run (a write of a full batch takes well under a second): a
/// database that stops answering ends the call as a (retried) outage, not a hang.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a statement may wait for a lock before it fails as a (retried) outage.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// TCP keepalive idle time: a peer that vanished without closing is noticed in about this long.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// Opens a session to `url` as `application`, with `schema` first on its search path.
///
/// # Errors
/// [`Error::Database`] if the server cannot be reached or refuses, [`Error::Tls`] for TLS
/// settings that cannot work.
pub async fn connect(url: &DatabaseUrl, application: &str, schema: &str) -> Result<Client> {
    let mut config = url.config.clone();
    config
        .application_name(application)
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE);
    let client = match url.tls {
        TlsMode::Disable => {
            config.ssl_mode(SslMode::Disable);
            let (client, connection) = config
                .connect(NoTls)
                .await
                .map_err(Error::db("connecting"))?;
            tokio::spawn(drive(connection));
            client
        }
        mode => {
            config.ssl_mode(match mode {
                TlsMode::Prefer => SslMode::Prefer,
                _ => SslMode::Require,
            });
            let tls = MakeRustlsConnect::new(tls_config(url)?);
            let (client, connection) =
                config.connect(tls).await.map_err(Error::db("connecting"))?;
            tokio::spawn(drive(connection));
            client
        }
    };
    set_up(&client, schema).await?;
    Ok(client)
}

async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = connection.await {
        debug!(error = %e, "PostgreSQL connection ended.");
    }
}

/// Search path and time limits; `schema` is checked by the caller's settings to be a plain
/// identifier, and quoted here as one all the same.
async fn set_up(client: &Client, schema: &str) -> Result<()> {
    let quoted = schema.replace('"', "\"\"");
    client
        .batch_execute(&format!(
            "SET search_path TO \"{quoted}\"; SET idle_in_transaction_session_timeout = {}; \
             SET statement_timeout = {}; SET lock_timeout = {}; SET TIME ZONE 'UTC'",
            IDLE_IN_TRANSACTION_TIMEOUT.as_millis(),
            STATEMENT_TIMEOUT.as_millis(),
            LOCK_TIMEOUT.as_millis()
        ))
        .await
        .map_err(Error::db("setting up the session"))
}

fn tls_config(url: &DatabaseUrl) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let config = match url.tls {
        TlsMode::VerifyFull => builder
            .with_root_certificates(roots(url.root_cert.as_deref())?)
            .with_no_client_auth(),
        // libpq's `prefer` and `require` encrypt without checking who answers.
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
            .with_no_client_auth(),
    };
    Ok(config)
}

fn roots(file: Option<&str>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let Some(path) = file else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let pem = std::fs::read(path).map_err(|e| Error::Tls(format!("sslrootcert {path}: {e}")))?;
    let mut reader = pem.as_slice();
    for cert in rustls_pemfile_certs(&mut reader) {
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("sslrootcert {path}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!(
            "sslrootcert {path}: no PEM certificate in it"
        )));
    }
    Ok(roots)
}

/// The certificates of a PEM text (`-----BEGIN CERTIFICATE-----` blocks, base64 inside).
fn rustls_pemfile_certs(pem: &mut &[u8]) -> Vec<CertificateDer<'static>> {
    rustls::pki_types::pem::PemObject::pem_slice_iter(pem)
        .filter_map(std::result::Result::ok)
        .collect()
}

/// A verifier that accepts any certificate (`sslmode=prefer|require`), still checking that the
/// handshake is signed by the key the certificate holds.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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
