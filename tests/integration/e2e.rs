//! The seed scenario end to end, with real parts: real nginx, the in-process
//! CoreDNS-like server answering for the pods (SRV and A records), and per
//! "pod" one PID namespace (`unshare --pid --fork --mount-proc`) in which a
//! shell stands in for the pause container as PID 1 and starts, as siblings,
//! `peerplate once` (the config exists before nginx starts), nginx (which
//! daemonizes, so its master's parent is PID 1, never peerplate), then
//! `peerplate run` with `reload: {signal: HUP, process: nginx}` and a
//! `check: nginx -t ...`. Pod web-K listens on 127.0.0.1(10+K):PORT and the
//! DNS server maps web-K's name there (SRV port PORT); followers resolve the
//! leader through that server at request time (the template's `resolver`).
//!
//! It shows: `curl` to web-1 (and, after scaling to 3, to web-2) answers
//! `web-0`; an unchanged output sends no signal (the workers stay); a changed
//! output (the leader leaves DNS) sends one SIGHUP to the nginx master, whose
//! pid stays while its workers are replaced, and the new config is live; a
//! ConfigMap template edit that fails `nginx -t` keeps nginx on the old
//! config with no signal and logs nginx's stderr; a fixed edit reloads again.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::dns_server::DnsServer;
use crate::helpers::{
    bin, find_program, free_port_on, poll_until, repo_file, require_component, Daemon, SVC, WAIT,
};
use crate::pod::Pod;
use crate::procfs::{self, Stat};

/// The shell that stands in for the pause container: PID 1 of the pod's PID
/// namespace, parent of nginx's master (nginx daemonizes) and of peerplate.
/// Arguments: peerplate, its config, nginx, nginx's prefix. (Not through
/// the environment: nginx reads `$NGINX` as inherited sockets.)
const POD_SCRIPT: &str = r#"
pp="$1" cfg="$2" nginx="$3" prefix="$4"
"$pp" --config "$cfg" once || exit 1
"$nginx" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/error.log" \
  -g "pid $prefix/nginx.pid; error_log $prefix/error.log;" || exit 1
"$pp" --config "$cfg" run &
wait
"#;

/// One StatefulSet pod: nginx and its peerplate sidecar in their own PID
/// namespace, the template in a kubelet-style ConfigMap volume.
struct NginxPod {
    host: String,
    ip: String,
    port: u16,
    /// The sandbox, config and ConfigMap; held until the pod is dropped.
    pod: Pod,
    prefix: PathBuf,
    daemon: Daemon,
}

impl NginxPod {
    fn start(k: usize, port: u16, dns: &DnsServer, template: &str) -> NginxPod {
        let nginx = find_program("nginx").expect("nginx found");
        let host = format!("web-{k}");
        let ip = format!("127.0.0.{}", 10 + k);
        let pod = Pod::builder()
            .hostname(&host)
            .dns(&[&dns.nameserver()], "200ms")
            .wait_for_self()
            .configmap_template(
                "nginx.conf.j2",
                template,
                "nginx/nginx.conf",
                &format!(
                    "    check: \"{nginx} -t -p ROOT/nginx/ -c {{staged}} -g 'pid ROOT/nginx/check.pid; error_log stderr;'\"\n",
                    nginx = nginx.display()
                ),
            )
            .yaml(&format!(
                "reload: {{signal: HUP, process: nginx}}\nvars:\n  listen: \"{ip}:{port}\"\n  resolver_valid: 1s\n"
            ))
            .build();
        let prefix = pod.sb.mkdir("nginx");
        fs::create_dir_all(prefix.join("logs")).expect("nginx logs dir");
        let mut cmd = procfs::unshare();
        cmd.args(["sh", "-c", POD_SCRIPT, "pod"])
            .arg(bin())
            .arg(&pod.config)
            .arg(&nginx)
            .arg(&prefix);
        pod.clean_env(&mut cmd);
        let mut pod = NginxPod {
            host,
            ip,
            port,
            daemon: Daemon::spawn(cmd),
            pod,
            prefix,
        };
        pod.daemon.wait_for_log("rendered", WAIT);
        let what = format!("{}'s nginx master and a worker", pod.host);
        let ready = poll_until(WAIT, || {
            pod.master()
                .is_some_and(|m| !procfs_workers(m.pid).is_empty())
        });
        assert!(ready, "no {what}\n{}", pod.logs());
        pod
    }

    fn url(&self) -> String {
        format!("http://{}:{}/", self.ip, self.port)
    }

    /// The nginx master: the process named nginx whose parent is the
    /// namespace's PID 1 (the pause stand-in), seen from the host.
    fn master(&self) -> Option<Stat> {
        let init = procfs::namespace_init(self.daemon.pid())?;
        procfs::children(init)
            .into_iter()
            .find(|s| s.comm == "nginx" && s.state != 'Z')
    }

    fn master_pid(&self) -> i32 {
        self.master()
            .unwrap_or_else(|| panic!("{}'s nginx master is gone\n{}", self.host, self.logs()))
            .pid
    }

    /// The pids of the running workers (children of the master still
    /// serving; old workers that are shutting down are counted too until
    /// they exit).
    fn workers(&self) -> Vec<i32> {
        procfs_workers(self.master_pid())
    }

    fn conf(&self) -> String {
        fs::read_to_string(self.prefix.join("nginx.conf")).expect("read nginx.conf")
    }

    fn logs(&self) -> String {
        let error_log = fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default();
        format!(
            "=== pod {} ===\n{}--- nginx error.log ---\n{error_log}",
            self.host,
            self.daemon.logs()
        )
    }

    /// stderr after `mark`.
    fn since(&self, mark: usize) -> String {
        self.daemon.stderr().get(mark..).unwrap_or("").to_string()
    }

    fn signals_since(&self, mark: usize) -> Vec<String> {
        self.daemon
            .lines_since(mark)
            .into_iter()
            .filter(|l| l.contains("reload signal sent"))
            .collect()
    }

    /// Waits until a GET of this pod's `/` answers `body`.
    fn wait_for_body(&self, body: &str) {
        let mut last = String::new();
        let ok = poll_until(WAIT, || {
            last = curl(&self.url());
            last == body
        });
        assert!(
            ok,
            "curl {} never answered {body:?}; last answer: {last:?}\n--- nginx.conf ---\n{}\n{}",
            self.url(),
            self.conf(),
            self.logs()
        );
    }
}

fn procfs_workers(master: i32) -> Vec<i32> {
    procfs::children(master)
        .into_iter()
        .filter(|s| s.comm == "nginx" && s.state != 'Z')
        .map(|s| s.pid)
        .collect()
}

/// The body of a GET (or the error, so a wait can show it).
fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "2", url])
        .output()
        .expect("run curl");
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        format!(
            "curl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn pods_at(dns: &DnsServer, ks: &[usize]) {
    let pods: Vec<(String, std::net::Ipv4Addr)> = ks
        .iter()
        .map(|k| {
            (
                format!("web-{k}"),
                std::net::Ipv4Addr::new(127, 0, 0, 10 + *k as u8),
            )
        })
        .collect();
    let refs: Vec<(&str, std::net::Ipv4Addr)> =
        pods.iter().map(|(h, ip)| (h.as_str(), *ip)).collect();
    dns.set_pod_ips(&refs);
}

#[test]
fn seed_scenario_with_real_nginx_dns_and_a_shared_pid_namespace() {
    if !(require_component("nginx") && require_component("curl") && procfs::pid_namespaces_work()) {
        return;
    }
    let template = fs::read_to_string(repo_file("templates/nginx.conf.j2")).expect("template");
    let port = free_port_on(&["127.0.0.10", "127.0.0.11", "127.0.0.12"]);
    let dns = DnsServer::start("cluster.local");
    dns.set_srv_port(port);
    pods_at(&dns, &[0, 1]);

    // Two pods: web-0 answers with its name, web-1 proxies to it.
    let web0 = NginxPod::start(0, port, &dns, &template);
    let mut web1 = NginxPod::start(1, port, &dns, &template);
    web0.wait_for_body("web-0\n");
    web1.wait_for_body("web-0\n");
    assert!(
        web1.conf().contains(&format!("web-0.{SVC}")),
        "{}",
        web1.conf()
    );
    // `once` wrote the file before nginx started; `run`'s first cycle found
    // the same bytes: no signal.
    web1.daemon
        .wait_for_line(0, &["rendered", "changed=false"], WAIT);
    assert_eq!(
        web1.signals_since(0),
        Vec::<String>::new(),
        "{}",
        web1.logs()
    );

    // Scale to 3: web-2 proxies to web-0 too. web-1's output does not change
    // (it names only the leader), so it gets no signal: same workers.
    let workers = web1.workers();
    let master = web1.master_pid();
    let mark = web1.daemon.mark();
    pods_at(&dns, &[0, 1, 2]);
    let web2 = NginxPod::start(2, port, &dns, &template);
    web2.wait_for_body("web-0\n");
    web1.daemon
        .wait_for_line(mark, &["peer set changed", "count=3"], WAIT);
    web1.daemon
        .wait_for_line(mark, &["rendered", "changed=false"], WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        web1.signals_since(mark),
        Vec::<String>::new(),
        "{}",
        web1.logs()
    );
    assert_eq!(web1.master_pid(), master);
    assert_eq!(web1.workers(), workers, "no reload, same workers");

    // The leader leaves: web-1 becomes the leader. Its output changes, its
    // nginx master gets one SIGHUP: same master, new workers, new config.
    let mark = web1.daemon.mark();
    pods_at(&dns, &[1, 2]);
    let line = web1
        .daemon
        .wait_for_line(mark, &["reload signal sent", "signal=SIGHUP"], WAIT);
    let ns_master = *procfs::ns_pids(master).last().expect("NSpid of the master");
    assert!(
        line.contains(&format!("pid={ns_master} ")),
        "the signal went to the master (pid {ns_master} in the pod's namespace): {line}\n{}",
        web1.logs()
    );
    web1.wait_for_body("web-1\n");
    web2.wait_for_body("web-1\n");
    let replaced = poll_until(WAIT, || {
        let now = web1.workers();
        !now.is_empty() && now.iter().all(|w| !workers.contains(w))
    });
    assert!(
        replaced,
        "workers {:?} were not replaced after SIGHUP: {:?}\n{}",
        workers,
        web1.workers(),
        web1.logs()
    );
    assert_eq!(web1.master_pid(), master, "a reload keeps the master");
    assert_eq!(web1.signals_since(mark).len(), 1, "{}", web1.logs());

    // web-0 comes back: web-1 proxies to it again.
    pods_at(&dns, &[0, 1, 2]);
    web1.wait_for_body("web-0\n");
    let good_conf = web1.conf();

    // A template edit that fails `nginx -t`: nothing installed, no signal,
    // nginx keeps serving the old config, the log has nginx's complaint.
    let workers = poll_workers_settled(&web1);
    let mark = web1.daemon.mark();
    let broken = template.replacen("http {", "http {\n  bogus_directive on;", 1);
    assert_ne!(broken, template);
    web1.pod.configmap().update(&[("nginx.conf.j2", &broken)]);
    web1.daemon
        .wait_for_log_since(mark, "not installed, keeping the last good output", WAIT);
    let said = web1.since(mark);
    assert!(
        said.contains("unknown directive \"bogus_directive\""),
        "the log carries the check's stderr:\n{said}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        web1.signals_since(mark),
        Vec::<String>::new(),
        "{}",
        web1.logs()
    );
    assert_eq!(web1.conf(), good_conf, "the old config stays");
    assert_eq!(web1.workers(), workers, "no reload");
    assert_eq!(curl(&web1.url()), "web-0\n");
    let leftovers: Vec<String> = fs::read_dir(&web1.prefix)
        .expect("read prefix")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".peerplate"))
        .collect();
    assert!(leftovers.is_empty(), "staged files left: {leftovers:?}");

    // Fixed (and changed): installed, one signal, live.
    let mark = web1.daemon.mark();
    let fixed = template.replacen(
        "http {",
        "http {\n  add_header X-Peerplate-Rev 2 always;",
        1,
    );
    web1.pod.configmap().update(&[("nginx.conf.j2", &fixed)]);
    web1.daemon
        .wait_for_line(mark, &["reload signal sent", "signal=SIGHUP"], WAIT);
    let header_live = poll_until(WAIT, || {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "2", &web1.url()])
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).contains("X-Peerplate-Rev: 2")
    });
    assert!(header_live, "the fixed config is live\n{}", web1.logs());
    assert_eq!(web1.master_pid(), master);
    drop(web0);
    drop(web2);
}

/// The workers once a previous reload's old workers have exited.
fn poll_workers_settled(pod: &NginxPod) -> Vec<i32> {
    let mut last = pod.workers();
    let mut stable = 0;
    poll_until(WAIT, || {
        let now = pod.workers();
        if now == last && now.len() == 1 {
            stable += 1;
        } else {
            stable = 0;
            last = now;
        }
        stable >= 20
    });
    last
}

trait WaitSince {
    fn wait_for_log_since(&mut self, mark: usize, substr: &str, timeout: Duration);
}

impl WaitSince for Daemon {
    /// Wait until `substr` appears in stderr written after `mark` (the text
    /// may span lines, e.g. a check's multi-line stderr).
    fn wait_for_log_since(&mut self, mark: usize, substr: &str, timeout: Duration) {
        self.wait_until(timeout, &format!("log containing {substr:?}"), |d| {
            d.stderr().get(mark..).is_some_and(|s| s.contains(substr))
        });
    }
}
