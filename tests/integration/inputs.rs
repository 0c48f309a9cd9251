//! `file(PATH)`: inputs beyond peers, through the binary.
//!
//! - a Secret-style volume (kubelet's `..data` swap) rotated: the output is
//!   re-rendered about as fast as after a template change; the output is
//!   installed 0600; at `-vv` the secret's value never reaches the log, also
//!   when a check and an exec action quote it on stderr (their output is
//!   logged only as its size);
//! - a file in a folder that does not exist yet: a render error naming the
//!   path, then the output once the folder and file appear;
//! - `render` prints such an output with a warning on stderr; the filters.

use std::time::{Duration, Instant};

use crate::helpers::{find_program, metric, peers, run, ConfigMapDir, Daemon, Sandbox, WAIT};
use crate::pod::Pod;

/// Prints the file named by its argument on stderr; exits 1 when the text
/// holds `marker` (upper case: the output's sha256 hex is lower case).
fn quoting_script(marker: &str) -> String {
    format!(
        "import sys\ntext = open(sys.argv[1]).read()\nsys.stderr.write('rejected value: ' + text)\nsys.exit(1 if '{marker}' in text else 0)\n"
    )
}

#[test]
fn a_rotated_secret_rerenders_and_its_value_never_reaches_the_log() {
    let python = find_program("python3").expect("python3");
    let template = "password={{ file(\"secret/password\") | trim }}\nsha={{ file(\"secret/password\") | trim | sha256 }}\n";
    let mut pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .configmap_template(
            "app.conf.j2",
            template,
            "out/app.conf",
            &format!(
                "    check: \"{} ROOT/check.py {{staged}}\"\n",
                python.display()
            ),
        )
        .http()
        .yaml(&format!(
            "reload: {{exec: \"{} ROOT/app.py ROOT/out/app.conf\"}}\n",
            python.display()
        ))
        .build();
    pod.sb.write("check.py", &quoting_script("BAD"));
    pod.sb.write("app.py", &quoting_script("NOPE"));
    let mut secret = ConfigMapDir::create(&pod.sb.join("secret"), &[("password", "s3cr3t-one\n")]);
    let mut d =
        Daemon::spawn(pod.peerplate(["-vv", "--config", &pod.config.display().to_string(), "run"]));
    // The admin port answers once the loop runs.
    d.wait_until(WAIT, "/healthz", |_| {
        crate::helpers::http_status(pod.port, "/healthz") == 200
    });
    pod.wait_for_output_where(&mut d, "the first secret", |o| {
        o.starts_with("password=s3cr3t-one\n")
    });
    assert_eq!(
        crate::helpers::mode_of(&pod.out) & 0o7777,
        0o600,
        "an output that read file() is 0600"
    );

    // Rotation by a kubelet-style swap, and a template change, timed alike.
    let started = Instant::now();
    secret.update(&[("password", "s3cr3t-two\n")]);
    pod.wait_for_output_where(&mut d, "the rotated secret", |o| {
        o.starts_with("password=s3cr3t-two\n")
    });
    let rotated = started.elapsed();
    let started = Instant::now();
    pod.configmap()
        .update(&[("app.conf.j2", &format!("# v2\n{template}"))]);
    pod.wait_for_output_where(&mut d, "the template change", |o| o.starts_with("# v2\n"));
    let edited = started.elapsed();
    eprintln!("secret swap -> output: {rotated:?}; template swap -> output: {edited:?}");
    assert!(
        rotated < Duration::from_secs(2) && rotated < edited * 5 + Duration::from_millis(200),
        "a rotated secret re-renders about as fast as a template change: {rotated:?} vs {edited:?}"
    );

    // A value the check refuses: the check quotes it on stderr; the log
    // has only its size (the template read a file() input and does not
    // set log_output).
    let mark = d.mark();
    secret.update(&[("password", "BAD-s3cr3t-three\n")]);
    d.wait_for_line(mark, &["not installed, keeping the last good output"], WAIT);
    let said = d.stderr()[mark..].to_string();
    let withheld = "bytes of output not logged: the template read file() or env() inputs";
    assert!(said.contains(withheld), "{said}");

    // A value the app refuses (after the check passed): rolled back, and the
    // app's stderr is withheld the same way.
    let mark = d.mark();
    secret.update(&[("password", "NOPE-s3cr3t-four\n")]);
    d.wait_for_line(mark, &["reload rejected by the app"], WAIT);
    d.wait_for_line(mark, &["rolled back"], WAIT);
    let said = d.stderr()[mark..].to_string();
    assert!(said.contains(withheld), "{said}");
    assert!(
        pod.output().is_some_and(|o| o.contains("s3cr3t-two")),
        "the previous output is back"
    );
    assert_eq!(
        metric(
            pod.port,
            "peerplate_reloads_total{action=\"default\",result=\"rejected\"}"
        ),
        Some(1.0)
    );

    let logs = d.logs();
    for value in [
        "s3cr3t-one",
        "s3cr3t-two",
        "BAD-s3cr3t-three",
        "NOPE-s3cr3t-four",
    ] {
        assert!(!logs.contains(value), "{value} reached the log:\n{logs}");
    }
    assert!(logs.contains("DEBUG"), "the log was at -vv: {logs}");
}

#[test]
fn a_file_in_a_folder_that_does_not_exist_yet_is_picked_up_when_it_appears() {
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template("t.j2", "key={{ file(\"later/sub/key\") }}", "out/t")
        .build();
    let mut d = pod.start();
    let missing = pod.sb.join("later/sub/key");
    let line = d.wait_for_line(0, &["render failed"], WAIT);
    assert!(
        line.contains(&format!("cannot read {}", missing.display())),
        "the error names the path: {line}"
    );
    assert!(pod.output().is_none());
    std::thread::sleep(Duration::from_millis(200));
    std::fs::create_dir_all(pod.sb.join("later/sub")).expect("mkdir");
    std::thread::sleep(Duration::from_millis(100));
    pod.sb.write("later/sub/key", "here\n");
    pod.wait_for(&mut d, "key=here\n");
}

#[test]
fn render_warns_when_it_prints_a_file_input_and_the_filters_work() {
    let sb = Sandbox::new();
    sb.write("secret/token", "abc123\n");
    sb.write(
        "t.j2",
        "token: {{ file(\"secret/token\") | trim }}\nb64: {{ \"hello\" | b64encode }}\nplain: {{ \"aGVsbG8=\" | b64decode }}\nsha: {{ \"hello\" | sha256 }}\njson: {{ {\"a\": [1, 2], \"b\": \"x\"} | tojson }}\nyaml: |\n{{ {\"a\": [1, 2], \"b\": \"x\"} | toyaml | indent(2, true) }}",
    );
    let config = sb.write(
        "peerplate.yaml",
        "peers: {static: [web-0.nginx.default.svc.cluster.local]}\ntemplates:\n  - {source: t.j2, destination: out/t}\n",
    );
    let out = run(&mut sb.peerplate(["--config", &config.display().to_string(), "render"]));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    insta::assert_snapshot!("render_filters", out.stdout);
    assert!(
        out.stderr.contains("warning:") && out.stderr.contains("secret/token"),
        "{}",
        out.stderr
    );
}
