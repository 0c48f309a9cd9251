//! `peerplate run`, the sidecar daemon, with a `file` peer source and its
//! template in a kubelet-style ConfigMap volume: the first render at start;
//! re-renders when the peers file is edited (in place or replaced, or swapped
//! by kubelet when it is itself in a ConfigMap) and when kubelet swaps the
//! templates' `..data`; an identical output leaves the file untouched
//! (same inode and mtime, `changed=false`); a broken template keeps the old
//! output byte for byte, logs `render failed` with the template and line, and
//! a fix recovers; nothing is written until the pod itself is a peer
//! (`wait_for_self`); SIGTERM and SIGINT exit 0 within a second;
//! `--log-format json` writes one JSON object a line.

use std::fs;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::helpers::{inode_and_mtime, ConfigMapDir, Daemon, WAIT};
use crate::pod::Pod;

const TEMPLATE_V1: &str = "# v1 for {{ pod.hostname }}\nupstream web {\n{% for p in peers %}  server {{ p }};\n{% endfor %}}\n";

const PEERS_0_1: &str = "# pods of the StatefulSet web\nweb-0.nginx.default.svc.cluster.local\n\nweb-1.nginx.default.svc.cluster.local\n";

/// The output TEMPLATE_V1 gives for these peer hostnames, as pod web-1.
fn v1_output(hosts: &[&str]) -> String {
    let mut s = String::from("# v1 for web-1\nupstream web {\n");
    for h in hosts {
        s.push_str(&format!("  server {h}.nginx.default.svc.cluster.local;\n"));
    }
    s.push_str("}\n");
    s
}

/// Compare ignoring a trailing newline: whether the final newline of a
/// template survives is a rendering detail these tests do not judge.
fn same_text(a: &str, b: &str) -> bool {
    a.trim_end_matches('\n') == b.trim_end_matches('\n')
}

/// Pod web-1: peers file, `nginx.conf.j2` in a ConfigMap volume at `cm/`,
/// output in `out/nginx.conf`.
fn nginx_pod(peers: &str, template: &str) -> Pod {
    Pod::builder()
        .peers_file(peers)
        .wait_for_self()
        .configmap_template(
            "nginx.conf.j2",
            template,
            "out/nginx.conf",
            "    mode: \"0644\"\n",
        )
        .yaml("vars: { greeting: hello }\n")
        .build()
}

/// Wait until the output equals `want` (modulo a trailing newline).
fn wait_for_output(pod: &Pod, d: &mut Daemon, want: &str) {
    pod.wait_for_output_where(d, want, |got| same_text(got, want));
}

/// The pod, started, once its first output is in place.
fn started(pod: &Pod) -> Daemon {
    let mut d = pod.start();
    wait_for_output(pod, &mut d, &v1_output(&["web-0", "web-1"]));
    d
}

#[test]
fn renders_at_start_and_when_the_peers_file_changes() {
    let pod = nginx_pod(PEERS_0_1, TEMPLATE_V1);
    let mut d = pod.start();
    wait_for_output(&pod, &mut d, &v1_output(&["web-0", "web-1"]));
    let destination = format!("destination={}", pod.out.display());
    d.wait_for_line(
        0,
        &[
            "rendered",
            "template=nginx.conf.j2",
            &destination,
            "changed=true",
        ],
        WAIT,
    );
    assert_eq!(
        crate::helpers::mode_of(&pod.out),
        0o644,
        "mode from the config"
    );

    // Edited in place.
    let mark = d.mark();
    fs::write(
        &pod.peers,
        format!("{PEERS_0_1}web-2.nginx.default.svc.cluster.local\n"),
    )
    .expect("edit peers file");
    wait_for_output(&pod, &mut d, &v1_output(&["web-0", "web-1", "web-2"]));
    d.wait_for_line(
        mark,
        &["rendered", "template=nginx.conf.j2", "changed=true"],
        WAIT,
    );

    // Replaced by a rename, as editors and kubelet do. web-10 sorts last.
    let tmp = pod.sb.write(
        "peers.new",
        "web-10.nginx.default.svc.cluster.local\nweb-2.nginx.default.svc.cluster.local\nweb-1.nginx.default.svc.cluster.local\n",
    );
    fs::rename(&tmp, &pod.peers).expect("replace peers file");
    wait_for_output(&pod, &mut d, &v1_output(&["web-1", "web-2", "web-10"]));

    let mut left: Vec<String> = fs::read_dir(pod.out.parent().expect("out dir"))
        .expect("read out dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["nginx.conf"], "no temp files left behind");
    assert!(d.is_running(), "{}", d.logs());
}

#[test]
fn configmap_data_swap_rerenders() {
    let mut pod = nginx_pod(PEERS_0_1, TEMPLATE_V1);
    let mut d = started(&pod);
    let mark = d.mark();
    pod.configmap().update(&[(
        "nginx.conf.j2",
        "# v2\n{% for p in peers %}server {{ p.hostname }} {{ p.ordinal }};\n{% endfor %}",
    )]);
    wait_for_output(&pod, &mut d, "# v2\nserver web-0 0;\nserver web-1 1;\n");
    d.wait_for_line(
        mark,
        &["rendered", "template=nginx.conf.j2", "changed=true"],
        WAIT,
    );

    // And a second swap: the watch survives the first one.
    pod.configmap()
        .update(&[("nginx.conf.j2", "# v3 {{ leader }}\n")]);
    wait_for_output(&pod, &mut d, "# v3 web-0.nginx.default.svc.cluster.local\n");
}

#[test]
fn identical_output_leaves_the_file_untouched() {
    let mut pod = nginx_pod(PEERS_0_1, TEMPLATE_V1);
    let mut d = started(&pod);
    d.wait_for_line(0, &["rendered", "changed=true"], WAIT);
    let bytes = fs::read(&pod.out).expect("read output");
    let before = inode_and_mtime(&pod.out);
    // Let the clock move, so a rewrite would show in the mtime.
    std::thread::sleep(Duration::from_millis(50));

    let mark = d.mark();
    // At the start of a line: with `trim_blocks`, a comment tag at the end
    // of a line would also eat that line's newline.
    let commented = format!("{{# reviewed by ops #}}{TEMPLATE_V1}");
    pod.configmap().update(&[("nginx.conf.j2", &commented)]);
    d.wait_for_line(
        mark,
        &["rendered", "template=nginx.conf.j2", "changed=false"],
        WAIT,
    );
    assert_eq!(fs::read(&pod.out).expect("read output"), bytes);
    assert_eq!(
        inode_and_mtime(&pod.out),
        before,
        "an identical output must not be rewritten (inode, mtime)"
    );
    let rewrites: Vec<String> = d
        .lines_since(mark)
        .into_iter()
        .filter(|l| l.contains("changed=true"))
        .collect();
    assert!(
        rewrites.is_empty(),
        "no render of the identical template may report a change: {rewrites:?}"
    );
}

#[test]
fn broken_template_keeps_the_old_output_and_a_fix_recovers() {
    let mut pod = nginx_pod(PEERS_0_1, TEMPLATE_V1);
    let mut d = started(&pod);
    let good = fs::read(&pod.out).expect("read output");

    // An undefined variable on line 3.
    let mark = d.mark();
    pod.configmap().update(&[(
        "nginx.conf.j2",
        "# v1 for {{ pod.hostname }}\nupstream web {\n  server {{ vars.no_such_upstream }};\n}\n",
    )]);
    d.wait_for_line(mark, &["render failed", "nginx.conf.j2", "line 3"], WAIT);
    assert_eq!(
        fs::read(&pod.out).expect("read output"),
        good,
        "the old output stays, byte for byte"
    );
    assert!(d.is_running(), "the daemon keeps running\n{}", d.logs());

    // A syntax error on line 2.
    let mark = d.mark();
    pod.configmap().update(&[(
        "nginx.conf.j2",
        "# v1 for {{ pod.hostname }}\nupstream {{ pod.hostname + }} {\n}\n",
    )]);
    d.wait_for_line(mark, &["render failed", "nginx.conf.j2", "line 2"], WAIT);
    assert_eq!(
        fs::read(&pod.out).expect("read output"),
        good,
        "the old output stays, byte for byte"
    );
    assert!(d.is_running(), "the daemon keeps running\n{}", d.logs());

    // Fixed by the next ConfigMap update.
    let mark = d.mark();
    pod.configmap()
        .update(&[("nginx.conf.j2", "# fixed\n{{ leader }}\n")]);
    wait_for_output(
        &pod,
        &mut d,
        "# fixed\nweb-0.nginx.default.svc.cluster.local\n",
    );
    d.wait_for_line(
        mark,
        &["rendered", "template=nginx.conf.j2", "changed=true"],
        WAIT,
    );
}

#[test]
fn nothing_is_written_until_the_pod_itself_is_a_peer() {
    let pod = nginx_pod("web-0.nginx.default.svc.cluster.local\n", TEMPLATE_V1);
    let mut d = pod.start();
    // Give it time to (wrongly) render, while making sure it is alive.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.is_running(),
        "the daemon waits, it does not exit\n{}",
        d.logs()
    );
    assert!(
        !pod.out.exists(),
        "rendered before web-1 was in the peer set: {:?}\n{}",
        pod.output(),
        d.logs()
    );

    fs::write(&pod.peers, PEERS_0_1).expect("add web-1");
    wait_for_output(&pod, &mut d, &v1_output(&["web-0", "web-1"]));
}

fn stop_exits_0_within_a_second(sig: Signal) {
    let pod = nginx_pod(PEERS_0_1, TEMPLATE_V1);
    let mut d = started(&pod);
    let (status, took) = d.stop_with(sig, Duration::from_secs(2));
    assert_eq!(
        status.code(),
        Some(0),
        "{sig} exits 0 ({status})\n{}",
        d.logs()
    );
    assert!(
        took < Duration::from_secs(1),
        "{sig} must stop the daemon within a second, took {took:?}\n{}",
        d.logs()
    );
}

#[test]
fn sigterm_exits_0_within_a_second() {
    stop_exits_0_within_a_second(Signal::SIGTERM);
}

#[test]
fn sigint_exits_0_within_a_second() {
    stop_exits_0_within_a_second(Signal::SIGINT);
}

#[test]
fn json_logs_are_one_object_a_line() {
    let pod = nginx_pod(PEERS_0_1, TEMPLATE_V1);
    let mut d = Daemon::spawn(pod.sb.peerplate([
        "--log-format",
        "json",
        "--config",
        &pod.config.display().to_string(),
        "run",
    ]));
    d.wait_for_line(0, &["\"rendered\"", "nginx.conf.j2"], WAIT);
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    let lines = d.lines_since(0);
    assert!(!lines.is_empty(), "{}", d.logs());
    let mut rendered = 0;
    for line in &lines {
        // JSON is YAML; serde_yaml is already a dependency.
        let obj: serde_yaml::Mapping = serde_yaml::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object: {line:?}: {e}\n{}", d.logs()));
        let field = |k: &str| obj.get(k).cloned().unwrap_or(serde_yaml::Value::Null);
        if field("message").as_str() == Some("rendered") {
            assert_eq!(field("template").as_str(), Some("nginx.conf.j2"), "{line}");
            // The first render creates the file; any later one finds it equal.
            assert_eq!(field("changed").as_bool(), Some(rendered == 0), "{line}");
            rendered += 1;
        }
    }
    assert!(rendered >= 1, "a render at start\n{}", d.logs());
}

#[test]
fn peers_file_in_a_configmap_follows_data_swaps() {
    let pod = nginx_pod(PEERS_0_1, TEMPLATE_V1);
    // The peers list mounted from a ConfigMap of its own.
    let mut peers_cm = ConfigMapDir::create(&pod.sb.join("peers-cm"), &[("list", PEERS_0_1)]);
    let config = fs::read_to_string(&pod.config).expect("read config");
    let pointed = config.replace(
        &format!("file: {}", pod.peers.display()),
        &format!("file: {}", peers_cm.path("list").display()),
    );
    assert_ne!(pointed, config);
    fs::write(&pod.config, pointed).expect("rewrite config");

    let mut d = pod.start();
    wait_for_output(&pod, &mut d, &v1_output(&["web-0", "web-1"]));
    peers_cm.update(&[(
        "list",
        &format!("{PEERS_0_1}web-2.nginx.default.svc.cluster.local\n"),
    )]);
    wait_for_output(&pod, &mut d, &v1_output(&["web-0", "web-1", "web-2"]));
    peers_cm.update(&[("list", "web-1.nginx.default.svc.cluster.local\n")]);
    wait_for_output(&pod, &mut d, &v1_output(&["web-1"]));
}
