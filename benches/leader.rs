//! Leadership from the outside (issue 10's targets), with `peerplate run`
//! processes on 127.0.0.10, .11, ... (one per pod, the same admin port) and
//! the integration tests' in-process DNS server (`dns_server.rs`, included
//! by path) serving the headless Service `nginx` and its ready-only twin
//! `nginx-ready`.
//!
//! - `handover`: `--pods` (3) pods with `leader: {policy: sticky, grace}`;
//!   the current leader leaves the ready set, and the clock stops when every
//!   pod's output names the first ready peer as leader. Repeated `--rounds`
//!   (5) times, the old leader coming back ready between rounds (nobody
//!   flips back, so the next round removes the new leader: web-0 and web-1
//!   alternate). Target: under `grace` plus two DNS intervals.
//! - `start`: the time from starting one more pod (a restarted `web-0`
//!   whose peers already chose another leader) to its first output, which
//!   includes asking its ready peers (`GET /leader`, one request each, at
//!   most five, bounded by the timeout): median and max over the rounds.
//! - `resign` (issue 20): `--pods` pods with `sticky` and `--resign-grace`
//!   (30 s, the default grace); the leader's app stops first (it leaves the
//!   ready set, the native-sidecar order) and its peerplate gets SIGTERM at
//!   the same moment. The clock stops when every other pod's output names
//!   the successor; the split is the time between the first and the last
//!   pod switching (two leaders named at once). The old leader comes back
//!   as a fresh pod between rounds. `--rounds` hand-overs (use 10).
//! - `idle`: idle CPU (scheduler time, `/proc/PID/task/*/schedstat`) and
//!   VmRSS of one pod over `--cpu-window` (30 s), `ordinal` with one SRV
//!   name, and `sticky` with the ready service (two SRV names, and `GET
//!   /leader` of up to five peers every `grace`).
//!
//! Run: `cargo bench --bench leader -- --bin "$(scripts/build-release.sh | tail -n1)"`
//! Options after `--`: `--bin PATH`, `--only handover|start|resign|idle`, `--pods N`,
//! `--rounds N`, `--grace SECS` (2), `--resign-grace SECS` (30), `--interval SECS` (1), `--cpu-window
//! SECS`, `--daemon-env K=V`, `--dir DIR`. Every wait is bounded; the
//! daemons are stopped on exit. Numbers are informational; no test asserts
//! them.

#[path = "../tests/integration/dns_server.rs"]
mod dns_server;

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{e, helpers::free_port_on, Daemon, Res};
use dns_server::DnsServer;

const TEMPLATE: &str = "leader={{ leader.hostname if leader else 'none' }}\n";

#[derive(Debug)]
struct Options {
    shared: common::SharedOptions,
    pods: usize,
    rounds: usize,
    grace: Duration,
    resign_grace: Duration,
    interval: Duration,
    cpu_window: Duration,
    dir: PathBuf,
}

fn options() -> Res<Options> {
    let mut o = Options {
        shared: common::SharedOptions::new(),
        pods: 3,
        rounds: 5,
        grace: Duration::from_secs(2),
        resign_grace: Duration::from_secs(30),
        interval: Duration::from_secs(1),
        cpu_window: Duration::from_secs(30),
        dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    };
    common::parse_args(&mut o.shared, |arg, args| {
        match arg {
            "--pods" => {
                o.pods = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (2..=40).contains(n))
                    .ok_or("--pods takes 2 to 40")?
            }
            "--rounds" => {
                o.rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=50).contains(n))
                    .ok_or("--rounds takes 1 to 50")?
            }
            "--grace" => o.grace = common::secs_arg(args.next(), 60.0)?,
            "--resign-grace" => o.resign_grace = common::secs_arg(args.next(), 600.0)?,
            "--interval" => o.interval = common::secs_arg(args.next(), 10.0)?,
            "--cpu-window" => o.cpu_window = common::secs_arg(args.next(), 600.0)?,
            "--dir" => o.dir = args.next().ok_or("--dir takes a path")?.into(),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(o)
}

fn main() -> std::process::ExitCode {
    common::bench_main("leader", options(), run)
}

fn ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + u8::try_from(k).unwrap_or(200))
}

fn host(k: usize) -> String {
    format!("web-{k}")
}

/// One pod's dir, config and daemon.
struct Pod {
    dir: PathBuf,
    daemon: Option<Daemon>,
}

impl Pod {
    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("out.txt")).unwrap_or_default()
    }
}

fn config(k: usize, dns: &DnsServer, port: u16, leader: &str, interval: Duration) -> String {
    format!(
        "identity: {{hostname: {h}, namespace: default}}\n\
         peers:\n  dns:\n    service: nginx\n{ready}    cluster_domain: cluster.local\n    nameservers: [\"{ns}\"]\n    interval: {ms}ms\n\
         wait: {{min: 0s, max: 0s}}\n\
         templates:\n  - {{source: t.j2, destination: out.txt}}\n\
         http: {{listen: \"{ip}:{port}\"}}\n\
         leader:\n{leader}",
        h = host(k),
        ready = if leader.contains("sticky") {
            "    ready_service: nginx-ready\n"
        } else {
            ""
        },
        ns = dns.nameserver(),
        ms = interval.as_millis(),
        ip = ip(k),
    )
}

fn start_pod(o: &Options, root: &Path, k: usize, yaml: &str) -> Res<Pod> {
    let dir = root.join(format!("{}-{}", host(k), unique_suffix()));
    std::fs::create_dir_all(&dir).map_err(e("create the pod dir"))?;
    std::fs::write(dir.join("t.j2"), TEMPLATE).map_err(e("write the template"))?;
    let cfg = dir.join("peerplate.yaml");
    std::fs::write(&cfg, yaml).map_err(e("write the config"))?;
    let mut cmd = std::process::Command::new(&o.shared.bin);
    cmd.arg("--config")
        .arg(&cfg)
        .arg("run")
        .current_dir(&dir)
        .envs(o.shared.daemon_env.iter().map(|(k, v)| (k, v)));
    let daemon = Daemon::spawn_in(cmd, &dir).graceful();
    Ok(Pod {
        dir,
        daemon: Some(daemon),
    })
}

fn unique_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0)
}

/// Waits until every pod in `pods` renders `leader=web-L`.
fn wait_all(pods: &[Pod], l: usize, deadline: Duration) -> Option<Duration> {
    let start = Instant::now();
    let want = format!("leader={}\n", host(l));
    while start.elapsed() < deadline {
        if pods
            .iter()
            .filter(|p| p.daemon.is_some())
            .all(|p| p.output() == want)
        {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn stats(name: &str, mut v: Vec<Duration>) {
    if v.is_empty() {
        println!("{name}: no samples");
        return;
    }
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name}: n={} median {:.0} ms, max {:.0} ms, min {:.0} ms",
        v.len(),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1]),
        ms(v[0])
    );
}

/// When the first and the last pod other than `skip` rendered `want`,
/// sampling every millisecond from `t0`; `None` if not all did by `deadline`.
fn switch_times(
    set: &[Pod],
    skip: usize,
    want: &str,
    t0: Instant,
    deadline: Duration,
) -> Option<(Duration, Duration)> {
    let mut switched: Vec<Option<Duration>> = vec![None; set.len()];
    if let Some(s) = switched.get_mut(skip) {
        *s = Some(Duration::ZERO);
    }
    while switched.iter().any(Option::is_none) && t0.elapsed() < deadline {
        for (k, pod) in set.iter().enumerate() {
            if switched[k].is_none() && pod.output() == want {
                switched[k] = Some(t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let times: Vec<Duration> = switched
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != skip)
        .map(|(_, t)| *t)
        .collect::<Option<_>>()?;
    Some((*times.iter().min()?, *times.iter().max()?))
}

/// Leader SIGTERM -> every other output names the successor, and the split
/// per hand-over.
fn resign(o: &Options, root: &Path, dns: &DnsServer, port: u16, all: &[&str]) -> Res<()> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let sticky = format!(
        "  policy: sticky\n  grace: {}ms\n",
        o.resign_grace.as_millis()
    );
    println!(
        "resign: {} pods, sticky grace {:?}, DNS interval {:?}",
        o.pods, o.resign_grace, o.interval
    );
    let mut set: Vec<Pod> = (0..o.pods)
        .map(|k| start_pod(o, root, k, &config(k, dns, port, &sticky, o.interval)))
        .collect::<Res<_>>()?;
    wait_all(&set, 0, Duration::from_secs(30)).ok_or("the set never agreed on web-0")?;
    let (mut totals, mut splits) = (Vec::new(), Vec::new());
    let mut leader = 0;
    for round in 0..o.rounds {
        let next = if leader == 0 { 1 } else { 0 };
        let want = format!("leader={}\n", host(next));
        let ready: Vec<&str> = all
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != leader)
            .map(|(_, h)| *h)
            .collect();
        let pid = set[leader]
            .daemon
            .as_ref()
            .map(Daemon::pid)
            .ok_or("no daemon")?;
        let pid = Pid::from_raw(i32::try_from(pid).map_err(|_| "pid")?);
        dns.set_ready(&ready);
        let t0 = Instant::now();
        kill(pid, Signal::SIGTERM).map_err(|e| format!("SIGTERM: {e}"))?;
        let (first, last) = switch_times(
            &set,
            leader,
            &want,
            t0,
            o.resign_grace + Duration::from_secs(15),
        )
        .ok_or_else(|| format!("round {round}: not every pod followed {}", host(next)))?;
        println!(
            "  round {round}: web-{leader} -> web-{next}: every output after {:.0} ms, split {:.0} ms",
            last.as_secs_f64() * 1e3,
            (last - first).as_secs_f64() * 1e3
        );
        totals.push(last);
        splits.push(last - first);
        // The old leader comes back as a new pod (a fresh emptyDir).
        drop(set[leader].daemon.take());
        dns.set_ready(all);
        set[leader] = start_pod(
            o,
            root,
            leader,
            &config(leader, dns, port, &sticky, o.interval),
        )?;
        wait_all(&set, next, Duration::from_secs(30))
            .ok_or_else(|| format!("round {round}: the new pod did not follow"))?;
        leader = next;
    }
    stats(
        "resign (leader SIGTERM -> every other output names the successor)",
        totals,
    );
    stats(
        "split (first to last pod switching, two leaders named)",
        splits,
    );
    Ok(())
}

fn run(o: Options) -> Res<()> {
    common::describe_binary(&o.shared.bin)?;
    let root = common::temp_root("leader", &o.dir)?;
    let dns = DnsServer::start("cluster.local");
    let names: Vec<String> = (0..o.pods).map(host).collect();
    let pods: Vec<(&str, Ipv4Addr)> = names
        .iter()
        .enumerate()
        .map(|(k, h)| (h.as_str(), ip(k)))
        .collect();
    dns.set_pod_ips(&pods);
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    dns.set_ready(&all);
    let ips: Vec<String> = (0..o.pods + 1).map(|k| ip(k).to_string()).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let port = free_port_on(&ip_refs);
    let sticky = format!("  policy: sticky\n  grace: {}ms\n", o.grace.as_millis());
    println!(
        "{} pods, sticky grace {:?}, DNS interval {:?}; target for handover: under grace + 2 intervals = {:?}",
        o.pods,
        o.grace,
        o.interval,
        o.grace + 2 * o.interval
    );

    if o.shared.runs("handover") || o.shared.runs("start") {
        let mut set: Vec<Pod> = (0..o.pods)
            .map(|k| {
                start_pod(
                    &o,
                    root.path(),
                    k,
                    &config(k, &dns, port, &sticky, o.interval),
                )
            })
            .collect::<Res<_>>()?;
        wait_all(&set, 0, Duration::from_secs(30)).ok_or("the set never agreed on web-0")?;
        let mut handovers = Vec::new();
        let mut splits = Vec::new();
        let mut starts = Vec::new();
        let mut leader = 0;
        for round in 0..o.rounds {
            // The first ready peer in ordinal order takes over.
            let next = if leader == 0 { 1 } else { 0 };
            let ready: Vec<&str> = all
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != leader)
                .map(|(_, h)| *h)
                .collect();
            dns.set_ready(&ready);
            let t0 = Instant::now();
            let want = format!("leader={}\n", host(next));
            // The old leader's own output counts too: it is still running.
            let (first, last) = switch_times(
                &set,
                usize::MAX,
                &want,
                t0,
                o.grace + 10 * o.interval + Duration::from_secs(5),
            )
            .ok_or_else(|| format!("round {round}: not every pod followed {}", host(next)))?;
            println!(
                "  round {round}: every output after {:.0} ms, split {:.0} ms",
                last.as_secs_f64() * 1e3,
                (last - first).as_secs_f64() * 1e3
            );
            handovers.push(last);
            splits.push(last - first);
            dns.set_ready(&all);
            // The old leader back: nobody flips back.
            std::thread::sleep(o.interval * 2);
            wait_all(&set, next, Duration::from_millis(10))
                .ok_or_else(|| format!("round {round}: a pod flipped back"))?;
            if o.shared.runs("start") {
                // Restart the old leader with fresh state: it asks its peers.
                let old = &mut set[leader];
                drop(old.daemon.take());
                let yaml = config(leader, &dns, port, &sticky, o.interval);
                let started = Instant::now();
                set[leader] = start_pod(&o, root.path(), leader, &yaml)?;
                let want = format!("leader={}\n", host(next));
                let deadline = Duration::from_secs(10);
                while set[leader].output() != want && started.elapsed() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if set[leader].output() != want {
                    return Err(format!("round {round}: the restarted pod did not follow"));
                }
                starts.push(started.elapsed());
            }
            leader = next;
        }
        stats(
            "handover (leader leaves the ready set -> every output names the next)",
            handovers,
        );
        stats(
            "split (first to last pod switching, two leaders named)",
            splits,
        );
        if o.shared.runs("start") {
            stats(
                "restarted pod: start -> first output following its peers",
                starts,
            );
        }
    }

    if o.shared.runs("resign") {
        resign(&o, root.path(), &dns, port, &all)?;
    }

    if o.shared.runs("idle") {
        for (name, leader_yaml) in [
            ("ordinal, one SRV name", "  policy: ordinal\n".to_string()),
            ("sticky, ready service", sticky.clone()),
        ] {
            let set: Vec<Pod> = (0..o.pods)
                .map(|k| {
                    start_pod(
                        &o,
                        root.path(),
                        k,
                        &config(k, &dns, port, &leader_yaml, o.interval),
                    )
                })
                .collect::<Res<_>>()?;
            wait_all(&set, 0, Duration::from_secs(30)).ok_or("the set never agreed on web-0")?;
            std::thread::sleep(Duration::from_secs(3));
            let pid = set[1].daemon.as_ref().map(Daemon::pid).ok_or("no daemon")?;
            println!("idle, {name} (web-1 of {}):", o.pods);
            let per_min = common::idle_cpu(pid, o.cpu_window, &[])?;
            let mem = common::memory(pid)?;
            println!(
                "  => {per_min:.2} ms CPU per minute; VmRSS {} kB, RssAnon {} kB",
                mem.rss, mem.anon
            );
            let srv = dns.queries_of(hickory_proto::rr::RecordType::SRV);
            println!("  (DNS server: {srv} SRV queries so far from all pods)");
        }
    }
    Ok(())
}
