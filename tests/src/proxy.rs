//! A TCP proxy the tests put between an agent and the control plane, to cut every connection
//! at once or slow each read down: the faults a flaky network or a load balancer causes.

use std::time::Duration;

/// A TCP proxy on loopback in front of `upstream` that the test can cut: every open
/// connection is reset at once, as a flaky network or a load balancer restart would.
pub struct Proxy {
    /// `127.0.0.1:PORT` to connect to instead of the upstream.
    pub addr: String,
    connections: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    /// Milliseconds each forwarded read is held back.
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// While set, every new connection is closed at once, as by a replica that is down.
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    /// Starts forwarding to `upstream`.
    pub fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let connections: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (conns, delay, is_down) = (connections.clone(), delay_ms.clone(), down.clone());
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                if is_down.load(Ordering::Relaxed) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                {
                    let mut open = conns.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let delay = delay.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buffer = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buffer) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let ms = delay.load(Ordering::Relaxed);
                            if ms > 0 {
                                std::thread::sleep(Duration::from_millis(ms));
                            }
                            if to.write_all(&buffer[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            connections,
            delay_ms,
            down,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Resets every open connection.
    pub fn cut(&self) {
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Takes the upstream down (`true`: open connections are cut, new ones closed at once)
    /// or back up.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::Relaxed);
        if down {
            self.cut();
        }
    }

    /// Holds back each forwarded read by `ms` milliseconds (0: none).
    pub fn delay(&self, ms: u64) {
        self.delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}
