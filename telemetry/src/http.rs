//! A minimal HTTP/1.x server for `/metrics`, `/healthz` and `/readyz`. It
//! answers GET requests with what a handler returns and closes the
//! connection; that is all Prometheus and load-balancer probes need, and it
//! keeps a web framework out of the agents.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An answer: status code, content type, body.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
    pub fn metrics(body: String) -> Reply {
        Reply { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body }
    }
}

type Handler = Arc<dyn Fn(String) -> std::pin::Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Serves until `shutdown` completes. `handler` gets the request path.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F, shutdown: impl Future<Output = ()>)
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let handler: Handler = Arc::new(move |path| Box::pin(handler(path)));
    tokio::pin!(shutdown);
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ = &mut shutdown => return,
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // Read the request head, with a deadline so a silent client
            // cannot hold a task forever.
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await.ok()?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Some(())
            })
            .await;
            if !matches!(read, Ok(Some(()))) {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let mut parts = head.split_whitespace();
            let reply = match (parts.next(), parts.next()) {
                (Some("GET"), Some(path)) => handler(path.split('?').next().unwrap_or("/").to_string()).await,
                _ => Reply::text(405, "only GET is supported\n"),
            };
            let reason = match reply.status {
                200 => "OK",
                404 => "Not Found",
                405 => "Method Not Allowed",
                _ => "Service Unavailable",
            };
            let response = format!(
                "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                reply.status,
                reply.content_type,
                reply.body.len(),
                reply.body
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
