//! A real BIND (Debian's `bind9`) for the end-to-end DNS tests: a throwaway
//! `named` in the foreground on 127.0.0.1 and a free port, authoritative for
//! `cluster.local` from a zone file holding the Service's SRV records and the
//! pods' A records (TTL 30, CoreDNS's weights), with `allow-update` for a
//! TSIG key made by `tsig-keygen`. [`Bind::set_pods`] changes the records
//! live with `nsupdate`, as a StatefulSet scaling would. Everything lives in
//! a temp dir; dropping the guard kills `named`. `named`, `nsupdate` and
//! `tsig-keygen` are optional components: missing, the test is skipped on a
//! laptop and fails under `CI=true`.

#![allow(dead_code)] // not every test uses every control

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::dns_server::{ask, pod_ip, pod_names, TTL};
use crate::helpers::{
    find_program, free_port, poll_until, require_component, run_with_timeout, Daemon,
};

const SERVICE: &str = "nginx.default.svc.cluster.local.";
const READY_SERVICE: &str = "nginx-ready.default.svc.cluster.local.";
const KEY_NAME: &str = "peerplate-test";

/// A running `named`; see the module docs.
pub struct Bind {
    /// Declared first: dropped (killed) before its dir is removed.
    named: Daemon,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    /// The pods the zone holds now (host names).
    pods: Vec<String>,
    records: Records,
}

/// What the zone says about each pod: the SRV port, the pod's A record and
/// whether the ready-only Service `nginx-ready` lists it too (as
/// `web-K.nginx-ready...`, with its own A record, as CoreDNS names the
/// endpoints of a Service that is not the pods' subdomain).
#[derive(Clone, Copy)]
pub struct Records {
    /// The port the SRV records announce (the pods' listen port).
    pub srv_port: u16,
    /// The A record of pod `web-K`.
    pub ip: fn(&str) -> Ipv4Addr,
    /// Also serve `nginx-ready.default.svc.cluster.local` with the same
    /// pods (every pod in the zone is ready).
    pub ready_service: bool,
    /// `minimal-responses yes`: SRV answers carry no address records in the
    /// additional section, so a client that wants the addresses must ask.
    pub minimal_responses: bool,
}

impl Default for Records {
    /// Port 80, [`pod_ip`], no ready-only Service.
    fn default() -> Records {
        Records {
            srv_port: 80,
            ip: pod_ip,
            ready_service: false,
            minimal_responses: false,
        }
    }
}

/// True if every program the BIND tests use is installed (see
/// [`require_component`] for what happens when one is not).
pub fn available() -> bool {
    ["named", "nsupdate", "tsig-keygen"]
        .iter()
        .all(|p| require_component(p))
}

impl Bind {
    /// Starts `named` serving `hosts` (e.g. `["web-0", "web-1"]`) and waits
    /// (bounded) until it answers. Call [`available`] first.
    pub fn start(hosts: &[&str]) -> Bind {
        Bind::start_with(hosts, Records::default())
    }

    /// [`Bind::start`] with the zone's records shaped by `records`.
    pub fn start_with(hosts: &[&str], records: Records) -> Bind {
        let dir = tempfile::Builder::new()
            .prefix("peerplate-bind-")
            .tempdir()
            .expect("create BIND dir");
        let key = program_output("tsig-keygen", &[KEY_NAME]);
        fs::write(dir.path().join("update.key"), key).expect("write key");
        fs::write(
            dir.path().join("cluster.local.zone"),
            zone_file(hosts, &records),
        )
        .expect("write zone");
        let limit = supports_max_records_per_type();

        // The port is free when we look; another process could take it before
        // named binds, so try a few.
        let mut last_log = String::new();
        for _ in 0..3 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            fs::write(
                dir.path().join("named.conf"),
                named_conf(dir.path(), addr.port(), limit, records.minimal_responses),
            )
            .expect("write named.conf");
            let mut cmd = Command::new(find_program("named").expect("named installed"));
            cmd.args(["-g", "-4", "-n", "1", "-c"])
                .arg(dir.path().join("named.conf"));
            let mut named = Daemon::spawn_in(cmd, dir.path());
            if wait_until_answering(&mut named, addr) {
                return Bind {
                    dir,
                    addr,
                    named,
                    pods: hosts.iter().map(|h| h.to_string()).collect(),
                    records,
                };
            }
            last_log = named.logs();
        }
        panic!("named did not start answering on 127.0.0.1\n--- named log ---\n{last_log}");
    }

    /// `127.0.0.1:PORT`, as peerplate's `nameservers` takes it.
    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// named's log so far.
    pub fn log(&self) -> String {
        self.named.logs()
    }

    /// The queries named has logged so far, as (name, type) pairs like
    /// `("nginx.default.svc.cluster.local", "SRV")`, in order.
    pub fn queries(&self) -> Vec<(String, String)> {
        // `named -g` logs everything, queries too, to its stderr.
        let log = self.log();
        log.lines()
            .filter_map(|line| {
                // "client @0x.. 127.0.0.1#PORT (NAME): query: NAME IN TYPE +E(0)K (127.0.0.1)"
                let (_, rest) = line.split_once("query: ")?;
                let mut words = rest.split_whitespace();
                let name = words.next()?.to_ascii_lowercase();
                let _class = words.next()?;
                Some((name, words.next()?.to_string()))
            })
            .collect()
    }

    /// How many queries of type `rtype` (like `"SRV"`) named has logged.
    pub fn count(&self, rtype: &str) -> usize {
        self.queries().iter().filter(|(_, t)| t == rtype).count()
    }

    /// Replaces the Service's SRV records and the pods' A records with
    /// `hosts`, in one dynamic update (`nsupdate -k`).
    pub fn set_pods(&mut self, hosts: &[&str]) {
        let mut script = format!(
            "server 127.0.0.1 {}\nzone cluster.local\n",
            self.addr.port()
        );
        let weight = |n: usize| (100 / n.max(1)).max(1);
        if weight(hosts.len()) == weight(self.pods.len()) && !self.records.ready_service {
            // Only the pods that come or go: an update message, like any DNS
            // message, holds at most 64 KiB (1,000 pods do not fit).
            let (w, port) = (weight(hosts.len()), self.records.srv_port);
            for old in self.pods.iter().filter(|p| !hosts.contains(&p.as_str())) {
                script.push_str(&format!(
                    "update delete {SERVICE} SRV 0 {w} {port} {old}.{SERVICE}\nupdate delete {old}.{SERVICE} A\n"
                ));
            }
            let new: Vec<&str> = hosts
                .iter()
                .copied()
                .filter(|h| !self.pods.iter().any(|p| p == h))
                .collect();
            script.push_str(&records_weighted(&new, &self.records, "update add ", w));
        } else {
            script.push_str(&format!("update delete {SERVICE} SRV\n"));
            if self.records.ready_service {
                script.push_str(&format!("update delete {READY_SERVICE} SRV\n"));
            }
            for old in &self.pods {
                script.push_str(&format!("update delete {old}.{SERVICE} A\n"));
                if self.records.ready_service {
                    script.push_str(&format!("update delete {old}.{READY_SERVICE} A\n"));
                }
            }
            script.push_str(&records(hosts, &self.records, "update add "));
        }
        script.push_str("send\n");
        let path = self.dir.path().join("update.txt");
        fs::write(&path, script).expect("write nsupdate script");
        let mut cmd = Command::new(find_program("nsupdate").expect("nsupdate installed"));
        cmd.arg("-k")
            .arg(self.dir.path().join("update.key"))
            .arg(&path);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(10));
        assert_eq!(
            out.code,
            Some(0),
            "nsupdate failed\n{}\n--- named log ---\n{}",
            out.dump(),
            self.log()
        );
        self.pods = hosts.iter().map(|h| h.to_string()).collect();
    }

    /// The pods are `web-0` .. `web-<n-1>`.
    pub fn scale(&mut self, n: usize) {
        let names = pod_names(n);
        let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
        self.set_pods(&hosts);
    }
}

/// Polls the SOA until `named` answers it authoritatively (bounded); false
/// if it exits or never answers.
fn wait_until_answering(named: &mut Daemon, addr: SocketAddr) -> bool {
    let mut exited = false;
    let answered = poll_until(Duration::from_secs(10), || {
        exited = !named.is_running();
        exited
            || ask(
                addr,
                "cluster.local.",
                RecordType::SOA,
                Duration::from_millis(200),
            )
            .is_some_and(|m| {
                m.metadata.response_code == ResponseCode::NoError && m.metadata.authoritative
            })
    });
    answered && !exited
}

fn program_output(name: &str, args: &[&str]) -> String {
    let out = Command::new(find_program(name).unwrap_or_else(|| PathBuf::from(name)))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    assert!(out.status.success(), "{name} {args:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// BIND 9.18.28 and later refuse more than 100 records of one type per name
/// unless `max-records-per-type 0`; older versions do not know the option.
fn supports_max_records_per_type() -> bool {
    let Some(checkconf) = find_program("named-checkconf") else {
        return named_version() >= (9, 18, 28);
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("probe.conf");
    fs::write(&conf, "options { max-records-per-type 0; };\n").expect("write probe");
    Command::new(checkconf)
        .arg(&conf)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// (9, 18, 49) from `named -v` ("BIND 9.18.49-1~deb12u3-Debian ...").
fn named_version() -> (u32, u32, u32) {
    let text = program_output("named", &["-v"]);
    let version = text.split_whitespace().nth(1).unwrap_or_default();
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn named_conf(dir: &Path, port: u16, max_records_per_type: bool, minimal: bool) -> String {
    let d = dir.display();
    let mut limit = if max_records_per_type {
        "    max-records-per-type 0;\n".to_string()
    } else {
        String::new()
    };
    if minimal {
        limit.push_str("    minimal-responses yes;\n");
    }
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
    querylog yes;
{limit}}};
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

/// The zone as CoreDNS would answer it: SOA, NS, and for each pod an SRV
/// record of the Service and its A record.
fn zone_file(hosts: &[&str], shape: &Records) -> String {
    let mut z = format!(
        "$ORIGIN cluster.local.\n$TTL {TTL}\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 {TTL}\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 127.0.0.1\n"
    );
    z.push_str(&records(hosts, shape, ""));
    z
}

/// `<prefix>NAME TTL [IN] SRV|A ...` lines for `hosts`.
fn records(hosts: &[&str], shape: &Records, prefix: &str) -> String {
    records_weighted(hosts, shape, prefix, (100 / hosts.len().max(1)).max(1))
}

/// [`records`] with this SRV weight.
fn records_weighted(hosts: &[&str], shape: &Records, prefix: &str, weight: usize) -> String {
    let port = shape.srv_port;
    let mut out = String::new();
    for h in hosts {
        let _ = writeln!(
            out,
            "{prefix}{SERVICE} {TTL} IN SRV 0 {weight} {port} {h}.{SERVICE}"
        );
        if shape.ready_service {
            let _ = writeln!(
                out,
                "{prefix}{READY_SERVICE} {TTL} IN SRV 0 {weight} {port} {h}.{READY_SERVICE}"
            );
            let _ = writeln!(
                out,
                "{prefix}{h}.{READY_SERVICE} {TTL} IN A {}",
                (shape.ip)(h)
            );
        }
        let _ = writeln!(out, "{prefix}{h}.{SERVICE} {TTL} IN A {}", (shape.ip)(h));
    }
    out
}
