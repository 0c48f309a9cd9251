//! The log (issue 14, items 8 and 9): with `--log-format json` (or
//! `PEERPLATE_LOG_FORMAT=json`) every line of every command is one JSON
//! object, parsed here with serde_json: lists are arrays, durations are
//! numbers in `*_ms` fields, `message` is a stable text with no value in
//! it, and an error before exit is a JSON line too, the `peer-finder`
//! drop-in's own lines included. `-v` adds one line per DNS poll, per check
//! (with its time) and how the reload target was found; `-vv` the DNS
//! wire; no level ever logs what a template rendered.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::dns_server::DnsServer;
use crate::helpers::{bin, peers, poll_until, run, Daemon, Outcome, Sandbox, SVC, WAIT};
use crate::pod::Pod;

/// Every line of `stderr` as a JSON object with a `timestamp`, a `level`
/// and a `message`; panics on a line that is not.
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{stderr}"));
            assert!(v["timestamp"].is_string(), "{line}");
            assert!(v["level"].is_string(), "{line}");
            assert!(v["message"].is_string(), "{line}");
            v
        })
        .collect()
}

/// The first line whose message is `message`.
fn find<'a>(lines: &'a [Value], message: &str) -> Option<&'a Value> {
    lines.iter().find(|l| l["message"] == message)
}

/// No field holds a Rust debug string of a list or a duration.
fn no_debug_strings(lines: &[Value]) {
    for line in lines {
        for (key, value) in line.as_object().expect("object") {
            if let Value::String(s) = value {
                assert!(
                    !(s.starts_with('[') && s.ends_with(']')),
                    "{key} is a string holding a list: {line}"
                );
                let duration_like = s.ends_with("ms") || s.ends_with("µs") || s.ends_with("ns");
                assert!(
                    !(duration_like && s[..s.len() - 2].parse::<f64>().is_ok()),
                    "{key} is a Debug duration: {line}"
                );
            }
            if key.ends_with("_ms") {
                assert!(value.is_number(), "{key} is not a number: {line}");
            }
        }
    }
}

/// A target process that catches SIGHUP (and does nothing with it) and
/// stays up, with its pid file. (One that ignored it would not be sent it.)
fn app(sb: &Sandbox) -> (Daemon, std::path::PathBuf) {
    let script = sb.write("app.sh", "trap ':' HUP\nwhile :; do sleep 0.05; done\n");
    let d = Daemon::spawn({
        let mut c = Command::new("sh");
        c.arg(&script);
        c
    });
    let pid_file = sb.write("app.pid", &format!("{}\n", d.pid()));
    std::thread::sleep(Duration::from_millis(200));
    (d, pid_file)
}

const SECRET: &str = "rendered-secret-text";

#[test]
fn run_in_json_has_typed_fields_and_stable_messages() {
    let app_sb = Sandbox::new();
    let (_app, pid_file) = app(&app_sb);
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template_with(
            "t.j2",
            &format!("# {SECRET}\n{{% for p in peers %}}{{{{ p }}}}\n{{% endfor %}}"),
            "out/t",
            "    check: \"test -s {staged}\"\n",
        )
        .wait_min("50ms")
        .yaml(&format!(
            "reload: {{signal: HUP, pid_file: {}, min_age: 0s}}\nhooks:\n  on_start: \"true\"\n  on_change: \"true\"\n",
            pid_file.display()
        ))
        .build();
    let mut args = vec!["--log-format".to_string(), "json".into(), "-vv".into()];
    args.extend(pod.args("run"));
    let mut d = Daemon::spawn(pod.peerplate(&args));
    d.wait_for_log("\"hook ran\"", WAIT);
    let mark = d.mark();
    pod.replace("peers", &peers(&[1, 2, 3]));
    d.wait_for_line(mark, &["\"hook ran\""], WAIT);
    assert_eq!(d.terminate().code(), Some(0), "{}", d.logs());

    let stderr = d.raw_stderr();
    let lines = json_lines(&stderr);
    no_debug_strings(&lines);

    // A peer change: added and removed are arrays.
    let change = lines
        .iter()
        .filter(|l| l["message"] == "peer set changed")
        .nth(1)
        .unwrap_or_else(|| panic!("no second peer set change\n{stderr}"));
    assert_eq!(
        change["added"],
        serde_json::json!([format!("web-2.{SVC}"), format!("web-3.{SVC}")]),
        "{change}"
    );
    assert_eq!(
        change["removed"],
        serde_json::json!([format!("web-0.{SVC}")]),
        "{change}"
    );
    assert_eq!(change["count"], 3, "{change}");

    // A render: elapsed_ms is a number, changed a boolean.
    let rendered = lines
        .iter()
        .find(|l| l["message"] == "rendered" && l["level"] == "INFO")
        .unwrap_or_else(|| panic!("no render line\n{stderr}"));
    assert!(rendered["elapsed_ms"].is_f64(), "{rendered}");
    assert_eq!(rendered["changed"], true, "{rendered}");
    assert_eq!(rendered["template"], "t.j2", "{rendered}");

    // The check, with its time (debug).
    let check = find(&lines, "check finished").unwrap_or_else(|| panic!("{stderr}"));
    assert!(check["elapsed_ms"].is_number(), "{check}");
    assert_eq!(check["success"], true, "{check}");
    assert_eq!(check["exit_code"], 0, "{check}");

    // A reload, and how its target was found (debug).
    let sent = find(&lines, "reload signal sent").unwrap_or_else(|| panic!("{stderr}"));
    assert!(sent["pid"].is_u64(), "{sent}");
    assert_eq!(sent["signal"], "SIGHUP", "{sent}");
    let target =
        find(&lines, "reload target from the pid file").unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(target["pid"], sent["pid"], "{target}");

    // A hook: its exit code and time are numbers.
    let hook = find(&lines, "hook ran").unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(hook["exit_code"], 0, "{hook}");
    assert!(hook["elapsed_ms"].is_number(), "{hook}");

    // Trace shows the peer set in full, as an array; never the output.
    let full = find(&lines, "peer set in full").unwrap_or_else(|| panic!("{stderr}"));
    assert!(full["peers"].is_array(), "{full}");
    assert!(
        !stderr.contains(SECRET),
        "rendered text in the log:\n{stderr}"
    );

    // The shutdown names its signal in a field.
    let bye = find(&lines, "shutting down").unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(bye["signal"], "SIGTERM", "{bye}");
}

/// `peerplate ARGS` in `sb` with `PEERPLATE_LOG_FORMAT=json`.
fn json_env(sb: &Sandbox, args: &[&str]) -> Outcome {
    let mut cmd = sb.peerplate(args);
    cmd.env("PEERPLATE_LOG_FORMAT", "json");
    run(&mut cmd)
}

fn config(sb: &Sandbox, template: &str) {
    sb.write("t.j2", template);
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-0}\npeers:\n  static: [web-0, web-1]\ntemplates:\n  - source: t.j2\n    destination: out/t\nvars:\n  lisen: 1\n",
    );
}

#[test]
fn check_render_and_a_failing_once_in_json_through_the_environment() {
    let sb = Sandbox::new();
    config(
        &sb,
        &format!("{SECRET} {{{{ vars.listen | default(80) }}}}\n"),
    );

    // check: its warnings are JSON lines; the verdict stays on stdout.
    let out = json_env(&sb, &["--config", "peerplate.yaml", "check"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let lines = json_lines(&out.stderr);
    no_debug_strings(&lines);
    let unused =
        find(&lines, "a vars key no template reads").unwrap_or_else(|| panic!("{}", out.dump()));
    assert_eq!(unused["key"], "vars.lisen", "{unused}");
    assert_eq!(unused["level"], "WARN", "{unused}");

    // render: output on stdout, the log JSON, nothing rendered in the log.
    let out = json_env(&sb, &["--config", "peerplate.yaml", "-vv", "render"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(out.stdout.contains(SECRET), "{}", out.dump());
    no_debug_strings(&json_lines(&out.stderr));
    assert!(!out.stderr.contains(SECRET), "{}", out.dump());

    // render's error before exit: a JSON line with the exit code.
    let out = json_env(&sb, &["--config", "nope.yaml", "render"]);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    let lines = json_lines(&out.stderr);
    let error = find(&lines, "exiting on an error").unwrap_or_else(|| panic!("{}", out.dump()));
    assert_eq!(error["exit_code"], 2, "{error}");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("nope.yaml")),
        "{error}"
    );

    // once, failing on a template that does not render.
    config(&sb, "{{ nope.deeper }}\n");
    let out = json_env(&sb, &["--config", "peerplate.yaml", "once"]);
    assert_ne!(out.code, Some(0), "{}", out.dump());
    let lines = json_lines(&out.stderr);
    no_debug_strings(&lines);
    let failed =
        find(&lines, "render failed, no output yet").unwrap_or_else(|| panic!("{}", out.dump()));
    assert_eq!(failed["template"], "t.j2", "{failed}");
    assert!(failed["error"].is_string(), "{failed}");

    // A command line clap rejects is a JSON line too, with --log-format.
    let out = run(&mut sb.peerplate(["--log-format", "json", "bogus"]));
    assert_eq!(out.code, Some(2), "{}", out.dump());
    let lines = json_lines(&out.stderr);
    assert_eq!(
        lines[0]["message"],
        "invalid command line",
        "{}",
        out.dump()
    );
}

#[test]
fn peer_finder_lines_are_json_when_asked_for() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = Pod::builder()
        .resolv_conf(&format!(
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver {}\noptions ndots:5\n",
            dns.nameserver()
        ))
        .build();
    pod.sb.mkdir("bin");
    std::os::unix::fs::symlink(bin(), pod.sb.join("bin/peer-finder")).expect("symlink");
    let args = ["-on-start=cat >/dev/null", "-service=nginx", "-ns=default"];

    // The drop-in takes Go flags only: the environment asks for JSON.
    let mut cmd = Command::new(pod.sb.join("bin/peer-finder"));
    cmd.args(args);
    pod.clean_env(&mut cmd).env("PEERPLATE_LOG_FORMAT", "json");
    let by_env = run(&mut cmd);
    // As a subcommand, the flag does.
    let mut all = vec!["--log-format", "json", "peer-finder"];
    all.extend(args);
    let by_flag = run(&mut pod.peerplate(all));

    for out in [by_env, by_flag] {
        assert_eq!(out.code, Some(0), "{}", out.dump());
        let lines = json_lines(&out.stderr);
        let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
        assert_eq!(
            messages,
            [
                "Peer finder enter",
                "Peer list updated",
                "Peer finder exiting"
            ],
            "{}",
            out.dump()
        );
        let updated = &lines[1];
        assert_eq!(updated["was"], serde_json::json!([]), "{updated}");
        assert_eq!(
            updated["now"].as_array().map(Vec::len),
            Some(2),
            "{updated}"
        );
    }

    // Incomplete flags: the exit code in a JSON line.
    let mut cmd = Command::new(pod.sb.join("bin/peer-finder"));
    pod.clean_env(&mut cmd).env("PEERPLATE_LOG_FORMAT", "json");
    let out = run(&mut cmd);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    let lines = json_lines(&out.stderr);
    assert_eq!(
        lines.last().map(|l| l["exit_code"].clone()),
        Some(1.into()),
        "{}",
        out.dump()
    );
}

#[test]
fn verbose_shows_dns_polls_and_very_verbose_the_wire() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = Pod::builder()
        .dns(&[&dns.nameserver()], "100ms")
        .template(
            "t.j2",
            &format!("{SECRET}{{{{ peers | length }}}}\n"),
            "out/t",
        )
        .build();
    for (flag, wire) in [("-v", false), ("-vv", true)] {
        let mut args = vec![flag.to_string()];
        args.extend(pod.args("run"));
        let mut d = Daemon::spawn(pod.peerplate(&args));
        d.wait_for_line(0, &["DNS poll", "records=2"], WAIT);
        assert!(
            poll_until(WAIT, || d.stderr().matches("DNS poll").count() >= 3),
            "{}",
            d.logs()
        );
        if wire {
            d.wait_for_line(
                0,
                &["DNS query", "transport=\"udp\"", "received_bytes="],
                WAIT,
            );
        }
        d.terminate();
        let stderr = d.stderr();
        assert_eq!(stderr.contains("DNS query"), wire, "{stderr}");
        assert!(stderr.contains("elapsed_ms="), "{stderr}");
        assert!(
            !stderr.contains(SECRET),
            "rendered text in the log:\n{stderr}"
        );
    }
}

#[test]
fn verbose_shows_how_the_reload_target_was_found() {
    // A parent and its child with the same name (comm is the name of the
    // link run): the parent is the target, the child skipped with why.
    // Named per run, so a process of another run never counts.
    let name = format!("pplt{}", std::process::id() % 100_000);
    let name = name.as_str();
    let sb = Sandbox::new();
    let link = sb.join(name);
    std::os::unix::fs::symlink("/bin/sh", &link).expect("symlink sh");
    let child = sb.write(
        "child.sh",
        "trap '' HUP\nparent=$PPID\nwhile kill -0 $parent 2>/dev/null; do sleep 0.05; done\n",
    );
    let parent_script = sb.write(
        "parent.sh",
        &format!(
            "trap '' HUP\n{} {} &\nwhile :; do sleep 0.05; done\n",
            link.display(),
            child.display()
        ),
    );
    let parent = Daemon::spawn({
        let mut c = Command::new(&link);
        c.arg(&parent_script);
        c
    });
    std::thread::sleep(Duration::from_millis(400));
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("t.j2", "x\n", "out/t")
        .yaml(&format!("reload: {{signal: HUP, process: {name}}}\n"))
        .build();
    let mut args = vec!["-v".to_string(), "--log-format".into(), "json".into()];
    args.extend(pod.args("run"));
    let mut d = Daemon::spawn(pod.peerplate(&args));
    d.wait_for_log("reload target search by process name", WAIT);
    d.terminate();
    let lines = json_lines(&d.raw_stderr());
    let search = find(&lines, "reload target search by process name").expect("search line");
    assert_eq!(search["process"], name, "{search}");
    assert_eq!(
        search["pids"],
        serde_json::json!([parent.pid()]),
        "{search}"
    );
    let skipped = search["skipped"].as_array().expect("skipped is an array");
    assert_eq!(skipped.len(), 1, "{search}");
    assert!(skipped[0]["pid"].is_u64(), "{search}");
    assert_eq!(
        skipped[0]["reason"],
        format!("a child of {name} pid {}", parent.pid()),
        "{search}"
    );
}
