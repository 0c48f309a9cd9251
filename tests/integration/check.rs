//! `peerplate check` and startup errors: a good config exits 0; a config with
//! an unknown key or a bad duration, a missing config file and a template with
//! a syntax error exit 2 with a message naming the file, the line and the
//! offending key or template; bad usage exits 2; logs written to a pipe carry
//! no colour escapes.

use crate::helpers::{run, Sandbox};

/// A valid config whose one template is `tpl/site.conf.j2`; `extra` is
/// appended verbatim (top-level YAML).
fn config_text(sb: &Sandbox, extra: &str) -> String {
    let root = sb.path().display();
    format!(
        "identity:\n  hostname: web-1\n  namespace: default\npeers:\n  static: [web-0.nginx.default.svc.cluster.local, web-1.nginx.default.svc.cluster.local]\ntemplates:\n  - source: {root}/tpl/site.conf.j2\n    destination: {root}/out/site.conf\n    mode: \"0644\"\n{extra}"
    )
}

fn check(sb: &Sandbox, config: &std::path::Path) -> crate::helpers::Outcome {
    run(&mut sb.peerplate(["--config", &config.display().to_string(), "check"]))
}

#[test]
fn good_config_exits_0() {
    let sb = Sandbox::new();
    sb.write("tpl/site.conf.j2", "upstream {{ leader }};\n");
    let config = sb.write(
        "peerplate.yaml",
        &config_text(
            &sb,
            "wait: { min: 250ms, max: 2s }\nvars: { greeting: hello }\n",
        ),
    );
    let out = check(&sb, &config);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(!sb.join("out/site.conf").exists(), "check writes no output");
}

#[test]
fn good_config_from_env_var_exits_0() {
    let sb = Sandbox::new();
    sb.write("tpl/site.conf.j2", "upstream {{ leader }};\n");
    let config = sb.write("peerplate.yaml", &config_text(&sb, ""));
    let out = run(sb.peerplate(["check"]).env("PEERPLATE_CONFIG", &config));
    assert_eq!(
        out.code,
        Some(0),
        "$PEERPLATE_CONFIG is the config\n{}",
        out.dump()
    );
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let sb = Sandbox::new();
    sb.write("tpl/site.conf.j2", "upstream {{ leader }};\n");
    let root = sb.path().display();
    // `destinaton` (sic) is on line 7.
    let text = format!(
        "identity:\n  hostname: web-1\npeers:\n  static: [web-1.nginx.default.svc.cluster.local]\ntemplates:\n  - source: {root}/tpl/site.conf.j2\n    destinaton: {root}/out/site.conf\n"
    );
    assert_eq!(
        text.lines()
            .nth(6)
            .map(|l| l.trim_start().starts_with("destinaton")),
        Some(true)
    );
    let config = sb.write("peerplate.yaml", &text);
    let out = check(&sb, &config);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    let want = format!("{}:7", config.display());
    assert!(
        out.stderr.contains(&want),
        "the message names {want}\n{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("destinaton"),
        "the message names the key\n{}",
        out.dump()
    );
}

#[test]
fn bad_duration_names_line_and_key() {
    let sb = Sandbox::new();
    sb.write("tpl/site.conf.j2", "upstream {{ leader }};\n");
    let text = config_text(&sb, "wait:\n  min: 5 parsecs\n  max: 1s\n");
    let line = text
        .lines()
        .position(|l| l.contains("parsecs"))
        .expect("line with the bad duration")
        + 1;
    let config = sb.write("peerplate.yaml", &text);
    let out = check(&sb, &config);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    let want = format!("{}:{line}", config.display());
    assert!(
        out.stderr.contains(&want),
        "the message names {want}\n{}",
        out.dump()
    );
    assert!(
        out.stderr.contains("min"),
        "the message names the key\n{}",
        out.dump()
    );
}

#[test]
fn template_syntax_error_names_template_and_line() {
    let sb = Sandbox::new();
    // The `for` tag on line 3 lacks its iterable.
    sb.write(
        "tpl/site.conf.j2",
        "events {}\nhttp {\n{% for p in %}\n  server {{ p }};\n{% endfor %}\n}\n",
    );
    let config = sb.write("peerplate.yaml", &config_text(&sb, ""));
    let out = check(&sb, &config);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(
        out.stderr.contains("site.conf.j2") && out.stderr.contains("line 3"),
        "the message names the template and line 3\n{}",
        out.dump()
    );
}

#[test]
fn missing_template_source_exits_2_naming_it() {
    let sb = Sandbox::new();
    let config = sb.write("peerplate.yaml", &config_text(&sb, ""));
    let out = check(&sb, &config);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(out.stderr.contains("site.conf.j2"), "{}", out.dump());
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let sb = Sandbox::new();
    let missing = sb.join("nope/peerplate.yaml");
    let out = check(&sb, &missing);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "the message names the missing file\n{}",
        out.dump()
    );
}

#[test]
fn bad_usage_exits_2() {
    let sb = Sandbox::new();
    for args in [
        vec!["no-such-command"],
        vec!["--log-format", "xml", "check"],
        vec![],
    ] {
        let out = run(&mut sb.peerplate(&args));
        assert_eq!(out.code, Some(2), "peerplate {args:?}\n{}", out.dump());
    }
}

#[test]
fn logs_to_a_pipe_carry_no_colour_escapes() {
    // `kubectl logs` and log collectors read a pipe, not a terminal.
    let sb = Sandbox::new();
    sb.write("tpl/site.conf.j2", "{{ nope }}\n");
    let config = sb.write("peerplate.yaml", &config_text(&sb, ""));
    let out = run(&mut sb.peerplate(["-v", "--config", &config.display().to_string(), "render"]));
    assert!(
        !out.raw_stderr.is_empty(),
        "expected an error on stderr\n{}",
        out.dump()
    );
    assert!(
        !out.raw_stderr.contains('\u{1b}'),
        "stderr is not a terminal, yet it has ANSI escapes:\n{:?}",
        out.raw_stderr
    );
}

/// The examples a newcomer runs stay valid: every ready-made example config
/// passes `check` (examples/seed's config is generated by its run.sh).
#[test]
fn every_example_config_passes_check() {
    let sb = Sandbox::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for example in ["local", "dns", "seed-volume"] {
        let config = root.join(example).join("peerplate.yaml");
        let out = check(&sb, &config);
        assert_eq!(out.code, Some(0), "examples/{example}: {}", out.dump());
        assert!(
            out.stdout.contains(": ok"),
            "examples/{example}: {}",
            out.dump()
        );
        checked += 1;
    }
    assert_eq!(checked, 3);
}
