//! A webhook receiver for the tests of what the coordinator calls (gate
//! webhooks, notification targets): a plain HTTP server on a free port
//! that answers every request with the status set and keeps each
//! request's head and body (as JSON; `null` when it is not JSON).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// The receiver; its thread lives as long as the test process.
pub struct Hook {
    pub port: u16,
    status: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Hook {
    /// A receiver answering `status` until told otherwise.
    pub fn start(status: u16) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hook = Hook { port, status: Arc::new(AtomicU16::new(status)), seen: Arc::default() };
        let (answer, seen) = (hook.status.clone(), hook.seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let (mut head, mut length) = (String::new(), 0);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    seen.lock().unwrap().push((head, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                }
                let status = answer.load(Ordering::SeqCst);
                let _ = write!(conn, "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            }
        });
        hook
    }

    /// `http://127.0.0.1:PORT` and `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Each request so far, in order: its head and its body.
    pub fn seen(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }

    /// Each request's body so far, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.seen().into_iter().map(|(_, body)| body).collect()
    }
}
