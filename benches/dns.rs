//! The `dns` peer source from the outside (issue 3's targets): idle memory,
//! idle CPU, and the time from a DNS change to the new output in place, for
//! `peerplate run` polling one local authoritative server every second.
//!
//! Two servers, both on 127.0.0.1 only:
//!
//! - `bind`: Debian's BIND (`named -g -4 -n 1`), config and zone under a temp
//!   dir, `max-records-per-type 0`, `allow-update` for a TSIG key from
//!   `tsig-keygen`; changes go in with `nsupdate -k`. BIND rotates the
//!   order of the SRV records on every answer, so every poll's answer
//!   differs in bytes and is parsed.
//! - `inproc`: the CoreDNS-like server of the integration tests
//!   (`tests/integration/dns_server.rs`, included by path), on threads of
//!   this process; stable record order, so identical answers are skipped
//!   unparsed. Changes are `set_pods` calls.
//!
//! For each server and each peer count (default 2 and 300, up to 2,000; pods `web-0` ..
//! `web-<N-1>`, this pod `web-1`), the daemon runs with `peers.dns:
//! {service: nginx, cluster_domain: cluster.local, nameservers:
//! [127.0.0.1:PORT], interval: 1s}`, `wait: 0s/0s`, no `http:`, and one
//! template that lists every peer (`# N peers` then one `server fqdn:port;`
//! line each), so any change of the set changes the output.
//!
//! - `idle`: after the first render, wait `--idle-wait` (10 s), then VmRSS,
//!   RssAnon, RssFile (`/proc/PID/status`) and where the resident pages are;
//!   then CPU over `--cpu-window` (30 s): the sum of the first field of
//!   `/proc/PID/task/*/schedstat`, scaled to a minute. Also what the daemon
//!   logged in the window (it should be nothing). Over the same window, the
//!   DNS traffic: the daemon asks a meter (`common/dns_meter.rs`, a
//!   forwarding proxy on 127.0.0.1) in front of the server, which counts
//!   queries by type and DNS message bytes both ways; printed per minute,
//!   per pod and for the whole set (x N pods).
//! - `latency`: `--changes` (30) changes alternating N+1 and N pods, each
//!   after a random pause of 0.1 s + U(0, 1.1 x interval) so changes land at
//!   random points of the poll cycle; the clock starts when `nsupdate`
//!   returns (BIND) or at the `set_pods` call (inproc) and stops when an
//!   inotify watch on the output dir (the `notify` crate) sees the
//!   destination hold `# <new N> peers`. Median, p90, max.
//!
//! - `peer-finder` (issue 18), BIND only, during `idle`: Kubernetes' original
//!   peer-finder (`--peer-finder PATH`; default `shared/tools/peer-finder`
//!   in the nearest ancestor of this crate that has one, see that dir's
//!   README) runs next to the daemon the way the seed runs it
//!   (`-on-start=S -on-change=S -service=nginx -ns=default
//!   -domain=cluster.local`, S writing the peers it gets to a file) against
//!   the same BIND. peer-finder asks only the system resolver on port 53,
//!   and BIND listens only on addresses an interface has (127.0.0.1 on
//!   `lo`), so a second meter listens on port 53 of a spare loopback
//!   address (127.0.0.53, or the next free one up to .60) and forwards to
//!   the same BIND, the way the daemon's meter does; peer-finder runs in
//!   `unshare --mount --uts --propagation private` with a bind-mounted
//!   `/etc/resolv.conf` (that address, the pod's search path, `ndots:5`)
//!   and host name `web-1`. Its DNS traffic is printed like the daemon's.
//!   Once it has written all N peers, both idle for `--idle-wait`; then
//!   both memories are read, and both CPUs over the same `--cpu-window`;
//!   the summary prints the ratios (peerplate / peer-finder) next to the
//!   targets (RSS <= 0.6x with 2 peers, <= 0.45x with more; CPU <= 0.2x /
//!   0.1x). `--peer-finder none` leaves it out.
//! - the floor, BIND only, during `idle`: this bench run again as a bare
//!   loop (`--floor-client`) that asks what an idle peerplate asks, the
//!   cluster domain's SOA once per interval on the same fixed beat over one
//!   connected UDP socket, and does nothing else, through a meter of its own
//!   to the same BIND. Its CPU over the same window is the least any poller
//!   with that traffic costs on this machine; the summary prints peerplate /
//!   floor (its own code's share) and floor / peer-finder (the lowest ratio
//!   reachable at one question per interval). `--no-floor` leaves it out.
//!
//! Run: `cargo bench --bench dns -- --bin "$(scripts/build-release.sh | tail -n1)"`
//! (about 6 minutes with both servers). Options after `--`: `--bin PATH`
//! (default: the release build cargo made), `--server bind|inproc|both`,
//! `--peers 2,300`, `--only idle|latency`, `--no-floor`, `--idle-wait SECS`, `--cpu-window
//! SECS`, `--changes N`, `--interval SECS`, `--refresh DURATION` (the
//! daemon's `peers.dns.refresh`; left out unless given, so a build from
//! before the option runs too), `--quiet SECS` (added to every pause
//! between changes: past the 2 s fetch window after a serial move, each
//! change is seen from a quiet state), `--daemon-env K=V`, `--dir DIR`
//! (where the temp dir goes; default cargo's target/tmp), `--config-extra
//! YAML` (appended to the daemon's config, repeatable; `{port}` becomes a
//! free loopback port, e.g. `http: {listen: '127.0.0.1:{port}'}`). Every wait
//! is bounded; `named`, `nsupdate` and the daemon are stopped on exit.
//! Numbers are informational; no test asserts them.

#[path = "../tests/integration/dns_server.rs"]
mod dns_server;

#[path = "common/dns_meter.rs"]
mod meter;

mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use common::{e, Res};
use dns_server::{ask, pod_ip, DnsServer, Proto};

const SERVICE: &str = "nginx.default.svc.cluster.local.";
const KEY_NAME: &str = "peerplate-bench";
const TTL: u32 = 30;
const TEMPLATE: &str = "# {{ peers|length }} peers\n\
{% for p in peers %}server {{ p.fqdn }}:{{ p.port }};\n{% endfor %}";

#[derive(Debug)]
struct Options {
    shared: common::SharedOptions,
    servers: Vec<String>,
    peers: Vec<usize>,
    idle_wait: Duration,
    cpu_window: Duration,
    changes: usize,
    interval: Duration,
    /// `peers.dns.refresh` for the daemon; None leaves it out (a build
    /// before the option, or its default).
    refresh: Option<String>,
    /// Added to every pause between changes: with more than the 2 s fetch
    /// window after a serial move, each change is seen from a quiet state.
    quiet: Duration,
    dir: PathBuf,
    /// Kubernetes' peer-finder, run next to the daemon during `idle` (BIND only).
    peer_finder: Option<PathBuf>,
    /// Run the floor (a bare UDP loop, see [`Floor`]) next to them.
    floor: bool,
    /// Appended to the daemon's config (`{port}`: a free port).
    config_extra: String,
}

/// `shared/tools/peer-finder` in the nearest ancestor of this crate that has one.
fn default_peer_finder() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(1)
        .map(|d| d.join("shared/tools/peer-finder"))
        .find(|p| p.is_file())
}

fn options() -> Res<Options> {
    let mut o = Options {
        shared: common::SharedOptions::new(),
        servers: vec!["bind".into(), "inproc".into()],
        peers: vec![2, 300],
        idle_wait: Duration::from_secs(10),
        cpu_window: Duration::from_secs(30),
        changes: 30,
        interval: Duration::from_secs(1),
        refresh: None,
        quiet: Duration::ZERO,
        dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        peer_finder: default_peer_finder(),
        floor: true,
        config_extra: String::new(),
    };
    let secs = common::secs_arg;
    common::parse_args(&mut o.shared, |arg, args| {
        match arg {
            "--dir" => o.dir = args.next().ok_or("--dir takes a path")?.into(),
            "--server" => {
                o.servers = match args.next().as_deref() {
                    Some("both") => vec!["bind".into(), "inproc".into()],
                    Some(s @ ("bind" | "inproc")) => vec![s.to_string()],
                    _ => return Err("--server takes bind, inproc or both".into()),
                }
            }
            "--peers" => {
                o.peers = args
                    .next()
                    .ok_or("--peers takes a list like 2,300")?
                    .split(',')
                    .map(|n| n.trim().parse().ok().filter(|n| (1..=2000).contains(n)))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or("--peers takes numbers from 1 to 2000, like 2,300")?
            }
            "--refresh" => {
                o.refresh = Some(
                    args.next()
                        .filter(|v| humantime::parse_duration(v).is_ok())
                        .ok_or("--refresh takes a duration like 60s or 0s")?,
                )
            }
            "--quiet" => o.quiet = secs(args.next(), 60.0)?,
            "--peer-finder" => {
                o.peer_finder = match args.next() {
                    Some(p) if p == "none" => None,
                    Some(p) if Path::new(&p).is_file() => Some(p.into()),
                    Some(p) => return Err(format!("--peer-finder: {p} is not a file")),
                    None => return Err("--peer-finder takes a path or none".into()),
                }
            }
            "--no-floor" => o.floor = false,
            "--config-extra" => {
                let yaml = args.next().ok_or("--config-extra takes YAML")?;
                o.config_extra.push_str(&yaml);
                o.config_extra.push('\n');
            }
            "--idle-wait" => o.idle_wait = secs(args.next(), 120.0)?,
            "--cpu-window" => o.cpu_window = secs(args.next(), 600.0)?,
            "--interval" => o.interval = secs(args.next(), 10.0)?.max(Duration::from_secs(1)),
            "--changes" => {
                o.changes = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or("--changes takes a number from 1 to 1000")?
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(o)
}

// ---- the servers ------------------------------------------------------------------

/// A throwaway `named`, authoritative for cluster.local on 127.0.0.1:PORT.
struct Bind {
    dir: PathBuf,
    addr: SocketAddr,
    named: common::Daemon,
    pods: usize,
}

impl Bind {
    fn start(dir: &Path, pods: usize) -> Res<Bind> {
        std::fs::create_dir_all(dir).map_err(e("create the BIND dir"))?;
        let key = Command::new("tsig-keygen")
            .arg(KEY_NAME)
            .output()
            .map_err(e("run tsig-keygen"))?;
        if !key.status.success() {
            return Err(format!("tsig-keygen failed: {key:?}"));
        }
        std::fs::write(dir.join("update.key"), key.stdout).map_err(e("write the key"))?;
        std::fs::write(dir.join("cluster.local.zone"), zone_file(pods))
            .map_err(e("write the zone"))?;
        let mut last_log = String::new();
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], common::helpers::free_port()));
            std::fs::write(dir.join("named.conf"), named_conf(dir, addr.port()))
                .map_err(e("write named.conf"))?;
            let mut cmd = Command::new("named");
            cmd.args(["-g", "-4", "-n", "1", "-c"])
                .arg(dir.join("named.conf"));
            let mut named = common::Daemon::spawn_in(cmd, dir).graceful();
            let answering = common::helpers::poll_every(
                Duration::from_millis(50),
                Duration::from_secs(10),
                || {
                    !named.is_running()
                        || ask(
                            addr,
                            "cluster.local.",
                            RecordType::SOA,
                            Duration::from_millis(200),
                        )
                        .is_some_and(|m| {
                            m.metadata.response_code == ResponseCode::NoError
                                && m.metadata.authoritative
                        })
                },
            );
            if answering && named.is_running() {
                return Ok(Bind {
                    dir: dir.to_path_buf(),
                    addr,
                    named,
                    pods,
                });
            }
            named.stop();
            last_log = named.logs();
        }
        Err(format!(
            "named did not start answering; its log:\n{last_log}"
        ))
    }

    /// Replaces the Service's SRV records and the pods' A records with
    /// `web-0` .. `web-<n-1>` in one dynamic update; returns how long
    /// `nsupdate` took (it returns once named has applied the update).
    fn scale(&mut self, n: usize) -> Res<Duration> {
        let mut script = format!(
            "server 127.0.0.1 {}\nzone cluster.local\n",
            self.addr.port()
        );
        let weight = (100 / n.max(1)).max(1);
        // The same weight: send only the pods that come or go (an update,
        // like any DNS message, holds at most 64 KiB: 1,000 SRV records
        // deleted and added again would not fit).
        let delta = weight == (100 / self.pods.max(1)).max(1);
        if !delta {
            let _ = writeln!(script, "update delete {SERVICE} SRV");
        }
        for k in n..self.pods {
            if delta {
                let _ = writeln!(
                    script,
                    "update delete {SERVICE} SRV 0 {weight} 80 web-{k}.{SERVICE}"
                );
            }
            let _ = writeln!(script, "update delete web-{k}.{SERVICE} A");
        }
        for k in (if delta { self.pods.min(n) } else { 0 })..n {
            let h = format!("web-{k}");
            let _ = writeln!(
                script,
                "update add {SERVICE} {TTL} IN SRV 0 {weight} 80 {h}.{SERVICE}"
            );
            if k >= self.pods {
                let _ = writeln!(script, "update add {h}.{SERVICE} {TTL} IN A {}", pod_ip(&h));
            }
        }
        script.push_str("send\n");
        let path = self.dir.join("update.txt");
        std::fs::write(&path, script).map_err(e("write the nsupdate script"))?;
        let mut cmd = Command::new("nsupdate");
        cmd.arg("-k").arg(self.dir.join("update.key")).arg(&path);
        let started = Instant::now();
        let mut nsupdate = common::Daemon::spawn_in(cmd, &self.dir);
        let mut status = None;
        common::helpers::poll_every(Duration::from_micros(200), Duration::from_secs(10), || {
            status = nsupdate.try_status();
            status.is_some()
        });
        let took = started.elapsed();
        match status {
            Some(s) if s.success() => {
                self.pods = n;
                Ok(took)
            }
            Some(s) => Err(format!("nsupdate failed ({s}): {}", nsupdate.stderr())),
            None => Err("nsupdate did not finish within 10 s".into()),
        }
    }
}

/// A meter on port 53 of the first of 127.0.0.53 .. 127.0.0.60 where that
/// port is free for both UDP and TCP (every 127/8 address reaches `lo`;
/// nothing is added), forwarding to `upstream`.
fn port53_meter(upstream: SocketAddr) -> Res<meter::Meter> {
    let mut last = String::new();
    for k in 53..=60 {
        match meter::Meter::start_on(SocketAddr::from(([127, 0, 0, k], 53)), upstream) {
            Ok(m) => return Ok(m),
            Err(e) => last = e,
        }
    }
    Err(format!(
        "no loopback address from 127.0.0.53 to .60 has port 53 free (is this root?); last: {last}"
    ))
}

fn named_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    max-records-per-type 0;
}};
controls {{ }};
include "{d}/update.key";
zone "cluster.local" {{
    type primary;
    file "{d}/cluster.local.zone";
    allow-update {{ key "{KEY_NAME}"; }};
}};
"#
    )
}

/// SOA, NS, and per pod an SRV record of the Service (CoreDNS's weights)
/// and its A record.
fn zone_file(pods: usize) -> String {
    let mut z = format!(
        "$ORIGIN cluster.local.\n$TTL {TTL}\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 {TTL}\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 127.0.0.1\n"
    );
    let weight = (100 / pods.max(1)).max(1);
    for k in 0..pods {
        let h = format!("web-{k}");
        let _ = writeln!(z, "{SERVICE} {TTL} IN SRV 0 {weight} 80 {h}.{SERVICE}");
        let _ = writeln!(z, "{h}.{SERVICE} {TTL} IN A {}", pod_ip(&h));
    }
    z
}

enum Server {
    Bind(Bind, meter::Meter),
    InProc(DnsServer, meter::Meter),
}

impl Server {
    fn start(kind: &str, dir: &Path, pods: usize) -> Res<Server> {
        match kind {
            "bind" => {
                let bind = Bind::start(dir, pods)?;
                let meter = meter::Meter::start(bind.addr)?;
                Ok(Server::Bind(bind, meter))
            }
            _ => {
                let server = DnsServer::start("cluster.local");
                server.scale(pods);
                let meter = meter::Meter::start(server.addr())?;
                Ok(Server::InProc(server, meter))
            }
        }
    }

    /// What the daemon asks: the meter in front of the server.
    fn nameserver(&self) -> String {
        self.meter().addr.to_string()
    }

    fn meter(&self) -> &meter::Meter {
        match self {
            Server::Bind(_, m) | Server::InProc(_, m) => m,
        }
    }

    /// The server's own process, when it has one.
    fn pid(&self) -> Option<u32> {
        match self {
            Server::Bind(b, _) => Some(b.named.pid()),
            Server::InProc(..) => None,
        }
    }

    /// Changes the pods to `web-0` .. `web-<n-1>`; returns how long the
    /// change itself took.
    fn scale(&mut self, n: usize) -> Res<Duration> {
        match self {
            Server::Bind(b, _) => b.scale(n),
            Server::InProc(s, _) => {
                let started = Instant::now();
                s.scale(n);
                Ok(started.elapsed())
            }
        }
    }

    /// SRV queries received (UDP, TCP), when the server counts them.
    fn srv_queries(&self) -> Option<(u64, u64)> {
        match self {
            Server::Bind(..) => None,
            Server::InProc(s, _) => Some((
                s.queries(Proto::Udp, RecordType::SRV),
                s.queries(Proto::Tcp, RecordType::SRV),
            )),
        }
    }
}

// ---- the daemon -------------------------------------------------------------------

struct Daemon {
    guard: common::Daemon,
    log: PathBuf,
    destination: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, server: &Server, pods: usize, opts: &Options) -> Res<Daemon> {
        let out = common::output_dir(dir)?;
        let template = dir.join("peers.conf.j2");
        std::fs::write(&template, TEMPLATE).map_err(e("write the template"))?;
        let destination = out.join("peers.conf");
        let yaml = format!(
            "identity: {{hostname: web-1, namespace: default}}\n\
             peers:\n  dns:\n    service: nginx\n    cluster_domain: cluster.local\n    \
             nameservers: ['{}']\n    interval: {}ms\n{}\
             wait: {{min: 0s, max: 0s}}\n\
             templates:\n  - source: {}\n    destination: {}\n{}",
            server.nameserver(),
            opts.interval.as_millis(),
            opts.refresh
                .as_ref()
                .map_or(String::new(), |r| format!("    refresh: {r}\n")),
            template.display(),
            destination.display(),
            opts.config_extra
                .replace("{port}", &common::helpers::free_port().to_string())
        );
        let (guard, log) = common::start_daemon(&opts.shared, dir, "127.0.0.1", &yaml)?;
        let daemon = Daemon {
            guard,
            log,
            destination,
        };
        let started = Instant::now();
        let limit = Duration::from_secs(10);
        if !common::helpers::poll_every(Duration::from_millis(1), limit, || daemon.holds(pods)) {
            return Err(format!(
                "no output with {pods} peers within {limit:?}; log tail:\n{}",
                common::log_tail(&daemon.log, 20)
            ));
        }
        println!(
            "daemon pid {} rendered {pods} peers {:.0} ms after spawn",
            daemon.guard.pid(),
            common::ms(started.elapsed())
        );
        Ok(daemon)
    }

    /// Whether the output lists exactly `n` peers.
    fn holds(&self, n: usize) -> bool {
        let want = format!("# {n} peers\n");
        std::fs::read(&self.destination).is_ok_and(|b| {
            b.starts_with(want.as_bytes()) && b.iter().filter(|c| **c == b'\n').count() == n + 1
        })
    }
}

// ---- peer-finder ------------------------------------------------------------------

/// Kubernetes' peer-finder as the seed runs it, in its own mount and UTS
/// namespaces: `/etc/resolv.conf` bind-mounted to one naming BIND's port-53
/// address with a pod's search path, host name `web-1`.
struct PeerFinder {
    guard: common::Daemon,
    /// What it asks: a meter on port 53 in front of the daemon's BIND.
    meter: meter::Meter,
    /// Where its on-start/on-change script writes the peers it got.
    peers: PathBuf,
}

impl PeerFinder {
    fn start(bin: &Path, dir: &Path, bind: SocketAddr, pods: usize) -> Res<PeerFinder> {
        let meter = port53_meter(bind)?;
        let nameserver = meter.addr.ip();
        let dir = dir.join("peer-finder");
        std::fs::create_dir_all(&dir).map_err(e("create the peer-finder dir"))?;
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            format!(
                "nameserver {nameserver}\n\
                 search default.svc.cluster.local svc.cluster.local cluster.local\n\
                 options ndots:5\n"
            ),
        )
        .map_err(e("write peer-finder's resolv.conf"))?;
        let peers = dir.join("peers");
        let script = dir.join("on-change.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncat >'{0}.tmp' && mv '{0}.tmp' '{0}'\n",
                peers.display()
            ),
        )
        .map_err(e("write peer-finder's script"))?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .map_err(e("chmod peer-finder's script"))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--uts", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/resolv.conf && hostname web-1 && \
                 exec \"$2\" -on-start=\"$3\" -on-change=\"$3\" -service=nginx -ns=default -domain=cluster.local",
            )
            .arg("sh")
            .arg(&resolv)
            .arg(bin)
            .arg(&script);
        let pf = PeerFinder {
            guard: common::Daemon::spawn_in(cmd, &dir).graceful(),
            meter,
            peers,
        };
        let started = Instant::now();
        let limit = Duration::from_secs(10);
        let has_all = || {
            std::fs::read_to_string(&pf.peers)
                .is_ok_and(|t| t.lines().filter(|l| !l.is_empty()).count() == pods)
        };
        if !common::helpers::poll_every(Duration::from_millis(5), limit, has_all) {
            return Err(format!(
                "peer-finder wrote no list of {pods} peers within {limit:?}; its log:\n{}",
                pf.guard.logs()
            ));
        }
        // unshare and sh exec'd into it: the pid is peer-finder's own.
        let exe = std::fs::read_link(format!("/proc/{}/exe", pf.guard.pid()))
            .map_err(e("read peer-finder's /proc/PID/exe"))?;
        println!(
            "peer-finder pid {} ({}), asking {}, wrote {pods} peers {:.0} ms after spawn",
            pf.guard.pid(),
            exe.display(),
            pf.meter.addr,
            common::ms(started.elapsed())
        );
        Ok(pf)
    }
}

// ---- the floor: one bare UDP round trip per interval ------------------------------

/// The least a poller asking one question per interval over UDP can cost on
/// this machine: this bench run again as `--floor-client ADDR INTERVAL_MS`,
/// a process that does nothing but what peerplate's idle poll does on the
/// wire (the same SOA question of the cluster domain, RD and EDNS 1,232, on
/// one connected UDP socket, on the same fixed beat, sleeping in a park),
/// through a meter of its own to the same BIND. Its CPU, measured over the
/// same window as peerplate's and peer-finder's, shows how much of
/// peerplate's idle cost is its own code and how much is the kernel's
/// (the loopback round trip, the wake-ups): the ratio to peer-finder no
/// poller with that traffic can go under here.
struct Floor {
    guard: common::Daemon,
    meter: meter::Meter,
}

impl Floor {
    fn start(dir: &Path, bind: SocketAddr, interval: Duration) -> Res<Floor> {
        let meter = meter::Meter::start(bind)?;
        let dir = dir.join("floor");
        std::fs::create_dir_all(&dir).map_err(e("create the floor's dir"))?;
        let exe = std::env::current_exe().map_err(e("this bench's own path"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("--floor-client")
            .arg(meter.addr.to_string())
            .arg(interval.as_millis().to_string());
        let floor = Floor {
            guard: common::Daemon::spawn_in(cmd, &dir),
            meter,
        };
        let answered = || floor.meter.counts().values().map(|(q, _)| q).sum::<u64>() >= 2;
        let limit = interval * 3 + Duration::from_secs(2);
        if !common::helpers::poll_every(Duration::from_millis(5), limit, answered) {
            return Err(format!(
                "the floor asked fewer than 2 questions within {limit:?}; its log:\n{}",
                floor.guard.logs()
            ));
        }
        println!(
            "floor pid {} (a bare UDP loop, one SOA question per {interval:?}), asking {}",
            floor.guard.pid(),
            floor.meter.addr
        );
        Ok(floor)
    }
}

/// The floor's loop (see [`Floor`]); returns only when a socket call fails.
fn floor_client(server: &str, interval_ms: &str) -> Res<()> {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    let server: SocketAddr = server.parse().map_err(|err| format!("{server}: {err}"))?;
    let interval = interval_ms
        .parse()
        .map(Duration::from_millis)
        .map_err(|err| format!("{interval_ms}: {err}"))?;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(e("bind"))?;
    socket.connect(server).map_err(e("connect"))?;
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(e("set the timeout"))?;
    let mut request = Message::new(0, MessageType::Query, OpCode::Query);
    request.metadata.recursion_desired = true;
    let zone = hickory_proto::rr::Name::from_ascii("cluster.local.")
        .map_err(|err| format!("zone: {err}"))?;
    request.add_query(Query::query(zone, RecordType::SOA));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    request.set_edns(edns);
    let mut question = request.to_vec().map_err(|err| format!("encode: {err}"))?;
    let mut answer = vec![0u8; 4096];
    let mut beat = Instant::now();
    for id in (0..=u16::MAX).cycle() {
        question[..2].copy_from_slice(&id.to_be_bytes());
        socket.send(&question).map_err(e("send"))?;
        // A lost answer is said and the beat goes on, as peerplate's does.
        if let Err(err) = socket.recv(&mut answer) {
            eprintln!("floor client: no answer: {err}");
        }
        // peerplate's beat: the next one after now, skipping any missed.
        while beat <= Instant::now() {
            beat += interval;
        }
        while let Some(left) = beat.checked_duration_since(Instant::now()) {
            std::thread::park_timeout(left);
        }
    }
    Ok(())
}

// ---- the measurements -------------------------------------------------------------

/// Per thread of `pid`: its name and its context switches so far (voluntary
/// and not): each is a wake-up at idle.
fn context_switches(pid: u32) -> std::collections::BTreeMap<u32, (String, u64)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        let n: u64 = ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"]
            .iter()
            .filter_map(|k| field(k)?.parse::<u64>().ok())
            .sum();
        out.insert(tid, (field("Name:").unwrap_or_default(), n));
    }
    out
}

/// One row of the summary at the end.
#[derive(Default, Clone)]
struct Row {
    label: String,
    rss: Option<common::procfs::Memory>,
    cpu_per_min: Option<f64>,
    /// DNS queries and message bytes per minute (this pod).
    dns_per_min: Option<(f64, f64)>,
    latency: Option<(f64, f64, f64)>,
    /// peer-finder's, measured next to the daemon: memory and ms/min of CPU.
    peer_finder: Option<(common::procfs::Memory, f64)>,
    /// The floor's ms/min of CPU, over the same window.
    floor: Option<f64>,
    pods: usize,
}

/// Issue 18's targets, peerplate / peer-finder: (RSS, idle CPU).
fn ratio_targets(pods: usize) -> (f64, f64) {
    if pods <= 2 {
        (0.6, 0.2)
    } else {
        (0.45, 0.1)
    }
}

fn idle(
    daemon: &Daemon,
    server: &Server,
    pf: Option<&PeerFinder>,
    floor: Option<&Floor>,
    pods: usize,
    opts: &Options,
    row: &mut Row,
) -> Res<()> {
    let pid = daemon.guard.pid();
    let mut tail = common::LogTail::new(&daemon.log);
    tail.new_lines();
    std::thread::sleep(opts.idle_wait);
    let mem = common::memory(pid)?;
    println!(
        "after {:?} idle: {mem}  Threads {:?}",
        opts.idle_wait,
        common::procfs::thread_names(common::pid_i32(pid))
    );
    common::print_mappings(pid)?;
    let pf_mem = match pf {
        Some(pf) => {
            let p = pf.guard.pid();
            let m = common::memory(p)?;
            println!(
                "peer-finder, same moment: {m}  Threads {}",
                common::procfs::thread_names(common::pid_i32(p)).len()
            );
            common::print_mappings(p)?;
            Some(m)
        }
        None => None,
    };
    let q0 = server.srv_queries();
    let mut others: Vec<(&str, u32)> = server.pid().map(|p| ("named", p)).into_iter().collect();
    if let Some(pf) = pf {
        others.push(("peer-finder", pf.guard.pid()));
    }
    if let Some(f) = floor {
        others.push(("floor", f.guard.pid()));
    }
    let m0 = server.meter().counts();
    let pf0 = pf.map(|pf| pf.meter.counts());
    let switches0 = context_switches(pid);
    let (per_min, theirs) = common::idle_cpu_all(pid, opts.cpu_window, &others)?;
    let switches1 = context_switches(pid);
    let minutes = opts.cpu_window.as_secs_f64() / 60.0;
    let wakeups: Vec<String> = switches1
        .iter()
        .map(|(tid, (name, n))| {
            let before = switches0.get(tid).map_or(0, |(_, b)| *b);
            format!("{name} {:.0}", (n - before.min(*n)) as f64 / minutes)
        })
        .collect();
    println!(
        "  context switches per minute, by thread: {}",
        wakeups.join(", ")
    );
    if let (Some(pf), Some(pf0)) = (pf, pf0) {
        let pf1 = pf.meter.counts();
        let (mut q, mut b) = (0.0, 0.0);
        for (t, (q1, b1)) in &pf1 {
            let (q0, b0) = pf0.get(t).copied().unwrap_or_default();
            q += (q1 - q0) as f64 / minutes;
            b += (b1 - b0) as f64 / minutes;
        }
        println!("  peer-finder's DNS: {q:.1} queries/min, {b:.0} message bytes/min");
    }
    let cpu_of = |name: &str| {
        let at = others.iter().position(|(n, _)| *n == name)?;
        theirs.get(at).copied()
    };
    if let Some(f) = cpu_of("floor") {
        row.floor = Some(f);
        println!(
            "  vs the floor (a bare UDP loop, same questions, same beat): CPU {per_min:.2} / {f:.2} ms/min = {:.2}x",
            per_min / f
        );
    }
    if let (Some(m), Some(c)) = (pf_mem, cpu_of("peer-finder")) {
        row.peer_finder = Some((m, c));
        let (rss_t, cpu_t) = ratio_targets(pods);
        let (rss_r, cpu_r) = (mem.rss as f64 / m.rss as f64, per_min / c);
        println!(
            "  vs peer-finder: VmRSS {} / {} kB = {rss_r:.2}x (target <= {rss_t}x: {}); CPU {per_min:.2} / {c:.2} ms/min = {cpu_r:.3}x (target <= {cpu_t}x: {})",
            mem.rss,
            m.rss,
            common::verdict(rss_r <= rss_t),
            common::verdict(cpu_r <= cpu_t)
        );
    }
    let m1 = server.meter().counts();
    let (mut queries, mut bytes) = (0.0, 0.0);
    for (t, (q, b)) in &m1 {
        let (q0, b0) = m0.get(t).copied().unwrap_or_default();
        let (q, b) = ((q - q0) as f64 / minutes, (b - b0) as f64 / minutes);
        println!(
            "  DNS {:>4}: {q:8.1} queries/min, {b:12.0} message bytes/min (query + answer)",
            meter::type_name(*t)
        );
        queries += q;
        bytes += b;
    }
    println!(
        "  DNS per pod: {queries:.1} queries/min, {bytes:.0} bytes/min; per set of {pods}: {:.0} queries/min, {:.0} bytes/min ({:.1} kB/s)",
        queries * pods as f64,
        bytes * pods as f64,
        bytes * pods as f64 / 60.0 / 1000.0
    );
    row.dns_per_min = Some((queries, bytes));
    if let (Some((u0, t0)), Some((u1, t1))) = (q0, server.srv_queries()) {
        println!(
            "  SRV queries the server got in the window: {} over UDP, {} over TCP",
            u1 - u0,
            t1 - t0
        );
    }
    let logged = tail.new_lines();
    println!(
        "  the daemon logged {} lines while idle ({} renders)",
        logged.len(),
        logged.iter().filter(|l| l.contains(" rendered ")).count()
    );
    for l in logged.iter().take(5) {
        println!("    {l}");
    }
    let (rss_target, cpu_target) = match pods {
        0..=2 => (3964, 10.0),
        3..=300 => (7052, 20.0),
        // Issue 13 (c): 1,000 peers under 10 ms/min and 6 MiB.
        _ => (6144, 10.0),
    };
    println!(
        "  target (a): VmRSS {} < {rss_target} kB: {}; RssAnon {} < 1024 kB: {}",
        mem.rss,
        common::verdict(mem.rss < rss_target),
        mem.anon,
        common::verdict(mem.anon < 1024)
    );
    println!(
        "  target (b): {per_min:.2} ms/min < {cpu_target} ms/min: {}",
        common::verdict(per_min < cpu_target)
    );
    row.rss = Some(mem);
    row.cpu_per_min = Some(per_min);
    Ok(())
}

fn latency(
    daemon: &Daemon,
    server: &mut Server,
    pods: usize,
    opts: &Options,
    row: &mut Row,
) -> Res<()> {
    let (watcher, rx) = common::watch_output(&daemon.destination, true)?;

    let mut rng = common::XorShift::new();
    let mut samples = Vec::with_capacity(opts.changes);
    let mut updates = Vec::with_capacity(opts.changes);
    let mut current = pods;
    let mut timeouts = 0;
    let limit = opts.interval * 2 + Duration::from_secs(3);
    let started = Instant::now();
    for _ in 0..opts.changes {
        std::thread::sleep(
            opts.quiet + Duration::from_millis(100) + opts.interval.mul_f64(1.1 * rng.unit()),
        );
        let next = if current == pods { pods + 1 } else { pods };
        while rx.try_recv().is_ok() {}
        let took = server.scale(next)?;
        // From nsupdate's return (BIND) or from the set_pods call (inproc).
        let start = match server {
            Server::Bind(..) => Instant::now(),
            Server::InProc(..) => Instant::now() - took,
        };
        updates.push(took);
        current = next;
        let done = common::wait_output(start, start + limit, &rx, false, || daemon.holds(next));
        match done {
            Some(t) => samples.push(t),
            None => {
                timeouts += 1;
                eprintln!("change to {next} pods: no new output within {limit:?}");
                if timeouts >= 3 {
                    return Err(format!(
                        "3 changes timed out; log tail:\n{}",
                        common::log_tail(&daemon.log, 20)
                    ));
                }
            }
        }
    }
    drop(watcher);
    println!(
        "{} changes ({pods} <-> {} pods) in {:.1} s, {timeouts} timed out",
        samples.len(),
        pods + 1,
        started.elapsed().as_secs_f64()
    );
    let what = match server {
        Server::Bind(..) => "nsupdate run time (not in the latency)",
        Server::InProc(..) => "set_pods call (in the latency)",
    };
    common::print_stats(&format!("  {what}"), &mut updates);
    let max = samples.iter().max().copied().map(common::ms);
    // Issue 13 (b): worst case under interval + 1 s, median under half the
    // interval + 0.5 s.
    let budget = common::ms(opts.interval) + 1000.0;
    let median_budget = common::ms(opts.interval) / 2.0 + 500.0;
    let over = samples.iter().filter(|s| common::ms(**s) >= budget).count();
    if let (Some((median, p90)), Some(max)) = (
        common::print_stats("  DNS change -> new output in place", &mut samples),
        max,
    ) {
        println!(
            "  target (b): max {max:.1} ms < {budget:.0} ms: {} ({over} of {} at or over; p90 {p90:.1} ms); median {median:.1} ms < {median_budget:.0} ms: {}",
            common::verdict(max < budget),
            samples.len(),
            common::verdict(median < median_budget)
        );
        row.latency = Some((median, p90, max));
    }
    Ok(())
}

fn one(kind: &str, pods: usize, root: &Path, opts: &Options) -> Res<Row> {
    println!("\n== {kind}, {pods} peers, interval {:?} ==", opts.interval);
    let dir = root.join(format!("{kind}-{pods}"));
    std::fs::create_dir_all(&dir).map_err(e("create the run dir"))?;
    let with_pf = opts
        .peer_finder
        .as_deref()
        .filter(|_| kind == "bind" && opts.shared.runs("idle"));
    let mut server = Server::start(kind, &dir.join("server"), pods)?;
    let daemon = Daemon::start(&dir, &server, pods, opts)?;
    let mut row = Row {
        label: format!("{kind:<6} {pods:>4} peers"),
        pods,
        ..Row::default()
    };
    if opts.shared.runs("idle") {
        let pf = match (with_pf, &server) {
            (Some(bin), Server::Bind(b, _)) => Some(PeerFinder::start(bin, &dir, b.addr, pods)?),
            _ => None,
        };
        let floor = match &server {
            Server::Bind(b, _) if opts.floor => {
                if opts
                    .refresh
                    .as_deref()
                    .and_then(|r| humantime::parse_duration(r).ok())
                    .is_some_and(|r| r.is_zero())
                {
                    println!("  (with --refresh 0s the daemon asks the SRV set every poll; the floor still asks only the SOA)");
                }
                Some(Floor::start(&dir, b.addr, opts.interval)?)
            }
            _ => None,
        };
        idle(
            &daemon,
            &server,
            pf.as_ref(),
            floor.as_ref(),
            pods,
            opts,
            &mut row,
        )?;
    }
    if opts.shared.runs("latency") {
        latency(&daemon, &mut server, pods, opts, &mut row)?;
    }
    let warnings = daemon
        .guard
        .raw_stderr()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    println!("  warnings/errors in the daemon's log: {warnings}");
    Ok(row)
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, server, interval_ms] = args.as_slice() {
        if flag == "--floor-client" {
            if let Err(err) = floor_client(server, interval_ms) {
                eprintln!("floor client: {err}");
            }
            return std::process::ExitCode::FAILURE;
        }
    }
    common::bench_main("dns", options(), |opts| {
        let root = common::temp_root("dns", &opts.dir)?;
        common::describe_binary(&opts.shared.bin)?;
        common::machine_line(root.path());
        if opts.servers.iter().any(|s| s == "bind") {
            let v = Command::new("named")
                .arg("-v")
                .output()
                .map_err(e("named -v"))?;
            println!("BIND: {}", String::from_utf8_lossy(&v.stdout).trim());
        }
        common::print_daemon_env(&opts.shared.daemon_env);
        if !opts.config_extra.is_empty() {
            println!("config extra: {:?}", opts.config_extra);
        }
        match &opts.peer_finder {
            Some(pf) if opts.servers.iter().any(|s| s == "bind") => {
                println!(
                    "peer-finder: {} ({} bytes), next to the daemon during idle with BIND",
                    pf.display(),
                    common::binary_size(pf)?
                )
            }
            _ => println!("peer-finder: not run (--peer-finder none, not found, or no BIND)"),
        }
        let mut rows = Vec::new();
        for kind in &opts.servers {
            for &pods in &opts.peers {
                rows.push(one(kind, pods, root.path(), &opts)?);
            }
        }
        println!("\n== summary (targets: VmRSS < 3964 kB @2 / 7052 kB @300 / 6144 kB @1000; CPU < 10 / 20 / 10 ms/min; change -> output: median < interval/2 + 0.5 s, max < interval + 1 s) ==");
        for r in rows {
            let mem = r.rss.map_or("-".into(), |m| {
                format!(
                    "VmRSS {:>5} kB RssAnon {:>4} kB RssFile {:>5} kB",
                    m.rss, m.anon, m.file
                )
            });
            let cpu = r
                .cpu_per_min
                .map_or("-".into(), |c| format!("{c:6.2} ms/min"));
            let lat = r.latency.map_or("-".into(), |(m, p, x)| {
                format!("median {m:6.1} p90 {p:6.1} max {x:6.1} ms")
            });
            let dns = r.dns_per_min.map_or("-".into(), |(q, b)| {
                format!("{q:6.1} queries {b:10.0} bytes /min/pod")
            });
            println!("{}  {mem}  CPU {cpu}  DNS {dns}  latency {lat}", r.label);
            if let (Some((pf, pf_cpu)), Some(m), Some(c)) = (r.peer_finder, r.rss, r.cpu_per_min) {
                let (rss_t, cpu_t) = ratio_targets(r.pods);
                let (rss_r, cpu_r) = (m.rss as f64 / pf.rss as f64, c / pf_cpu);
                println!(
                    "{:width$}  peer-finder VmRSS {:>5} kB RssAnon {:>4} kB RssFile {:>5} kB  CPU {pf_cpu:6.2} ms/min",
                    "",
                    pf.rss,
                    pf.anon,
                    pf.file,
                    width = r.label.len()
                );
                println!(
                    "{:width$}  peerplate / peer-finder: VmRSS {rss_r:.2}x (target <= {rss_t}x: {}), CPU {cpu_r:.3}x (target <= {cpu_t}x: {})",
                    "",
                    common::verdict(rss_r <= rss_t),
                    common::verdict(cpu_r <= cpu_t),
                    width = r.label.len()
                );
                if let Some(f) = r.floor {
                    println!(
                        "{:width$}  floor / peer-finder: CPU {:.3}x (the least reachable at one question per interval)",
                        "",
                        f / pf_cpu,
                        width = r.label.len()
                    );
                }
            }
            if let (Some(f), Some(c)) = (r.floor, r.cpu_per_min) {
                println!(
                    "{:width$}  floor (a bare UDP loop, same question, same beat) CPU {f:6.2} ms/min: peerplate / floor {:.2}x",
                    "",
                    c / f,
                    width = r.label.len()
                );
            }
        }
        Ok(())
    })
}
