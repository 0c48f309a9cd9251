//! `verify: children` with real nginx in a PID namespace of its own
//! (`unshare --pid --fork --mount-proc`, as in `e2e`): a shell stands in for
//! the pause container as PID 1 and starts, as siblings, `peerplate once`,
//! nginx (which daemonizes) and `peerplate run` with
//! `reloads: {nginx: {signal: HUP, process: nginx, verify: children}}`.
//!
//! - an accepted reload replaces the workers and counts `accepted`;
//! - a config that passes `nginx -t` (the output's `check`) but fails at
//!   reload, a `listen` on an address another process holds, keeps the old
//!   workers: the reload is `rejected` at `verify_timeout`, the file goes
//!   back to the running config, and nginx goes on serving it.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use crate::helpers::{
    bin, find_program, free_port, metric, peers, poll_until, require_component, Daemon, WAIT,
};
use crate::pod::Pod;
use crate::procfs;

/// PID 1 of the pod: `once`, nginx (daemonizes), then `run`.
const POD_SCRIPT: &str = r#"
pp="$1" cfg="$2" nginx="$3" prefix="$4"
"$pp" --config "$cfg" once || exit 1
"$nginx" -p "$prefix/" -c "$prefix/nginx.conf" -e "$prefix/error.log" \
  -g "pid $prefix/nginx.pid; error_log $prefix/error.log;" || exit 1
"$pp" --config "$cfg" run &
wait
"#;

const TEMPLATE: &str = "worker_processes 1;\nevents { worker_connections 64; }\nhttp {\n  access_log off;\n  server {\n    listen {{ vars.listen }};\n    location / { return 200 \"{{ peers | length }} peers\\n\"; }\n  }\n}\n";

struct NginxPod {
    pod: Pod,
    prefix: PathBuf,
    daemon: Daemon,
    port: u16,
}

impl NginxPod {
    fn start() -> NginxPod {
        let nginx = find_program("nginx").expect("nginx");
        let port = free_port();
        let pod = Pod::builder()
            .peers_file(&peers(&[0, 1]))
            .template_with(
                "nginx.conf.j2",
                TEMPLATE,
                "nginx/nginx.conf",
                &format!(
                    "    check: \"{nginx} -t -p ROOT/nginx/ -c {{staged}} -g 'pid ROOT/nginx/check.pid; error_log stderr;'\"\n    reload: nginx\n",
                    nginx = nginx.display()
                ),
            )
            .http()
            .yaml(&format!(
                "reloads:\n  nginx: {{signal: HUP, process: nginx, verify: children, verify_timeout: 4s}}\nvars:\n  listen: \"127.0.0.1:{port}\"\n"
            ))
            .build();
        let prefix = pod.sb.join("nginx");
        fs::create_dir_all(prefix.join("logs")).expect("nginx logs dir");
        let mut cmd = procfs::unshare();
        cmd.args(["sh", "-c", POD_SCRIPT, "pod"])
            .arg(bin())
            .arg(&pod.config)
            .arg(&nginx)
            .arg(&prefix);
        pod.clean_env(&mut cmd);
        let mut p = NginxPod {
            daemon: Daemon::spawn(cmd),
            pod,
            prefix,
            port,
        };
        p.daemon.wait_for_log("rendered", WAIT);
        let ready = poll_until(WAIT, || {
            p.master().is_some_and(|m| !workers(m).is_empty())
                && metric(
                    p.pod.port,
                    "peerplate_reloads_total{action=\"nginx\",result=\"accepted\"}",
                )
                .is_some()
        });
        assert!(ready, "no nginx master and worker\n{}", p.logs());
        p
    }

    fn master(&self) -> Option<i32> {
        let init = procfs::namespace_init(self.daemon.pid())?;
        procfs::children(init)
            .into_iter()
            .find(|s| s.comm == "nginx" && s.state != 'Z')
            .map(|s| s.pid)
    }

    fn workers(&self) -> Vec<i32> {
        self.master().map(workers).unwrap_or_default()
    }

    fn reloads(&self, result: &str) -> f64 {
        metric(
            self.pod.port,
            &format!("peerplate_reloads_total{{action=\"nginx\",result=\"{result}\"}}"),
        )
        .unwrap_or(-1.0)
    }

    fn conf(&self) -> String {
        fs::read_to_string(self.prefix.join("nginx.conf")).unwrap_or_default()
    }

    fn get(&self) -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "2"])
            .arg(format!("http://127.0.0.1:{}/", self.port))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn logs(&self) -> String {
        format!(
            "{}\n--- nginx error.log ---\n{}",
            self.daemon.logs(),
            fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
        )
    }
}

fn workers(master: i32) -> Vec<i32> {
    procfs::children(master)
        .into_iter()
        .filter(|s| s.comm == "nginx" && s.state != 'Z')
        .map(|s| s.pid)
        .collect()
}

#[test]
fn verify_children_accepts_a_reload_nginx_took_and_rolls_back_one_it_refused() {
    if !(require_component("nginx") && require_component("curl") && procfs::pid_namespaces_work()) {
        return;
    }
    let mut p = NginxPod::start();
    assert_eq!(p.get(), "2 peers\n");

    // Accepted: a peer change, one SIGHUP, new workers.
    let old = p.workers();
    let mark = p.daemon.mark();
    p.pod.replace("peers", &peers(&[0, 1, 2]));
    let line = p
        .daemon
        .wait_for_line(mark, &["reload accepted", "action=nginx"], WAIT);
    assert!(line.contains("new children"), "{line}");
    eprintln!("accepted: {line}");
    assert_eq!(p.reloads("accepted"), 1.0, "{}", p.logs());
    let replaced = poll_until(WAIT, || {
        let now = p.workers();
        now.iter().any(|w| !old.contains(w))
    });
    assert!(replaced, "new workers\n{}", p.logs());
    let live = poll_until(WAIT, || p.get() == "3 peers\n");
    assert!(live, "{}", p.logs());
    let good = p.conf();
    let settled = poll_until(WAIT, || p.workers().len() == 1);
    assert!(settled, "old workers exit\n{}", p.logs());
    let before = p.workers();

    // Rejected: a listen on an address another process holds passes
    // `nginx -t` but fails at reload; nginx keeps its old workers.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("addr").port();
    let mark = p.daemon.mark();
    p.pod.replace(
        "nginx.conf.j2",
        &TEMPLATE.replace(
            "    location",
            &format!("    listen 127.0.0.1:{taken_port};\n    location"),
        ),
    );
    let line = p
        .daemon
        .wait_for_line(mark, &["reload rejected by the app", "action=nginx"], WAIT);
    assert!(line.contains("no new child"), "{line}");
    p.daemon
        .wait_for_line(mark, &["rolled back", "template=nginx.conf.j2"], WAIT);
    assert_eq!(p.conf(), good, "the file is what nginx runs");
    assert_eq!(p.reloads("rejected"), 1.0);
    assert_eq!(p.workers(), before, "the old workers stay");
    assert_eq!(p.get(), "3 peers\n", "nginx goes on with its config");
    let error_log = fs::read_to_string(p.prefix.join("error.log")).unwrap_or_default();
    assert!(
        error_log.contains("Address already in use"),
        "nginx refused the reload:\n{error_log}"
    );
    drop(taken);
}
