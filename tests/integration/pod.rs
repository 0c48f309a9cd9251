//! One pod of the StatefulSet `web` behind the Service `nginx`, as the tests
//! set it up: a [`Sandbox`] holding its peerplate config, templates, peers
//! file and outputs, built with [`Pod::builder`], then started as a guarded
//! `peerplate run` daemon or run to completion (`once`, `render`).
//!
//! ```text
//! let pod = Pod::builder()                 // web-1, namespace default
//!     .peers_file(&peers(&[0, 1]))         // peers: {file: ROOT/peers}
//!     .template("t.j2", "{{ leader }}", "out/t")
//!     .build();                            // writes ROOT/peerplate.yaml
//! let mut d = pod.start();
//! pod.wait_for(&mut d, "web-0.nginx.default.svc.cluster.local");
//! ```
//!
//! In the config text given to the builder, `ROOT` stands for the sandbox's
//! path.

#![allow(dead_code)] // not every test uses every knob

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::{
    free_port, http_status, poll_until, run, ConfigMapDir, Daemon, Outcome, Sandbox, WAIT,
};

/// A pod's sandbox and config; see the module docs.
pub struct Pod {
    pub sb: Sandbox,
    pub hostname: String,
    /// `ROOT/peerplate.yaml`.
    pub config: PathBuf,
    /// The first template's destination (`ROOT/out` if there is none).
    pub out: PathBuf,
    /// `ROOT/peers`, the file [`PodBuilder::peers_file`] writes.
    pub peers: PathBuf,
    /// The `http.listen` port on 127.0.0.1 ([`PodBuilder::http`]); 0 without.
    pub port: u16,
    /// The ConfigMap volume at `ROOT/cm` ([`PodBuilder::configmap_template`]).
    cm: Option<ConfigMapDir>,
    env_remove: Vec<String>,
}

/// How the pod is to be set up; [`PodBuilder::build`] writes it all.
pub struct PodBuilder {
    sb: Sandbox,
    hostname: String,
    peers: String,
    dns: Option<Dns>,
    templates: String,
    first_out: Option<String>,
    cm_files: Vec<(String, String)>,
    wait_min: String,
    http: bool,
    yaml: String,
    env_remove: Vec<String>,
}

struct Dns {
    nameservers: Vec<String>,
    interval: String,
    cluster_domain: Option<String>,
    options: String,
}

impl Pod {
    /// Pod `web-1` in namespace `default`, no peer source or template yet,
    /// `wait: {min: 0s, max: 0s}`.
    pub fn builder() -> PodBuilder {
        PodBuilder {
            sb: Sandbox::new(),
            hostname: "web-1".into(),
            peers: String::new(),
            dns: None,
            templates: String::new(),
            first_out: None,
            cm_files: Vec::new(),
            wait_min: "0s".into(),
            http: false,
            yaml: String::new(),
            env_remove: Vec::new(),
        }
    }

    /// `--config ROOT/peerplate.yaml <command>`.
    pub fn args(&self, command: &str) -> Vec<String> {
        vec![
            "--config".into(),
            self.config.display().to_string(),
            command.into(),
        ]
    }

    /// Gives `cmd` the sandbox's clean environment, as this pod: `HOSTNAME`
    /// is the pod's host name.
    pub fn clean_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        self.sb.clean_env(cmd).env("HOSTNAME", &self.hostname);
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        cmd
    }

    /// `peerplate ARGS` in the pod's environment.
    pub fn peerplate<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(crate::helpers::bin());
        cmd.args(args);
        self.clean_env(&mut cmd);
        cmd
    }

    /// `peerplate --config ROOT/peerplate.yaml <command>` in the pod's environment.
    pub fn command(&self, command: &str) -> Command {
        self.peerplate(self.args(command))
    }

    /// `peerplate <command>` run to completion (`once`, `render`, `check`).
    pub fn run(&self, command: &str) -> Outcome {
        run(&mut self.command(command))
    }

    /// `peerplate run` as a guarded daemon; with `http`, once `/healthz`
    /// answers 200.
    pub fn start(&self) -> Daemon {
        let mut d = Daemon::spawn(self.command("run"));
        if self.port != 0 {
            let port = self.port;
            d.wait_until(WAIT, "/healthz to answer 200", |_| {
                http_status(port, "/healthz") == 200
            });
        }
        d
    }

    /// The text of `rel` in the sandbox, None if it does not exist.
    pub fn read(&self, rel: &str) -> Option<String> {
        self.sb.read(rel)
    }

    /// The text of `rel`, "" if it does not exist.
    pub fn read_or_empty(&self, rel: &str) -> String {
        self.read(rel).unwrap_or_default()
    }

    /// Replaces `rel` in one step (a half-written peers file is not what
    /// the tests are about).
    pub fn replace(&self, rel: &str, contents: &str) {
        self.sb.replace(rel, contents);
    }

    /// The first template's output, None until it is written.
    pub fn output(&self) -> Option<String> {
        std::fs::read_to_string(&self.out).ok()
    }

    /// Waits until the first template's output is exactly `want`; returns
    /// how long that took.
    pub fn wait_for(&self, d: &mut Daemon, want: &str) -> Duration {
        self.wait_for_output_where(d, want, |got| got == want)
    }

    /// Waits until `rel` reads exactly `want`; returns how long that took.
    pub fn wait_for_file(&self, d: &mut Daemon, rel: &str, want: &str) -> Duration {
        let started = Instant::now();
        d.wait_until(WAIT, &format!("{rel} to read {want:?}"), |_| {
            self.read(rel).as_deref() == Some(want)
        });
        started.elapsed()
    }

    /// Waits until the first template's output satisfies `ok` (`want` says
    /// what is awaited); fails early, with the logs, if the daemon exits.
    pub fn wait_for_output_where(
        &self,
        d: &mut Daemon,
        want: &str,
        ok: impl Fn(&str) -> bool,
    ) -> Duration {
        let started = Instant::now();
        let done = poll_until(WAIT, || {
            self.output().is_some_and(|got| ok(&got)) || !d.is_running()
        });
        let got = self.output();
        assert!(
            done && got.as_deref().is_some_and(&ok),
            "waiting for {} to read:\n{want}\nit reads: {got:?}\n{}",
            self.out.display(),
            d.logs()
        );
        started.elapsed()
    }

    /// The ConfigMap volume holding the templates.
    pub fn configmap(&mut self) -> &mut ConfigMapDir {
        self.cm
            .as_mut()
            .expect("a pod built with configmap_template")
    }
}

impl PodBuilder {
    /// The pod's host name (`identity.hostname`, and `HOSTNAME`).
    pub fn hostname(mut self, hostname: &str) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Peers from the file `ROOT/peers`, holding `text`.
    pub fn peers_file(mut self, text: &str) -> Self {
        self.sb.write("peers", text);
        self.peers.push_str("  file: ROOT/peers\n");
        self
    }

    /// Peers from DNS: `peers.dns` for Service `nginx` in `cluster.local`,
    /// asking `nameservers` (`127.0.0.1:PORT`) every `interval`.
    pub fn dns(mut self, nameservers: &[&str], interval: &str) -> Self {
        self.dns = Some(Dns {
            nameservers: nameservers.iter().map(|n| n.to_string()).collect(),
            interval: interval.into(),
            cluster_domain: Some("cluster.local".into()),
            options: String::new(),
        });
        self
    }

    /// `peers.dns.cluster_domain`; None leaves it to resolv.conf.
    pub fn cluster_domain(mut self, domain: Option<&str>) -> Self {
        self.dns.as_mut().expect("dns first").cluster_domain = domain.map(str::to_string);
        self
    }

    /// One more `key: value` under `peers.dns`.
    pub fn dns_option(mut self, line: &str) -> Self {
        let dns = self.dns.as_mut().expect("dns first");
        dns.options.push_str(&format!("    {line}\n"));
        self
    }

    /// `peers.wait_for_self: true`.
    pub fn wait_for_self(self) -> Self {
        self.peers_option("wait_for_self: true")
    }

    /// One more `key: value` under `peers` (e.g. `timeout: 1s`), or raw
    /// lines indented by 2.
    pub fn peers_option(mut self, line: &str) -> Self {
        for l in line.lines() {
            if l.starts_with(' ') {
                self.peers.push_str(&format!("{l}\n"));
            } else {
                self.peers.push_str(&format!("  {l}\n"));
            }
        }
        self
    }

    /// The template `ROOT/<name>` holding `source`, rendered to `ROOT/<dest>`.
    pub fn template(self, name: &str, source: &str, dest: &str) -> Self {
        self.template_with(name, source, dest, "")
    }

    /// [`PodBuilder::template`] with more keys for its entry (lines
    /// indented by 4, e.g. `    reload: false\n`).
    pub fn template_with(mut self, name: &str, source: &str, dest: &str, keys: &str) -> Self {
        self.sb.write(name, source);
        self.add_template(&format!("ROOT/{name}"), dest, keys);
        self
    }

    /// The template `key` of a kubelet-style ConfigMap volume at `ROOT/cm`,
    /// rendered to `ROOT/<dest>`; `keys` as in [`PodBuilder::template_with`].
    pub fn configmap_template(mut self, key: &str, source: &str, dest: &str, keys: &str) -> Self {
        self.cm_files.push((key.into(), source.into()));
        self.add_template(&format!("ROOT/cm/{key}"), dest, keys);
        self
    }

    fn add_template(&mut self, source: &str, dest: &str, keys: &str) {
        let out = self.sb.join(dest);
        std::fs::create_dir_all(out.parent().expect("a dir")).expect("create output dir");
        self.templates.push_str(&format!(
            "  - source: {source}\n    destination: ROOT/{dest}\n{keys}"
        ));
        self.first_out.get_or_insert_with(|| dest.to_string());
    }

    /// `wait: {min: <min>, max: 0s}` instead of `min: 0s`.
    pub fn wait_min(mut self, min: &str) -> Self {
        self.wait_min = min.into();
        self
    }

    /// `http: {listen: "127.0.0.1:PORT"}` on a free port; `start` then waits
    /// for `/healthz`.
    pub fn http(mut self) -> Self {
        self.http = true;
        self
    }

    /// More config at the end (`reload:`, `hooks:`, `vars:` ...).
    pub fn yaml(mut self, yaml: &str) -> Self {
        self.yaml.push_str(yaml);
        self
    }

    /// `resolv.conf` of the sandbox (the one `PEERPLATE_RESOLV_CONF` names).
    pub fn resolv_conf(self, text: &str) -> Self {
        self.sb.write("resolv.conf", text);
        self
    }

    /// A variable every command of the pod runs without.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Writes `ROOT/peerplate.yaml` (and the ConfigMap volume).
    pub fn build(self) -> Pod {
        let PodBuilder {
            sb,
            hostname,
            mut peers,
            dns,
            templates,
            first_out,
            cm_files,
            wait_min,
            http,
            yaml,
            env_remove,
        } = self;
        if let Some(dns) = dns {
            let nameservers: Vec<String> =
                dns.nameservers.iter().map(|n| format!("\"{n}\"")).collect();
            let domain = dns
                .cluster_domain
                .map(|d| format!("    cluster_domain: {d}\n"))
                .unwrap_or_default();
            peers.insert_str(
                0,
                &format!(
                    "  dns:\n    service: nginx\n{domain}    nameservers: [{}]\n    interval: {}\n{}",
                    nameservers.join(", "),
                    dns.interval,
                    dns.options
                ),
            );
        }
        let cm = (!cm_files.is_empty()).then(|| {
            let files: Vec<(&str, &str)> = cm_files
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            ConfigMapDir::create(&sb.join("cm"), &files)
        });
        let port = if http { free_port() } else { 0 };
        let http = if http {
            format!("http: {{listen: \"127.0.0.1:{port}\"}}\n")
        } else {
            String::new()
        };
        let templates = if templates.is_empty() {
            " []\n".to_string()
        } else {
            format!("\n{templates}")
        };
        let text = format!(
            "identity: {{hostname: {hostname}, namespace: default}}\npeers:\n{peers}templates:{templates}wait: {{min: {wait_min}, max: 0s}}\n{http}{yaml}"
        );
        let root = sb.path().display().to_string();
        let config = sb.write("peerplate.yaml", &text.replace("ROOT", &root));
        Pod {
            out: sb.join(first_out.as_deref().unwrap_or("out")),
            peers: sb.join("peers"),
            sb,
            hostname,
            config,
            port,
            cm,
            env_remove,
        }
    }
}
