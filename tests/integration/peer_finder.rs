//! The peer-finder drop-in, run both through a symlink named `peer-finder`
//! and as `peerplate peer-finder`, against the in-process DNS server (the
//! resolver and the cluster domain come from the sandbox's resolv.conf, as
//! in a pod): `-on-start=tee` prints the peers in ordinal order and exits 0;
//! `-on-change 'cat > FILE'` reruns on each change and SIGTERM ends it with
//! exit 0; Go-style flags in every form; the POD_NAMESPACE fallback; the
//! original's messages in Go's log format; exit 1 for incomplete arguments
//! and 2 for an unknown flag.

use std::os::unix::fs::symlink;
use std::process::Command;

use crate::dns_server::DnsServer;
use crate::helpers::{bin, peers, peers_in, run, Daemon, Outcome, SVC, WAIT};
use crate::pod::Pod;

const INCOMPLETE: &str = "Incomplete args, require -on-change and/or -on-start, -service and -ns or an env var for POD_NAMESPACE.";

/// A pod's view: resolv.conf naming the test DNS server and the search list
/// of namespace `default` in `domain`; HOSTNAME web-1; `bin/peer-finder` a
/// symlink to peerplate.
fn finder_pod(dns: &DnsServer, domain: &str) -> Pod {
    let pod = Pod::builder()
        .resolv_conf(&format!(
            "search default.svc.{domain} svc.{domain} {domain}\nnameserver {}\noptions ndots:5\n",
            dns.nameserver()
        ))
        .build();
    pod.sb.mkdir("bin");
    symlink(bin(), pod.sb.join("bin/peer-finder")).expect("symlink peer-finder");
    pod
}

/// `peer-finder ARGS` through the symlink, or `peerplate peer-finder ARGS`.
fn cmd(pod: &Pod, via_symlink: bool, args: &[&str]) -> Command {
    if via_symlink {
        let mut cmd = Command::new(pod.sb.join("bin/peer-finder"));
        cmd.args(args);
        pod.clean_env(&mut cmd);
        cmd
    } else {
        let mut all = vec!["peer-finder"];
        all.extend_from_slice(args);
        pod.peerplate(all)
    }
}

/// Whether `line` starts like Go's log: `2026/11/25 13:21:41 `.
fn go_stamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
        && b[4] == b'/'
        && b[7] == b'/'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b' '
}

/// The messages of a stderr in Go's log format, timestamps checked and cut.
fn messages(out: &Outcome) -> Vec<String> {
    let mut msgs: Vec<String> = Vec::new();
    for line in out.stderr.lines() {
        if go_stamped(line) {
            msgs.push(line[20..].to_string());
        } else if let Some(last) = msgs.last_mut() {
            // A message of several lines (Peer list updated / was / now).
            last.push('\n');
            last.push_str(line);
        } else {
            panic!("not in Go's log format: {line:?}\n{}", out.dump());
        }
    }
    msgs
}

/// `-on-start=tee -service=nginx -ns=default` against 11 pods (served in
/// name order, web-10 before web-2).
fn on_start_tee_prints_the_peers_and_exits_0(via_symlink: bool) {
    let dns = DnsServer::start("cluster.local");
    dns.scale(11);
    let pod = finder_pod(&dns, "cluster.local");
    let out = run(&mut cmd(
        &pod,
        via_symlink,
        &["-on-start=tee", "-service=nginx", "-ns=default"],
    ));
    assert_eq!(out.code, Some(0), "symlink: {via_symlink}\n{}", out.dump());
    assert_eq!(out.stdout, peers(0..11), "ordinal order, trailing newline");
    let msgs = messages(&out);
    let now: Vec<String> = (0..11).map(|k| format!("web-{k}.{SVC}")).collect();
    assert_eq!(
        msgs,
        [
            "Peer finder enter".to_string(),
            format!("Peer list updated\nwas []\nnow [{}]", now.join(" ")),
            "Peer finder exiting".to_string(),
        ],
        "{}",
        out.dump()
    );
}

#[test]
fn on_start_tee_prints_the_peers_and_exits_0_through_the_symlink() {
    on_start_tee_prints_the_peers_and_exits_0(true);
}

#[test]
fn on_start_tee_prints_the_peers_and_exits_0_as_a_subcommand() {
    on_start_tee_prints_the_peers_and_exits_0(false);
}

#[test]
fn on_change_reruns_on_each_change_until_sigterm() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = finder_pod(&dns, "cluster.local");
    let file = pod.sb.join("peers.out");
    // The `-flag value` and `--flag` forms, and a script that needs a shell.
    let script = format!("cat > {}", file.display());
    let mut d = Daemon::spawn(cmd(
        &pod,
        true,
        &[
            "-on-change",
            &script,
            "--service",
            "nginx",
            "-ns",
            "default",
        ],
    ));
    let read = || std::fs::read_to_string(&file).ok();
    d.wait_until(WAIT, "the first run of on-change", |_| {
        read() == Some(peers(0..2))
    });
    d.wait_for_log(
        &format!("No on-start supplied, on-change {script} will be applied on start."),
        WAIT,
    );
    dns.scale(3);
    d.wait_until(WAIT, "on-change after scaling to 3", |_| {
        read() == Some(peers(0..3))
    });
    dns.set_pods(&["web-1", "web-2", "web-10"]);
    d.wait_until(WAIT, "on-change after web-0 left and web-10 came", |_| {
        read() == Some(format!("web-1.{SVC}\nweb-2.{SVC}\nweb-10.{SVC}\n"))
    });
    let stderr = d.stderr();
    assert!(
        stderr.contains(&format!(
            "Peer list updated\nwas [web-0.{SVC} web-1.{SVC} web-2.{SVC}]\nnow [web-1.{SVC} web-2.{SVC} web-10.{SVC}]\n"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("Peer list updated").count(), 3, "{stderr}");
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{}", d.logs());
    assert!(d.stderr().trim_end().ends_with("Peer finder exiting"));
}

#[test]
fn incomplete_arguments_exit_1_with_the_original_message() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = finder_pod(&dns, "cluster.local");
    for args in [
        &[][..],
        &["-service=nginx", "-ns=default"][..],   // no script
        &["-on-start=tee", "-ns=default"][..],    // no service
        &["-on-start=tee", "-service=nginx"][..], // no namespace, no POD_NAMESPACE
    ] {
        for via_symlink in [true, false] {
            let out = run(&mut cmd(&pod, via_symlink, args));
            assert_eq!(out.code, Some(1), "{args:?}\n{}", out.dump());
            assert_eq!(out.stdout, "");
            assert_eq!(
                messages(&out),
                ["Peer finder enter", INCOMPLETE],
                "{args:?}\n{}",
                out.dump()
            );
        }
    }
}

#[test]
fn the_namespace_falls_back_to_pod_namespace() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = finder_pod(&dns, "cluster.local");
    let mut tee = cmd(&pod, true, &["-on-start", "tee", "-service", "nginx"]);
    tee.env("POD_NAMESPACE", "default");
    let out = run(&mut tee);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.stdout, peers(0..2));
}

#[test]
fn the_cluster_domain_comes_from_resolv_conf_or_domain() {
    let dns = DnsServer::start("k8s.test");
    dns.scale(2);
    // From the search list.
    let pod = finder_pod(&dns, "k8s.test");
    let out = run(&mut cmd(
        &pod,
        true,
        &["-on-start=tee", "-service=nginx", "-ns=default"],
    ));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.stdout, peers_in("nginx.default.svc.k8s.test", 0..2));
    // From -domain, over a search list that says otherwise.
    let pod = finder_pod(&dns, "cluster.local");
    let out = run(&mut cmd(
        &pod,
        false,
        &[
            "-on-start=tee",
            "-service=nginx",
            "-ns=default",
            "--domain=k8s.test",
        ],
    ));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.stdout, peers_in("nginx.default.svc.k8s.test", 0..2));
}

#[test]
fn an_unknown_flag_exits_2() {
    let dns = DnsServer::start("cluster.local");
    let pod = finder_pod(&dns, "cluster.local");
    for via_symlink in [true, false] {
        let out = run(&mut cmd(&pod, via_symlink, &["-on-start=tee", "-bogus=1"]));
        assert_eq!(out.code, Some(2), "{}", out.dump());
        assert!(
            out.stderr
                .starts_with("flag provided but not defined: -bogus\nUsage of peer-finder:"),
            "{}",
            out.dump()
        );
        let out = run(&mut cmd(&pod, via_symlink, &["-service"]));
        assert_eq!(out.code, Some(2), "{}", out.dump());
        assert!(out.stderr.starts_with("flag needs an argument: -service"));
    }
}

/// Scripts run with `bash -c`, as the original's do, so an inline bash test
/// works; in an image without bash (a PATH with only `sh`), with `sh -c`,
/// which the script can tell from `$0`.
#[test]
fn scripts_run_with_bash_where_it_exists_else_sh() {
    let Some(bash) = crate::helpers::find_program("bash") else {
        eprintln!("skipping: bash not installed");
        return;
    };
    let sh = crate::helpers::find_program("sh").expect("sh");
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = finder_pod(&dns, "cluster.local");
    let script =
        r#"-on-start=name=web-1; [[ -n "$name" && $name == web-* ]] && echo "shell=$0" && cat"#;
    let out = run(&mut cmd(
        &pod,
        true,
        &[script, "-service=nginx", "-ns=default"],
    ));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.stdout, format!("shell=bash\n{}", peers(0..2)));

    // No bash on PATH: sh runs it, and the same `[[` fails there (exit 1,
    // as a failed script does in the original).
    let only_sh = pod.sb.mkdir("only-sh");
    symlink(&sh, only_sh.join("sh")).expect("symlink sh");
    let cat = crate::helpers::find_program("cat").expect("cat");
    symlink(&cat, only_sh.join("cat")).expect("symlink cat");
    assert!(!only_sh.join("bash").exists() && bash.exists());
    let posix = r#"-on-start=echo "shell=$0"; cat"#;
    let out = run(cmd(&pod, true, &[posix, "-service=nginx", "-ns=default"]).env("PATH", &only_sh));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(out.stdout, format!("shell=sh\n{}", peers(0..2)));
    let out =
        run(cmd(&pod, true, &[script, "-service=nginx", "-ns=default"]).env("PATH", &only_sh));
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(out.stderr.contains("Failed to execute"), "{}", out.dump());
}
