//! Field reports, safety I (issue 9), each through the binary and asserted
//! on what a user sees:
//!
//! - signals and processes: a stale `pid_file` (an unrelated `sleep`, a dead
//!   pid, peerplate's own pid, PID 1) is skipped with the reason in the log;
//!   PID 1 gets the signal only when `process:` names it and never when it
//!   is `pause`; a same-named process of another user never hides the app,
//!   in either start order;
//! - SIGHUP re-renders at once (ignoring `wait`) and reloads only on changed
//!   bytes; SIGUSR1 and SIGUSR2 are logged and ignored, in `run` and `once`;
//! - `once` exits 1 when `on_start` fails or times out;
//! - hooks never stand in front of a render: a hanging hook does not delay
//!   the next output, a hook that never reads 3,000 peers on stdin is killed
//!   at its timeout (in `run` and in `once`), and SIGTERM kills what a
//!   running hook or check started;
//! - a tiny file-descriptor limit or process limit is a message and exit 1,
//!   never a panic;
//! - all or nothing per reload group: a failed check or render in the group
//!   installs none of it and sends no signal, while a `reload: false`
//!   output is installed on its own.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use insta::assert_snapshot;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::helpers::{
    bin, find_program, poll_until, redact_timestamps, require_component, run, Daemon, Sandbox,
};
use crate::procfs;

const WAIT: Duration = Duration::from_secs(10);
const SVC: &str = "nginx.default.svc.cluster.local";

fn peers(ks: impl IntoIterator<Item = usize>) -> String {
    ks.into_iter().map(|k| format!("web-{k}.{SVC}\n")).collect()
}

/// Pod web-1 with a `file` peer source (`peers`, web-0 and web-1 at first)
/// and `body` as the rest of the config, `ROOT` standing for the sandbox.
struct Pod {
    sb: Sandbox,
    config: PathBuf,
}

impl Pod {
    fn new(body: &str) -> Pod {
        let sb = Sandbox::new();
        let root = sb.path().display().to_string();
        sb.write("peers", &peers([0, 1]));
        sb.mkdir("out");
        let config = sb.write(
            "peerplate.yaml",
            &format!(
                "identity: {{hostname: web-1, namespace: default}}\npeers:\n  file: {root}/peers\n{}",
                body.replace("ROOT", &root)
            ),
        );
        Pod { sb, config }
    }

    fn root(&self) -> String {
        self.sb.path().display().to_string()
    }

    fn cmd(&self, sub: &str) -> Command {
        self.sb
            .peerplate(["--config", &self.config.display().to_string(), sub])
    }

    fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.sb.join(rel)).ok()
    }

    /// Replaces `rel` in one step (write beside, rename over).
    fn replace(&self, rel: &str, contents: &str) {
        let tmp = self.sb.write(&format!("{rel}.tmp"), contents);
        fs::rename(tmp, self.sb.join(rel)).expect("rename over");
    }

    /// Lets another user read the sandbox and write into `out`.
    fn open_to_all(&self) {
        fs::set_permissions(self.sb.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::set_permissions(self.sb.join("out"), fs::Permissions::from_mode(0o777)).expect("chmod");
    }
}

/// `cmd` run through `pre` (e.g. `setpriv ... --`): same arguments,
/// environment and working directory.
fn wrapped(pre: &[&str], cmd: &Command) -> Command {
    let mut out = Command::new(pre[0]);
    out.args(&pre[1..])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        out.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => out.env(k, v),
            None => out.env_remove(k),
        };
    }
    out
}

/// A copy of `program` at `dir/name`, so its processes carry `name`.
fn copy_program(program: &str, dir: &Path, name: &str) -> PathBuf {
    let real = fs::canonicalize(find_program(program).expect(program)).expect("real path");
    let copy = dir.join(name);
    fs::copy(real, &copy).expect("copy program");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// A shell script that appends `name` to `log` on each SIGHUP.
fn hup_recorder(log: &Path, name: &str) -> String {
    format!(
        "trap 'echo {name} >> {log}' HUP\nwhile :; do sleep 0.05; done\n",
        log = log.display()
    )
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The first stderr line containing `needle`, timestamps redacted and
/// `pairs` replaced (e.g. a pid by `[PID]`).
fn line_with(stderr: &str, needle: &str, pairs: &[(&str, &str)]) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in\n{stderr}"));
    let mut line = redact_timestamps(line);
    for (from, to) in pairs {
        line = line.replace(from, to);
    }
    line
}

fn is_root() -> bool {
    let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").expect("stat"));
    if uid != 0 {
        crate::helpers::skip("needs root to run processes as other users");
    }
    uid == 0
}

fn alive(pid: u32) -> bool {
    procfs::stat(i32::try_from(pid).expect("pid")).is_some_and(|s| s.state != 'Z')
}

const ONE_TEMPLATE: &str = "templates:\n  - {source: ROOT/a.j2, destination: ROOT/out/a}\n";

fn with_template(pod: &Pod) {
    pod.sb
        .write("a.j2", "{% for p in peers %}{{ p }}\n{% endfor %}");
}

// ---------------------------------------------------------------------------
// 1. Signals and processes

#[test]
fn a_stale_pid_file_holding_an_unrelated_sleep_is_not_signalled() {
    let sleep = Daemon::spawn({
        let mut c = Command::new("sleep");
        c.arg("30");
        c
    });
    let app = format!("ppa{}", std::process::id());
    let pod = Pod::new(&format!(
        "{ONE_TEMPLATE}reload: {{signal: HUP, process: {app}, pid_file: ROOT/app.pid}}\n"
    ));
    with_template(&pod);
    pod.sb.write("app.pid", &format!("{}\n", sleep.pid()));
    let out = run(&mut pod.cmd("once"));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(pod.read("out/a").as_deref(), Some(peers([0, 1]).as_str()));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        alive(sleep.pid()),
        "the sleep got the signal\n{}",
        out.dump()
    );
    let pid = sleep.pid().to_string();
    assert_snapshot!(pod.sb.redact(&line_with(
        &out.stderr,
        "reload skipped",
        &[(&pid, "[PID]"), (&app, "[APP]")]
    )));
    assert!(!out.stderr.contains("reload signal sent"), "{}", out.dump());
}

#[test]
fn a_pid_file_holding_peerplates_own_pid_is_skipped() {
    // `exec` keeps the shell's pid: the pid file holds peerplate's own.
    let pod = Pod::new(&format!(
        "{ONE_TEMPLATE}reload: {{signal: HUP, pid_file: ROOT/app.pid}}\n"
    ));
    with_template(&pod);
    let pid_file = pod.sb.join("app.pid");
    let script = format!("echo $$ > {}; exec \"$@\"", pid_file.display());
    let mut cmd = wrapped(&["sh", "-c", &script, "sh"], &pod.cmd("once"));
    let out = run(&mut cmd);
    assert_eq!(
        out.code,
        Some(0),
        "not killed by its own signal\n{}",
        out.dump()
    );
    assert_eq!(pod.read("out/a").as_deref(), Some(peers([0, 1]).as_str()));
    let pid = fs::read_to_string(&pid_file).expect("pid file");
    assert_snapshot!(pod.sb.redact(&line_with(
        &out.stderr,
        "reload skipped",
        &[(pid.trim(), "[PID]")]
    )));
}

#[test]
fn a_pid_file_holding_a_dead_pid_is_skipped_with_the_reason() {
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let dead = gone.id();
    gone.wait().expect("reap true");
    let pod = Pod::new(&format!(
        "{ONE_TEMPLATE}reload: {{signal: HUP, pid_file: ROOT/app.pid}}\n"
    ));
    with_template(&pod);
    pod.sb.write("app.pid", &format!("{dead}\n"));
    let out = run(&mut pod.cmd("once"));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_snapshot!(pod.sb.redact(&line_with(
        &out.stderr,
        "no process to reload",
        &[(&dead.to_string(), "[PID]")]
    )));
}

/// In a PID namespace of its own, PID 1 is a copy of sh named `pid1_name`
/// that records each SIGHUP (tagged with the config that ran) and runs
/// `peerplate once` with each of `configs`; returns the records and the
/// logs of each run.
fn in_namespace(pid1_name: &str, configs: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let sb = Sandbox::new();
    let sh = copy_program("sh", sb.path(), pid1_name);
    let hups = sb.join("hups");
    sb.write("one.pid", "1\n");
    let mut script = format!("trap 'echo $step >> {}' HUP\nstep=start\n", hups.display());
    let mut logs = Vec::new();
    for (tag, body) in configs {
        let root = sb.path().display().to_string();
        sb.write(&format!("{tag}.j2"), "{{ peers | length }}\n");
        let config = sb.write(
            &format!("{tag}.yaml"),
            &format!(
                "identity: {{hostname: web-1, namespace: default}}\npeers:\n  static: [web-0, web-1]\ntemplates:\n  - {{source: {root}/{tag}.j2, destination: {root}/{tag}.out}}\n{}",
                body.replace("ROOT", &root)
            ),
        );
        let log = sb.join(&format!("{tag}.log"));
        script.push_str(&format!(
            "step={tag}\n{bin} --config {config} once > {log} 2>&1\n",
            bin = bin(),
            config = config.display(),
            log = log.display()
        ));
        logs.push(log);
    }
    script.push_str(&format!(
        "step=end\necho done > {}\n",
        sb.join("done").display()
    ));
    let base = sb.peerplate(["unused"]);
    let mut cmd = procfs::unshare();
    cmd.arg(&sh).arg("-c").arg(&script).current_dir(sb.path());
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let ns = Daemon::spawn(cmd);
    assert!(
        poll_until(WAIT, || sb.join("done").exists()),
        "the namespace did not finish\n{}",
        ns.logs()
    );
    let logs = logs
        .into_iter()
        .map(|log| sb.redact(&fs::read_to_string(log).unwrap_or_default()))
        .collect();
    (lines(&hups), logs)
}

#[test]
fn pid_1_gets_the_signal_only_when_process_names_it_and_never_when_it_is_pause() {
    if !procfs::pid_namespaces_work() {
        return;
    }
    let name = format!("ppi{}", std::process::id());
    let named = format!("reload: {{signal: HUP, process: {name}}}\n");
    let both = format!("reload: {{signal: HUP, process: {name}, pid_file: ROOT/one.pid}}\n");
    // Every pid_file here holds 1.
    let (hups, logs) = in_namespace(
        &name,
        &[
            ("pidfile", "reload: {signal: HUP, pid_file: ROOT/one.pid}\n"),
            ("named", &named),
            ("both", &both),
        ],
    );
    assert_eq!(hups, ["named", "both"], "{logs:#?}");
    assert!(
        logs[1].contains("reload signal sent pid=1 signal=SIGHUP"),
        "{}",
        logs[1]
    );
    assert!(!logs[0].contains("reload signal sent"), "{}", logs[0]);
    assert_snapshot!(
        "pid_1_pid_file_without_process",
        line_with(&logs[0], "reload skipped", &[(&name, "[NAME]")])
    );

    // PID 1 named pause is an infra container: never signalled.
    let (hups, logs) = in_namespace(
        "pause",
        &[("pause", "reload: {signal: HUP, process: pause}\n")],
    );
    assert_eq!(hups, Vec::<String>::new(), "{logs:#?}");
    assert!(
        logs[0].contains("no process to reload; it reads the new file when it starts reason=no process named pause"),
        "{}",
        logs[0]
    );
}

/// Runs `peerplate once` as uid 65534 with `process: NAME` while a root
/// process and the app (uid 65534) of that name run, started in
/// `root_first` order: only the app gets the signal, the log names its pid
/// and the root one passed over, and nothing says the reload failed.
fn same_name_other_user(root_first: bool) {
    let name = format!("ppu{}{}", std::process::id(), u8::from(root_first));
    let pod = Pod::new(&format!(
        "{ONE_TEMPLATE}reload: {{signal: HUP, process: {name}}}\n"
    ));
    with_template(&pod);
    pod.open_to_all();
    let sh = copy_program("sh", pod.sb.path(), &name);
    let records = pod.sb.mkdir("records");
    fs::set_permissions(&records, fs::Permissions::from_mode(0o777)).expect("chmod");
    let start = |who: &str, as_app: bool| {
        let script = pod
            .sb
            .write(&format!("{who}.sh"), &hup_recorder(&records.join(who), who));
        let mut c = if as_app {
            let mut c = Command::new(find_program("setpriv").expect("setpriv"));
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&sh);
            c
        } else {
            Command::new(&sh)
        };
        c.arg(script);
        let d = Daemon::spawn(c);
        std::thread::sleep(Duration::from_millis(100));
        d
    };
    let (root, app) = if root_first {
        let root = start("root", false);
        (root, start("app", true))
    } else {
        let app = start("app", true);
        (start("root", false), app)
    };
    std::thread::sleep(Duration::from_millis(200)); // traps set
    let mut cmd = wrapped(
        &[
            find_program("setpriv")
                .expect("setpriv")
                .to_str()
                .expect("utf-8"),
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
        &pod.cmd("once"),
    );
    let out = run(&mut cmd);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        poll_until(WAIT, || lines(&records.join("app")) == ["app"]),
        "the app never got its signal\n{}",
        out.dump()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines(&records.join("root")), Vec::<String>::new());
    let sent = line_with(
        &out.stderr,
        "reload signal sent",
        &[(&app.pid().to_string(), "[APP PID]"), (&name, "[NAME]")],
    );
    assert_snapshot!("same_name_other_user_sent", sent);
    let passed = line_with(
        &out.stderr,
        "passed over",
        &[(&root.pid().to_string(), "[ROOT PID]"), (&name, "[NAME]")],
    );
    assert_snapshot!("same_name_other_user_passed_over", passed);
    assert!(!out.stderr.contains("reload failed"), "{}", out.dump());
    assert_eq!(out.stderr.matches("reload signal sent").count(), 1);
}

#[test]
fn a_same_named_root_process_started_first_does_not_hide_the_app() {
    if !is_root() || !require_component("setpriv") {
        return;
    }
    same_name_other_user(true);
}

#[test]
fn a_same_named_root_process_started_after_the_app_is_passed_over_without_a_failure() {
    if !is_root() || !require_component("setpriv") {
        return;
    }
    same_name_other_user(false);
}

// ---------------------------------------------------------------------------
// 2. SIGHUP, SIGUSR1, SIGUSR2

#[test]
fn sighup_rerenders_at_once_reloads_on_changed_bytes_and_does_not_kill() {
    let target_sb = Sandbox::new();
    let hups = target_sb.join("hups");
    let script = target_sb.write("app.sh", &hup_recorder(&hups, "HUP"));
    let app = Daemon::spawn({
        let mut c = Command::new("sh");
        c.arg(script);
        c
    });
    let pid_file = target_sb.write("app.pid", &format!("{}\n", app.pid()));
    std::thread::sleep(Duration::from_millis(200)); // trap set
                                                    // wait.min 3s: without SIGHUP, nothing renders for 3 s after a change.
    let pod = Pod::new(&format!(
        "{ONE_TEMPLATE}wait: {{min: 3s, max: 0s}}\nreload: {{signal: HUP, pid_file: {}}}\n",
        pid_file.display()
    ));
    with_template(&pod);
    let mut d = Daemon::spawn(pod.cmd("run"));
    d.wait_for_log("reload signal sent", WAIT);
    assert!(poll_until(WAIT, || lines(&hups).len() == 1), "{}", d.logs());

    // A template edit, then SIGHUP at once: rendered well before wait.min.
    let mark = d.mark();
    pod.replace("a.j2", "edited\n");
    let sent = Instant::now();
    kill(Pid::from_raw(d.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    d.wait_until(
        Duration::from_secs(2),
        "out/a to be the edited template",
        |_| pod.read("out/a").as_deref() == Some("edited\n"),
    );
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "{:?}",
        sent.elapsed()
    );
    d.wait_for_line(
        mark,
        &["SIGHUP: re-reading the config and the templates and rendering now"],
        WAIT,
    );
    assert!(poll_until(WAIT, || lines(&hups).len() == 2), "{}", d.logs());

    // SIGHUP again with nothing changed: rendered, unchanged, no signal.
    std::thread::sleep(Duration::from_secs(3)); // the watcher's own pass is done
    let mark = d.mark();
    kill(Pid::from_raw(d.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    d.wait_for_line(mark, &["rendered", "changed=false"], Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&hups).len(), 2, "{}", d.logs());
    assert!(
        !d.lines_since(mark)
            .iter()
            .any(|l| l.contains("reload signal sent")),
        "{}",
        d.logs()
    );
    assert!(d.is_running(), "{}", d.logs());
    assert_eq!(d.terminate().code(), Some(0), "{}", d.logs());
}

#[test]
fn sigusr1_and_sigusr2_are_logged_and_ignored_in_run_and_once() {
    let pod = Pod::new(ONE_TEMPLATE);
    with_template(&pod);
    let mut d = Daemon::spawn(pod.cmd("run"));
    d.wait_for_log("rendered", WAIT);
    for sig in [Signal::SIGUSR1, Signal::SIGUSR2] {
        let mark = d.mark();
        kill(Pid::from_raw(d.pid() as i32), sig).expect("signal");
        let line = d.wait_for_line(mark, &["ignored", &format!("signal=\"{sig}\"")], WAIT);
        assert_snapshot!(format!("ignored_in_run_{sig}"), redact_timestamps(&line));
    }
    assert!(d.is_running(), "{}", d.logs());
    assert_eq!(d.terminate().code(), Some(0), "{}", d.logs());

    // `once`, waiting for this pod: SIGHUP, USR1 and USR2 end nothing.
    pod.replace("peers", &peers([0]));
    let mut d = Daemon::spawn(pod.cmd("once"));
    d.wait_for_log("waiting for this pod", WAIT);
    for sig in [Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2] {
        let mark = d.mark();
        kill(Pid::from_raw(d.pid() as i32), sig).expect("signal");
        d.wait_for_line(mark, &["ignored", &format!("signal=\"{sig}\"")], WAIT);
    }
    fs::remove_file(pod.sb.join("out/a")).expect("rm out/a");
    pod.replace("peers", &peers([0, 1]));
    let status = d.wait_exit(WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", d.logs());
    assert_eq!(pod.read("out/a").as_deref(), Some(peers([0, 1]).as_str()));
}

// ---------------------------------------------------------------------------
// 3. `once` and a failed bootstrap

#[test]
fn once_exits_1_when_on_start_fails() {
    let pod = Pod::new(&format!(
        "{ONE_TEMPLATE}hooks: {{on_start: \"exit 3\", timeout: 5s}}\n"
    ));
    with_template(&pod);
    let out = run(&mut pod.cmd("once"));
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert_eq!(pod.read("out/a").as_deref(), Some(peers([0, 1]).as_str()));
    assert_snapshot!(out.stderr.lines().last().unwrap_or_default());
}

#[test]
fn once_exits_1_when_on_start_times_out() {
    let pod = Pod::new(&format!(
        "{ONE_TEMPLATE}hooks: {{on_start: \"sleep 30\", timeout: 500ms}}\n"
    ));
    with_template(&pod);
    let started = Instant::now();
    let out = run(&mut pod.cmd("once"));
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_snapshot!(out.stderr.lines().last().unwrap_or_default());
}

// ---------------------------------------------------------------------------
// 4. Hooks beside the render path

/// A copy of `sleep` whose name is a unique marker: every process a hook
/// starts with it carries the marker in its command line.
fn marker_sleep(pod: &Pod, tag: &str) -> (String, PathBuf) {
    let marker = procfs::unique_marker(tag);
    let prog = copy_program("sleep", pod.sb.path(), &marker);
    (marker, prog)
}

#[test]
fn a_hanging_hook_does_not_delay_a_render() {
    let pod = Pod::new("");
    let (marker, prog) = marker_sleep(&pod, "hang");
    let pod_config = format!(
        "{ONE_TEMPLATE}wait: {{min: 0s, max: 0s}}\nhooks: {{on_start: \"{} 300\", on_change: \"{} 300\"}}\n",
        prog.display(),
        prog.display()
    );
    let pod = Pod {
        config: pod.sb.write(
            "peerplate.yaml",
            &format!(
                "identity: {{hostname: web-1, namespace: default}}\npeers:\n  file: {root}/peers\n{}",
                pod_config.replace("ROOT", &pod.root()),
                root = pod.root()
            ),
        ),
        sb: pod.sb,
    };
    with_template(&pod);
    let mut d = Daemon::spawn(pod.cmd("run"));
    d.wait_until(WAIT, "the hook to hang", |_| {
        !procfs::with_marker(&marker).is_empty()
    });
    for set in [vec![0, 1, 2], vec![0, 1, 2, 3]] {
        let changed = Instant::now();
        pod.replace("peers", &peers(set.clone()));
        d.wait_until(Duration::from_secs(2), "the new output", |_| {
            pod.read("out/a").as_deref() == Some(peers(set.clone()).as_str())
        });
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "{:?} behind a hanging hook",
            changed.elapsed()
        );
        assert!(
            !procfs::with_marker(&marker).is_empty(),
            "the hook still hangs"
        );
    }
    assert_eq!(d.terminate().code(), Some(0), "{}", d.logs());
    assert!(
        poll_until(WAIT, || procfs::with_marker(&marker).is_empty()),
        "{:?}",
        procfs::with_marker(&marker)
    );
}

fn three_thousand_peers() -> String {
    peers(0..3000)
}

#[test]
fn a_hook_that_never_reads_3000_peers_is_killed_at_its_timeout_in_run() {
    let pod = Pod::new("");
    let (marker, prog) = marker_sleep(&pod, "noread");
    pod.sb.write("peers", &three_thousand_peers());
    assert!(
        three_thousand_peers().len() > 64 * 1024,
        "more than a pipe holds"
    );
    let pod = Pod {
        config: pod.sb.write(
            "peerplate.yaml",
            &format!(
                "identity: {{hostname: web-1, namespace: default}}\npeers:\n  file: {root}/peers\ntemplates:\n  - {{source: {root}/a.j2, destination: {root}/out/a}}\nhooks: {{on_start: \"{} 300\", timeout: 1s}}\n",
                prog.display(),
                root = pod.root()
            ),
        ),
        sb: pod.sb,
    };
    pod.sb.write("a.j2", "{{ peers | length }}\n");
    let started = Instant::now();
    let mut d = Daemon::spawn(pod.cmd("run"));
    d.wait_until(WAIT, "the output", |_| {
        pod.read("out/a").as_deref() == Some("3000\n")
    });
    let line = d.wait_for_line(0, &["hook killed at its timeout"], Duration::from_secs(5));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "killed {:?} after start, timeout 1s\n{}",
        started.elapsed(),
        d.logs()
    );
    assert!(line.contains("hook=\"on_start\""), "{line}");
    assert!(
        poll_until(WAIT, || procfs::with_marker(&marker).is_empty()),
        "{:?}",
        procfs::with_marker(&marker)
    );
    assert_eq!(d.terminate().code(), Some(0), "{}", d.logs());
}

#[test]
fn a_hook_that_never_reads_3000_peers_ends_once_at_its_timeout() {
    let pod = Pod::new("templates: []\nhooks: {on_start: \"sleep 300\", timeout: 1s}\n");
    pod.sb.write("peers", &three_thousand_peers());
    let started = Instant::now();
    let out = run(&mut pod.cmd("once"));
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_snapshot!(out.stderr.lines().last().unwrap_or_default());
}

#[test]
fn sigterm_kills_what_a_running_hook_started() {
    let pod = Pod::new("");
    let (marker, prog) = marker_sleep(&pod, "term");
    let pod = Pod {
        config: pod.sb.write(
            "peerplate.yaml",
            &format!(
                "identity: {{hostname: web-1, namespace: default}}\npeers:\n  file: {root}/peers\ntemplates: []\nhooks: {{on_start: \"{p} 300 & {p} 301 & {p} 302\"}}\n",
                p = prog.display(),
                root = pod.root()
            ),
        ),
        sb: pod.sb,
    };
    let mut d = Daemon::spawn(pod.cmd("run"));
    // sh and its three children, every one with the marker.
    d.wait_until(WAIT, "the hook and its children", |_| {
        procfs::with_marker(&marker).len() >= 4
    });
    assert_eq!(d.terminate().code(), Some(0), "{}", d.logs());
    assert!(
        poll_until(Duration::from_secs(3), || procfs::with_marker(&marker)
            .is_empty()),
        "left running: {:?}",
        procfs::with_marker(&marker)
    );
}

#[test]
fn sigterm_kills_what_a_running_check_started_in_once() {
    let pod = Pod::new("");
    let (marker, prog) = marker_sleep(&pod, "check");
    let pod = Pod {
        config: pod.sb.write(
            "peerplate.yaml",
            &format!(
                "identity: {{hostname: web-1, namespace: default}}\npeers:\n  file: {root}/peers\ntemplates:\n  - source: {root}/a.j2\n    destination: {root}/out/a\n    check: \"sh -c '{p} 300 & {p} 301' {{staged}}\"\n",
                p = prog.display(),
                root = pod.root()
            ),
        ),
        sb: pod.sb,
    };
    with_template(&pod);
    let mut d = Daemon::spawn(pod.cmd("once"));
    d.wait_until(WAIT, "the check and its children", |_| {
        procfs::with_marker(&marker).len() >= 3
    });
    let status = d.terminate();
    assert_eq!(
        status.code(),
        Some(1),
        "interrupted before its outputs\n{}",
        d.logs()
    );
    assert!(
        poll_until(Duration::from_secs(3), || procfs::with_marker(&marker)
            .is_empty()),
        "left running: {:?}",
        procfs::with_marker(&marker)
    );
    assert_eq!(pod.read("out/a"), None, "nothing installed");
}

// ---------------------------------------------------------------------------
// 5. Resource limits at start

fn no_panic(out: &crate::helpers::Outcome) {
    assert!(
        !out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"),
        "{}",
        out.dump()
    );
    assert_ne!(out.code, Some(101), "{}", out.dump());
}

#[test]
fn ulimit_n_6_is_a_message_and_exit_1_not_a_panic() {
    let pod = Pod::new(ONE_TEMPLATE);
    with_template(&pod);
    let mut cmd = wrapped(
        &["sh", "-c", "ulimit -n 6 && exec \"$@\"", "sh"],
        &pod.cmd("run"),
    );
    let out = run(&mut cmd);
    no_panic(&out);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert_snapshot!(out.stderr.trim_end());
}

#[test]
fn no_open_files_limit_from_6_to_40_panics_run_or_once() {
    // Every feature that opens descriptors: a check, a hook, the admin
    // server, the template watcher.
    let pod = Pod::new(
        "templates:\n  - {source: ROOT/a.j2, destination: ROOT/out/a, check: \"true {staged}\"}\nhooks: {on_start: \"cat > /dev/null\", timeout: 2s}\nhttp: {listen: 127.0.0.1:0}\n",
    );
    with_template(&pod);
    for limit in (6..=40).step_by(2) {
        let script = format!("ulimit -n {limit} && exec \"$@\"");
        let out = run(&mut wrapped(&["sh", "-c", &script, "sh"], &pod.cmd("once")));
        no_panic(&out);
        assert!(
            matches!(out.code, Some(0 | 1)),
            "ulimit -n {limit}\n{}",
            out.dump()
        );
        // `run` for a moment: it must not panic either.
        let mut d = Daemon::spawn(wrapped(&["sh", "-c", &script, "sh"], &pod.cmd("run")));
        std::thread::sleep(Duration::from_millis(150));
        if d.is_running() {
            d.terminate();
        }
        assert!(
            !d.stderr().contains("panicked"),
            "ulimit -n {limit}\n{}",
            d.logs()
        );
    }
}

#[test]
fn a_process_limit_that_stops_a_thread_is_a_message_and_exit_1() {
    if !is_root() || !require_component("setpriv") || !require_component("prlimit") {
        return;
    }
    // A uid of its own, so no other process counts against its limit of 1.
    let pod = Pod::new(ONE_TEMPLATE);
    with_template(&pod);
    pod.open_to_all();
    let setpriv = find_program("setpriv").expect("setpriv");
    let prlimit = find_program("prlimit").expect("prlimit");
    let mut cmd = wrapped(
        &[
            setpriv.to_str().expect("utf-8"),
            "--reuid=54321",
            "--regid=54321",
            "--clear-groups",
            "--",
            prlimit.to_str().expect("utf-8"),
            "--nproc=1",
            "--",
        ],
        &pod.cmd("run"),
    );
    let out = run(&mut cmd);
    no_panic(&out);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert_snapshot!(out.stderr.trim_end());
}

// ---------------------------------------------------------------------------
// 6. All or nothing per reload group

/// Templates `a` and `b` (both reload the app; `b` checked: it fails while
/// `ROOT/fail-b` exists) and `c` (`reload: false`), all listing the peers;
/// the app records its SIGHUPs.
struct Group {
    pod: Pod,
    hups: PathBuf,
    _app: Daemon,
    _app_sb: Sandbox,
}

impl Group {
    fn start() -> (Group, Daemon) {
        let app_sb = Sandbox::new();
        let hups = app_sb.join("hups");
        let script = app_sb.write("app.sh", &hup_recorder(&hups, "HUP"));
        let app = Daemon::spawn({
            let mut c = Command::new("sh");
            c.arg(script);
            c
        });
        let pid_file = app_sb.write("app.pid", &format!("{}\n", app.pid()));
        std::thread::sleep(Duration::from_millis(200)); // trap set
        let pod = Pod::new(&format!(
            "templates:\n  - {{source: ROOT/a.j2, destination: ROOT/out/a}}\n  - source: ROOT/b.j2\n    destination: ROOT/out/b\n    check: \"sh -c 'test ! -e ROOT/fail-b' {{staged}}\"\n  - {{source: ROOT/c.j2, destination: ROOT/out/c, reload: false}}\nwait: {{min: 0s, max: 0s}}\nreload: {{signal: HUP, pid_file: {}}}\n",
            pid_file.display()
        ));
        for t in ["a", "b", "c"] {
            pod.sb.write(
                &format!("{t}.j2"),
                &format!("{t}:{{% for p in peers %}} {{{{ p }}}}{{% endfor %}}\n"),
            );
        }
        let mut d = Daemon::spawn(pod.cmd("run"));
        d.wait_for_log("reload signal sent", WAIT);
        let group = Group {
            pod,
            hups,
            _app: app,
            _app_sb: app_sb,
        };
        assert!(
            poll_until(WAIT, || lines(&group.hups).len() == 1),
            "{}",
            d.logs()
        );
        (group, d)
    }

    /// An output, without the trailing newline templates drop.
    fn out(&self, t: &str) -> String {
        self.pod
            .read(&format!("out/{t}"))
            .unwrap_or_default()
            .trim_end()
            .to_string()
    }
}

fn listed(t: &str, ks: impl IntoIterator<Item = usize>) -> String {
    let names: String = ks.into_iter().map(|k| format!(" web-{k}.{SVC}")).collect();
    format!("{t}:{names}")
}

#[test]
fn a_failed_check_in_the_reload_group_installs_none_of_it_and_sends_nothing() {
    let (g, mut d) = Group::start();
    g.pod.sb.write("fail-b", "");
    let mark = d.mark();
    g.pod.replace("peers", &peers([0, 1, 2]));
    let line = d.wait_for_line(mark, &["not installed", "template=a.j2"], WAIT);
    // The `reload: false` output goes in on its own.
    d.wait_until(WAIT, "out/c updated", |_| {
        g.out("c") == listed("c", [0, 1, 2])
    });
    assert_eq!(g.out("a"), listed("a", [0, 1]), "a kept its old bytes");
    assert_eq!(g.out("b"), listed("b", [0, 1]), "b kept its old bytes");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&g.hups).len(), 1, "no signal\n{}", d.logs());
    assert!(
        !d.lines_since(mark)
            .iter()
            .any(|l| l.contains("reload signal sent")),
        "{}",
        d.logs()
    );
    let root = g.pod.root();
    assert_snapshot!(redact_timestamps(&line).replace(&root, "[TMP]"));
    let b = d.wait_for_line(mark, &["not installed", "template=b.j2"], WAIT);
    assert!(b.contains("check"), "{b}");

    // The check passes again: the whole group goes in, one signal.
    fs::remove_file(g.pod.sb.join("fail-b")).expect("rm");
    g.pod.replace("peers", &peers([0, 1, 2, 3]));
    d.wait_until(WAIT, "a and b updated", |_| {
        g.out("a") == listed("a", [0, 1, 2, 3]) && g.out("b") == listed("b", [0, 1, 2, 3])
    });
    assert!(
        poll_until(WAIT, || lines(&g.hups).len() == 2),
        "{}",
        d.logs()
    );
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn a_failed_render_in_the_reload_group_installs_none_of_it_and_sends_nothing() {
    let (g, mut d) = Group::start();
    let mark = d.mark();
    // b no longer renders; a's bytes change with the template edit too.
    g.pod.replace("b.j2", "{{ peers | no_such_filter }}\n");
    g.pod.replace("a.j2", "a: edited\n");
    g.pod.replace("c.j2", "c: edited\n");
    d.wait_for_line(mark, &["render failed", "template=b.j2"], WAIT);
    d.wait_until(WAIT, "out/c updated", |_| g.out("c") == "c: edited");
    let line = d.wait_for_line(mark, &["not installed", "template=a.j2"], WAIT);
    assert!(
        line.contains("not installed because b.j2 failed in the same cycle"),
        "{line}"
    );
    assert_eq!(g.out("a"), listed("a", [0, 1]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(&g.hups).len(), 1, "no signal\n{}", d.logs());
    assert_eq!(d.terminate().code(), Some(0));
}
