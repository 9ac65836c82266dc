//! A minimal HTTP/1.1 endpoint for probes and scraping: `GET /healthz` (alive), `GET /readyz`
//! (200 when the service says it is ready, 503 otherwise), `GET /metrics` (Prometheus text).
//! One request per connection; anything else is 404/405. Plus [`check_ready`] and
//! [`healthcheck_command`], the `healthcheck` subcommand (images without curl), and
//! [`shutdown_signal`].

use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// What the endpoint asks the service.
pub trait Probe: Send + Sync + 'static {
    /// Whether the service does its job (subscribed, partitions restored…).
    fn ready(&self) -> bool;
    /// Why it is not ready, for the body of a 503 `/readyz`; `None` when ready.
    fn not_ready_reason(&self) -> Option<String> {
        (!self.ready()).then(|| "not ready".to_owned())
    }
    /// The current metrics, Prometheus text format.
    fn metrics(&self) -> String;
}

/// The endpoint serving in the background until [`ProbeServer::stop`].
#[derive(Debug)]
pub struct ProbeServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ProbeServer {
    /// Listens on `addr` and serves `probe` there.
    ///
    /// # Errors
    /// The bind error (address in use, not permitted…).
    pub async fn start(addr: SocketAddr, probe: Arc<dyn Probe>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, probe, async {
            let _ = stopped.await;
        }));
        Ok(ProbeServer { stop, task })
    }

    /// Stops serving and waits until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Serves the endpoint on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    probe: Arc<dyn Probe>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let probe = Arc::clone(&probe);
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, probe.as_ref()).await {
                            debug!(error = %e, "HTTP request failed.");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "Accepting an HTTP connection failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn answer(mut stream: TcpStream, probe: &dyn Probe) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut request = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        request.next().unwrap_or_default(),
        request.next().unwrap_or_default(),
    );
    let (status, content_type, body) = match (method, path) {
        ("GET", "/healthz") => (200, "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") => match probe.not_ready_reason() {
            None => (200, "text/plain", "ready\n".to_owned()),
            Some(reason) => (503, "text/plain", format!("not ready: {reason}\n")),
        },
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4", probe.metrics()),
        ("GET", _) => (404, "text/plain", "not found\n".to_owned()),
        _ => (405, "text/plain", "method not allowed\n".to_owned()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Asks `addr`'s `/readyz` (blocking, with a timeout); `true` only for an HTTP 200.
pub fn check_ready(addr: SocketAddr, timeout: Duration) -> bool {
    readiness(addr, timeout).is_ok()
}

/// As [`check_ready`], with the reason when not ready: nothing listening, no answer, or the
/// status line of the answer.
///
/// # Errors
/// A short sentence saying why `addr` is not ready.
pub fn readiness(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("{addr} closed the connection: {e}"))?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    if response.starts_with("HTTP/1.1 200") {
        return Ok(());
    }
    match response.lines().next().filter(|l| !l.is_empty()) {
        Some(status) => Err(format!("http://{addr}/readyz answered {status:?}")),
        None => Err(format!(
            "http://{addr}/readyz gave no answer within {timeout:?}"
        )),
    }
}

/// The `healthcheck` subcommand of a service: reads `HTTP_ADDR` (or `default_addr`), asks
/// `/readyz` on it (an unspecified address means this host), and returns the exit code:
/// 0 ready, 1 not ready or unreachable, 2 invalid address.
pub fn healthcheck_command(service: &str, default_addr: &str) -> std::process::ExitCode {
    let value = std::env::var("HTTP_ADDR").unwrap_or_else(|_| default_addr.to_owned());
    let Ok(mut addr) = value.trim().parse::<SocketAddr>() else {
        eprintln!(
            "{service} healthcheck: HTTP_ADDR={value:?}: an IP address and port such as {default_addr}"
        );
        return std::process::ExitCode::from(2);
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    match readiness(addr, Duration::from_secs(3)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("{service} healthcheck: not ready: {reason}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM (SIGINT only where there is no SIGTERM).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            warn!("Cannot watch SIGTERM; only SIGINT stops the service.");
            let _ = interrupt.await;
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("Shutdown requested.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct TestProbe(AtomicBool);

    impl Probe for TestProbe {
        fn ready(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
        fn metrics(&self) -> String {
            "up 1\n".into()
        }
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_probes_and_scrapes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let probe = Arc::new(TestProbe(AtomicBool::new(false)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, probe.clone(), async {
            let _ = stopped.await;
        }));
        let responses = tokio::task::spawn_blocking(move || {
            let not_ready = (
                get(addr, "/healthz"),
                get(addr, "/readyz"),
                check_ready(addr, Duration::from_secs(2)),
            );
            probe.0.store(true, Ordering::Relaxed);
            (
                not_ready,
                get(addr, "/readyz"),
                check_ready(addr, Duration::from_secs(2)),
                get(addr, "/metrics"),
                get(addr, "/nope"),
            )
        })
        .await
        .unwrap();
        let ((health, not_ready, checked_not_ready), ready, checked_ready, metrics, missing) =
            responses;
        assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"));
        assert!(not_ready.starts_with("HTTP/1.1 503"));
        assert!(!checked_not_ready);
        assert!(ready.starts_with("HTTP/1.1 200"));
        assert!(checked_ready);
        assert!(
            metrics.contains("Content-Type: text/plain; version=0.0.4")
                && metrics.ends_with("up 1\n")
        );
        assert!(missing.starts_with("HTTP/1.1 404"));
        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(
            !check_ready(addr, Duration::from_millis(200)),
            "nothing listens after shutdown"
        );
    }
}
