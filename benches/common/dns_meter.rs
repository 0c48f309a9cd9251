//! A DNS meter for the dns bench: a forwarding proxy on 127.0.0.1 (one port,
//! UDP and TCP; or a given loopback address and port) in front of the real server, counting what passes as DNS
//! message bytes (the 2-byte TCP length prefix not included, RFC 7766 8),
//! queries by type, both directions. The daemon asks the meter; the meter
//! asks the server. Its threads run until the process exits.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};

/// Per query type: (queries, message bytes both ways).
pub type Counts = BTreeMap<u16, (u64, u64)>;

pub struct Meter {
    pub addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
}

/// The question's type, read off the wire (None for a malformed message).
fn qtype(msg: &[u8]) -> Option<u16> {
    let mut pos = 12;
    loop {
        let len = usize::from(*msg.get(pos)?);
        if len == 0 {
            break;
        }
        pos += 1 + len;
    }
    Some(u16::from_be_bytes([*msg.get(pos + 1)?, *msg.get(pos + 2)?]))
}

fn record(counts: &Mutex<Counts>, msg: &[u8], query: bool) {
    let t = qtype(msg).unwrap_or(0);
    let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
    let entry = c.entry(t).or_default();
    if query {
        entry.0 += 1;
    }
    entry.1 += msg.len() as u64;
}

impl Meter {
    /// A meter on a free port of 127.0.0.1.
    pub fn start(upstream: SocketAddr) -> Result<Meter, String> {
        Meter::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream)
    }

    /// A meter on `listen` (port 0: a free one), both UDP and TCP.
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> Result<Meter, String> {
        let counts = Arc::new(Mutex::new(Counts::new()));
        let tries = if listen.port() == 0 { 100 } else { 1 };
        for _ in 0..tries {
            let udp = UdpSocket::bind(listen).map_err(|e| format!("bind {listen}/udp: {e}"))?;
            let addr = udp.local_addr().map_err(|e| e.to_string())?;
            let tcp = match TcpListener::bind(addr) {
                Ok(tcp) => tcp,
                Err(e) if tries == 1 => return Err(format!("bind {addr}/tcp: {e}")),
                Err(_) => continue,
            };
            let up = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            up.connect(upstream).map_err(|e| e.to_string())?;
            let clients: Arc<Mutex<BTreeMap<u16, SocketAddr>>> = Arc::default();
            {
                let (udp, up, clients, counts) = (
                    udp.try_clone().map_err(|e| e.to_string())?,
                    up.try_clone().map_err(|e| e.to_string())?,
                    Arc::clone(&clients),
                    Arc::clone(&counts),
                );
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65535];
                    while let Ok((n, from)) = udp.recv_from(&mut buf) {
                        if n < 12 {
                            continue;
                        }
                        record(&counts, &buf[..n], true);
                        let id = u16::from_be_bytes([buf[0], buf[1]]);
                        clients
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, from);
                        let _ = up.send(&buf[..n]);
                    }
                });
            }
            {
                let counts = Arc::clone(&counts);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65535];
                    while let Ok(n) = up.recv(&mut buf) {
                        if n < 12 {
                            continue;
                        }
                        record(&counts, &buf[..n], false);
                        let id = u16::from_be_bytes([buf[0], buf[1]]);
                        let to = clients
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&id);
                        if let Some(to) = to {
                            let _ = udp.send_to(&buf[..n], to);
                        }
                    }
                });
            }
            {
                let counts = Arc::clone(&counts);
                std::thread::spawn(move || {
                    for client in tcp.incoming().flatten() {
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                            (Ok(c), Ok(s)) => (c, s),
                            _ => continue,
                        };
                        let (k1, k2) = (Arc::clone(&counts), Arc::clone(&counts));
                        std::thread::spawn(move || pipe(client, server, &k1, true));
                        std::thread::spawn(move || pipe(s2, c2, &k2, false));
                    }
                });
            }
            return Ok(Meter { addr, counts });
        }
        Err("no free port for the DNS meter".into())
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Copies length-prefixed DNS messages from `from` to `to`, counting each.
fn pipe(mut from: TcpStream, mut to: TcpStream, counts: &Mutex<Counts>, query: bool) {
    loop {
        let mut len = [0u8; 2];
        if from.read_exact(&mut len).is_err() {
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if from.read_exact(&mut msg).is_err() {
            let _ = to.shutdown(std::net::Shutdown::Both);
            return;
        }
        record(counts, &msg, query);
        if to
            .write_all(&len)
            .and_then(|()| to.write_all(&msg))
            .is_err()
        {
            return;
        }
    }
}

/// The name of a query type for the report.
pub fn type_name(t: u16) -> String {
    match t {
        1 => "A".into(),
        6 => "SOA".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        other => format!("TYPE{other}"),
    }
}
