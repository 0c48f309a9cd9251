//! The config file: its schema, defaults from the pod's environment, and
//! validation whose every error names the file, the line and the fix.
//!
//! Three steps, one file each. `raw`: serde reads the YAML into `Raw*`
//! structs that mirror the file exactly (unknown keys are errors, and each
//! value is checked as it is read, so serde_yaml can point at its line).
//! `resolve`: a pure function of the raw file and the pod's environment
//! ([`Env`], read once at the edge) gives the [`Config`]: defaults filled in,
//! and the rules that span several keys checked, DNS settings included, so
//! `check` rejects whatever `run` would. `diagnostics`: turning parser
//! errors into messages that name the line and suggest the fix.

use std::path::Path;

mod actions;
mod diagnostics;
mod env;
mod leader;
mod model;
mod ranges;
mod raw;
mod resolve;

pub use actions::DEFAULT_ACTION;
pub use diagnostics::{closest, line_of};
pub use env::{default_hostname, Env, ResolvConf};
pub use model::*;
pub use ranges::Range;
pub use raw::parse_signal;
pub use resolve::inside;

/// Where the config is read from when neither `--config` nor
/// `$PEERPLATE_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/peerplate/peerplate.yaml";

impl Config {
    /// Reads and resolves a config file in this process's environment. With
    /// `required` false, a missing file gives the built-in default (so
    /// `render` works with no config).
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let env = Env::from_process();
        // Bounded, regular files only: a FIFO, /dev/zero or a huge file in
        // place of the config is an error, never a hang or an OOM.
        let bytes = match crate::limits::read_regular(path, crate::limits::CONFIG_MAX_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return resolve::resolve(raw::RawConfig::default(), "", Path::new(""), &env)
            }
            Err(e) => {
                // The fix depends on why: a wrong path, a file this user may
                // not read, or something that is not a small regular file.
                let fix = match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        "give its path with --config or $PEERPLATE_CONFIG".to_string()
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        "make it readable by the user peerplate runs as".to_string()
                    }
                    _ => format!(
                        "peerplate reads its config only from a regular file of at most {} MiB: put one there",
                        crate::limits::CONFIG_MAX_BYTES / (1024 * 1024)
                    ),
                };
                return Err(ConfigError {
                    path: path.to_path_buf(),
                    line: None,
                    column: None,
                    message: format!("cannot read the config file: {e}; {fix}"),
                });
            }
        };
        let text = String::from_utf8(bytes).map_err(|_| ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: "the config file is not UTF-8 text; save it as UTF-8".into(),
        })?;
        Config::parse(&text, path, &env)
    }

    /// Parses config text as if read from `path` (used in messages and for
    /// relative paths), in the environment `env`. Pure.
    pub fn parse(text: &str, path: &Path, env: &Env) -> Result<Config, ConfigError> {
        // An empty file is a mistake (a ConfigMap key misnamed, a volume
        // not mounted yet), not a config that does nothing.
        let blank = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        if blank {
            return Err(ConfigError {
                path: path.to_path_buf(),
                line: None,
                column: None,
                message: "the config file is empty; give at least `templates:` or `seed:` (see the README, \"Config file\")".into(),
            });
        }
        let raw: raw::RawConfig =
            serde_yaml::from_str(text).map_err(|e| diagnostics::yaml_error(e, path, text))?;
        resolve::resolve(raw, text, path, env)
    }

    /// Renders as another pod (`render --hostname`).
    pub fn set_hostname(&mut self, hostname: &str) {
        self.identity.hostname = hostname.to_string();
        self.pod_fqdn = resolve::pod_fqdn(&self.identity, &self.peers.source);
    }

    /// Renders in another namespace (`render --namespace`).
    pub fn set_namespace(&mut self, namespace: &str) {
        self.identity.namespace = namespace.to_string();
        self.pod_fqdn = resolve::pod_fqdn(&self.identity, &self.peers.source);
    }

    /// Sets `vars.<dotted.key>` to a YAML scalar (`8080` a number, `false` a
    /// bool, `"8080"` a string), creating the maps on the way; `render
    /// --var`. Fails when the text is not a scalar, or a key on the way
    /// holds something other than a map.
    pub fn set_var(&mut self, key: &str, value: &str) -> Result<(), String> {
        let parsed: serde_yaml::Value = serde_yaml::from_str(value)
            .map_err(|e| format!("{value:?} is not a YAML value: {e}"))?;
        if parsed.is_mapping() || parsed.is_sequence() {
            return Err(format!(
                "{value:?} is a YAML {}; give one scalar (a string, number or bool), or set each key with its own --var",
                if parsed.is_mapping() { "map" } else { "list" }
            ));
        }
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("{key:?} is not a key; write KEY or a.dotted.key"));
        }
        let mut map = &mut self.vars;
        for (i, part) in parts.iter().enumerate() {
            let k = serde_yaml::Value::String((*part).to_string());
            if i + 1 == parts.len() {
                map.insert(k, parsed);
                return Ok(());
            }
            let entry = map
                .entry(k)
                .or_insert_with(|| serde_yaml::Value::Mapping(serde_yaml::Mapping::new()));
            map = match entry {
                serde_yaml::Value::Mapping(m) => m,
                _ => {
                    return Err(format!(
                        "vars.{} is not a map, so {key} cannot be set inside it",
                        parts[..=i].join(".")
                    ))
                }
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[allow(unused_imports)]
    use super::ActionKind;
    use super::*;
    use std::net::SocketAddr;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let env = Env {
            hostname: Some("web-1".into()),
            namespace: "default".into(),
            resolv: ResolvConf::parse("nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"),
            hosts: "10.244.0.5\tweb-1.nginx.default.svc.cluster.local\tweb-1\n".into(),
        };
        Config::parse(text, Path::new("peerplate.yaml"), &env)
    }

    #[test]
    fn unknown_key_names_line_and_suggests() {
        let e =
            parse("identity:\n  hostname: web-1\ntemplates:\n  - source: a\n    destinaton: b\n")
                .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("peerplate.yaml:5:5: templates[0]: unknown field `destinaton`"),
            "{text}"
        );
        assert!(
            text.contains("destinaton") && text.contains("did you mean `destination`"),
            "{text}"
        );
    }

    #[test]
    fn the_service_defaults_to_the_pods_subdomain_and_its_ready_twin() {
        let c = parse("peers:\n  dns: {interval: 1s}\n").unwrap();
        let PeerSource::Dns(dns) = &c.peers.source else {
            panic!("dns")
        };
        assert_eq!(dns.service.as_deref(), Some("nginx"));
        assert_eq!(dns.query, "nginx.default.svc.cluster.local");
        assert_eq!(
            dns.ready_query.as_deref(),
            Some("nginx-ready.default.svc.cluster.local")
        );
        assert_eq!(
            c.pod_fqdn.as_deref(),
            Some("web-1.nginx.default.svc.cluster.local")
        );
        // A Service given: no ready Service assumed.
        let c = parse("peers:\n  dns: {service: db}\n").unwrap();
        let PeerSource::Dns(dns) = &c.peers.source else {
            panic!("dns")
        };
        assert_eq!(dns.query, "db.default.svc.cluster.local");
        assert_eq!(dns.ready_query, None);
        // Not a StatefulSet pod (no line in /etc/hosts for web-2).
        let e = parse("identity: {hostname: web-2}\npeers:\n  dns: {}\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("/etc/hosts has no line naming this pod web-2.<service>"),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_line() {
        let e = parse("identity: {hostname: web-1}\nwait:\n  min: 5 parsecs\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("like 250ms"), "{e}");
    }

    #[test]
    fn cross_key_errors_find_their_line() {
        let e =
            parse("identity: {hostname: web-1}\npeers:\n  static: [a]\n  file: /x\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse("identity: {hostname: web-1}\nreload:\n  signal: HUP\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn values() {
        let c = parse(
            "identity: {hostname: web-1, namespace: prod}\npeers:\n  dns: {service: nginx, cluster_domain: k.local, nameservers: ['127.0.0.1:5353']}\ntemplates:\n  - {source: a, destination: /b, mode: \"0640\", check: \"nginx -t -c {staged}\"}\nreload: {signal: USR2, process: nginx}\n",
        )
        .unwrap();
        assert_eq!(c.templates[0].mode, Some(0o640));
        assert_eq!(
            c.templates[0].check.as_deref().unwrap(),
            ["nginx", "-t", "-c", "{staged}"]
        );
        assert_eq!(c.pod_fqdn.as_deref(), Some("web-1.nginx.prod.svc.k.local"));
        assert_eq!(
            c.nameservers,
            ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]
        );
        assert!(matches!(
            &c.actions[0].kind,
            ActionKind::Signal { reload, verify: None } if reload.signal == nix::sys::signal::Signal::SIGUSR2
        ));
        assert_eq!(c.actions[0].name, "default");
        assert_eq!(c.templates[0].reload, Some(0));
        assert!(parse("templates:\n  - {source: a, destination: /b, mode: 644}\n").is_err());
    }

    #[test]
    fn reloads_in_order_and_templates_pick_one() {
        let c = parse(
            "templates:\n  - {source: a, destination: /a, reload: prom}\n  - {source: b, destination: /b, reload: false}\n  - {source: c, destination: /c, reload: nginx}\nreloads:\n  nginx: {signal: HUP, process: nginx, verify: children}\n  prom: {http: {url: \"http://127.0.0.1:9090/-/reload\", retries: 2}, min_interval: 1s}\n  app: {exec: \"/bin/app reload\", timeout: 3s}\n",
        )
        .unwrap();
        let names: Vec<&str> = c.actions.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["nginx", "prom", "app"]);
        assert_eq!(
            c.templates.iter().map(|t| t.reload).collect::<Vec<_>>(),
            [Some(1), None, Some(0)]
        );
        assert!(
            matches!(&c.actions[0].kind, ActionKind::Signal { verify: Some(t), .. } if t.as_secs() == 5)
        );
        assert!(
            matches!(&c.actions[1].kind, ActionKind::Http(h) if h.method == "POST" && h.retries == 2)
        );
        assert_eq!(c.actions[1].min_interval.as_secs(), 1);
        assert!(
            matches!(&c.actions[2].kind, ActionKind::Exec { command, .. } if command == &["/bin/app", "reload"])
        );
    }

    #[test]
    fn reload_names_are_checked_with_their_line() {
        let e = parse("templates:\n  - source: a\n    destination: /a\n    reload: nginx\n  - source: b\n    destination: /b\n    reload: ngnix\nreloads:\n  nginx: {process: nginx}\n  prom: {http: {url: \"http://x:1/\"}}\n").unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e.message.contains("the actions are: nginx, prom"), "{e}");
        let e = parse("templates:\n  - {source: a, destination: /a}\nreloads:\n  nginx: {process: nginx}\n  prom: {http: {url: \"http://x:1/\"}}\n").unwrap_err();
        assert!(
            e.message.contains("several reload actions (nginx, prom)"),
            "{e}"
        );
        let one = parse("templates:\n  - {source: a, destination: /a}\nreloads:\n  prom: {http: {url: \"http://x:1/\"}}\n").unwrap();
        assert_eq!(one.templates[0].reload, Some(0));
        let e = parse("reloads:\n  a: {process: x, exec: y}\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse("reloads:\n  a: {http: {url: \"ftp://x\"}}\n").unwrap_err();
        assert!(e.message.contains("http:// URL"), "{e}");
        assert!(parse("reload: {process: x}\nreloads:\n  a: {process: y}\n").is_err());
    }

    #[test]
    fn resolv_conf() {
        let r = ResolvConf::parse("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n");
        assert_eq!(r.cluster_domain().as_deref(), Some("cluster.local"));
        assert_eq!(r.nameservers[0].to_string(), "10.96.0.10:53");
    }
}
