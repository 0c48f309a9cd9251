//! `hooks.on_start` / `hooks.on_change` through `peerplate run`: the peer
//! list reaches a hook on stdin byte for byte (one FQDN a line, trailing
//! newline, ordinal order: web-10 after web-9), never in its command line,
//! and a DNS target crafted as shell code never reaches it; `on_change` runs
//! on a change of the peer set and not on a cycle that changed nothing in it;
//! the exit status is logged; a hanging hook is killed with its whole process
//! group at `hooks.timeout`, leaving no process and no zombie; and with
//! peerplate as PID 1 of its own PID namespace, orphans a hook leaves behind
//! are reaped.

use std::time::Duration;

use crate::dns_server::DnsServer;
use crate::helpers::{bin, peers, poll_until, Daemon, SVC, WAIT};
use crate::pod::{Pod, PodBuilder};
use crate::procfs;

/// Pod web-1 (of `pod`, which has the peer source) with a template (so a
/// template edit makes a cycle) and `hooks` given as YAML (indented by 2).
fn with_hooks(pod: PodBuilder, hooks_yaml: &str) -> Pod {
    pod.template("t.j2", "count={{ peers | length }}\n", "out.txt")
        .yaml(&format!("hooks:\n{hooks_yaml}"))
        .build()
}

#[test]
fn hooks_get_the_exact_peer_list_on_stdin_and_on_change_runs_only_on_a_change() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(11); // served web-0, web-1, web-10, web-2, ...: name order
    dns.set_extra_targets(&[&format!("$(touch pwned);touch pwned2.{SVC}")]);
    let pod = with_hooks(
        Pod::builder().dns(&[&dns.nameserver()], "200ms"),
        "  on_start: |-\n    cat > start.txt; tr '\\000' '\\n' < /proc/$$/cmdline > argv.txt\n  on_change: |-\n    { cat; echo ---; } >> changes.txt\n  timeout: 5s\n",
    );
    let mut d = pod.start();
    pod.wait_for_file(&mut d, "start.txt", &peers(0..11));
    d.wait_for_line(
        0,
        &["hook ran", "hook=\"on_start\"", "status=exit status: 0"],
        WAIT,
    );

    // The command line is the configured command, nothing more: no peer name.
    let argv = pod.read("argv.txt").expect("argv.txt");
    let words: Vec<&str> = argv.lines().collect();
    assert_eq!(words[..2], ["sh", "-c"], "{argv}");
    assert!(words[2].starts_with("cat > start.txt;"), "{argv}");
    assert!(!argv.contains("web-"), "a peer name in argv: {argv}");
    // The crafted SRV target was dropped: not run, not on stdin.
    d.wait_for_log("dropping an SRV target that is not a valid host name", WAIT);
    assert!(!pod.sb.join("pwned").exists() && !pod.sb.join("pwned2").exists());
    assert_eq!(pod.read("changes.txt"), None, "on_start only, at first");

    // A change: on_change, with the new list.
    dns.scale(3);
    pod.wait_for_file(&mut d, "changes.txt", &format!("{}---\n", peers(0..3)));

    // A cycle that leaves the peer set as it was (a template edit): no hook.
    let mark = d.mark();
    pod.sb.write("t.j2", "peers={{ peers | length }}\n");
    d.wait_for_line(mark, &["rendered", "changed=true"], WAIT);
    // Then a real change; had the edit run on_change, it would show first.
    dns.set_pods(&["web-1", "web-2"]);
    let want = format!("{}---\n{}---\n", peers(0..3), peers(1..3));
    pod.wait_for_file(&mut d, "changes.txt", &want);
    std::thread::sleep(Duration::from_millis(400)); // a few more polls
    assert_eq!(pod.read("changes.txt").as_deref(), Some(want.as_str()));
    let runs = d
        .stderr()
        .lines()
        .filter(|l| l.contains("hook ran"))
        .count();
    assert_eq!(runs, 3, "one on_start, two on_change\n{}", d.logs());
}

#[test]
fn a_hanging_hook_is_killed_with_its_group_at_its_timeout_and_reaped() {
    let marker = format!("{}", 600_000_000 + std::process::id());
    let pod = with_hooks(
        Pod::builder().peers_file(&peers(0..2)),
        // Hangs the first time only: a failed on_start is retried (with
        // backoff) before any on_change runs.
        &format!("  on_start: \"test -e tried && exit 0; touch tried; sleep {marker}.1 & sleep {marker}.2; echo done > after.txt\"\n  on_change: \"cat > changed.txt; exit 3\"\n  timeout: 500ms\n"),
    );
    let mut d = pod.start();
    // Both sleeps (the shell's child and its background job) run...
    let started = poll_until(WAIT, || procfs::with_marker(&marker).len() >= 2);
    assert!(started, "the hook's sleeps never ran\n{}", d.logs());
    let at = std::time::Instant::now();
    let line = d.wait_for_line(
        0,
        &["hook killed at its timeout", "hook=\"on_start\""],
        WAIT,
    );
    assert!(at.elapsed() < Duration::from_secs(2), "killed late: {line}");
    // ...and are gone with it: the whole group got SIGKILL.
    let gone = poll_until(Duration::from_secs(2), || {
        procfs::with_marker(&marker).is_empty()
    });
    assert!(
        gone,
        "still running after the timeout: {:?}",
        procfs::with_marker(&marker)
    );
    assert_eq!(pod.read("after.txt"), None);
    let pid = i32::try_from(d.pid()).expect("pid");
    assert_eq!(procfs::zombie_children(pid), vec![], "zombies of peerplate");

    // on_start is retried and succeeds; the loop goes on, and a failing
    // hook's status is logged.
    d.wait_for_line(
        0,
        &["hook ran", "hook=\"on_start\"", "status=exit status: 0"],
        WAIT,
    );
    let mark = d.mark();
    pod.replace("peers", &peers(0..3));
    d.wait_for_line(
        mark,
        &["hook ran", "hook=\"on_change\"", "status=exit status: 3"],
        WAIT,
    );
    assert_eq!(pod.read("changed.txt"), Some(peers(0..3)));
    assert_eq!(procfs::zombie_children(pid), vec![]);
    assert!(d.is_running());
}

#[test]
fn as_pid_1_peerplate_reaps_the_orphans_hooks_leave() {
    if !procfs::pid_namespaces_work() {
        return;
    }
    // Three orphans per run, alive for about a second (long enough to be
    // seen as peerplate's children), then exited: zombies, unless reaped.
    let marker = format!("1.{:09}", std::process::id());
    let pod = with_hooks(
        Pod::builder().peers_file(&peers(0..2)),
        &format!(
            "  on_change: \"for i in 1 2 3; do sleep {marker} & done; exit 0\"\n  timeout: 5s\n"
        ),
    );
    let mut cmd = procfs::unshare();
    cmd.arg(bin()).args(pod.args("run"));
    pod.clean_env(&mut cmd);
    let mut d = Daemon::spawn(cmd);
    let mut pp = 0;
    d.wait_until(WAIT, "peerplate to run as PID 1 of its namespace", |d| {
        pp = procfs::namespace_init(d.pid()).unwrap_or(0);
        pp != 0 && procfs::ns_pids(pp).last() == Some(&1)
    });

    for round in 0..2 {
        let mark = if round == 0 { 0 } else { d.mark() };
        if round == 1 {
            pod.replace("peers", &peers(&[1]));
        }
        d.wait_for_line(mark, &["hook ran", "status=exit status: 0"], WAIT);
        // The orphans are peerplate's now...
        let adopted = poll_until(WAIT, || {
            procfs::children(pp)
                .iter()
                .filter(|s| procfs::cmdline(s.pid).contains(&marker))
                .count()
                >= 3
        });
        assert!(
            adopted,
            "round {round}: the orphans were not re-parented to peerplate (pid {pp}): children {:?}, with the marker {:?}\n{}",
            procfs::children(pp),
            procfs::with_marker(&marker),
            d.logs()
        );
        // ...and once they exit, none is left a zombie.
        let reaped = poll_until(Duration::from_secs(5), || {
            procfs::with_marker(&marker).is_empty() && procfs::zombie_children(pp).is_empty()
        });
        assert!(
            reaped,
            "round {round}: zombies of peerplate (PID 1): {:?}\n{}",
            procfs::zombie_children(pp),
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(procfs::zombie_children(pp), vec![]);
    }
    assert!(d.is_running(), "{}", d.logs());
}

#[test]
fn as_pid_1_setsid_orphans_are_reaped_and_exec_verdicts_keep_their_exit_codes() {
    if !procfs::pid_namespaces_work() {
        return;
    }
    // Every hook run and every exec action leaves a grandchild that called
    // setsid (it leads a session and a group of its own), lives about a
    // second, and exits while the next actions run.
    let marker = format!("1.{:09}", 100_000_000 + std::process::id());
    let orphan = format!("setsid sleep {marker} & setsid sh -c 'sleep {marker}; exit 9' &");
    let pod = Pod::builder()
        .peers_file(&peers(0..2))
        .template_with("a.j2", "a {{ peers | length }}\n", "out/a", "    reload: ok\n")
        .template_with("b.j2", "b {{ peers | length }}\n", "out/b", "    reload: bad\n")
        .http()
        .yaml(&format!(
            "hooks:\n  on_change: \"{orphan} exit 0\"\n  timeout: 5s\nreloads:\n  ok: {{exec: \"sh -c \\\"{orphan} exit 0\\\"\"}}\n  bad: {{exec: \"sh -c \\\"{orphan} echo refused >&2; exit 7\\\"\"}}\n",
        ))
        .build();
    let mut cmd = procfs::unshare();
    cmd.arg(bin()).args(pod.args("run"));
    pod.clean_env(&mut cmd);
    let mut d = Daemon::spawn(cmd);
    let mut pp = 0;
    d.wait_until(WAIT, "peerplate to run as PID 1 of its namespace", |d| {
        pp = procfs::namespace_init(d.pid()).unwrap_or(0);
        pp != 0 && procfs::ns_pids(pp).last() == Some(&1)
    });
    let port = pod.port;
    let reloads = |action: &str, result: &str| {
        crate::helpers::metric(
            port,
            &format!("peerplate_reloads_total{{action=\"{action}\",result=\"{result}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let rounds = 4;
    for round in 0..rounds {
        let n = round as f64 + 1.0;
        d.wait_until(WAIT, "both verdicts of this round", |_| {
            reloads("ok", "accepted") == n && reloads("bad", "rejected") == n
        });
        // The setsid orphans are peerplate's now...
        let adopted = poll_until(WAIT, || {
            procfs::children(pp)
                .iter()
                .filter(|s| procfs::cmdline(s.pid).contains(&marker))
                .count()
                >= 2
        });
        assert!(
            adopted,
            "round {round}: no orphan re-parented to peerplate (pid {pp}): {:?}\n{}",
            procfs::with_marker(&marker),
            d.logs()
        );
        if round + 1 < rounds {
            // ...and the next round's actions run while they exit.
            pod.replace("peers", &peers(0..(3 + round)));
        }
    }
    let reaped = poll_until(Duration::from_secs(5), || {
        procfs::with_marker(&marker).is_empty() && procfs::zombie_children(pp).is_empty()
    });
    assert!(
        reaped,
        "zombies of peerplate (PID 1): {:?}\n{}",
        procfs::zombie_children(pp),
        d.logs()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(procfs::zombie_children(pp), vec![]);
    // No status was taken from under a run: every verdict is the exit code.
    for result in ["failed", "no_process"] {
        assert_eq!(reloads("ok", result), 0.0, "ok {result}\n{}", d.logs());
        assert_eq!(reloads("bad", result), 0.0, "bad {result}\n{}", d.logs());
    }
    assert_eq!(reloads("ok", "accepted"), rounds as f64);
    assert_eq!(reloads("bad", "rejected"), rounds as f64);
    let stderr = d.stderr();
    let rejected: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("reload rejected by the app"))
        .collect();
    assert_eq!(rejected.len(), rounds, "{stderr}");
    for line in rejected {
        assert!(line.contains("exit status: 7"), "{line}");
    }
    assert!(d.is_running(), "{}", d.logs());
}
