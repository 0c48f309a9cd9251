//! `peerplate once`, the init-container mode: it renders every template,
//! installs each output with its configured mode and exits 0; it exits 3 when
//! its own pod never shows up among the peers within `peers.timeout`, writing
//! nothing, and renders as soon as it does show up; `create_only` leaves an
//! existing destination alone.

use crate::helpers::{mode_of, run, Sandbox};

fn write_config(
    sb: &Sandbox,
    peers: &str,
    extra_template_keys: &str,
    extra: &str,
) -> std::path::PathBuf {
    let root = sb.path().display();
    sb.write(
        "peerplate.yaml",
        &format!(
            "identity:\n  hostname: web-1\n  namespace: default\npeers:\n  file: {root}/peers\n{extra}templates:\n  - source: {root}/tpl/upstream.conf.j2\n    destination: {root}/out/upstream.conf\n    mode: \"0640\"\n{extra_template_keys}  - source: {root}/tpl/leader.txt.j2\n    destination: {root}/out/leader.txt\n    mode: \"0600\"\nwait: {{ min: 0s, max: 0s }}\nvars: {{ greeting: hello }}\n"
        ),
    );
    sb.write("peers", peers);
    sb.write(
        "tpl/upstream.conf.j2",
        "# {{ vars.greeting }} from {{ pod.hostname }}\nupstream web {\n{% for p in peers %}  server {{ p }}:80;\n{% endfor %}}\n",
    );
    sb.write("tpl/leader.txt.j2", "{{ leader.hostname }}\n");
    sb.mkdir("out");
    sb.join("peerplate.yaml")
}

const PEERS_FILE: &str = "# the StatefulSet's pods\nweb-1.nginx.default.svc.cluster.local\n\nweb-0.nginx.default.svc.cluster.local\n";

#[test]
fn renders_every_template_with_its_mode_and_exits_0() {
    let sb = Sandbox::new();
    let config = write_config(&sb, PEERS_FILE, "", "");
    let out = run(&mut sb.peerplate(["--config", &config.display().to_string(), "once"]));
    assert_eq!(out.code, Some(0), "{}", out.dump());

    let upstream = sb.join("out/upstream.conf");
    let text = std::fs::read_to_string(&upstream).expect("out/upstream.conf written");
    assert_eq!(
        text.trim_end(),
        "# hello from web-1\nupstream web {\n  server web-0.nginx.default.svc.cluster.local:80;\n  server web-1.nginx.default.svc.cluster.local:80;\n}"
    );
    assert_eq!(mode_of(&upstream), 0o640, "mode \"0640\" from the config");

    let leader = sb.join("out/leader.txt");
    let text = std::fs::read_to_string(&leader).expect("out/leader.txt written");
    assert_eq!(text.trim_end(), "web-0");
    assert_eq!(mode_of(&leader), 0o600, "mode \"0600\" from the config");

    let mut left = std::fs::read_dir(sb.join("out"))
        .expect("read out/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    left.sort();
    assert_eq!(
        left,
        ["leader.txt", "upstream.conf"],
        "no temp files left behind"
    );
}

#[test]
fn exits_3_when_self_never_appears_before_timeout() {
    let sb = Sandbox::new();
    let config = write_config(
        &sb,
        "web-0.nginx.default.svc.cluster.local\n",
        "",
        "  wait_for_self: true\n  timeout: 300ms\n",
    );
    let out = run(&mut sb.peerplate(["--config", &config.display().to_string(), "once"]));
    assert_eq!(out.code, Some(3), "{}", out.dump());
    assert!(
        !sb.join("out/upstream.conf").exists(),
        "nothing rendered without self"
    );
    assert!(
        !sb.join("out/leader.txt").exists(),
        "nothing rendered without self"
    );
}

#[test]
fn create_only_keeps_an_existing_destination() {
    let sb = Sandbox::new();
    let config = write_config(&sb, PEERS_FILE, "    create_only: true\n", "");
    sb.write("out/upstream.conf", "hand-made\n");
    let out = run(&mut sb.peerplate(["--config", &config.display().to_string(), "once"]));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        std::fs::read_to_string(sb.join("out/upstream.conf")).expect("read"),
        "hand-made\n",
        "create_only: an existing destination is never overwritten"
    );
    assert_eq!(
        std::fs::read_to_string(sb.join("out/leader.txt"))
            .expect("read")
            .trim_end(),
        "web-0",
        "the other template is still rendered"
    );
}

#[test]
fn waits_for_self_then_renders_and_exits_0() {
    let sb = Sandbox::new();
    let config = write_config(
        &sb,
        "web-0.nginx.default.svc.cluster.local\n",
        "",
        "  wait_for_self: true\n  timeout: 8s\n",
    );
    let mut cmd = sb.peerplate(["--config", &config.display().to_string(), "once"]);
    let peers = sb.join("peers");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        std::fs::write(peers, PEERS_FILE).expect("add web-1 to the peers file");
    });
    let out = run(&mut cmd);
    writer.join().expect("writer thread");
    assert_eq!(
        out.code,
        Some(0),
        "once renders as soon as web-1 shows up\n{}",
        out.dump()
    );
    assert_eq!(
        std::fs::read_to_string(sb.join("out/leader.txt"))
            .expect("out/leader.txt written")
            .trim_end(),
        "web-0"
    );
}
