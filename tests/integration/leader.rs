//! Leadership you can trust (issue 10), with real parts: an in-process DNS
//! server serving the headless Service and its ready-only twin
//! (`nginx-ready`), three or more `peerplate run` processes, each on its own
//! loopback address (127.0.0.10, .11, ... standing for pod IPs; the DNS
//! server's A records map `web-N` to them) with the same admin port, asking
//! each other `GET /leader`; real `redis-server` instances for `probe`, with
//! a small HTTP role endpoint in front of each (200 for a master).
//!
//! Issue 20: a leader's SIGTERM names its successor everywhere within
//! seconds although `grace` is 30 s (the DNS server keeps the old leader
//! ready, so only the resignation can hand over); a follower's SIGTERM and a
//! forged `POST /leader/resign` change nothing, nor hide a real resignation
//! right after it; a leader stopping right after its predecessor never
//! hands back to it; a told peer that hangs does not hide the one that
//! accepted in the resignation's counts; a restart with no peer
//! answering follows the leader in the state file, with the WARN; `probe`
//! against tiny role endpoints (a status per pod, set by the test) keeps a
//! confirmed leader through a failover longer than 3x grace, adopts a new
//! claimant, and at a start with two claimants follows the one the peers
//! name.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dns_server::{DnsServer, Mode};
use crate::helpers::{
    find_program, free_port_on, http_get_at, poll_until, require_component, run, Daemon, Sandbox,
};

const WAIT: Duration = Duration::from_secs(10);

/// `web-K` lives at 127.0.0.(10+K).
fn ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + u8::try_from(k).expect("small k"))
}

fn host(k: usize) -> String {
    format!("web-{k}")
}

fn fqdn(k: usize) -> String {
    format!("web-{k}.nginx.default.svc.cluster.local")
}

/// What every member renders: who it thinks leads, and whether it is it.
const TEMPLATE: &str = "leader={{ leader.hostname if leader else 'none' }} me={{ pod.is_leader }}\n{% for p in peers %}{{ p.hostname }} ready={{ p.ready }} is_leader={{ p.is_leader }}\n{% endfor %}";

/// One pod: its own sandbox, config and `peerplate run` process.
struct Member {
    k: usize,
    sb: Sandbox,
    config: PathBuf,
    port: u16,
    daemon: Option<Daemon>,
    /// A daemon stopped with [`Member::sigterm`], kept for its logs.
    gone: Option<Daemon>,
}

impl Member {
    /// `leader` is the YAML of the `leader:` section's body.
    fn new(k: usize, nameserver: &str, port: u16, leader: &str) -> Member {
        let sb = Sandbox::new();
        sb.write("t.j2", TEMPLATE);
        let config = sb.write(
            "peerplate.yaml",
            &format!(
                "identity: {{hostname: {h}, namespace: default}}\npeers:\n  dns:\n    service: nginx\n    ready_service: nginx-ready\n    cluster_domain: cluster.local\n    nameservers: [\"{nameserver}\"]\n    interval: 100ms\ntemplates:\n  - {{source: t.j2, destination: out.txt}}\nhooks:\n  on_leader_change: \"cat >> leader-hook.txt\"\n  on_change: \"cat > /dev/null; echo run >> change-hook.txt\"\n  timeout: 5s\nhttp: {{listen: \"{ip}:{port}\"}}\nleader:\n{leader}",
                h = host(k),
                ip = ip(k),
            ),
        );
        Member {
            k,
            sb,
            config,
            port,
            daemon: None,
            gone: None,
        }
    }

    /// SIGTERM, as kubelet sends it; the exit status and how long the exit
    /// took. The logs stay readable.
    fn sigterm(&mut self) -> (std::process::ExitStatus, Duration) {
        let mut d = self.daemon.take().expect("running");
        let stopped = d.stop_with(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(5));
        self.gone = Some(d);
        stopped
    }

    /// SIGTERM without waiting for the exit (two pods stopping at nearly
    /// the same moment, as a rolling update or a scale-down does).
    fn sigterm_nowait(&mut self) {
        let d = self.daemon.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(d.pid()).expect("pid fits i32"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
        self.gone = Some(d);
    }

    /// The state file (`state:` defaults to beside the output).
    fn state_file(&self) -> serde_json::Value {
        let text = fs::read_to_string(self.sb.join(".peerplate-state.json")).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_default()
    }

    fn start(&mut self) {
        self.start_as(&format!("uid-web-{}", self.k));
    }

    /// Starts the pod's sidecar with `POD_UID` (a new pod has a new one).
    fn start_as(&mut self, pod_uid: &str) {
        let mut cmd = self
            .sb
            .peerplate(["--config", &self.config.display().to_string(), "run"]);
        cmd.env("POD_UID", pod_uid);
        self.daemon = Some(Daemon::spawn(cmd));
    }

    fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.terminate();
        }
    }

    fn output(&self) -> String {
        fs::read_to_string(self.sb.join("out.txt")).unwrap_or_default()
    }

    /// The first line of the output: `leader=web-N me=true|false`.
    fn verdict(&self) -> String {
        self.output().lines().next().unwrap_or_default().to_string()
    }

    fn leader_hook(&self) -> String {
        fs::read_to_string(self.sb.join("leader-hook.txt")).unwrap_or_default()
    }

    fn change_hook_runs(&self) -> usize {
        fs::read_to_string(self.sb.join("change-hook.txt"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn get(&self, path: &str) -> String {
        http_get_at(ip(self.k), self.port, path)
            .map(|r| r.body)
            .unwrap_or_default()
    }

    fn logs(&self) -> String {
        self.daemon
            .as_ref()
            .or(self.gone.as_ref())
            .map(Daemon::logs)
            .unwrap_or_default()
    }

    fn count_log(&self, text: &str) -> usize {
        self.logs().lines().filter(|l| l.contains(text)).count()
    }
}

/// How minijinja prints a boolean (Jinja2's way).
fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

/// The value of a sample in a metrics scrape (`name{labels} value`).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A set of `n` members sharing one DNS server.
struct Set {
    dns: DnsServer,
    members: Vec<Member>,
}

impl Set {
    fn new(n: usize, leader: &str) -> Set {
        let dns = DnsServer::start("cluster.local");
        let names: Vec<String> = (0..n).map(host).collect();
        let pods: Vec<(&str, Ipv4Addr)> = names
            .iter()
            .enumerate()
            .map(|(k, h)| (h.as_str(), ip(k)))
            .collect();
        dns.set_pod_ips(&pods);
        let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
        dns.set_ready(&hosts);
        let ips: Vec<String> = (0..n).map(|k| ip(k).to_string()).collect();
        let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
        let port = free_port_on(&ip_refs);
        let members = (0..n)
            .map(|k| Member::new(k, &dns.nameserver(), port, leader))
            .collect();
        Set { dns, members }
    }

    fn start_all(&mut self) {
        for m in &mut self.members {
            m.start();
        }
    }

    fn set_ready(&self, ready: &[usize]) {
        let names: Vec<String> = ready.iter().map(|k| host(*k)).collect();
        let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
        self.dns.set_ready(&hosts);
    }

    /// Waits until every running member renders `leader=web-L`; returns how
    /// long that took.
    fn wait_all_follow(&self, l: usize, within: Duration) -> Duration {
        let started = Instant::now();
        let ok = poll_until(within, || {
            self.members
                .iter()
                .filter(|m| m.daemon.is_some())
                .all(|m| m.verdict() == format!("leader=web-{l} me={}", py_bool(m.k == l)))
        });
        assert!(ok, "not every member follows web-{l}:\n{}", self.dump());
        started.elapsed()
    }

    fn dump(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- web-{} output:\n{}--- logs:\n{}",
                    m.k,
                    m.output(),
                    m.logs()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The YAML body of `leader:` for sticky with a short grace.
const STICKY: &str = "  policy: sticky\n  grace: 1s\n";

#[test]
fn sticky_cold_start_web_0_leads() {
    let mut set = Set::new(3, STICKY);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    let m = &set.members[1];
    assert_eq!(
        m.output(),
        "leader=web-0 me=False\nweb-0 ready=True is_leader=True\nweb-1 ready=True is_leader=False\nweb-2 ready=True is_leader=False\n"
    );
    // Every pod tells the same, as JSON.
    for m in &set.members {
        let json: serde_json::Value =
            serde_json::from_str(&m.get("/leader")).expect("GET /leader is JSON");
        assert_eq!(json["leader"], fqdn(0), "{json}");
        assert_eq!(json["policy"], "sticky", "{json}");
        assert!(
            json["since"].as_str().is_some_and(|s| s.ends_with('Z')),
            "{json}"
        );
    }
    // The hook got the first choice; the metrics say who leads.
    assert!(
        poll_until(WAIT, || set.members[2].leader_hook()
            == format!("{}\n", fqdn(0))),
        "{}",
        set.dump()
    );
    let scrape = set.members[0].get("/metrics");
    assert_eq!(
        metric(&scrape, "peerplate_is_leader"),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        metric(&scrape, "peerplate_leader_changes_total"),
        Some(1.0),
        "{scrape}"
    );
    let scrape = set.members[1].get("/metrics");
    assert_eq!(
        metric(&scrape, "peerplate_is_leader"),
        Some(0.0),
        "{scrape}"
    );
}

#[test]
fn sticky_leader_gone_past_grace_hands_over_and_nobody_flips_back() {
    let mut set = Set::new(3, STICKY);
    set.start_all();
    set.wait_all_follow(0, WAIT);

    // A leader missing for less than grace: no change anywhere.
    set.set_ready(&[1, 2]);
    std::thread::sleep(Duration::from_millis(500));
    set.set_ready(&[0, 1, 2]);
    std::thread::sleep(Duration::from_millis(1200));
    for m in &set.members {
        assert_eq!(
            m.verdict(),
            format!("leader=web-0 me={}", py_bool(m.k == 0)),
            "{}",
            set.dump()
        );
        assert_eq!(m.count_log("leader changed"), 1, "{}", m.logs());
    }

    // web-0 out of the ready set for longer than grace: web-1 takes over.
    set.set_ready(&[1, 2]);
    set.wait_all_follow(1, WAIT);
    let line = set.members[2]
        .logs()
        .lines()
        .find(|l| l.contains("leader changed") && l.contains("new=\"web-1"))
        .map(String::from)
        .unwrap_or_default();
    assert!(line.contains(&format!("old=\"{}\"", fqdn(0))), "{line}");
    assert!(line.contains("has been not ready for"), "{line}");
    assert!(line.contains("(leader.grace 1s)"), "{line}");

    // web-0 ready again: nobody flips back, web-0 follows web-1.
    set.set_ready(&[0, 1, 2]);
    std::thread::sleep(Duration::from_millis(2500));
    set.wait_all_follow(1, Duration::from_millis(100));
    assert_eq!(
        set.members[0].output(),
        "leader=web-1 me=False\nweb-0 ready=True is_leader=False\nweb-1 ready=True is_leader=True\nweb-2 ready=True is_leader=False\n"
    );

    // A restarted web-0 (fresh state) also follows web-1: its peers say so.
    set.members[0].stop();
    fs::remove_file(set.members[0].sb.join("out.txt")).expect("remove output");
    set.members[0].start();
    set.wait_all_follow(1, WAIT);
    let restarted = set.members[0].logs();
    assert!(
        restarted.lines().any(|l| l.contains("leader changed")
            && l.contains("new=\"web-1")
            && l.contains("named")),
        "{restarted}"
    );
    assert!(
        !restarted
            .lines()
            .any(|l| l.contains("leader changed") && l.contains("new=\"web-0")),
        "a restarted web-0 never names itself: {restarted}"
    );
    // The hooks and metrics of web-2 tell the story: web-0, then web-1.
    assert_eq!(
        set.members[2].leader_hook(),
        format!("{}\n{}\n", fqdn(0), fqdn(1))
    );
    let scrape = set.members[1].get("/metrics");
    assert_eq!(
        metric(&scrape, "peerplate_is_leader"),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        metric(&scrape, "peerplate_leader_changes_total"),
        Some(2.0),
        "{scrape}"
    );
    for m in &mut set.members {
        m.stop();
    }
}

#[test]
fn partial_sets_are_held_no_output_change_no_hook() {
    let mut set = Set::new(3, STICKY);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    let m = &set.members[1];
    assert!(
        poll_until(WAIT, || m.change_hook_runs() == 1),
        "{}",
        m.logs()
    );
    let before = m.output();
    let polls = set.dns.queries_of(hickory_proto::rr::RecordType::SRV);

    // The SRV set emptied for a few intervals, then back.
    set.dns.set_pod_ips(&[]);
    assert!(poll_until(WAIT, || set
        .dns
        .queries_of(hickory_proto::rr::RecordType::SRV)
        > polls + 30));
    for m in &set.members {
        assert_eq!(
            m.count_log("holding back a partial peer set"),
            1,
            "{}",
            m.logs()
        );
    }
    let pods: Vec<(String, Ipv4Addr)> = (0..3).map(|k| (host(k), ip(k))).collect();
    let pods: Vec<(&str, Ipv4Addr)> = pods.iter().map(|(h, i)| (h.as_str(), *i)).collect();
    set.dns.set_pod_ips(&pods);
    assert!(
        poll_until(WAIT, || set.members[1].count_log("no longer holding") == 1),
        "{}",
        set.members[1].logs()
    );
    let m = &set.members[1];
    assert_eq!(m.output(), before);
    assert_eq!(
        m.change_hook_runs(),
        1,
        "no hook ran for a partial set\n{}",
        m.logs()
    );
    assert_eq!(m.count_log("leader changed"), 1, "{}", m.logs());

    // This pod alone missing from the set: held the same way.
    let others: Vec<(&str, Ipv4Addr)> = pods
        .iter()
        .filter(|(h, _)| *h != "web-1")
        .copied()
        .collect();
    set.dns.set_pod_ips(&others);
    assert!(poll_until(WAIT, || set.members[1]
        .count_log("holding back a partial peer set")
        == 2));
    set.dns.set_pod_ips(&pods);
    assert!(poll_until(WAIT, || set.members[1]
        .count_log("no longer holding")
        == 2));
    let m = &set.members[1];
    assert_eq!(m.output(), before);
    assert_eq!(m.change_hook_runs(), 1, "{}", m.logs());
    let scrape = m.get("/metrics");
    assert_eq!(
        metric(
            &scrape,
            "peerplate_peer_sets_held_total{reason=\"self_missing\"}"
        ),
        Some(2.0),
        "{scrape}"
    );
}

#[test]
fn a_pod_cut_off_from_dns_converges_and_an_old_leader_does_not_take_back() {
    // web-0 (the first leader) asks its own DNS server, which we silence
    // while the others see it leave the ready set: web-0 keeps thinking it
    // leads; when its lookups work again it asks, and follows web-1.
    let mut set = Set::new(3, STICKY);
    let own = DnsServer::start("cluster.local");
    let pods: Vec<(&str, Ipv4Addr)> = vec![("web-0", ip(0)), ("web-1", ip(1)), ("web-2", ip(2))];
    own.set_pod_ips(&pods);
    own.set_ready(&["web-0", "web-1", "web-2"]);
    let port = set.members[0].port;
    set.members[0] = Member::new(0, &own.nameserver(), port, STICKY);
    set.start_all();
    set.wait_all_follow(0, WAIT);

    own.set_mode(Mode::Drop);
    set.set_ready(&[1, 2]);
    let ok = poll_until(WAIT, || {
        set.members[1].verdict() == "leader=web-1 me=True"
            && set.members[2].verdict() == "leader=web-1 me=False"
    });
    assert!(ok, "{}", set.dump());
    assert_eq!(
        set.members[0].verdict(),
        "leader=web-0 me=True",
        "cut off, it still thinks it leads"
    );
    // The others ask every grace; web-0's own claim is outvoted.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        set.members[2].verdict(),
        "leader=web-1 me=False",
        "{}",
        set.dump()
    );

    // web-0 back in the ready set and its lookups work again.
    set.set_ready(&[0, 1, 2]);
    own.set_mode(Mode::Normal);
    set.wait_all_follow(1, Duration::from_secs(5));
    let line = set.members[0]
        .logs()
        .lines()
        .find(|l| l.contains("leader changed") && l.contains("new=\"web-1"))
        .map(String::from)
        .unwrap_or_default();
    assert!(line.contains("named"), "{line}");
    for m in &mut set.members {
        m.stop();
    }
}

#[test]
fn sticky_keeps_its_leader_while_no_peer_is_ready() {
    let mut set = Set::new(3, STICKY);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    // The whole ready set empties (a shared dependency failing every
    // readiness probe) for well past grace: nobody can take over.
    set.set_ready(&[]);
    assert!(poll_until(WAIT, || set.members[1]
        .output()
        .contains("web-0 ready=False")));
    std::thread::sleep(Duration::from_millis(2500));
    for m in &set.members {
        assert_eq!(
            m.verdict(),
            format!("leader=web-0 me={}", py_bool(m.k == 0)),
            "{}",
            set.dump()
        );
        assert_eq!(m.count_log("leader changed"), 1, "{}", m.logs());
    }
    // web-1 and web-2 ready again, web-0 not: the first ready peer takes over.
    set.set_ready(&[1, 2]);
    set.wait_all_follow(1, WAIT);
    for m in &mut set.members {
        m.stop();
    }
}

#[test]
fn ordinal_is_peer_0_whatever_its_readiness() {
    let mut set = Set::new(3, "  policy: ordinal\n");
    // ordinal asks nobody; http.listen stays as configured.
    set.start_all();
    set.wait_all_follow(0, WAIT);
    set.set_ready(&[1, 2]);
    assert!(poll_until(WAIT, || set.members[1]
        .output()
        .contains("web-0 ready=False")));
    assert_eq!(set.members[1].verdict(), "leader=web-0 me=False");
}

// --- probe: real redis-server, a role endpoint in front of each -------------

/// A redis-server on `ip:port`, optionally a replica of `of`.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(ip: Ipv4Addr, port: u16, of: Option<(Ipv4Addr, u16)>, dir: &std::path::Path) -> Redis {
    let bin = find_program("redis-server").expect("redis-server");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--bind",
        &ip.to_string(),
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]);
    if let Some((mip, mport)) = of {
        cmd.args(["--replicaof", &mip.to_string(), &mport.to_string()]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis");
    let up = poll_until(WAIT, || {
        redis_cmd(ip, port, "PING").is_some_and(|r| r.contains("PONG"))
    });
    assert!(up, "redis on {ip}:{port} did not start");
    Redis(child)
}

/// Sends one inline command, returns the raw reply.
fn redis_cmd(ip: Ipv4Addr, port: u16, command: &str) -> Option<String> {
    let mut s = TcpStream::connect((ip, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(s, "{command}\r\n").ok()?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// An HTTP endpoint on `ip:port` that answers 200 while the redis at
/// `redis` says its role is master, else 503 (Patroni's `/primary` idea).
struct RoleEndpoint {
    stop: Arc<AtomicBool>,
}

impl Drop for RoleEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn role_endpoint(ip: Ipv4Addr, port: u16, redis_port: u16) -> RoleEndpoint {
    let listener = TcpListener::bind((ip, port)).expect("bind role endpoint");
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf);
                    let master =
                        redis_cmd(ip, redis_port, "ROLE").is_some_and(|r| r.contains("master"));
                    let status = if master {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    RoleEndpoint { stop }
}

#[test]
fn probe_follows_the_app_whatever_the_ordinal() {
    if !require_component("redis-server") {
        return;
    }
    let ips: Vec<String> = (0..3).map(|k| ip(k).to_string()).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let redis_port = free_port_on(&ip_refs);
    let role_port = free_port_on(&ip_refs);
    let data = Sandbox::new();
    // web-1 is the primary; web-0 and web-2 replicate it.
    let primary = (ip(1), redis_port);
    let _r0 = redis(ip(0), redis_port, Some(primary), &data.mkdir("r0"));
    let _r1 = redis(ip(1), redis_port, None, &data.mkdir("r1"));
    let _r2 = redis(ip(2), redis_port, Some(primary), &data.mkdir("r2"));
    let _roles: Vec<RoleEndpoint> = (0..3)
        .map(|k| role_endpoint(ip(k), role_port, redis_port))
        .collect();

    let probe = format!(
        "  policy: probe\n  grace: 1s\n  probe:\n    url: \"http://{{peer}}:{role_port}/primary\"\n    timeout: 500ms\n    interval: 300ms\n"
    );
    let mut set = Set::new(3, &probe);
    set.start_all();
    set.wait_all_follow(1, WAIT);

    // Promote web-2 by hand: web-1 steps down first, then web-2 takes over.
    redis_cmd(
        ip(1),
        redis_port,
        &format!("REPLICAOF {} {redis_port}", ip(2)),
    )
    .expect("step down");
    redis_cmd(ip(2), redis_port, "REPLICAOF NO ONE").expect("promote");
    redis_cmd(
        ip(0),
        redis_port,
        &format!("REPLICAOF {} {redis_port}", ip(2)),
    )
    .expect("follow");
    // Within the probe interval plus one DNS interval (with slack for a
    // loaded machine; the benchmark measures it).
    let took = set.wait_all_follow(2, Duration::from_secs(5));
    eprintln!("promotion seen by every pod after {took:?}");
    let line = set.members[0]
        .logs()
        .lines()
        .find(|l| l.contains("leader changed") && l.contains("new=\"web-2"))
        .map(String::from)
        .unwrap_or_default();
    assert!(line.contains("answers 2xx"), "{line}");
    let json: serde_json::Value =
        serde_json::from_str(&set.members[0].get("/leader")).expect("json");
    assert_eq!(json["leader"], fqdn(2));
    assert_eq!(json["policy"], "probe");
}

// --- configuration and the template author's tools ------------------------

#[test]
fn sticky_config_errors_name_the_fix() {
    let sb = Sandbox::new();
    sb.write("t.j2", "x\n");
    let cases = [
        (
            "loopback",
            "identity: {hostname: web-0}\npeers:\n  dns: {service: nginx, nameservers: [\"127.0.0.1:53\"]}\ntemplates:\n  - {source: t.j2, destination: out.txt}\nhttp:\n  listen: \"127.0.0.1:9090\"\nleader: {policy: sticky}\n",
        ),
        (
            "static_source",
            "identity: {hostname: web-0}\npeers:\n  static: [web-0.x, web-1.x]\nleader:\n  policy: sticky\n",
        ),
        (
            "probe_without_peer",
            "identity: {hostname: web-0}\npeers:\n  dns: {service: nginx, nameservers: [\"127.0.0.1:53\"]}\nleader:\n  policy: probe\n  probe:\n    url: \"http://db:8008/primary\"\n",
        ),
        (
            "unknown_policy",
            "identity: {hostname: web-0}\nleader:\n  policy: first\n",
        ),
        (
            "flow_style_grace",
            "identity: {hostname: web-0}\npeers:\n  dns: {service: nginx, nameservers: [\"127.0.0.1:53\"]}\nhttp: {listen: \"0.0.0.0:9090\"}\nleader: {policy: sticky, grace: 0s}\n",
        ),
        (
            "probe_fallback_unknown",
            "identity: {hostname: web-0}\npeers:\n  dns: {service: nginx, nameservers: [\"127.0.0.1:53\"]}\nhttp: {listen: \"0.0.0.0:9090\"}\nleader:\n  policy: probe\n  probe:\n    url: \"http://{peer}:8008/primary\"\n    fallback: first\n",
        ),
        (
            "port_0",
            "identity: {hostname: web-0}\npeers:\n  dns: {service: nginx, nameservers: [\"127.0.0.1:53\"]}\nhttp:\n  listen: \"0.0.0.0:0\"\nleader: {policy: sticky}\n",
        ),
    ];
    for (name, yaml) in cases {
        sb.write("peerplate.yaml", yaml);
        let out = run(&mut sb.peerplate(["--config", "peerplate.yaml", "check"]));
        assert_eq!(out.code, Some(2), "{name}: {}", out.dump());
        insta::assert_snapshot!(format!("sticky_config_{name}"), sb.redact(&out.stderr));
    }
    // sticky without http.listen: `check` and `once` accept it, `run` says why not.
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-0}\npeers:\n  dns: {service: nginx, nameservers: [\"127.0.0.1:9\"]}\ntemplates:\n  - {source: t.j2, destination: out.txt}\nleader: {policy: sticky}\n",
    );
    let out = run(&mut sb.peerplate(["--config", "peerplate.yaml", "check"]));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stderr.contains("`run` would refuse this config"),
        "{}",
        out.dump()
    );
    // `check --strict` fails on what `run` refuses.
    let out = run(&mut sb.peerplate(["--config", "peerplate.yaml", "check", "--strict"]));
    assert_eq!(out.code, Some(2), "{}", out.dump());
    insta::assert_snapshot!(
        "sticky_check_strict_without_http",
        crate::helpers::redact_timestamps(&sb.redact(&out.stderr))
    );
    let out = run(&mut sb.peerplate(["--config", "peerplate.yaml", "run"]));
    assert_eq!(out.code, Some(2), "{}", out.dump());
    insta::assert_snapshot!("sticky_run_without_http", sb.redact(&out.stderr));
}

#[test]
fn render_tries_every_leader_case_without_a_cluster() {
    let sb = Sandbox::new();
    sb.write("t.j2", TEMPLATE);
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\ntemplates:\n  - {source: t.j2, destination: out.txt}\nleader: {policy: ordinal}\n",
    );
    let peers = [
        "--peer",
        "web-0.nginx",
        "--peer",
        "web-1.nginx",
        "--peer",
        "web-2.nginx",
    ];
    let render = |extra: &[&str]| {
        let mut args = vec!["--config", "peerplate.yaml", "render"];
        args.extend(peers);
        args.extend(extra);
        let out = run(&mut sb.peerplate(args));
        assert_eq!(out.code, Some(0), "{}", out.dump());
        out.stdout
    };
    assert_eq!(
        render(&[]),
        "leader=web-0 me=False\nweb-0 ready=True is_leader=True\nweb-1 ready=True is_leader=False\nweb-2 ready=True is_leader=False\n"
    );
    assert_eq!(
        render(&["--leader", "web-1", "--not-ready", "web-0"]),
        "leader=web-1 me=True\nweb-0 ready=False is_leader=False\nweb-1 ready=True is_leader=True\nweb-2 ready=True is_leader=False\n"
    );
    let out = run(&mut sb.peerplate([
        "--config",
        "peerplate.yaml",
        "render",
        "--peer",
        "web-0.nginx",
        "--peer",
        "web-1.nginx",
        "--leader",
        "web-7",
    ]));
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert_eq!(
        out.stderr,
        "error: --leader web-7: no such peer; the peers are: web-0.nginx, web-1.nginx\n"
    );
}

#[test]
fn once_with_sticky_asks_the_peers_before_it_renders() {
    let mut set = Set::new(3, STICKY);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    set.set_ready(&[1, 2]);
    set.wait_all_follow(1, WAIT);
    set.set_ready(&[0, 1, 2]);
    // An init container of web-0 (fresh state) with the same config: it asks
    // web-1 and web-2 on their admin port and follows web-1; its
    // on_leader_change gets web-1 too.
    set.members[0].stop();
    let m = &set.members[0];
    let out = run(&mut m
        .sb
        .peerplate(["--config", &m.config.display().to_string(), "once"]));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(m.verdict(), "leader=web-1 me=False", "{}", out.dump());
    assert!(out.stderr.contains("asked 2 peer(s)"), "{}", out.dump());
    // One decision, after asking: no rule-based pick logged before it.
    let decisions = out
        .stderr
        .lines()
        .filter(|l| l.contains("leader changed"))
        .count();
    assert_eq!(decisions, 1, "{}", out.dump());
    assert!(
        m.leader_hook().ends_with(&format!("{}\n", fqdn(1))),
        "{}",
        m.leader_hook()
    );
}

// --- issue 20: resign on shutdown, remember across restarts -----------------

/// `sticky` with the default grace: only a resignation can hand over fast.
const STICKY_30S: &str = "  policy: sticky\n  grace: 30s\n";

/// `POST path` with `body` to `ip:port`: the status and the body.
fn post(ip: Ipv4Addr, port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect((ip, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

/// SIGTERMs member `k` (a resigning leader) and asserts it exits 0 within
/// `bound`; returns how long it took.
fn stop_leader(set: &mut Set, k: usize, bound: Duration) -> Duration {
    let (status, took) = set.members[k].sigterm();
    assert!(status.success(), "{status}\n{}", set.members[k].logs());
    assert!(
        took < bound,
        "shutdown took {took:?}\n{}",
        set.members[k].logs()
    );
    took
}

/// Asserts member `k` logged its resignation on one line holding every
/// one of `words` (the successor, the fan-out's counts).
fn assert_resigned(set: &Set, k: usize, words: &[&str]) {
    let logs = set.members[k].logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("resigned:") && words.iter().all(|w| l.contains(w))),
        "{logs}"
    );
}

#[test]
fn sticky_leader_sigterm_names_its_successor_everywhere_at_once() {
    let mut set = Set::new(3, STICKY_30S);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    // The DNS server keeps web-0 in the ready set: without the resignation
    // nobody would ever hand over; with it, well within the 30 s grace.
    stop_leader(&mut set, 0, Duration::from_secs(2));
    set.wait_all_follow(1, Duration::from_secs(10));
    assert_resigned(&set, 0, &[&format!("successor={}", fqdn(1)), "accepted=2"]);
    let line = set.members[2]
        .logs()
        .lines()
        .find(|l| l.contains("leader changed") && l.contains("new=\"web-1"))
        .map(String::from)
        .unwrap_or_default();
    assert!(
        line.contains(&format!(
            "why={} resigned and named {} (confirmed at its GET /leader)",
            fqdn(0),
            fqdn(1)
        )),
        "{line}"
    );
    // The resigning pod remembers its successor, never itself.
    assert_eq!(set.members[0].state_file()["leader"]["name"], fqdn(1));
    assert_eq!(set.members[2].state_file()["leader"]["name"], fqdn(1));
    // The hook runs after the output is installed: wait for it.
    let hooked = format!("{}\n{}\n", fqdn(0), fqdn(1));
    assert!(
        poll_until(WAIT, || set.members[2].leader_hook() == hooked),
        "{}",
        set.members[2].leader_hook()
    );
    // web-0 comes back as a new pod (Kubernetes took the stopped one out
    // of the ready set meanwhile) and follows web-1; then web-1 is
    // stopped: web-0, the first ready peer, succeeds it.
    set.set_ready(&[1, 2]);
    let seen = |set: &Set, ready: bool| {
        poll_until(WAIT, || {
            set.members[1..].iter().all(|m| {
                m.output()
                    .contains(&format!("web-0 ready={}", py_bool(ready)))
            })
        })
    };
    assert!(seen(&set, false), "{}", set.dump());
    fs::remove_file(set.members[0].sb.join(".peerplate-state.json")).ok();
    fs::remove_file(set.members[0].sb.join("out.txt")).expect("remove output");
    set.members[0].start();
    set.set_ready(&[0, 1, 2]);
    set.wait_all_follow(1, WAIT);
    assert!(seen(&set, true), "{}", set.dump());
    set.members[1].sigterm();
    set.wait_all_follow(0, Duration::from_secs(10));
    for m in &mut set.members {
        m.stop();
    }
}

#[test]
fn a_follower_stopping_or_a_forged_resignation_changes_nothing() {
    let mut set = Set::new(3, STICKY_30S);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    let (ip2, port) = (ip(2), set.members[2].port);
    let forged = format!(
        "{{\"leader\": \"{}\", \"successor\": \"{}\"}}",
        fqdn(0),
        fqdn(1)
    );
    // A follower (web-1) says web-0 resigned: web-2 checks with web-0,
    // which answers that it still leads.
    let (code, body) = post(ip2, port, "/leader/resign", &forged);
    assert_eq!(
        (code, body.as_str()),
        (
            202,
            format!("checking with {} whether it resigned\n", fqdn(0)).as_str()
        )
    );
    let ignored = "peerplate_leader_resignations_ignored_total";
    assert!(
        poll_until(WAIT, || metric(&set.members[2].get("/metrics"), ignored)
            == Some(1.0)),
        "{}",
        set.members[2].logs()
    );
    assert!(
        set.members[2]
            .logs()
            .contains("a resignation notice was not confirmed by the leader; ignored"),
        "{}",
        set.members[2].logs()
    );
    // At once again: kept, and checked when the second is over (at most
    // one check per second), then ignored too.
    let (code, body) = post(ip2, port, "/leader/resign", &forged);
    assert_eq!(
        (code, body.as_str()),
        (
            202,
            format!("checking with {} whether it resigned\n", fqdn(0)).as_str()
        )
    );
    assert!(
        poll_until(WAIT, || metric(&set.members[2].get("/metrics"), ignored)
            == Some(2.0)),
        "{}",
        set.members[2].logs()
    );
    // One that names a leader web-2 does not follow; one too large.
    let other = format!(
        "{{\"leader\": \"{}\", \"successor\": \"{}\"}}",
        fqdn(1),
        fqdn(2)
    );
    let (code, body) = post(ip2, port, "/leader/resign", &other);
    assert_eq!(
        (code, body),
        (
            409,
            format!(
                "ignored: it names {} as the resigning leader, but this pod follows {}\n",
                fqdn(1),
                fqdn(0)
            )
        )
    );
    let (code, _) = post(ip2, port, "/leader/resign", &" ".repeat(2000));
    assert_eq!(code, 413);
    assert!(poll_until(WAIT, || metric(
        &set.members[2].get("/metrics"),
        ignored
    )
    .is_some_and(|n| n >= 4.0)));

    // A follower's SIGTERM: nobody changes, its state file keeps web-0.
    set.members[2].sigterm();
    std::thread::sleep(Duration::from_millis(1500));
    for m in &set.members[..2] {
        assert_eq!(
            m.verdict(),
            format!("leader=web-0 me={}", py_bool(m.k == 0)),
            "{}",
            set.dump()
        );
        assert_eq!(m.count_log("leader changed"), 1, "{}", m.logs());
    }
    assert_eq!(set.members[2].state_file()["leader"]["name"], fqdn(0));
    for m in &mut set.members {
        m.stop();
    }
}

#[test]
fn a_pod_restarted_while_no_peer_answers_follows_its_remembered_leader() {
    let mut set = Set::new(3, STICKY);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    // web-1 takes over (web-0 unready past grace), web-0 is back.
    set.set_ready(&[1, 2]);
    set.wait_all_follow(1, WAIT);
    set.set_ready(&[0, 1, 2]);
    assert_eq!(set.members[2].state_file()["leader"]["name"], fqdn(1));
    // web-2 stops; then its peers' admin ports go away (the followers
    // first, so that web-1 has nobody to resign to), while DNS still lists
    // every pod as ready.
    set.members[2].stop();
    set.members[0].stop();
    set.members[1].stop();
    fs::remove_file(set.members[2].sb.join("out.txt")).expect("remove output");
    set.members[2].start();
    assert!(
        poll_until(WAIT, || set.members[2].verdict() == "leader=web-1 me=False"),
        "the rule would have named web-0\n{}",
        set.members[2].logs()
    );
    let logs = set.members[2].logs();
    let warn = logs
        .lines()
        .find(|l| l.contains("no peer answered who leads"))
        .unwrap_or_default();
    assert!(warn.contains("WARN"), "{logs}");
    assert!(warn.contains("asked=2"), "{warn}");
    assert!(warn.contains(&format!("chose={}", fqdn(1))), "{warn}");
    assert!(warn.contains("remembered in the state file"), "{warn}");
    let scrape = set.members[2].get("/metrics");
    assert!(
        metric(&scrape, "peerplate_leader_unanswered_total").is_some_and(|n| n >= 1.0),
        "{scrape}"
    );
    assert_eq!(set.members[2].state_file()["pod_uid"], "uid-web-2");
    // A new pod (another POD_UID) with the same folder does not trust the
    // file: the rule (web-0, the first ready peer), and the WARN says so.
    set.members[2].stop();
    fs::remove_file(set.members[2].sb.join("out.txt")).expect("remove output");
    set.members[2].start_as("uid-new-pod");
    assert!(
        poll_until(WAIT, || set.members[2].verdict() == "leader=web-0 me=False"),
        "{}",
        set.members[2].logs()
    );
    let logs = set.members[2].logs();
    assert!(
        logs.contains(
            "the state file was written by another pod (POD_UID uid-web-2); starting without it"
        ),
        "{logs}"
    );
    let warn = logs
        .lines()
        .find(|l| l.contains("no peer answered who leads"))
        .unwrap_or_default();
    assert!(
        warn.contains("none is remembered; choosing by the rule"),
        "{warn}"
    );
    assert!(warn.contains(&format!("chose={}", fqdn(0))), "{warn}");
    set.members[2].stop();
}

// --- issue 20: probe never guesses ------------------------------------------

/// A role endpoint per pod on `ip(k):port`: answers the status its slot
/// holds (200 "I am the primary", 503 otherwise), like Patroni's `/primary`.
struct Roles {
    codes: Vec<Arc<std::sync::atomic::AtomicU16>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Roles {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Roles {
    fn start(n: usize, port: u16) -> Roles {
        let stop = Arc::new(AtomicBool::new(false));
        let codes: Vec<Arc<std::sync::atomic::AtomicU16>> = (0..n)
            .map(|_| Arc::new(std::sync::atomic::AtomicU16::new(503)))
            .collect();
        for (k, code) in codes.iter().enumerate() {
            let listener = TcpListener::bind((ip(k), port)).expect("bind role endpoint");
            listener.set_nonblocking(true).expect("nonblocking");
            let (code, stop) = (Arc::clone(code), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                            let mut buf = [0u8; 1024];
                            let _ = conn.read(&mut buf);
                            let status = code.load(Ordering::Relaxed);
                            let _ = write!(
                                conn,
                                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Roles { codes, stop }
    }

    /// Only the pods in `primaries` answer 200.
    fn set(&self, primaries: &[usize]) {
        for (k, code) in self.codes.iter().enumerate() {
            let status = if primaries.contains(&k) { 200 } else { 503 };
            code.store(status, Ordering::Relaxed);
        }
    }
}

/// `probe` against the role endpoints on `port`, grace 1 s.
fn probe_yaml(port: u16) -> String {
    format!(
        "  policy: probe\n  grace: 1s\n  probe:\n    url: \"http://{{peer}}:{port}/primary\"\n    timeout: 500ms\n    interval: 300ms\n"
    )
}

fn role_port() -> u16 {
    let ips: Vec<String> = (0..3).map(|k| ip(k).to_string()).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    free_port_on(&ip_refs)
}

#[test]
fn probe_keeps_a_confirmed_leader_through_a_long_failover_then_follows_the_new_one() {
    let port = role_port();
    let roles = Roles::start(3, port);
    roles.set(&[1]);
    let mut set = Set::new(3, &probe_yaml(port));
    set.start_all();
    set.wait_all_follow(1, WAIT);
    // The primary dies; the app's own failover takes longer than 3x grace:
    // no endpoint answers 2xx, web-1 leaves the ready set.
    roles.set(&[]);
    set.set_ready(&[0, 2]);
    std::thread::sleep(Duration::from_millis(3500));
    for m in &set.members {
        assert_eq!(
            m.verdict(),
            format!("leader=web-1 me={}", py_bool(m.k == 1)),
            "nobody guessed\n{}",
            set.dump()
        );
        assert_eq!(m.count_log("leader changed"), 1, "{}", m.logs());
    }
    let json: serde_json::Value =
        serde_json::from_str(&set.members[0].get("/leader")).expect("json");
    assert_eq!(json["leader"], fqdn(1), "{json}");
    assert!(
        json["unconfirmed_since"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{json}"
    );
    let scrape = set.members[0].get("/metrics");
    assert!(
        metric(
            &scrape,
            "peerplate_leader_unconfirmed_since_timestamp_seconds"
        )
        .is_some_and(|t| t > 1.0e9),
        "{scrape}"
    );
    assert!(set.members[0]
        .logs()
        .contains("it stays the leader until another peer answers 2xx"));
    // web-2 is promoted: adopted at the next probe round.
    roles.set(&[2]);
    let took = set.wait_all_follow(2, Duration::from_secs(5));
    eprintln!("new claimant seen by every pod after {took:?} (interval 300ms)");
    let json: serde_json::Value =
        serde_json::from_str(&set.members[0].get("/leader")).expect("json");
    assert_eq!(json["unconfirmed_since"], serde_json::Value::Null, "{json}");
    for m in &mut set.members {
        m.stop();
    }
}

#[test]
fn probe_two_claimants_at_start_follows_the_one_the_peers_name_and_warns() {
    let port = role_port();
    let roles = Roles::start(3, port);
    roles.set(&[2]);
    let mut set = Set::new(3, &probe_yaml(port));
    set.start_all();
    set.wait_all_follow(2, WAIT);
    // web-0's sidecar restarts while its app, an old primary back with
    // stale state, also claims to lead.
    set.members[0].stop();
    roles.set(&[0, 2]);
    fs::remove_file(set.members[0].sb.join("out.txt")).expect("remove output");
    set.members[0].start();
    assert!(
        poll_until(WAIT, || set.members[0].verdict() == "leader=web-2 me=False"),
        "the lowest ordinal would be web-0\n{}",
        set.members[0].logs()
    );
    let logs = set.members[0].logs();
    let warn = logs
        .lines()
        .find(|l| l.contains("two or more peers answer 2xx"))
        .unwrap_or_default();
    assert!(warn.contains("WARN"), "{logs}");
    assert!(
        warn.contains(&format!(
            "claimants=[\"{}\",\"{}\"] chose={}",
            fqdn(0),
            fqdn(2),
            fqdn(2)
        )),
        "{warn}"
    );
    assert!(warn.contains("how=\"the one the peers name\""), "{warn}");
    let scrape = set.members[0].get("/metrics");
    assert_eq!(
        metric(&scrape, "peerplate_leader_claimants"),
        Some(2.0),
        "{scrape}"
    );
    // The running sidecars keep web-2.
    for m in &set.members[1..] {
        assert_eq!(m.count_log("leader changed"), 1, "{}", m.logs());
    }
    for m in &mut set.members {
        m.stop();
    }
}

#[test]
fn a_resigning_leader_whose_peers_never_answer_still_exits_within_a_second() {
    let mut set = Set::new(3, STICKY_30S);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    // web-1 and web-2 stop; in their place, listeners that accept and
    // never answer (a peer that hangs), still listed ready by DNS.
    let port = set.members[0].port;
    set.members[1].stop();
    set.members[2].stop();
    let _hung: Vec<TcpListener> = [1, 2]
        .iter()
        .map(|k| TcpListener::bind((ip(*k), port)).expect("bind a silent peer"))
        .collect();
    // The resignation is bounded at 0.75 s, the runtime's stop at 0.2 s;
    // the bound here leaves room for a loaded machine.
    let took = stop_leader(&mut set, 0, Duration::from_millis(1500));
    eprintln!("shutdown with silent peers took {took:?}");
    assert_resigned(&set, 0, &["told=2 accepted=0 refused=0 unanswered=2"]);
    // It still remembers its successor, never itself.
    assert_eq!(set.members[0].state_file()["leader"]["name"], fqdn(1));
}

#[test]
fn a_peer_that_hangs_does_not_hide_the_peer_that_accepted() {
    let mut set = Set::new(3, STICKY_30S);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    // web-2 stops; in its place a listener that accepts and never answers.
    let port = set.members[0].port;
    set.members[2].stop();
    let _hung = TcpListener::bind((ip(2), port)).expect("bind a silent peer");
    stop_leader(&mut set, 0, Duration::from_millis(2000));
    // web-1 accepted, checked and took over; the summary says so.
    set.wait_all_follow(1, Duration::from_secs(10));
    assert_resigned(
        &set,
        0,
        &[
            &format!("successor={}", fqdn(1)),
            "told=2 accepted=1 refused=0 unanswered=1 checked=1",
        ],
    );
    set.members[1].stop();
}

#[test]
fn a_forged_resignation_just_before_the_real_one_does_not_hide_it() {
    let mut set = Set::new(3, STICKY_30S);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    let port = set.members[0].port;
    // A forged notice to each follower, naming web-2: each checks with
    // web-0, which still leads, and ignores it.
    let forged = format!(
        "{{\"leader\": \"{}\", \"successor\": \"{}\"}}",
        fqdn(0),
        fqdn(2)
    );
    let ignored = "peerplate_leader_resignations_ignored_total";
    for k in [1, 2] {
        let (code, body) = post(ip(k), port, "/leader/resign", &forged);
        assert_eq!(
            (code, body),
            (
                202,
                format!("checking with {} whether it resigned\n", fqdn(0))
            )
        );
    }
    for k in [1, 2] {
        assert!(
            poll_until(WAIT, || metric(&set.members[k].get("/metrics"), ignored)
                == Some(1.0)),
            "{}",
            set.members[k].logs()
        );
    }
    // Then, well within the second of the followers' last check, the real
    // leader stops: its notice waits out that second and is still acted on.
    let took = stop_leader(&mut set, 0, Duration::from_secs(2));
    let followed = set.wait_all_follow(1, Duration::from_secs(10));
    eprintln!("after a forged notice: shutdown {took:?}, every output on web-1 {followed:?} after the exit");
    assert_resigned(
        &set,
        0,
        &[
            &format!("successor={}", fqdn(1)),
            "told=2 accepted=2 refused=0 unanswered=0 checked=2",
        ],
    );
    for k in [1, 2] {
        assert_eq!(
            metric(&set.members[k].get("/metrics"), ignored),
            Some(1.0),
            "{}",
            set.members[k].logs()
        );
    }
    let line = set.members[2]
        .logs()
        .lines()
        .find(|l| l.contains("leader changed") && l.contains("new=\"web-1"))
        .map(String::from)
        .unwrap_or_default();
    assert!(
        line.contains(&format!(
            "why={} resigned and named {} (confirmed at its GET /leader)",
            fqdn(0),
            fqdn(1)
        )),
        "{line}"
    );
    for m in &mut set.members {
        m.stop();
    }
}

#[test]
fn a_second_leader_stopping_right_after_the_first_never_hands_back_to_it() {
    let mut set = Set::new(3, STICKY_30S);
    set.start_all();
    set.wait_all_follow(0, WAIT);
    // web-0 stops, then web-1 (its successor) 0.3 s later; DNS keeps all
    // three ready meanwhile, as Kubernetes does for a moment.
    set.members[0].sigterm_nowait();
    std::thread::sleep(Duration::from_millis(300));
    set.members[1].sigterm_nowait();
    set.wait_all_follow(2, Duration::from_secs(10));
    // web-1 named web-2, not web-0 (which it had confirmed as resigned).
    assert!(
        poll_until(WAIT, || set.members[1].logs().lines().any(|l| l
            .contains("resigned:")
            && l.contains(&format!("successor={}", fqdn(2))))),
        "{}",
        set.dump()
    );
    // And web-2 stays there: it never went back to web-0.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        set.members[2].verdict(),
        "leader=web-2 me=True",
        "{}",
        set.dump()
    );
    let hooked = format!("{}\n{}\n{}\n", fqdn(0), fqdn(1), fqdn(2));
    assert!(
        poll_until(WAIT, || set.members[2].leader_hook() == hooked),
        "{}",
        set.dump()
    );
    set.members[2].stop();
}
