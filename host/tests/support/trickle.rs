//! A registry that is slow on purpose, for the tests and benches of slow release sources.

use std::time::Duration;

/// A registry that is slow, not down: it answers the `/v2/` ping, then trickles every other response
/// one byte every 100 ms, forever. It counts the responses it is still trickling (a client that gives
/// up closes its connection, and the next byte fails).
pub struct Trickle {
    /// `host:port` to name in a repository reference.
    pub addr: String,
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Trickle {
    /// Listens on a free loopback port; serves until the process ends.
    pub fn start() -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let open_ = open.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let open = open_.clone();
                std::thread::spawn(move || loop {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if head.starts_with(b"GET /v2/ ") {
                        let ping = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                        if conn.write_all(ping).is_err() {
                            return;
                        }
                        continue;
                    }
                    let head =
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                                Content-Length: 1000000\r\n\r\n";
                    if conn.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    open.fetch_add(1, Ordering::SeqCst);
                    while conn.write_all(b" ").is_ok() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                    return;
                });
            }
        });
        Trickle { addr, open }
    }

    /// Responses still being trickled.
    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}
