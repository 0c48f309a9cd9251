//! The catalogue of messages (issue 14): each case runs the real binary and
//! snapshots the exact text a user sees, so `README.md` can link to
//! `tests/integration/snapshots/integration__messages__*.snap` as the list
//! of errors and warnings and what they say.
//!
//! Template errors name the expression and suggest the known name; a block
//! never closed names its tag and line; a failed `check` shows the head and
//! tail of its output, the destination and the command as a shell quotes
//! it, once; unused `vars` keys and configs whose meaning changed are
//! warned about; config errors point at the wrong indentation, the key of
//! a unit-less duration, a tab or an unclosed quote; I/O errors name the
//! path and the OS reason. `lstrip_blocks` and partials are shown by their
//! output.

use crate::helpers::{redact_timestamps, run, Outcome, Sandbox};

/// Runs `peerplate --config peerplate.yaml <args>` in `sb`.
fn peerplate(sb: &Sandbox, args: &[&str]) -> Outcome {
    let mut all = vec!["--config", "peerplate.yaml"];
    all.extend(args);
    run(&mut sb.peerplate(all))
}

/// stderr with the sandbox's path and the timestamps redacted.
fn seen(sb: &Sandbox, out: &Outcome) -> String {
    redact_timestamps(&sb.redact(&out.stderr))
}

/// A config of one template `t.j2` with static peers and `vars`.
fn one_template(sb: &Sandbox, template: &str) {
    sb.write("t.j2", template);
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\npeers:\n  static: [web-0.nginx, web-1.nginx]\ntemplates:\n  - source: t.j2\n    destination: out/t.conf\nvars:\n  listen: 80\n  tls: {on: true}\n",
    );
}

#[test]
fn template_errors_name_the_expression_and_the_fix() {
    let cases = [
        ("undefined_name", "{{ nope }}\n"),
        // minijinja names these only with its debug info, which it turns on
        // by itself only in debug builds: the release build sets it.
        (
            "misspelt_indexed_peer_attribute",
            "{{ peers[0].hostnme }}\n",
        ),
        ("misspelt_context_name_bare", "{{ pods }}\n"),
        (
            "misspelt_context_name",
            "{% for p in peerz %}{{ p }}{% endfor %}\n",
        ),
        (
            "misspelt_peer_attribute",
            "{% for p in peers %}\nserver {{ p.fdqn }};\n{% endfor %}\n",
        ),
        ("misspelt_var", "listen {{ vars.lisen }};\n"),
        ("misspelt_nested_var", "tls {{ vars.tls.onn }};\n"),
        ("misspelt_pod_attribute", "{{ pod.hostnam }}\n"),
        (
            "misspelt_filter",
            "listen {{ vars.listen | defualt(80) }};\n",
        ),
        (
            "misspelt_test",
            "{% if vars.listen is evn %}even{% endif %}\n",
        ),
        (
            "misspelt_function",
            "{% for i in rnage(3) %}{{ i }}{% endfor %}\n",
        ),
        (
            "unclosed_for",
            "upstream app {\n{% for p in peers %}\n  server {{ p }};\n}\n",
        ),
        (
            "unclosed_if_and_for",
            "{% if peers %}\nupstream app {\n{% for p in peers %}\n  server {{ p }};\n}\n",
        ),
        // The block open is a for: say so, and which tag closes it.
        (
            "endif_closes_a_for",
            "upstream app {\n{% for p in peers %}\n  server {{ p }};\n{% endif %}\n}\n",
        ),
        // Reported on the line of the open `{{`, not the next one.
        (
            "unclosed_expression",
            "server {\n  listen {{ vars.listen\n  server_name x;\n}\n",
        ),
        (
            "missing_argument_names_the_filter",
            "{{ pod.hostname | replace(\"web\") }}\n",
        ),
        (
            "include_of_an_undeclared_file",
            "{% include \"common.j2\" %}\n",
        ),
    ];
    for (name, template) in cases {
        let sb = Sandbox::new();
        one_template(&sb, template);
        let out = peerplate(&sb, &["render"]);
        assert_eq!(out.code, Some(2), "{name}: {}", out.dump());
        insta::assert_snapshot!(format!("template_{name}"), seen(&sb, &out));
    }
}

/// A check that prints 100 lines and names the file it checks.
const NOISY_CHECK: &str = "#!/bin/sh\necho \"checking $1 ($2)\" >&2\ni=1\nwhile [ $i -le 100 ]; do echo \"note $i\" >&2; i=$((i+1)); done\necho \"$1: line 3: unknown directive\" >&2\nexit 1\n";

#[test]
fn a_failed_check_shows_head_tail_destination_and_quoted_command_once() {
    let sb = Sandbox::new();
    sb.write("t.j2", "hello\n");
    let check = sb.write("check.sh", NOISY_CHECK);
    std::fs::set_permissions(&check, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\ntemplates:\n  - source: t.j2\n    destination: out dir/t.conf\n    check: \"./check.sh {staged} 'two words'\"\n",
    );
    let out = peerplate(&sb, &["once"]);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    let text = seen(&sb, &out);
    assert_eq!(
        text.matches("unknown directive").count(),
        1,
        "the check's output is printed once\n{text}"
    );
    assert!(!text.contains(".peerplate"), "no staged path\n{text}");
    insta::assert_snapshot!("check_failed_once", text);
}

#[test]
fn unused_vars_are_warned_with_a_suggestion() {
    let sb = Sandbox::new();
    sb.write(
        "t.j2",
        "listen {{ vars.listen | default(80) }};\ntls {{ vars.tls.on }}\n",
    );
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\ntemplates:\n  - source: t.j2\n    destination: out/t.conf\nvars:\n  lisen: 9090\n  tls: {on: true, cert: x}\n  unrelated: 1\n",
    );
    let out = peerplate(&sb, &["check"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    insta::assert_snapshot!("unused_vars_check", seen(&sb, &out));
    // At start too.
    let out = peerplate(&sb, &["once"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stderr.contains(
            "a vars key no template reads key=vars.lisen detail=set in vars, but no template reads it; a template reads vars.listen, which vars does not set: one of the two names is misspelt; fix that one (this key, or the template)"
        ),
        "{}",
        out.dump()
    );
    // A template that reads vars as a whole: no warning.
    sb.write("t.j2", "{% for k, v in vars|items %}{{ k }}\n{% endfor %}");
    let out = peerplate(&sb, &["check"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(!out.stderr.contains("no template reads"), "{}", out.dump());
}

#[test]
fn check_warns_about_configs_whose_meaning_changed() {
    let sb = Sandbox::new();
    sb.write(
        "t.j2",
        "{% for p in peers %}\nserver {{ p.fqdn }}:{{ p.port }};\n{% else %}\nserver 127.0.0.1:1;\n{% endfor %}\n",
    );
    sb.write("peers.txt", "web-0.nginx\nweb-1.nginx\n");
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\npeers: {file: peers.txt}\ntemplates:\n  - source: t.j2\n    destination: out/t.conf\n",
    );
    let out = peerplate(&sb, &["check"]);
    // `check` renders with the file's peers, which have no port.
    assert_eq!(out.code, Some(2), "{}", out.dump());
    insta::assert_snapshot!("changed_meaning_check", seen(&sb, &out));
}

#[test]
fn config_errors_point_at_the_fix() {
    let cases = [
        (
            "key_indented_one_less",
            "templates:\n  - source: t.j2\n   destination: out/t.conf\n",
        ),
        (
            "key_indented_two_less",
            "templates:\n  - source: t.j2\n  destination: out/t.conf\n",
        ),
        (
            "key_indented_two_more",
            "templates:\n  - source: t.j2\n      destination: out/t.conf\n",
        ),
        (
            "hooks_key_indented_one_more",
            "hooks:\n  on_start: \"true\"\n   timeout: 5s\n",
        ),
        (
            "duration_without_unit",
            "hooks:\n  on_start: \"true\"\n  timeout: 5\n",
        ),
        (
            "duration_unknown_unit",
            "wait:\n  max: 1s\n  min: 5 parsecs\n",
        ),
        (
            "unclosed_quote",
            "hooks:\n  on_start: \"echo hi\n  timeout: 5s\n",
        ),
        ("tab_indent", "hooks:\n\ton_start: \"true\"\n"),
        (
            "partial_with_an_output_key",
            "templates:\n  - source: t.j2\n    mode: \"0644\"\n",
        ),
        // The state file is rewritten whole: never the config, a template
        // or an output.
        (
            "state_is_the_config",
            "templates:\n  - {source: t.j2, destination: out/t.conf}\nstate: ./peerplate.yaml\n",
        ),
        (
            "state_is_an_output",
            "templates:\n  - {source: t.j2, destination: out/t.conf}\nstate: out/t.conf\n",
        ),
        (
            "state_is_a_template",
            "templates:\n  - {source: t.j2, destination: out/t.conf}\nstate: t.j2\n",
        ),
        // Wrong shapes: what to write, never a Rust type's name.
        ("reload_true", "reload: true\n"),
        ("reload_a_number", "reload: 5\n"),
        ("peers_a_list", "peers: [web-0]\n"),
        (
            "template_reload_a_list",
            "templates:\n  - source: t.j2\n    destination: out/t.conf\n    reload: [a]\n",
        ),
        (
            "template_size_a_list",
            "templates:\n  - source: t.j2\n    destination: out/t.conf\n    max_size: [1]\n",
        ),
    ];
    for (name, body) in cases {
        let sb = Sandbox::new();
        sb.write("t.j2", "x\n");
        sb.write(
            "peerplate.yaml",
            &format!("identity: {{hostname: web-1}}\n{body}"),
        );
        let out = peerplate(&sb, &["check"]);
        assert_eq!(out.code, Some(2), "{name}: {}", out.dump());
        insta::assert_snapshot!(format!("config_{name}"), seen(&sb, &out));
    }
}

#[test]
fn io_errors_name_the_path_and_the_reason() {
    let sb = Sandbox::new();
    sb.write("t.j2", "{{ peers|length }}\n");
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\npeers: {file: missing-peers.txt}\ntemplates:\n  - source: t.j2\n    destination: out/t.conf\n",
    );
    let out = peerplate(&sb, &["render"]);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    insta::assert_snapshot!("io_render_peers_file", seen(&sb, &out));
    // A template that is a folder.
    sb.mkdir("folder.j2");
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\ntemplates:\n  - source: folder.j2\n    destination: out/t.conf\n",
    );
    let out = peerplate(&sb, &["check"]);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    insta::assert_snapshot!("io_template_is_a_folder", seen(&sb, &out));
    // A destination folder that cannot be made: a file is in the way.
    sb.write("blocked", "a file\n");
    sb.write("t.j2", "x\n");
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\ntemplates:\n  - source: t.j2\n    destination: blocked/t.conf\n",
    );
    let out = peerplate(&sb, &["once"]);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    insta::assert_snapshot!("io_destination_folder", seen(&sb, &out));
}

/// One template with an indented `for`, rendered with and without
/// `lstrip_blocks` (per template, and the `render:` default).
#[test]
fn lstrip_blocks_per_template_and_by_default() {
    let sb = Sandbox::new();
    let template =
        "upstream app {\n    {% for p in peers %}\n    server {{ p }};\n    {% endfor %}\n}\n";
    sb.write("a.j2", template);
    sb.write("b.j2", template);
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\npeers: {static: [web-0.nginx, web-1.nginx]}\nrender: {lstrip_blocks: true}\ntemplates:\n  - source: a.j2\n    destination: out/a.conf\n  - source: b.j2\n    destination: out/b.conf\n    lstrip_blocks: false\n",
    );
    let out = peerplate(&sb, &["render"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    insta::assert_snapshot!("lstrip_blocks_render", sb.redact(&out.stdout));
}

#[test]
fn partials_are_included_never_rendered_alone() {
    let sb = Sandbox::new();
    sb.write(
        "parts/macros.j2",
        "{% macro server(p) %}server {{ p.fqdn }}:{{ p.port | default(80) }};{% endmacro %}\n",
    );
    sb.write(
        "head.j2",
        "# generated by peerplate for {{ pod.hostname }}\n",
    );
    sb.write(
        "main.j2",
        "{% include \"head.j2\" %}{% import \"parts/macros.j2\" as m %}\nupstream app {\n{% for p in peers %}\n  {{ m.server(p) }}\n{% endfor %}\n}\n",
    );
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\npeers: {static: [web-0.nginx, web-1.nginx]}\ntemplates:\n  - source: main.j2\n    destination: out/main.conf\n  - source: parts/macros.j2\n  - source: head.j2\n",
    );
    let out = peerplate(&sb, &["render"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    insta::assert_snapshot!("partials_render", out.stdout);
    let out = peerplate(&sb, &["check"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stdout.contains("ok, 1 template(s) compile and render"),
        "{}",
        out.dump()
    );
    let out = peerplate(&sb, &["once"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        sb.listing()
            .iter()
            .filter(|p| p.starts_with("out/"))
            .count(),
        1
    );
    let out = peerplate(&sb, &["render", "--template", "head.j2"]);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    insta::assert_snapshot!("partial_rendered_alone", seen(&sb, &out));
    // An error inside a partial names the partial.
    sb.write("head.j2", "# {{ pod.hostnam }}\n");
    let out = peerplate(&sb, &["render"]);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    insta::assert_snapshot!("partial_error", seen(&sb, &out));
}

/// Top-level `reload: false` is no reload, like a template's: `check` and
/// `once` accept it and signal nothing.
#[test]
fn top_level_reload_false_means_no_reload() {
    let sb = Sandbox::new();
    sb.write("t.j2", "x\n");
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\ntemplates:\n  - source: t.j2\n    destination: out/t.conf\nreload: false\n",
    );
    let out = peerplate(&sb, &["check"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let out = peerplate(&sb, &["once"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        std::fs::read_to_string(sb.join("out/t.conf")).expect("rendered"),
        "x\n"
    );
    assert!(!out.stderr.contains("reload"), "{}", out.dump());
}

/// Every message in the catalogue (the snapshots of this binary) is free of
/// Rust's own type names: a user never wrote `RawAction`.
#[test]
fn no_message_in_the_catalogue_names_an_internal_type() {
    let dir = crate::helpers::repo_file("tests/integration/snapshots");
    let mut scanned = 0;
    for entry in std::fs::read_dir(&dir).expect("read snapshots") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read snapshot");
        scanned += 1;
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let internal = word.len() > 3
                && word.starts_with("Raw")
                && word[3..].starts_with(|c: char| c.is_ascii_uppercase());
            assert!(!internal, "{}: names {word}\n{text}", path.display());
        }
        for phrase in ["expected struct ", "untagged enum ", "expected enum "] {
            assert!(
                !text.contains(phrase),
                "{}: says {phrase:?}\n{text}",
                path.display()
            );
        }
    }
    assert!(
        scanned > 100,
        "only {scanned} snapshots in {}",
        dir.display()
    );
}

/// `check` reports every broken template, not only the first: one that does
/// not compile and two that fail to render, all three in one run.
#[test]
fn check_reports_every_broken_template() {
    let sb = Sandbox::new();
    sb.write("a.j2", "{% for p in peers %}\n{{ p }}\n");
    sb.write("b.j2", "{{ nope }}\n");
    sb.write("c.j2", "{{ pod.hostname | replace(\"web\") }}\n");
    sb.write("ok.j2", "fine\n");
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\npeers:\n  static: [web-0.nginx, web-1.nginx]\ntemplates:\n  - {source: a.j2, destination: out/a}\n  - {source: b.j2, destination: out/b}\n  - {source: ok.j2, destination: out/ok}\n  - {source: c.j2, destination: out/c}\n",
    );
    let out = peerplate(&sb, &["check"]);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    let text = seen(&sb, &out);
    for name in ["a.j2 line 1", "b.j2 line 1", "c.j2 line 1"] {
        assert!(text.contains(name), "{name} is reported\n{text}");
    }
    insta::assert_snapshot!("check_every_broken_template", text);
}

/// A first-time author with a static list of three peers and `{{ p.port }}`
/// gets the render error (what to write), not a warning that something
/// "changed": nothing changed for them.
#[test]
fn a_first_time_author_gets_no_meaning_changed_warning() {
    let sb = Sandbox::new();
    sb.write(
        "t.j2",
        "upstream app {\n{% for p in peers %}\n  server {{ p.fqdn }}:{{ p.port }};\n{% endfor %}\n}\n",
    );
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\npeers:\n  static: [web-0.nginx, web-1.nginx, web-2.nginx]\ntemplates:\n  - source: t.j2\n    destination: out/t.conf\n",
    );
    let out = peerplate(&sb, &["check"]);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    let text = seen(&sb, &out);
    assert!(!text.contains("meaning changed"), "{text}");
    assert!(text.contains("| default(80)"), "{text}");
    insta::assert_snapshot!("static_peers_port_first_time", text);
}

/// The key under `vars` is the misspelt one (`lisen`) and the template is
/// right (`vars.listen`): neither message tells the author to copy the
/// typo into the template; both say one of the two names is wrong.
#[test]
fn a_misspelt_vars_key_is_not_suggested_to_the_template() {
    let sb = Sandbox::new();
    sb.write("t.j2", "listen {{ vars.listen }};\n");
    sb.write(
        "peerplate.yaml",
        "identity: {hostname: web-1}\ntemplates:\n  - source: t.j2\n    destination: out/t.conf\nvars:\n  lisen: 8080\n",
    );
    let out = peerplate(&sb, &["check"]);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    let text = seen(&sb, &out);
    assert!(!text.contains("did you mean"), "{text}");
    assert!(text.contains("one of the two names is misspelt"), "{text}");
    insta::assert_snapshot!("misspelt_vars_key", text);
}
