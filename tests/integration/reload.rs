//! `reload` through `peerplate run`: with `pid_file`, the process in it gets
//! exactly one signal per cycle that installed a `reload: true` output (a
//! burst of peer edits inside `wait.min` is one cycle, one signal), and none
//! for an unchanged output or a changed `reload: false` one; with `process`,
//! only the top-most process of that name gets it (not its same-named
//! child); no such process is logged at info level and the loop goes on; a
//! process peerplate may not signal gives a warning naming the fix (the same
//! user as the app); a process that ignores the signal gets an error naming
//! what works instead, and one that neither catches nor blocks it is never
//! sent it (it would die of it), and one started after the install is not
//! signalled (it read the file).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::helpers::{find_program, peers, poll_until, require_component, Daemon, Sandbox, WAIT};
use crate::pod::Pod;

/// Pod web-1 with a `file` peer source, two templates (`a.j2`, reloading,
/// and `b.j2` with `reload: false`), `wait.min` 200ms and `reload_yaml`.
fn reload_pod(reload_yaml: &str) -> Pod {
    Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("a.j2", "{% for p in peers %}{{ p }}\n{% endfor %}", "out/a")
        .template_with("b.j2", "b1\n", "out/b", "    reload: false\n")
        .wait_min("200ms")
        .yaml(&format!("reload: {reload_yaml}\n"))
        .build()
}

/// A shell script that appends `name` to `log` on each SIGHUP.
fn hup_recorder(log: &Path, name: &str) -> String {
    format!(
        "trap 'echo {name} >> {log}' HUP\nwhile :; do sleep 0.05; done\n",
        log = log.display()
    )
}

fn signal_lines(d: &Daemon, mark: usize) -> Vec<String> {
    d.lines_since(mark)
        .into_iter()
        .filter(|l| l.contains("reload signal sent"))
        .collect()
}

#[test]
fn pid_file_one_signal_per_changed_cycle_none_when_unchanged() {
    let sb_target = Sandbox::new();
    let hups = sb_target.join("hups");
    let script = sb_target.write("target.sh", &hup_recorder(&hups, "HUP"));
    let target = Daemon::spawn({
        let mut c = Command::new("sh");
        c.arg(&script);
        c
    });
    let pid_file = sb_target.write("app.pid", &format!("{}\n", target.pid()));
    // Let the shell set its trap before anything can signal it.
    std::thread::sleep(Duration::from_millis(200));

    let pod = reload_pod(&format!(
        "{{signal: HUP, pid_file: {}}}",
        pid_file.display()
    ));
    let mut d = pod.start();
    let count = || pod_hups(&hups);

    // The first cycle installs both outputs: one signal.
    let line = d.wait_for_line(0, &["reload signal sent"], WAIT);
    assert!(
        line.contains(&format!("pid={} signal=SIGHUP", target.pid())),
        "{line}"
    );
    assert!(poll_until(WAIT, || count() == 1), "{}", d.logs());

    // Three edits inside wait.min: one cycle, one signal.
    let mark = d.mark();
    for set in [&[0, 1, 2][..], &[0, 1, 2, 3], &[0, 1, 2, 3, 4]] {
        pod.replace("peers", &peers(set));
        std::thread::sleep(Duration::from_millis(30));
    }
    d.wait_for_line(mark, &["rendered", "template=a.j2", "changed=true"], WAIT);
    assert!(poll_until(WAIT, || count() == 2), "{}", d.logs());
    assert_eq!(pod.read_or_empty("out/a"), peers(&[0, 1, 2, 3, 4]));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(), 2, "one signal for the burst\n{}", d.logs());
    assert_eq!(signal_lines(&d, mark).len(), 1, "{}", d.logs());
    let renders = d
        .lines_since(mark)
        .iter()
        .filter(|l| l.contains("template=a.j2") && l.contains("rendered"))
        .count();
    assert_eq!(renders, 1, "one cycle for the burst\n{}", d.logs());

    // A template edit that changes no output: no signal.
    let mark = d.mark();
    pod.replace(
        "a.j2",
        "{# a comment #}{% for p in peers %}{{ p }}\n{% endfor %}",
    );
    d.wait_for_line(mark, &["rendered", "template=a.j2", "changed=false"], WAIT);
    // A changed output that has `reload: false`: no signal either.
    pod.replace("b.j2", "b2\n");
    d.wait_for_line(mark, &["rendered", "template=b.j2", "changed=true"], WAIT);
    assert_eq!(pod.read_or_empty("out/b"), "b2\n");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(count(), 2, "{}", d.logs());
    assert_eq!(signal_lines(&d, mark), Vec::<String>::new());
    drop(target);
}

fn pod_hups(log: &Path) -> usize {
    fs::read_to_string(log).unwrap_or_default().lines().count()
}

#[test]
fn process_signals_the_top_most_match_only() {
    // A copy of sh under a name no other process has: the parent runs the
    // recorder and starts a same-named child that records too.
    let sb = Sandbox::new();
    let name = format!("ppt{}", std::process::id());
    assert!(name.len() <= 15, "a command name the kernel keeps whole");
    let sh = fs::canonicalize(find_program("sh").expect("sh")).expect("sh's real path");
    let prog = sb.join(&name);
    fs::copy(&sh, &prog).expect("copy sh");
    let hups = sb.join("hups");
    sb.write(
        "child.sh",
        &format!(
            "trap 'echo child >> {log}' HUP\np=$PPID\nwhile kill -0 $p 2>/dev/null; do sleep 0.05; done\n",
            log = hups.display()
        ),
    );
    sb.write(
        "parent.sh",
        &format!(
            "{prog} {child} &\n{rest}",
            prog = prog.display(),
            child = sb.join("child.sh").display(),
            rest = hup_recorder(&hups, "parent"),
        ),
    );
    let parent = Daemon::spawn({
        let mut c = Command::new(&prog);
        c.arg(sb.join("parent.sh"));
        c
    });
    let parent_pid = i32::try_from(parent.pid()).expect("pid");
    let child_up = poll_until(WAIT, || {
        crate::procfs::children(parent_pid)
            .iter()
            .any(|s| s.comm == name)
    });
    assert!(child_up, "the same-named child did not start");
    std::thread::sleep(Duration::from_millis(200)); // traps set

    let pod = reload_pod(&format!("{{signal: SIGHUP, process: {name}}}"));
    let mut d = pod.start();
    let line = d.wait_for_line(0, &["reload signal sent"], WAIT);
    assert!(line.contains(&format!("pid={parent_pid} ")), "{line}");
    assert!(poll_until(WAIT, || pod_hups(&hups) == 1), "{}", d.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs::read_to_string(&hups).unwrap_or_default(), "parent\n");
    assert_eq!(signal_lines(&d, 0).len(), 1, "{}", d.logs());
}

#[test]
fn process_not_running_is_logged_and_the_loop_goes_on() {
    let pod = reload_pod("{signal: HUP, process: ppnosuchproc}");
    let mut d = pod.start();
    let line = d.wait_for_line(0, &["no process to reload"], WAIT);
    assert!(line.contains("INFO"), "info level: {line}");
    let mark = d.mark();
    pod.replace("peers", &peers(&[0, 1, 2]));
    d.wait_for_line(mark, &["no process to reload"], WAIT);
    assert_eq!(pod.read_or_empty("out/a"), peers(&[0, 1, 2]));
    assert!(d.is_running(), "{}", d.logs());
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn a_process_peerplate_may_not_signal_gives_a_warning_with_the_fix() {
    // Needs two users: peerplate runs as nobody, the app as root.
    let uid =
        std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").expect("stat /proc/self"));
    if uid != 0 {
        crate::helpers::skip("needs root to run peerplate as another user");
        return;
    }
    if !require_component("setpriv") {
        return;
    }
    // An app that catches HUP (one that did not would never be signalled).
    let app = Daemon::spawn({
        let mut c = Command::new("sh");
        c.args(["-c", "trap 'echo hup' HUP; while :; do sleep 1; done"]);
        c
    });
    let pid_file = Sandbox::new();
    let pid_path = pid_file.write("app.pid", &format!("{}\n", app.pid()));
    let pod = reload_pod(&format!(
        "{{signal: HUP, pid_file: {}}}",
        pid_path.display()
    ));
    use std::os::unix::fs::PermissionsExt;
    for dir in [pod.sb.path(), pid_file.path()] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::set_permissions(pod.sb.join("out"), fs::Permissions::from_mode(0o777)).expect("chmod");
    // `peerplate run` as nobody, with the sandbox's clean environment.
    let mut cmd = Command::new(find_program("setpriv").expect("setpriv"));
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(crate::helpers::bin())
        .args(pod.args("run"));
    pod.clean_env(&mut cmd);
    let mut d = Daemon::spawn(cmd);
    let line = d.wait_for_line(0, &["reload failed"], WAIT);
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!(
            "not allowed to send SIGHUP to pid {} (sh, uid 0) (peerplate runs as uid 65534): run peerplate as the same user as the app (uid 0)",
            app.pid()
        )),
        "the warning names the fix: {line}"
    );
    assert!(!line.contains("CAP_KILL"), "no capability advice: {line}");
    assert!(d.is_running(), "{}", d.logs());
    drop(app);
}

#[test]
fn a_process_that_ignores_or_does_not_catch_the_signal_is_never_sent_it() {
    // Ignores HUP, like Redis 7.
    let deaf = Daemon::spawn({
        let mut c = Command::new("sh");
        c.args(["-c", "trap '' HUP; while :; do sleep 1; done"]);
        c
    });
    let files = Sandbox::new();
    let pid_path = files.write("app.pid", &format!("{}\n", deaf.pid()));
    let pod = reload_pod(&format!(
        "{{signal: HUP, pid_file: {}, min_age: 0s}}",
        pid_path.display()
    ));
    let mut d = pod.start();
    let line = d.wait_for_line(0, &["reload signal not sent", "ignores SIGHUP"], WAIT);
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("use an exec or http action if the app offers one (for Redis, which reads redis.conf only when it starts: reload: false"),
        "names what works instead: {line}"
    );
    assert!(signal_lines(&d, 0).is_empty(), "{}", d.logs());
    drop(d);
    drop(deaf);

    // Neither catches nor blocks HUP (sleep): waited for up to catch_wait,
    // then an error; the process lives on.
    let mut bare = Daemon::spawn({
        let mut c = Command::new("sleep");
        c.arg("30");
        c
    });
    let pid_path = files.write("bare.pid", &format!("{}\n", bare.pid()));
    let pod = reload_pod(&format!(
        "{{signal: HUP, pid_file: {}, min_age: 0s, catch_wait: 1s}}",
        pid_path.display()
    ));
    let mut d = pod.start();
    d.wait_for_line(
        0,
        &["waiting for the process to catch the signal before sending it"],
        WAIT,
    );
    let line = d.wait_for_line(0, &["reload signal not sent", "(catch_wait)"], WAIT);
    assert!(line.contains("the signal is never sent uncaught"), "{line}");
    assert!(signal_lines(&d, 0).is_empty(), "{}", d.logs());
    assert!(bare.is_running(), "the app was not killed");
}

#[test]
fn a_process_started_after_the_install_is_not_signalled() {
    // A copy of sh under a name of its own, so `process:` finds only ours.
    let files = Sandbox::new();
    let name = format!("ppr{}", std::process::id() % 1_000_000);
    let real = fs::canonicalize(find_program("sh").expect("sh")).expect("real sh");
    let program = files.join(&name);
    fs::copy(real, &program).expect("copy sh");
    let start = |tag: &str| {
        let log = files.join(&format!("{tag}.hups"));
        let script = files.write(&format!("{tag}.sh"), &hup_recorder(&log, tag));
        let mut c = Command::new(&program);
        c.arg(script);
        (Daemon::spawn(c), log)
    };
    // The first app is young when the file is installed: it is waited for
    // (min_age 2 s). Meanwhile it is replaced by a second one, which starts
    // after the install and so reads the new file itself.
    let (first, _) = start("first");
    let pod = reload_pod(&format!("{{signal: HUP, process: {name}}}"));
    // -v: the wait for min_age is a debug line.
    let mut args = vec!["-v".to_string()];
    args.extend(pod.args("run"));
    let mut d = Daemon::spawn(pod.peerplate(&args));
    d.wait_for_line(
        0,
        &["younger than min_age; waiting before the signal"],
        WAIT,
    );
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    let (second, second_log) = start("second");
    let line = d.wait_for_line(
        0,
        &["not signalled: the process started after the file was installed"],
        WAIT,
    );
    assert!(line.contains(&format!("({name})")), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lines(&second_log),
        Vec::<String>::new(),
        "no HUP to the second"
    );
    assert!(signal_lines(&d, 0).is_empty(), "{}", d.logs());
    drop(second);
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}
