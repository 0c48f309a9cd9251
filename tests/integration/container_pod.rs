//! The seed pod as real containers: per StatefulSet pod a podman pod whose
//! containers share one PID namespace (`shareProcessNamespace`; the infra
//! container is PID 1, as the pause container is), laid out as deploy/base
//! lays them out:
//!
//! - peerplate: the shipped image (the Dockerfile's final stage), read-only
//!   root, uid 65532, no capability, `--config /etc/peerplate/peerplate.yaml
//!   run`; `/etc/peerplate` a kubelet-style ConfigMap folder (`..data`
//!   swaps) holding deploy/base's `peerplate.yaml` and `nginx.conf.j2`;
//!   `/conf` an emptyDir-like host folder owned by 65532;
//! - nginx: Debian's nginx-light (debootstrap image), read-only root, uid
//!   65532, no capability, its pid and temp files on a tmpfs `/tmp`, with
//!   deploy/base's command `nginx -e stderr -c /conf/nginx.conf -g 'daemon
//!   off;'`, started only once peerplate's `/readyz` answers 200 (the
//!   startupProbe);
//! - peers from BIND on the host's loopback: `nginx` and `nginx-ready`
//!   SRV records, pod `web-K` at 127.0.15.(10+K).
//!
//! What the test changes in deploy/base's files, and why: all pods share
//! the host's network here, where in a cluster each has its own, so each
//! listens on its own loopback address (`http.listen` and `vars.listen`;
//! `sticky` asks the peers' `/leader` at their DNS addresses, on the port of
//! its own `http.listen`) on ports free on this machine, and peerplate reads
//! the pod's resolv.conf (search list of namespace `default`, the BIND
//! server as nameserver) through `PEERPLATE_RESOLV_CONF`, since a
//! resolv.conf line cannot carry BIND's port. The template gets one more
//! location, `/peers`, listing the peer set: with the base's template a
//! follower's output names only the leader, so a scale-up would change
//! nothing an HTTP client can see.
//!
//! It shows: web-1 proxies to web-0; a scale-up to 3 re-renders and
//! nginx's master (in the other container) gets SIGHUP: same master, new
//! workers, new config live; a ConfigMap edit reloads nginx; a template that
//! fails to render is not installed, and an nginx container killed and
//! started again serves the last good config; a killed peerplate container
//! leaves nginx serving, and a new one renders the same bytes and sends no
//! signal. Also the sidecar's resident memory inside its container, idle
//! with 2 peers (printed).

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::bind_server::{self, Bind, Records};
use crate::helpers::{free_port_on, http_get_at, repo_file, ConfigMapDir, Sandbox, SVC};
use crate::podman::{
    self, mount, volume_dir, wait_for, Container, PodmanPod, HARDENED, NGINX_IMAGE,
    PEERPLATE_IMAGE, PODMAN_TIMEOUT,
};
use crate::procfs;

/// Pod `web-K`'s address on the host's loopback.
fn ip_of(host: &str) -> Ipv4Addr {
    let k: u8 = host
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("web-K");
    Ipv4Addr::new(127, 0, 15, 10 + k)
}

/// The template's extra location (see the module docs).
const PEERS_LOCATION: &str = "    location = /peers { return 200 \"{% for p in peers %}{{ p.hostname }} {% endfor %}\\n\"; }\n";

/// deploy/base's template with the `/peers` location, and `extra` at the
/// top of the `http` block.
fn template(extra: &str) -> String {
    let base = fs::read_to_string(repo_file("deploy/base/nginx.conf.j2")).expect("template");
    let marker = "    listen {{ vars.listen | default(80) }};\n";
    assert!(
        base.contains(marker),
        "the base template listens on vars.listen"
    );
    let with_peers = base.replacen(marker, &format!("{marker}{PEERS_LOCATION}"), 1);
    with_peers.replacen("http {\n", &format!("http {{\n{extra}"), 1)
}

/// deploy/base's peerplate.yaml with this pod's listen addresses.
fn config(host: &str, admin_port: u16, web_port: u16) -> String {
    let base = fs::read_to_string(repo_file("deploy/base/peerplate.yaml")).expect("config");
    let ip = ip_of(host);
    let mut text = base.clone();
    for (from, to) in [
        (
            "  listen: 0.0.0.0:9090 ",
            format!("  listen: {ip}:{admin_port} "),
        ),
        ("  listen: 8080 ", format!("  listen: \"{ip}:{web_port}\" ")),
    ] {
        assert!(
            text.contains(from),
            "deploy/base/peerplate.yaml has {from:?}"
        );
        text = text.replacen(from, &to, 1);
    }
    text
}

struct Ports {
    admin: u16,
    web: u16,
}

/// One StatefulSet pod: see the module docs.
struct SeedPod {
    // Dropped in this order: the containers, the pod, then the folders.
    nginx: Option<Container>,
    peerplate: Option<Container>,
    pod: PodmanPod,
    host: String,
    ports: Ports,
    sb: Sandbox,
    cm: ConfigMapDir,
    conf: PathBuf,
}

impl SeedPod {
    /// Creates the pod and starts peerplate, then (once `/readyz` is 200)
    /// nginx, and waits until nginx answers.
    fn start(host: &str, ports: &Ports, resolv: &str) -> SeedPod {
        let sb = Sandbox::new();
        let cm = ConfigMapDir::create(
            &sb.join("etc-peerplate"),
            &[
                ("peerplate.yaml", &config(host, ports.admin, ports.web)),
                ("nginx.conf.j2", &template("")),
            ],
        );
        sb.write("dns/resolv.conf", resolv);
        let conf = sb.join("conf");
        volume_dir(&conf);
        let pod = PodmanPod::create(&podman::unique_name(host), host);
        let mut p = SeedPod {
            host: host.into(),
            ports: Ports {
                admin: ports.admin,
                web: ports.web,
            },
            sb,
            cm,
            conf,
            nginx: None,
            peerplate: None,
            pod,
        };
        p.start_peerplate();
        p.start_nginx();
        p
    }

    fn ip(&self) -> Ipv4Addr {
        ip_of(&self.host)
    }

    /// A new peerplate container (the sidecar), once its `/readyz` is 200.
    fn start_peerplate(&mut self) {
        let name = format!("{}-peerplate", self.pod.name);
        let volumes = [
            mount(self.cm.mount(), "/etc/peerplate", true),
            mount(&self.conf, "/conf", false),
            mount(&self.sb.join("dns"), "/etc/pod-dns", true),
        ];
        let env = [
            format!("HOSTNAME={}", self.host),
            "POD_NAMESPACE=default".to_string(),
            "PEERPLATE_RESOLV_CONF=/etc/pod-dns/resolv.conf".to_string(),
        ];
        let mut args = vec!["--pod", self.pod.name.as_str()];
        args.extend_from_slice(HARDENED);
        for v in &volumes {
            args.extend(["-v", v.as_str()]);
        }
        for e in &env {
            args.extend(["-e", e.as_str()]);
        }
        args.extend([
            PEERPLATE_IMAGE,
            "--config",
            "/etc/peerplate/peerplate.yaml",
            "run",
        ]);
        self.peerplate = Some(Container::run(&name, &args));
        let ready = wait_for(PODMAN_TIMEOUT, || self.admin_status("/readyz") == 200);
        assert!(
            ready,
            "{}: /readyz never answered 200\n{}",
            self.host,
            self.logs()
        );
    }

    /// nginx's container, once it answers.
    fn start_nginx(&mut self) {
        let name = format!("{}-nginx", self.pod.name);
        let conf = mount(&self.conf, "/conf", true);
        let mut args = vec!["--pod", self.pod.name.as_str()];
        args.extend_from_slice(HARDENED);
        args.extend(["--tmpfs", "/tmp:rw,mode=1777", "-v", conf.as_str()]);
        args.extend([
            NGINX_IMAGE,
            "nginx",
            "-e",
            "stderr",
            "-c",
            "/conf/nginx.conf",
            "-g",
            "daemon off;",
        ]);
        self.nginx = Some(Container::run(&name, &args));
        self.wait_nginx_up();
    }

    fn wait_nginx_up(&self) {
        let up = wait_for(PODMAN_TIMEOUT, || {
            self.get("/").is_some() && !self.workers().is_empty()
        });
        assert!(up, "{}: nginx does not answer\n{}", self.host, self.logs());
    }

    fn peerplate(&self) -> &Container {
        self.peerplate.as_ref().expect("peerplate container")
    }

    fn nginx(&self) -> &Container {
        self.nginx.as_ref().expect("nginx container")
    }

    fn admin_status(&self, path: &str) -> u16 {
        http_get_at(self.ip(), self.ports.admin, path)
            .map(|r| r.status)
            .unwrap_or(0)
    }

    /// The body of a 200 answer from nginx, None otherwise.
    fn get(&self, path: &str) -> Option<String> {
        http_get_at(self.ip(), self.ports.web, path)
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.body)
    }

    /// Waits until GET `path` answers `body`.
    fn wait_for_body(&self, path: &str, body: &str) {
        let mut last = None;
        let ok = wait_for(PODMAN_TIMEOUT, || {
            last = self.get(path);
            last.as_deref() == Some(body)
        });
        assert!(
            ok,
            "{}: GET {path} never answered {body:?}; last: {last:?}\n--- nginx.conf ---\n{}\n{}",
            self.host,
            self.conf_text(),
            self.logs()
        );
    }

    fn conf_text(&self) -> String {
        fs::read_to_string(self.conf.join("nginx.conf")).unwrap_or_default()
    }

    /// nginx's master, seen from the host: the nginx container's process.
    fn master(&self) -> i32 {
        self.nginx()
            .host_pid()
            .unwrap_or_else(|| panic!("{}: nginx is not running\n{}", self.host, self.logs()))
    }

    fn workers(&self) -> Vec<i32> {
        let Some(master) = self.nginx.as_ref().and_then(Container::host_pid) else {
            return Vec::new();
        };
        procfs::children(master)
            .into_iter()
            .filter(|s| s.comm == "nginx" && s.state != 'Z')
            .map(|s| s.pid)
            .collect()
    }

    /// The workers once an earlier reload's old workers have gone.
    fn settled_workers(&self) -> Vec<i32> {
        let one = wait_for(PODMAN_TIMEOUT, || self.workers().len() == 1);
        assert!(one, "{}: workers {:?}", self.host, self.workers());
        self.workers()
    }

    /// peerplate's log (the current container's).
    fn peerplate_log(&self) -> String {
        self.peerplate
            .as_ref()
            .map(Container::logs)
            .unwrap_or_default()
    }

    fn signals(&self) -> Vec<String> {
        self.peerplate_log()
            .lines()
            .filter(|l| l.contains("reload signal sent"))
            .map(str::to_string)
            .collect()
    }

    /// Waits until peerplate's log has a line with all of `parts` among
    /// the lines after the first `skip`; returns it.
    fn wait_for_line(&self, skip: usize, parts: &[&str]) -> String {
        let mut found = None;
        let ok = wait_for(PODMAN_TIMEOUT, || {
            found = self
                .peerplate_log()
                .lines()
                .skip(skip)
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_string);
            found.is_some()
        });
        assert!(
            ok,
            "{}: no log line with {parts:?}\n{}",
            self.host,
            self.logs()
        );
        found.expect("found")
    }

    fn log_lines(&self) -> usize {
        self.peerplate_log().lines().count()
    }

    fn logs(&self) -> String {
        format!(
            "=== pod {} ===\n--- peerplate ---\n{}\n--- nginx ---\n{}",
            self.host,
            self.peerplate_log(),
            self.nginx.as_ref().map(Container::logs).unwrap_or_default()
        )
    }
}

#[test]
fn the_seed_pod_as_containers_sharing_a_pid_namespace() {
    if !podman::available(&[PEERPLATE_IMAGE, NGINX_IMAGE]) || !bind_server::available() {
        return;
    }
    let ips: Vec<String> = (0..3)
        .map(|k| ip_of(&format!("web-{k}")).to_string())
        .collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let ports = Ports {
        admin: free_port_on(&ip_refs),
        web: free_port_on(&ip_refs),
    };
    assert_ne!(ports.admin, ports.web);
    let mut bind = Bind::start_with(
        &["web-0"],
        Records {
            srv_port: ports.web,
            ip: ip_of,
            ready_service: true,
            minimal_responses: false,
        },
    );
    let resolv = format!(
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver {}\noptions ndots:5\n",
        bind.nameserver()
    );

    // web-0 alone leads; web-1 asks it who leads and proxies to it.
    let web0 = SeedPod::start("web-0", &ports, &resolv);
    web0.wait_for_body("/", "web-0\n");
    bind.set_pods(&["web-0", "web-1"]);
    let mut web1 = SeedPod::start("web-1", &ports, &resolv);
    web1.wait_for_body("/", "web-0\n");
    web1.wait_for_body("/peers", "web-0 web-1 \n");
    assert!(
        web1.conf_text()
            .contains(&format!("set $leader \"web-0.{SVC}\"")),
        "{}",
        web1.conf_text()
    );

    // The sidecar's memory inside its container, idle with 2 peers.
    std::thread::sleep(Duration::from_secs(5));
    let pid = web1.peerplate().host_pid().expect("peerplate runs");
    let rss = procfs::status_kb(pid, "VmRSS").expect("VmRSS");
    let hwm = procfs::status_kb(pid, "VmHWM").expect("VmHWM");
    eprintln!(
        "peerplate in its container, idle with 2 peers (DNS, BIND): VmRSS {rss} kB, VmHWM {hwm} kB"
    );
    assert!(
        rss < 32 * 1024,
        "VmRSS {rss} kB is over the sidecar's 32Mi limit"
    );

    // Scale to 3: web-1 re-renders and signals nginx's master, which lives
    // in the other container: same master, new workers, new config live.
    let master = web1.master();
    let workers = web1.settled_workers();
    let skip = web1.log_lines();
    bind.set_pods(&["web-0", "web-1", "web-2"]);
    let web2 = SeedPod::start("web-2", &ports, &resolv);
    web2.wait_for_body("/", "web-0\n");
    web1.wait_for_body("/peers", "web-0 web-1 web-2 \n");
    let line = web1.wait_for_line(skip, &["reload signal sent", "signal=SIGHUP"]);
    let ns_master = *procfs::ns_pids(master).last().expect("NSpid");
    assert!(
        line.contains(&format!("pid={ns_master} ")),
        "the signal went to nginx's master (pid {ns_master} in the pod): {line}\n{}",
        web1.logs()
    );
    let replaced = wait_for(PODMAN_TIMEOUT, || {
        let now = web1.workers();
        !now.is_empty() && now.iter().all(|w| !workers.contains(w))
    });
    assert!(replaced, "workers not replaced\n{}", web1.logs());
    assert_eq!(web1.master(), master, "a reload keeps the master");
    web1.wait_for_body("/", "web-0\n");

    // A ConfigMap edit: re-rendered, nginx reloaded, the change live.
    let workers = web1.settled_workers();
    let skip = web1.log_lines();
    let rev2 = template("  add_header X-Peerplate-Rev 2 always;\n");
    let config_text = config("web-1", ports.admin, ports.web);
    web1.cm
        .update(&[("peerplate.yaml", &config_text), ("nginx.conf.j2", &rev2)]);
    web1.wait_for_line(skip, &["reload signal sent", "signal=SIGHUP"]);
    let header = wait_for(PODMAN_TIMEOUT, || {
        http_get_at(web1.ip(), ports.web, "/peers").is_ok()
            && web1.conf_text().contains("X-Peerplate-Rev 2")
            && web1.workers().iter().all(|w| !workers.contains(w))
    });
    assert!(header, "the edit is live\n{}", web1.logs());
    assert_eq!(web1.master(), master);
    let good = web1.conf_text();

    // A template that fails to render: nothing installed, no signal.
    let skip = web1.log_lines();
    let broken = template("  add_header X-Peerplate-Rev {{ vars.missing.rev }} always;\n");
    web1.cm
        .update(&[("peerplate.yaml", &config_text), ("nginx.conf.j2", &broken)]);
    web1.wait_for_line(skip, &["nginx.conf.j2"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(web1.conf_text(), good, "the last good config stays");
    let after: Vec<String> = web1
        .peerplate_log()
        .lines()
        .skip(skip)
        .map(str::to_string)
        .collect();
    assert!(
        !after.iter().any(|l| l.contains("reload signal sent")),
        "{after:#?}"
    );

    // nginx killed and started again: it starts on the last good config.
    web1.nginx().kill();
    assert!(web1.get("/").is_none(), "nginx is down");
    web1.nginx().start();
    web1.wait_nginx_up();
    assert_ne!(web1.master(), master, "a new nginx master");
    let master = web1.master();
    web1.wait_for_body("/peers", "web-0 web-1 web-2 \n");
    web1.wait_for_body("/", "web-0\n");
    assert!(web1.conf_text().contains("X-Peerplate-Rev 2"));

    // The template fixed back to the good one: same bytes, no signal.
    let skip = web1.log_lines();
    web1.cm
        .update(&[("peerplate.yaml", &config_text), ("nginx.conf.j2", &rev2)]);
    web1.wait_for_line(skip, &["rendered", "changed=false"]);

    // peerplate killed: nginx keeps serving. A new peerplate renders the
    // same bytes and sends no signal: same master, same workers.
    let workers = web1.settled_workers();
    web1.peerplate().kill();
    web1.wait_for_body("/", "web-0\n");
    let old = web1.peerplate.take().expect("peerplate");
    drop(old);
    web1.start_peerplate();
    web1.wait_for_line(0, &["rendered", "changed=false"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(web1.signals(), Vec::<String>::new(), "{}", web1.logs());
    assert_eq!(web1.master(), master);
    assert_eq!(web1.workers(), workers, "no reload: the same workers");
    web1.wait_for_body("/", "web-0\n");
    web2.wait_for_body("/", "web-0\n");
    drop(web0);
}
