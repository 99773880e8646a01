//! The optional syslog copy: every record, as RFC 5424 over TCP or TLS with
//! octet-counting framing (RFC 6587), to a collector an admin does not control.
//!
//! The writer hands each line over with `try_send` into a bounded queue: a slow or
//! absent collector never blocks the gateway. What does not fit is counted and becomes
//! a `log.syslog_gap` record in the local log (the source of truth) once the queue has
//! room again. The sender reconnects with backoff (1 s doubling to 30 s).

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Frames waiting for the collector.
const QUEUE: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp { host: String, port: u16 },
    Tls { host: String, port: u16 },
}

impl Target {
    /// `tcp://host:port` or `tls://host:port`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let (tls, rest) = match s.split_once("://") {
            Some(("tcp", r)) => (false, r),
            Some(("tls", r)) => (true, r),
            _ => return Err(format!("{s:?} must be tcp://HOST:PORT or tls://HOST:PORT")),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("{s:?} has no port"))?;
        let port: u16 = port.parse().map_err(|_| format!("{s:?}: bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() || port == 0 {
            return Err(format!("{s:?}: needs a host and a port"));
        }
        Ok(if tls { Target::Tls { host, port } } else { Target::Tcp { host, port } })
    }
}

/// Hands records to the sender task.
pub struct Sender {
    tx: mpsc::Sender<Bytes>,
    hostname: String,
    pid: u32,
}

impl Sender {
    pub fn start(target: Target, gateway: &str, tls: Arc<rustls::ClientConfig>) -> Sender {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(target, tls, rx));
        // RFC 5424 HOSTNAME: printable US-ASCII, at most 255.
        let hostname: String = gateway.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
        Sender { tx, hostname: if hostname.is_empty() { "-".into() } else { hostname }, pid: std::process::id() }
    }

    /// Queue one record; false if the queue is full (the caller counts the gap).
    pub fn send(&self, line: &[u8], event: &str, zoned: &jiff::Zoned) -> bool {
        // local0; warning for failures and refusals, informational otherwise.
        let severity = match event {
            "admin.auth_failed" | "admin.lockout" | "log.full" | "log.capacity_warning" | "log.recovery" => 4,
            _ => 6,
        };
        let mut msg = Vec::with_capacity(line.len() + 96);
        let _ = std::io::Write::write_fmt(&mut msg, format_args!("<{}>1 ", 16 * 8 + severity));
        super::write_ts(&mut msg, zoned);
        let _ =
            std::io::Write::write_fmt(&mut msg, format_args!(" {} menshen {} {} - ", self.hostname, self.pid, event));
        msg.extend_from_slice(line);
        let mut frame = format!("{} ", msg.len()).into_bytes();
        frame.extend_from_slice(&msg);
        self.tx.try_send(Bytes::from(frame)).is_ok()
    }
}

async fn run(target: Target, tls: Arc<rustls::ClientConfig>, mut rx: mpsc::Receiver<Bytes>) {
    let mut backoff = Duration::from_secs(1);
    let mut pending: Option<Bytes> = None;
    loop {
        let mut conn = match connect(&target, &tls).await {
            Ok(c) => {
                backoff = Duration::from_secs(1);
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, ?target, "syslog collector unreachable; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                if rx.is_closed() && rx.is_empty() {
                    return;
                }
                continue;
            }
        };
        loop {
            let frame = match pending.take() {
                Some(f) => f,
                None => match rx.recv().await {
                    Some(f) => f,
                    None => {
                        let _ = conn.shutdown().await;
                        return;
                    }
                },
            };
            if let Err(e) = conn.write_all(&frame).await {
                tracing::warn!(error = %e, "syslog connection lost; reconnecting");
                pending = Some(frame);
                break;
            }
        }
    }
}

type Conn = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

async fn connect(target: &Target, tls: &Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
    let (host, port) = match target {
        Target::Tcp { host, port } | Target::Tls { host, port } => (host.as_str(), *port),
    };
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    match target {
        Target::Tcp { .. } => Ok(Box::new(tcp)),
        Target::Tls { .. } => {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "bad syslog host name"))?;
            let s = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await?;
            Ok(Box::new(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("tcp://127.0.0.1:6514"), Ok(Target::Tcp { host: "127.0.0.1".into(), port: 6514 }));
        assert_eq!(
            Target::parse("tls://siem.example:6514"),
            Ok(Target::Tls { host: "siem.example".into(), port: 6514 })
        );
        assert_eq!(Target::parse("tcp://[::1]:514"), Ok(Target::Tcp { host: "::1".into(), port: 514 }));
        for bad in ["udp://x:514", "tcp://x", "tcp://:514", "tcp://x:0", "x:514"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
