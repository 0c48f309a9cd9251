//! An in-process authoritative DNS server for the DNS tests, answering the way
//! CoreDNS answers for a headless Service: an SRV query for
//! `nginx.default.svc.<domain>.` gets one record per pod (`0 W 80
//! web-K.nginx.default.svc.<domain>.`, W = max(1, 100/N), TTL 30, AA set) with
//! the pods' A records in the additional section; an A query for a pod gets its
//! IP; a Service with no pods is NXDOMAIN (SOA in authority). It listens on
//! 127.0.0.1 on one random port for both UDP and TCP, on its own std threads.
//! Over UDP it honours the client's EDNS payload size (512 without EDNS): a
//! bigger answer goes out as an empty response with the TC bit, so the client
//! must come back over TCP. Tests change the pods, the failure mode (SERVFAIL,
//! REFUSED, no answer at all) and whether additionals are sent while a daemon
//! polls it, and read counters of the queries it received. Dropping it stops it.
//!
//! The zone's SOA serial is, as with CoreDNS's kubernetes plugin, the Unix
//! time (seconds) of the last change; [`DnsServer::freeze_serial`] keeps it
//! fixed (a server whose serial does not track changes), and
//! [`DnsServer::set_tcp_truncated`] makes every SRV answer over TCP come
//! with TC set and no records (what BIND does past 64 KiB).

#![allow(dead_code)] // not every test uses every control

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{Label, Name, RData, Record, RecordType};

/// The TTL of every record: long enough that a caching client would serve
/// stale answers, which is what the no-stale-answers test must rule out.
pub const TTL: u32 = 30;

/// How the server treats queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer from the records.
    Normal,
    /// Answer every query with SERVFAIL.
    ServFail,
    /// Answer every query with REFUSED.
    Refused,
    /// Read queries and never answer (a timeout for the client).
    Drop,
}

/// The transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Udp,
    Tcp,
}

/// What the server serves; changed through [`DnsServer`]'s setters.
#[derive(Debug, Clone)]
struct Zone {
    /// e.g. `cluster.local.`
    domain: Name,
    /// e.g. `nginx.default.svc.cluster.local.`
    service: Name,
    /// Pod host name (`web-0`) to its IP, answered in name order (so web-10
    /// comes before web-2: the client has to sort).
    pods: BTreeMap<String, Ipv4Addr>,
    /// Raw SRV targets served after the pods', e.g. names that are not valid
    /// host names. They have no A records.
    extra_targets: Vec<Name>,
    mode: Mode,
    additionals: bool,
    /// With no pods: NOERROR and no records (NODATA) instead of NXDOMAIN.
    nodata: bool,
    /// The port in every SRV record (80 unless told otherwise).
    srv_port: u16,
    /// The ready-only Service `nginx-ready.default.svc.<domain>` (no
    /// publishNotReadyAddresses) and the pods it lists, when set.
    ready: Option<(Name, Vec<String>)>,
    /// The TTL of every record ([`TTL`] unless told otherwise).
    ttl: u32,
    /// The SOA serial: the Unix second of the last change.
    serial: u32,
    /// The serial stays as it is, whatever changes.
    serial_frozen: bool,
    /// SRV answers over TCP carry TC and no records.
    tcp_truncated: bool,
    /// UDP answers go out whole, past the payload the query offers.
    udp_oversize: bool,
    /// Named ports (`http` 80, `metrics` 9100): each pod is listed once per
    /// port under the Service's name, in an order that rotates with every
    /// answer, and once under `_<name>._tcp.<service>` (Kubernetes' DNS
    /// spec). Empty: one record per pod with `srv_port`.
    named_ports: Vec<(String, u16)>,
    /// Answers given, to rotate the order of the ports.
    rotation: Arc<std::sync::atomic::AtomicUsize>,
}

/// Now as a Unix time in seconds, as CoreDNS's serial.
fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

struct Shared {
    zone: Mutex<Zone>,
    counts: Mutex<BTreeMap<(Proto, RecordType), u64>>,
    /// When each query arrived, by type: the last [`ARRIVALS_KEPT`].
    arrivals: Mutex<std::collections::VecDeque<(RecordType, Instant)>>,
}

/// How many query arrival times the server keeps.
const ARRIVALS_KEPT: usize = 10_000;

/// The threads of a started server; stopping them closes every socket.
struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// The server; see the module docs.
pub struct DnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<Running>,
}

/// The IP the server gives pod `web-K` unless told otherwise.
pub fn pod_ip(host: &str) -> Ipv4Addr {
    let k: u32 = host
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Ipv4Addr::new(10, 244, (k / 250) as u8, (k % 250 + 2) as u8)
}

/// `web-0` .. `web-<n-1>`.
pub fn pod_names(n: usize) -> Vec<String> {
    (0..n).map(|k| format!("web-{k}")).collect()
}

impl DnsServer {
    /// Serves `nginx.default.svc.<domain>` (no pods yet) on a free port.
    pub fn start(domain: &str) -> DnsServer {
        DnsServer::start_service(domain, "nginx")
    }

    /// Serves `<service>.default.svc.<domain>` (no pods yet) on a free port;
    /// [`DnsServer::set_ready`] then serves `<service>-ready`.
    pub fn start_service(domain: &str, service: &str) -> DnsServer {
        let domain =
            Name::from_ascii(format!("{}.", domain.trim_end_matches('.'))).expect("valid domain");
        let service = Name::from_ascii(format!("{service}.default.svc"))
            .expect("valid name")
            .append_domain(&domain)
            .expect("service name");
        let shared = Arc::new(Shared {
            zone: Mutex::new(Zone {
                domain,
                service,
                pods: BTreeMap::new(),
                extra_targets: Vec::new(),
                mode: Mode::Normal,
                additionals: true,
                nodata: false,
                srv_port: 80,
                named_ports: Vec::new(),
                rotation: Arc::default(),
                ready: None,
                ttl: TTL,
                serial: unix_now(),
                serial_frozen: false,
                tcp_truncated: false,
                udp_oversize: false,
            }),
            counts: Mutex::new(BTreeMap::new()),
            arrivals: Mutex::default(),
        });
        // One port for UDP and TCP: take a free UDP port, then try TCP on it.
        for _ in 0..100 {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
            let addr = udp.local_addr().expect("UDP address");
            if let Ok(tcp) = TcpListener::bind(addr) {
                let running = spawn(udp, tcp, Arc::clone(&shared));
                return DnsServer {
                    addr,
                    shared,
                    running: Some(running),
                };
            }
        }
        panic!("no free port for both UDP and TCP on 127.0.0.1");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, as peerplate's `nameservers` takes it.
    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }

    /// The pods are exactly `hosts` (e.g. `["web-0", "web-1"]`), each at
    /// [`pod_ip`].
    pub fn set_pods(&self, hosts: &[&str]) {
        let pods: Vec<(&str, Ipv4Addr)> = hosts.iter().map(|h| (*h, pod_ip(h))).collect();
        self.set_pod_ips(&pods);
    }

    /// The TTL of every record from now on.
    pub fn set_ttl(&self, ttl: u32) {
        self.zone().ttl = ttl;
    }

    /// The pods are exactly these, at these IPs.
    pub fn set_pod_ips(&self, pods: &[(&str, Ipv4Addr)]) {
        self.zone().pods = pods.iter().map(|(h, ip)| (h.to_string(), *ip)).collect();
    }

    /// The pods are `web-0` .. `web-<n-1>`.
    pub fn scale(&self, n: usize) {
        let names = pod_names(n);
        let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
        self.set_pods(&hosts);
    }

    /// Also serve `nginx-ready.default.svc.<domain>` (`<service>-ready`),
    /// the ready-only Service, listing these of the pods (at their pod IPs).
    pub fn set_ready(&self, hosts: &[&str]) {
        let mut zone = self.zone();
        let service = zone.service.to_ascii();
        let first = service.split('.').next().expect("a first label");
        let name = Name::from_ascii(format!("{first}-ready.default.svc"))
            .expect("valid name")
            .append_domain(&zone.domain)
            .expect("ready service name");
        zone.ready = Some((name, hosts.iter().map(|h| h.to_string()).collect()));
    }

    /// Extra SRV targets, served byte for byte whatever they contain (e.g.
    /// `bad_name.nginx.default.svc.cluster.local`, `$(reboot).nginx...`).
    pub fn set_extra_targets(&self, names: &[&str]) {
        self.zone().extra_targets = names
            .iter()
            .map(|n| {
                let labels = n
                    .trim_end_matches('.')
                    .split('.')
                    .map(|l| Label::from_raw_bytes(l.as_bytes()).expect("labels of 1 to 63 bytes"));
                let mut name = Name::from_labels(labels).expect("a name of at most 255 bytes");
                name.set_fqdn(true);
                name
            })
            .collect();
    }

    /// Named ports: see [`Zone::named_ports`].
    pub fn set_named_ports(&self, ports: &[(&str, u16)]) {
        self.zone().named_ports = ports.iter().map(|(n, p)| (n.to_string(), *p)).collect();
    }

    /// The port the SRV records announce (the pods' listen port).
    pub fn set_srv_port(&self, port: u16) {
        self.zone().srv_port = port;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.zone().mode = mode;
    }

    /// Whether SRV answers carry the pods' A records as additionals.
    pub fn set_additionals(&self, on: bool) {
        self.zone().additionals = on;
    }

    /// With no pods, answer the Service's name with NOERROR and no records
    /// (as a server does for a name that exists with other types) instead
    /// of NXDOMAIN.
    pub fn set_nodata(&self, on: bool) {
        self.zone().nodata = on;
    }

    /// Queries of `rtype` received over `proto` so far (answered or not).
    pub fn queries(&self, proto: Proto, rtype: RecordType) -> u64 {
        self.counts()
            .get(&(proto, rtype))
            .copied()
            .unwrap_or_default()
    }

    /// Queries of `rtype` received over either transport.
    pub fn queries_of(&self, rtype: RecordType) -> u64 {
        self.queries(Proto::Udp, rtype) + self.queries(Proto::Tcp, rtype)
    }

    /// When each query of `rtype` arrived, oldest first (the last
    /// [`ARRIVALS_KEPT`] queries of any type).
    pub fn arrivals_of(&self, rtype: RecordType) -> Vec<Instant> {
        lock(&self.shared.arrivals)
            .iter()
            .filter(|(t, _)| *t == rtype)
            .map(|(_, at)| *at)
            .collect()
    }

    /// Closes every socket and stops every thread; the records stay, for
    /// [`DnsServer::restart`].
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            for t in running.threads {
                let _ = t.join();
            }
            let connections = std::mem::take(&mut *lock(&running.connections));
            for t in connections {
                let _ = t.join();
            }
        }
    }

    /// Starts again on the same port (bounded retry while the OS frees it).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let bound = UdpSocket::bind(self.addr)
                .and_then(|udp| TcpListener::bind(self.addr).map(|tcp| (udp, tcp)));
            match bound {
                Ok((udp, tcp)) => {
                    self.running = Some(spawn(udp, tcp, Arc::clone(&self.shared)));
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        }
    }

    /// Keeps the SOA serial where it is from now on (a server whose serial
    /// does not track changes).
    pub fn freeze_serial(&self) {
        lock(&self.shared.zone).serial_frozen = true;
    }

    /// The SOA serial now.
    pub fn serial(&self) -> u32 {
        lock(&self.shared.zone).serial
    }

    /// SRV answers over TCP come with TC set and no records (an answer past
    /// the 64 KiB a DNS message can hold).
    pub fn set_tcp_truncated(&self, on: bool) {
        self.zone().tcp_truncated = on;
    }

    /// UDP answers go out whole however long, ignoring the payload size the
    /// query offers (RFC 6891 says to truncate): a server that ignores EDNS.
    pub fn set_udp_oversize(&self, on: bool) {
        self.zone().udp_oversize = on;
    }

    /// The zone, for a change: the serial moves (unless frozen).
    fn zone(&self) -> std::sync::MutexGuard<'_, Zone> {
        let mut zone = lock(&self.shared.zone);
        if !zone.serial_frozen {
            zone.serial = unix_now();
        }
        zone
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Proto, RecordType), u64>> {
        lock(&self.shared.counts)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A poisoned lock only means another test thread panicked; the data is fine.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const POLL: Duration = Duration::from_millis(20);

fn spawn(udp: UdpSocket, tcp: TcpListener, shared: Arc<Shared>) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(Mutex::new(Vec::new()));
    udp.set_read_timeout(Some(POLL)).expect("UDP read timeout");
    tcp.set_nonblocking(true).expect("non-blocking listener");

    let udp_thread = {
        let (stop, shared) = (Arc::clone(&stop), Arc::clone(&shared));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue; // the read timeout: look at `stop` again
                };
                if let Some(reply) = respond(&shared, &buf[..n], Proto::Udp) {
                    let _ = udp.send_to(&reply, from);
                }
            }
        })
    };
    let tcp_thread = {
        let (stop, connections) = (Arc::clone(&stop), Arc::clone(&connections));
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match tcp.accept() {
                    Ok((stream, _)) => {
                        let (stop, shared) = (Arc::clone(&stop), Arc::clone(&shared));
                        let t = std::thread::spawn(move || serve_tcp(stream, &shared, &stop));
                        lock(&connections).push(t);
                    }
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        })
    };
    Running {
        stop,
        threads: vec![udp_thread, tcp_thread],
        connections,
    }
}

/// One TCP connection: length-prefixed queries until EOF or stop.
fn serve_tcp(mut stream: TcpStream, shared: &Shared, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    loop {
        let mut len = [0u8; 2];
        if !read_full(&mut stream, &mut len, stop) {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !read_full(&mut stream, &mut query, stop) {
            return;
        }
        if let Some(reply) = respond(shared, &query, Proto::Tcp) {
            let Ok(n) = u16::try_from(reply.len()) else {
                return;
            };
            let mut framed = n.to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

/// Fills `buf`; false on EOF, error or stop.
fn read_full(stream: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> bool {
    let mut got = 0;
    while got < buf.len() {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match stream.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return false,
        }
    }
    true
}

/// The wire reply to one query, or None to stay silent.
fn respond(shared: &Shared, bytes: &[u8], proto: Proto) -> Option<Vec<u8>> {
    let request = Message::from_vec(bytes).ok()?;
    let query = request.queries.first()?.clone();
    *lock(&shared.counts)
        .entry((proto, query.query_type))
        .or_default() += 1;
    {
        let mut arrivals = lock(&shared.arrivals);
        if arrivals.len() >= ARRIVALS_KEPT {
            arrivals.pop_front();
        }
        arrivals.push_back((query.query_type, Instant::now()));
    }
    let zone = lock(&shared.zone).clone();

    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.add_query(query.clone());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        response.set_edns(edns);
    }
    match zone.mode {
        Mode::Drop => return None,
        Mode::ServFail => response.metadata.response_code = ResponseCode::ServFail,
        Mode::Refused => response.metadata.response_code = ResponseCode::Refused,
        Mode::Normal => zone.answer(&query, &mut response),
    }
    if proto == Proto::Tcp && zone.tcp_truncated && query.query_type == RecordType::SRV {
        // What BIND does past 64 KiB: TC over TCP, no records at all.
        return response.truncate().to_vec().ok();
    }
    let wire = response.to_vec().ok()?;
    if proto == Proto::Udp && wire.len() > usize::from(request.max_payload()) && !zone.udp_oversize
    {
        // What CoreDNS does: no records at all, just TC.
        return response.truncate().to_vec().ok();
    }
    Some(wire)
}

impl Zone {
    fn pod_name(&self, host: &str) -> Name {
        Name::from_ascii(host)
            .expect("valid pod name")
            .append_domain(&self.service)
            .expect("pod name")
    }

    fn soa(&self) -> Record {
        let ns = Name::from_ascii("ns.dns")
            .expect("valid")
            .append_domain(&self.domain)
            .expect("ns name");
        let mbox = Name::from_ascii("hostmaster")
            .expect("valid")
            .append_domain(&self.domain)
            .expect("mbox name");
        Record::from_rdata(
            self.domain.clone(),
            self.ttl,
            RData::SOA(SOA::new(ns, mbox, self.serial, 7200, 1800, 86400, self.ttl)),
        )
    }

    /// Fills `response` for `query` (response code, AA, the sections).
    fn answer(&self, query: &Query, response: &mut Message) {
        let name = query.name.to_lowercase();
        if !self.domain.zone_of(&name) {
            response.metadata.response_code = ResponseCode::Refused;
            return;
        }
        response.metadata.authoritative = true;
        if let Some((service, hosts)) = &self.ready {
            let ready: Vec<(Name, Ipv4Addr)> = hosts
                .iter()
                .filter_map(|h| {
                    let ip = self.pods.get(h)?;
                    Some((Name::from_ascii(h).ok()?.append_domain(service).ok()?, *ip))
                })
                .collect();
            if name == *service && !ready.is_empty() {
                if query.query_type == RecordType::SRV {
                    for (target, ip) in &ready {
                        let srv = SRV::new(0, 50, self.srv_port, target.clone());
                        response.add_answer(Record::from_rdata(
                            service.clone(),
                            self.ttl,
                            RData::SRV(srv),
                        ));
                        response.add_additional(Record::from_rdata(
                            target.clone(),
                            self.ttl,
                            RData::A(A::from(*ip)),
                        ));
                    }
                } else {
                    response.add_authority(self.soa());
                }
                return;
            }
            if let Some((target, ip)) = ready.iter().find(|(n, _)| *n == name) {
                if query.query_type == RecordType::A {
                    response.add_answer(Record::from_rdata(
                        target.clone(),
                        self.ttl,
                        RData::A(A::from(*ip)),
                    ));
                } else {
                    response.add_authority(self.soa());
                }
                return;
            }
        }
        let pods: Vec<(Name, Ipv4Addr)> = self
            .pods
            .iter()
            .map(|(host, ip)| (self.pod_name(host), *ip))
            .collect();
        let count = pods.len() + self.extra_targets.len();
        // `_http._tcp.<service>`: the pods with that one port.
        let named = self.named_ports.iter().find(|(port, _)| {
            Name::from_ascii(format!("_{port}._tcp"))
                .ok()
                .and_then(|n| n.append_domain(&self.service).ok())
                .is_some_and(|n| n == name)
        });
        if let (Some((_, port)), true, RecordType::SRV) = (named, count > 0, query.query_type) {
            for (target, _) in &pods {
                let srv = SRV::new(0, 50, *port, target.clone());
                response.add_answer(Record::from_rdata(name.clone(), self.ttl, RData::SRV(srv)));
            }
            return;
        }
        if name == self.service
            && count > 0
            && !self.named_ports.is_empty()
            && query.query_type == RecordType::SRV
        {
            // Every pod once per port, the ports in a rotating order.
            let turn = self
                .rotation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut ports: Vec<u16> = self.named_ports.iter().map(|(_, p)| *p).collect();
            let len = ports.len();
            ports.rotate_left(turn % len);
            for port in ports {
                for (target, _) in &pods {
                    let srv = SRV::new(0, 50, port, target.clone());
                    response.add_answer(Record::from_rdata(
                        self.service.clone(),
                        self.ttl,
                        RData::SRV(srv),
                    ));
                }
            }
            return;
        }
        if name == self.service && count > 0 {
            let a = |(n, ip): &(Name, Ipv4Addr)| {
                Record::from_rdata(n.clone(), self.ttl, RData::A(A::from(*ip)))
            };
            match query.query_type {
                RecordType::SRV => {
                    let weight = u16::try_from((100 / count).max(1)).unwrap_or(1);
                    let targets = pods
                        .iter()
                        .map(|(n, _)| n.clone())
                        .chain(self.extra_targets.iter().cloned());
                    for target in targets {
                        let srv = SRV::new(0, weight, self.srv_port, target);
                        response.add_answer(Record::from_rdata(
                            self.service.clone(),
                            self.ttl,
                            RData::SRV(srv),
                        ));
                    }
                    if self.additionals {
                        for pod in &pods {
                            response.add_additional(a(pod));
                        }
                    }
                }
                RecordType::A => {
                    for pod in &pods {
                        response.add_answer(a(pod));
                    }
                }
                _ => {
                    response.add_authority(self.soa());
                }
            }
        } else if let Some((_, ip)) = pods.iter().find(|(n, _)| *n == name) {
            if query.query_type == RecordType::A {
                response.add_answer(Record::from_rdata(name, self.ttl, RData::A(A::from(*ip))));
            } else {
                response.add_authority(self.soa()); // NODATA
            }
        } else if name == self.domain || (name == self.service && self.nodata) {
            response.add_authority(self.soa());
            if query.query_type == RecordType::SOA {
                response.answers = std::mem::take(&mut response.authorities);
            }
        } else {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(self.soa());
        }
    }
}

/// Asks `server` one question over UDP (with EDNS, 1232 bytes) and returns
/// the answer, or None after `timeout`. For waiting until a server answers,
/// and for checking what a server says.
pub fn ask(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    let mut request = Message::new(0x5eed, MessageType::Query, OpCode::Query);
    request.add_query(Query::query(Name::from_ascii(name).ok()?, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    request.set_edns(edns);
    socket.send_to(&request.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

#[test]
fn answers_like_coredns() {
    let dns = DnsServer::start("cluster.local");
    let t = Duration::from_secs(2);
    let svc = "nginx.default.svc.cluster.local.";

    let none = ask(dns.addr(), svc, RecordType::SRV, t).expect("an answer");
    assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(none.authorities[0].data, RData::SOA(_)));

    dns.scale(3);
    let three = ask(dns.addr(), svc, RecordType::SRV, t).expect("an answer");
    assert_eq!(three.metadata.response_code, ResponseCode::NoError);
    assert!(three.metadata.authoritative);
    let srv: Vec<String> = three
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => format!(
                "{} {} {} {} {}",
                r.ttl, s.priority, s.weight, s.port, s.target
            ),
            other => panic!("not SRV: {other:?}"),
        })
        .collect();
    assert_eq!(srv[0], "30 0 33 80 web-0.nginx.default.svc.cluster.local.");
    assert_eq!(three.additionals.len(), 3);

    let a = ask(
        dns.addr(),
        "web-2.nginx.default.svc.cluster.local.",
        RecordType::A,
        t,
    )
    .expect("an answer");
    assert!(matches!(a.answers[0].data, RData::A(ip) if ip.0 == pod_ip("web-2")));

    // Too big for 1232 bytes over UDP: an empty answer with TC.
    dns.scale(300);
    let big = ask(dns.addr(), svc, RecordType::SRV, t).expect("an answer");
    assert!(big.metadata.truncation && big.answers.is_empty());
    assert_eq!(dns.queries(Proto::Udp, RecordType::SRV), 3);

    dns.set_mode(Mode::Drop);
    assert!(ask(dns.addr(), svc, RecordType::SRV, Duration::from_millis(200)).is_none());
}
