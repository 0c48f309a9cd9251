//! A minimal DNS client for the SRV poll: hickory's wire format over one
//! connected UDP socket (a fresh one, so a fresh source port, every
//! [`UDP_SOCKET_USES`] queries) and one kept-open TCP connection once an
//! answer came truncated (RFC 7766). One question, one answer, no cache, no
//! search list; answers are checked against the query ID. Each question's
//! wire form is built once ([`Question`]) and each answer lands in one kept
//! buffer, so an idle poll encodes nothing and allocates nothing. Also the readers
//! that look at an answer's bytes without decoding it (the TC bit, the
//! sorted SRV targets, the SOA serial).
//!
//! A DNS message over TCP is at most 65,535 bytes (RFC 1035 4.2.2, RFC 7766
//! 8): a bigger answer cannot be sent whole, and a server then sets TC even
//! over TCP (CoreDNS cuts the record list; BIND sends no records at all). A
//! TCP answer with TC set is therefore a failed lookup ([`TOO_BIG`]), never
//! a peer set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_resolver::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};

/// The EDNS payload size we offer: the DNS flag day 2020 value, which fits
/// any path MTU, so big answers come truncated rather than fragmented.
const EDNS_PAYLOAD: u16 = 1232;

/// The UDP receive buffer, in bytes: over three times what we offer
/// ([`EDNS_PAYLOAD`]; RFC 6891 section 6.2.5: a server sends no more than
/// the requester offers, else truncates). A datagram that fills it may have
/// been cut by the kernel, so it is asked again over TCP, as a truncated
/// answer is. (It was 64 KiB, most of it never written.)
const UDP_BUFFER: usize = 4096;

/// A fresh UDP socket (so a fresh source port) after this many queries.
const UDP_SOCKET_USES: u32 = 64;

/// Why a poll gave no answer (the last known set stays).
#[derive(Debug)]
pub struct LookupFailure(pub String);

/// The reason given when a TCP answer comes with TC set (RFC 7766 8: the
/// answer did not fit in one 64 KiB DNS message).
pub const TOO_BIG: &str = "the answer over TCP came truncated (TC set): the SRV set does not fit in one DNS message (64 KiB limit, RFC 1035 4.2.2; about 1,100 pods with address records under CoreDNS), so it is not the whole set; split the StatefulSet or use peers.dns.ready_service/name for a smaller SRV name";

/// Why one server gave no usable answer.
enum AskError {
    /// No answer, or one that is no answer (SERVFAIL, REFUSED, a mismatch):
    /// try the next server.
    Server(String),
    /// A TCP answer with TC set: every server would say the same.
    TooBig,
}

impl From<String> for AskError {
    fn from(e: String) -> AskError {
        AskError::Server(e)
    }
}

/// One question, its wire form built once (each ask writes its own ID into
/// it):
/// the SOA and SRV names a poll asks every interval are not built again,
/// so an idle poll runs no message encoder.
pub(super) struct Question {
    pub(super) name: Name,
    pub(super) rtype: RecordType,
    /// RD set, one question, an OPT record offering [`EDNS_PAYLOAD`].
    wire: Vec<u8>,
}

impl Question {
    /// `rtype` of `name`; an error only if hickory cannot encode the name.
    pub(super) fn new(name: Name, rtype: RecordType) -> Result<Question, String> {
        let mut request = Message::new(0, MessageType::Query, OpCode::Query);
        request.metadata.recursion_desired = true;
        request.add_query(Query::query(name.clone(), rtype));
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        request.set_edns(edns);
        let wire = request.to_vec().map_err(|e| e.to_string())?;
        Ok(Question { name, rtype, wire })
    }
}

/// A minimal DNS client over kept-open sockets: one question, one answer,
/// no cache, no search list.
pub(super) struct Client {
    servers: Vec<SocketAddr>,
    /// The server that answered last; asked first next time.
    current: usize,
    udp: Option<(UdpSocket, u32)>,
    tcp: Option<TcpStream>,
    /// Set once an answer came truncated: the set is big, ask TCP directly.
    prefer_tcp: bool,
    timeout: Duration,
    /// The last answer's buffer (a UDP one is received straight into its
    /// first [`UDP_BUFFER`] bytes); kept between polls, so a poll allocates
    /// nothing, and never cut below that size, so a poll does not zero it
    /// again either. The answer is its first `answer_len` bytes.
    answer: Vec<u8>,
    answer_len: usize,
    /// The UDP socket's receive timeout is what was left after a late
    /// answer, not `timeout`: set it back before the next question.
    udp_timeout_cut: bool,
}

impl Client {
    pub(super) fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Client {
        Client {
            servers,
            current: 0,
            udp: None,
            tcp: None,
            prefer_tcp: false,
            timeout,
            answer: Vec::new(),
            answer_len: 0,
            udp_timeout_cut: false,
        }
    }

    /// The last answer's bytes.
    fn answer(&self) -> &[u8] {
        self.answer.get(..self.answer_len).unwrap_or_default()
    }

    /// Asks each server in turn until one answers. NXDOMAIN and NOERROR are
    /// answers; every other response code is a failure, and so is a TCP
    /// answer with TC set ([`TOO_BIG`]). The answer's bytes are borrowed
    /// until the next question.
    pub(super) fn query(&mut self, question: &mut Question) -> Result<&[u8], LookupFailure> {
        self.query_over(question, false)
    }

    /// [`Client::query`] over UDP only, whatever earlier answers needed: for
    /// small answers (the SOA) that never need TCP. A truncated UDP answer
    /// is still asked again over TCP.
    pub(super) fn query_udp(&mut self, question: &mut Question) -> Result<&[u8], LookupFailure> {
        self.query_over(question, true)
    }

    fn query_over(
        &mut self,
        question: &mut Question,
        udp_first: bool,
    ) -> Result<&[u8], LookupFailure> {
        let mut last = String::new();
        for _ in 0..self.servers.len() {
            match self.ask(question, udp_first) {
                Ok(()) => return Ok(self.answer()),
                Err(AskError::TooBig) => return Err(LookupFailure(TOO_BIG.into())),
                Err(AskError::Server(e)) => {
                    last = format!("{}: {e}", self.servers[self.current]);
                    self.udp = None;
                    self.tcp = None;
                    self.current = (self.current + 1) % self.servers.len();
                }
            }
        }
        Err(LookupFailure(last))
    }

    /// One question to the current server, under a fresh ID; the answer
    /// lands in `answer`.
    fn ask(&mut self, question: &mut Question, udp_first: bool) -> Result<(), AskError> {
        let id = fastrand::u16(..);
        // The header's first two bytes are the ID (RFC 1035 4.1.1).
        if let Some(head) = question.wire.get_mut(..2) {
            head.copy_from_slice(&id.to_be_bytes());
        }
        let wire = question.wire.as_slice();
        let (name, rtype) = (&question.name, question.rtype);
        let server = self.servers[self.current];
        let started = std::time::Instant::now();
        let trace = |transport: &str, result: &Result<&[u8], String>| match result {
            Ok(bytes) => tracing::trace!(
                name = %name,
                rtype = %rtype,
                server = %server,
                transport,
                id,
                sent_bytes = wire.len(),
                received_bytes = bytes.len(),
                truncated = truncated(bytes),
                rcode = bytes.get(3).map_or(0, |b| b & 0x0f),
                elapsed_ms = crate::log::ms(started.elapsed()),
                "DNS query"
            ),
            Err(e) => tracing::trace!(
                name = %name,
                rtype = %rtype,
                server = %server,
                transport,
                id,
                sent_bytes = wire.len(),
                error = %e,
                elapsed_ms = crate::log::ms(started.elapsed()),
                "DNS query failed"
            ),
        };

        if self.prefer_tcp && !udp_first {
            let answer = self.ask_tcp(wire).map(|()| self.answer());
            trace("tcp", &answer);
            answer?;
        } else {
            let answer = self.ask_udp(wire, id).map(|()| self.answer());
            trace("udp", &answer);
            let bytes = answer?;
            if truncated(bytes) || bytes.len() >= UDP_BUFFER {
                if !udp_first {
                    self.prefer_tcp = true;
                }
                let answer = self.ask_tcp(wire).map(|()| self.answer());
                trace("tcp", &answer);
                answer?;
            }
        }
        let bytes = self.answer();
        // The header says all a poll needs to know before the answer is
        // compared with the last one; decoding waits until it differs.
        if bytes.len() < 12
            || u16::from_be_bytes([bytes[0], bytes[1]]) != id
            || bytes[2] & 0x80 == 0
        {
            return Err(AskError::Server(
                "answer does not match the question".into(),
            ));
        }
        match ResponseCode::from(0, bytes[3] & 0x0f) {
            // Only a TCP answer can still be truncated here: the UDP one
            // was asked again over TCP above.
            ResponseCode::NoError | ResponseCode::NXDomain if truncated(bytes) => {
                Err(AskError::TooBig)
            }
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(()),
            code => Err(AskError::Server(format!("server answered {code}"))),
        }
    }

    /// One exchange over the connected UDP socket, into `answer`.
    fn ask_udp(&mut self, wire: &[u8], id: u16) -> Result<(), String> {
        let server = self.servers[self.current];
        if self
            .udp
            .as_ref()
            .is_none_or(|(_, uses)| *uses >= UDP_SOCKET_USES)
        {
            let local: SocketAddr = if server.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
            // Connected: the kernel drops datagrams from anyone else.
            socket.connect(server).map_err(|e| e.to_string())?;
            // The whole timeout, set once: a poll that gets its answer (all
            // but a late one) makes three syscalls, not four.
            socket
                .set_read_timeout(Some(self.timeout))
                .map_err(|e| e.to_string())?;
            self.udp = Some((socket, 0));
            self.udp_timeout_cut = false;
        }
        let Some((socket, uses)) = self.udp.as_mut() else {
            return Err("no UDP socket".into());
        };
        if self.udp_timeout_cut {
            socket
                .set_read_timeout(Some(self.timeout))
                .map_err(|e| e.to_string())?;
            self.udp_timeout_cut = false;
        }
        *uses += 1;
        socket.send(wire).map_err(|e| e.to_string())?;
        let deadline = crate::limits::later_std(Instant::now(), self.timeout);
        if self.answer.len() < UDP_BUFFER {
            self.answer.resize(UDP_BUFFER, 0);
        }
        let buf = &mut self.answer[..UDP_BUFFER];
        let mut skipped = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("request timed out".into());
            }
            if skipped {
                // What is left of the timeout, after a late answer; the
                // next question sets the whole timeout back.
                self.udp_timeout_cut = true;
                socket
                    .set_read_timeout(Some(left))
                    .map_err(|e| e.to_string())?;
            }
            match socket.recv(buf) {
                // A late answer to an earlier, timed-out question: skip it.
                Ok(n) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) != id => {
                    skipped = true;
                    continue;
                }
                Ok(n) => {
                    self.answer_len = n;
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("request timed out".into())
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// One exchange over the kept-open TCP connection; a connection the
    /// server closed while idle is reopened once.
    fn ask_tcp(&mut self, wire: &[u8]) -> Result<(), String> {
        let reused = self.tcp.is_some();
        match self.exchange_tcp(wire) {
            Ok(()) => Ok(()),
            Err(_) if reused => {
                self.tcp = None;
                self.exchange_tcp(wire)
            }
            Err(e) => Err(e),
        }
    }

    fn exchange_tcp(&mut self, wire: &[u8]) -> Result<(), String> {
        if self.tcp.is_none() {
            let stream = TcpStream::connect_timeout(&self.servers[self.current], self.timeout)
                .map_err(|e| format!("TCP: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(self.timeout))
                .map_err(|e| e.to_string())?;
            stream
                .set_write_timeout(Some(self.timeout))
                .map_err(|e| e.to_string())?;
            self.tcp = Some(stream);
        }
        let Some(stream) = self.tcp.as_mut() else {
            return Err("no TCP connection".into());
        };
        let answer = &mut self.answer;
        let result = (|| {
            let len = u16::try_from(wire.len()).map_err(|_| "question too long".to_string())?;
            let mut framed = Vec::with_capacity(wire.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(wire);
            stream.write_all(&framed).map_err(|e| format!("TCP: {e}"))?;
            let mut len = [0u8; 2];
            stream
                .read_exact(&mut len)
                .map_err(|e| format!("TCP: {e}"))?;
            let len = usize::from(u16::from_be_bytes(len));
            if answer.len() < len {
                answer.resize(len, 0);
            }
            stream
                .read_exact(&mut answer[..len])
                .map_err(|e| format!("TCP: {e}"))?;
            Ok(len)
        })();
        let result = result.map(|len| self.answer_len = len);
        if result.is_err() {
            self.tcp = None;
        }
        result
    }
}

/// The SRV records of a DNS answer as sorted (port, target) pairs, the
/// target in lower-case wire form, read without decoding the message; `None`
/// if the message does not parse (the full decoder then says why).
pub(super) fn srv_targets(msg: &[u8]) -> Option<Vec<(u16, Vec<u8>)>> {
    let count = |at: usize| {
        Some(usize::from(u16::from_be_bytes([
            *msg.get(at)?,
            *msg.get(at + 1)?,
        ])))
    };
    let (questions, answers) = (count(4)?, count(6)?);
    let mut pos = 12;
    for _ in 0..questions {
        pos = read_name(msg, pos, None)? + 4;
    }
    let mut targets = Vec::with_capacity(answers);
    for _ in 0..answers {
        pos = read_name(msg, pos, None)?;
        let rtype = count(pos)?;
        let rdlen = count(pos + 8)?;
        let rdata = pos + 10;
        if rtype == 33 {
            let port = u16::try_from(count(rdata + 4)?).ok()?;
            let mut target = Vec::new();
            read_name(msg, rdata + 6, Some(&mut target))?;
            targets.push((port, target));
        }
        pos = rdata + rdlen;
    }
    targets.sort_unstable();
    Some(targets)
}

/// Reads the name at `pos` (following compression pointers, at most 64),
/// appending its labels in lower case to `out`; returns the position after
/// the name where it started.
fn read_name(msg: &[u8], mut pos: usize, mut out: Option<&mut Vec<u8>>) -> Option<usize> {
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(pos)?;
        match len {
            0 => return Some(end.unwrap_or(pos + 1)),
            l if l & 0xc0 == 0xc0 => {
                end.get_or_insert(pos + 2);
                pos = usize::from(u16::from_be_bytes([l & 0x3f, *msg.get(pos + 1)?]));
            }
            l => {
                let label = msg.get(pos..pos + 1 + usize::from(l))?;
                if let Some(out) = out.as_deref_mut() {
                    out.extend(label.iter().map(u8::to_ascii_lowercase));
                }
                pos += 1 + usize::from(l);
            }
        }
    }
    None
}

pub(super) fn decode(bytes: &[u8]) -> Result<Message, LookupFailure> {
    Message::from_vec(bytes).map_err(|e| LookupFailure(format!("undecodable answer: {e}")))
}

/// The TC bit, read straight from the header.
pub(super) fn truncated(bytes: &[u8]) -> bool {
    bytes.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

/// The SOA serial of a DNS answer (RFC 1035 3.3.13), read straight off the
/// wire: the first SOA record in the answer section or, for a name below
/// the zone's apex (NODATA or NXDOMAIN), in the authority section (RFC 2308
/// 3). `None` if there is none or the message does not parse.
pub(super) fn soa_serial(msg: &[u8]) -> Option<u32> {
    let count = |at: usize| {
        Some(usize::from(u16::from_be_bytes([
            *msg.get(at)?,
            *msg.get(at + 1)?,
        ])))
    };
    let (questions, records) = (count(4)?, count(6)? + count(8)?);
    let mut pos = 12;
    for _ in 0..questions {
        pos = read_name(msg, pos, None)? + 4;
    }
    for _ in 0..records {
        pos = read_name(msg, pos, None)?;
        let rtype = count(pos)?;
        let rdlen = count(pos + 8)?;
        let rdata = pos + 10;
        if rtype == 6 {
            // MNAME and RNAME, then SERIAL.
            let after = read_name(msg, read_name(msg, rdata, None)?, None)?;
            let serial = msg.get(after..after + 4)?;
            return Some(u32::from_be_bytes([
                serial[0], serial[1], serial[2], serial[3],
            ]));
        }
        pos = rdata + rdlen;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::SRV;
    use hickory_resolver::proto::rr::RData;
    use hickory_resolver::proto::rr::Record;

    /// A bare answer to `query`: its id, QR set, NOERROR, no records.
    fn reply(query: &[u8], id_offset: u16) -> Vec<u8> {
        let id = u16::from_be_bytes([query[0], query[1]]).wrapping_add(id_offset);
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&[0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0]);
        out
    }

    /// A late answer (another question's id) cuts the socket's receive
    /// timeout to what is left of this question's; the next question on
    /// the same socket has the whole timeout again. Loopback, ~1.3 s.
    #[test]
    fn a_late_answer_does_not_shorten_the_next_questions_timeout() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = server.local_addr().expect("addr");
        let serve = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            // First question: a stray answer at 0.9 s, the real one just after.
            let (n, from) = server.recv_from(&mut buf).expect("first question");
            std::thread::sleep(Duration::from_millis(900));
            server.send_to(&reply(&buf[..n], 1), from).expect("send");
            server.send_to(&reply(&buf[..n], 0), from).expect("send");
            // Second question: answered after 0.3 s, within the 1 s timeout.
            let (n, from) = server.recv_from(&mut buf).expect("second question");
            std::thread::sleep(Duration::from_millis(300));
            server.send_to(&reply(&buf[..n], 0), from).expect("send");
        });
        let mut client = Client::new(vec![addr], Duration::from_secs(1));
        let name = Name::from_ascii("cluster.local.").expect("name");
        let mut soa = Question::new(name, RecordType::SOA).expect("question");
        assert!(client.query_udp(&mut soa).is_ok());
        let second = client.query_udp(&mut soa).map(<[u8]>::len);
        assert!(second.is_ok(), "{:?}", second.err().map(|e| e.0));
        serve.join().expect("server thread");
    }

    /// A question is encoded once: every ask sends the same bytes but the
    /// ID, which is fresh each time, and the answer comes back as sent.
    #[test]
    fn each_ask_sends_the_built_question_under_a_fresh_id() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let addr = server.local_addr().expect("addr");
        let serve = std::thread::spawn(move || {
            let mut asked = Vec::new();
            let mut buf = [0u8; 512];
            for _ in 0..3 {
                let (n, from) = server.recv_from(&mut buf).expect("question");
                asked.push(buf[..n].to_vec());
                server.send_to(&reply(&buf[..n], 0), from).expect("send");
            }
            asked
        });
        let mut client = Client::new(vec![addr], Duration::from_secs(1));
        let name = Name::from_ascii("nginx.default.svc.cluster.local.").expect("name");
        let mut srv = Question::new(name.clone(), RecordType::SRV).expect("question");
        for _ in 0..3 {
            let answer = client.query(&mut srv).expect("answer").to_vec();
            assert_eq!(answer.len(), 12, "the bare reply, as the server sent it");
        }
        let asked = serve.join().expect("server thread");
        assert!(asked.iter().all(|q| q[2..] == asked[0][2..]), "{asked:?}");
        assert!(
            asked.iter().any(|q| q[..2] != asked[0][..2]),
            "three asks, one ID: {asked:?}"
        );
        let decoded = Message::from_vec(&asked[2]).expect("a DNS message");
        assert_eq!(decoded.queries.len(), 1);
        assert_eq!(decoded.queries[0].name(), &name);
        assert_eq!(decoded.queries[0].query_type(), RecordType::SRV);
        assert!(decoded.metadata.recursion_desired);
        assert_eq!(
            decoded.edns.as_ref().map(Edns::max_payload),
            Some(EDNS_PAYLOAD)
        );
    }

    fn answer(targets: &[(&str, u16)]) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        let owner = Name::from_ascii("nginx.default.svc.cluster.local.").unwrap();
        m.add_query(Query::query(owner.clone(), RecordType::SRV));
        for (target, port) in targets {
            let srv = SRV::new(0, 50, *port, Name::from_ascii(target).unwrap());
            m.answers
                .push(Record::from_rdata(owner.clone(), 30, RData::SRV(srv)));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn srv_targets_ignore_order_and_case_but_not_content() {
        let a = srv_targets(&answer(&[
            ("web-0.nginx.default.svc.cluster.local.", 80),
            ("web-1.nginx.default.svc.cluster.local.", 80),
        ]));
        let b = srv_targets(&answer(&[
            ("WEB-1.nginx.default.svc.cluster.local.", 80),
            ("web-0.nginx.default.svc.cluster.local.", 80),
        ]));
        let c = srv_targets(&answer(&[
            ("web-0.nginx.default.svc.cluster.local.", 80),
            ("web-2.nginx.default.svc.cluster.local.", 80),
        ]));
        let d = srv_targets(&answer(&[
            ("web-0.nginx.default.svc.cluster.local.", 80),
            ("web-1.nginx.default.svc.cluster.local.", 81),
        ]));
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.unwrap().len(), 2);
        assert_eq!(srv_targets(&[0u8; 5]), None);
    }

    fn soa_record(serial: u32) -> Record {
        use hickory_resolver::proto::rr::rdata::SOA;
        let zone = Name::from_ascii("cluster.local.").unwrap();
        let soa = SOA::new(
            Name::from_ascii("ns.dns.cluster.local.").unwrap(),
            Name::from_ascii("hostmaster.cluster.local.").unwrap(),
            serial,
            7200,
            1800,
            86400,
            30,
        );
        Record::from_rdata(zone, 30, RData::SOA(soa))
    }

    #[test]
    fn soa_serial_comes_from_the_answer_or_the_authority_section() {
        let mut at_apex = Message::new(7, MessageType::Response, OpCode::Query);
        at_apex.add_query(Query::query(
            Name::from_ascii("cluster.local.").unwrap(),
            RecordType::SOA,
        ));
        at_apex.answers.push(soa_record(1_700_000_000));
        assert_eq!(soa_serial(&at_apex.to_vec().unwrap()), Some(1_700_000_000));

        let mut below = Message::new(7, MessageType::Response, OpCode::Query);
        below.add_query(Query::query(
            Name::from_ascii("nginx.default.svc.cluster.local.").unwrap(),
            RecordType::SOA,
        ));
        below.authorities.push(soa_record(42));
        assert_eq!(soa_serial(&below.to_vec().unwrap()), Some(42));

        assert_eq!(soa_serial(&answer(&[("web-0.x.", 80)])), None);
        assert_eq!(soa_serial(&[0u8; 3]), None);
    }
}
