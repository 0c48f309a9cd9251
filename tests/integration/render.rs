//! `peerplate render`: what a template author sees when trying templates with
//! no cluster. Snapshots (in `snapshots/`) of the shipped seed template as
//! leader and as follower, of a template using every context variable, of
//! the `==> destination <==` listing of several templates, and of the error
//! a template with an undefined variable prints; plus the rules around them:
//! render writes nothing, `--peer` replaces the configured peer source,
//! `--template` picks one template by file name, source or destination path.

use insta::assert_snapshot;

use crate::helpers::{redact_timestamps, repo_file, run, Sandbox};

const PEERS: [&str; 3] = [
    "web-0.nginx.default.svc.cluster.local",
    "web-1.nginx.default.svc.cluster.local",
    "web-2.nginx.default.svc.cluster.local",
];

/// `peerplate render --template templates/nginx.conf.j2 --peer ... --hostname H`
/// with no config file at all, as the README shows it.
fn render_seed(sb: &Sandbox, hostname: &str) -> String {
    let seed = repo_file("templates/nginx.conf.j2");
    let mut args = vec![
        "render".to_string(),
        "--template".to_string(),
        seed.display().to_string(),
    ];
    for p in PEERS {
        args.push("--peer".into());
        args.push(p.into());
    }
    args.push("--hostname".into());
    args.push(hostname.into());
    let before = sb.listing();
    let out = run(&mut sb.peerplate(&args));
    assert_eq!(out.code, Some(0), "render failed\n{}", out.dump());
    assert_eq!(sb.listing(), before, "render must not write any file");
    out.stdout
}

#[test]
fn seed_template_as_leader() {
    let sb = Sandbox::new();
    let out = render_seed(&sb, "web-0");
    assert!(
        out.contains(r#"return 200 "web-0\n";"#),
        "the leader answers with its own name:\n{out}"
    );
    assert!(
        !out.contains("proxy_pass"),
        "the leader never proxies (to itself):\n{out}"
    );
    assert_snapshot!("seed_leader", out);
}

#[test]
fn seed_template_as_follower() {
    let sb = Sandbox::new();
    let out = render_seed(&sb, "web-1");
    assert!(out.contains("proxy_pass"), "a follower proxies:\n{out}");
    assert!(
        out.contains("web-0.nginx.default.svc.cluster.local"),
        "a follower proxies to the leader web-0:\n{out}"
    );
    assert!(
        out.contains("resolver 127.0.0.1"),
        "the resolver comes from PEERPLATE_RESOLV_CONF's nameservers:\n{out}"
    );
    assert!(
        !out.contains("return 200"),
        "only the leader answers itself:\n{out}"
    );
    assert_snapshot!("seed_follower", out);
}

#[test]
fn every_context_variable() {
    let sb = Sandbox::new();
    sb.write(
        "resolv.conf",
        "# test resolver\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 127.0.0.1\n",
    );
    let tpl = sb.write(
        "context.j2",
        r#"peers: {{ peers | join(" ") }}
{% for p in peers -%}
- fqdn={{ p.fqdn }} hostname={{ p.hostname }} ordinal={{ p.ordinal }} port={{ p.port | default("no port") }} is_self={{ p.is_self }}
{% endfor -%}
pod: hostname={{ pod.hostname }} fqdn={{ pod.fqdn }} ordinal={{ pod.ordinal }} namespace={{ pod.namespace }} is_leader={{ pod.is_leader }}
leader: {{ leader }} (hostname {{ leader.hostname }})
vars: greeting={{ vars.greeting }} listen={{ vars.listen }}
env: {{ env("PEERPLATE_IT_COLOUR") }} / {{ env("PEERPLATE_IT_UNSET", "fallback") }}
nameservers: {{ nameservers | join(", ") }}
"#,
    );
    let config = sb.write(
        "peerplate.yaml",
        "identity:\n  hostname: web-2\n  namespace: shop\npeers:\n  static: [web-0.nginx.shop.svc.cluster.local]\ntemplates: []\nvars:\n  greeting: hello\n  listen: 8080\n",
    );
    // Given out of order: web-10 must sort after web-2 (by ordinal, not text).
    let out = run(sb
        .peerplate([
            "--config",
            &config.display().to_string(),
            "render",
            "--template",
            &tpl.display().to_string(),
            "--peer",
            "web-10.nginx.shop.svc.cluster.local",
            "--peer",
            "web-2.nginx.shop.svc.cluster.local",
            "--peer",
            "web-0.nginx.shop.svc.cluster.local",
        ])
        .env("PEERPLATE_IT_COLOUR", "blue")
        .env_remove("PEERPLATE_IT_UNSET"));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let stdout = out.stdout;
    assert!(
        stdout.starts_with(
            "peers: web-0.nginx.shop.svc.cluster.local web-2.nginx.shop.svc.cluster.local web-10.nginx.shop.svc.cluster.local\n"
        ),
        "peers sorted by ordinal, --peer replacing the config's static list:\n{stdout}"
    );
    assert!(
        stdout.contains("nameservers: 10.96.0.10, 127.0.0.1"),
        "nameservers from PEERPLATE_RESOLV_CONF:\n{stdout}"
    );
    assert_snapshot!("every_context_variable", stdout);
}

#[test]
fn undefined_variable_is_an_error_naming_template_and_line() {
    let sb = Sandbox::new();
    let tpl = sb.write(
        "broken.j2",
        "events {}\n# for {{ pod.hostname }}\nlisten {{ vars.no_such_port }};\nhttp {}\n",
    );
    let before = sb.listing();
    let out = run(&mut sb.peerplate([
        "render",
        "--template",
        &tpl.display().to_string(),
        "--hostname",
        "web-0",
        "--peer",
        "web-0.nginx.default.svc.cluster.local",
    ]));
    assert_eq!(
        out.code,
        Some(2),
        "a template error exits 2\n{}",
        out.dump()
    );
    assert_eq!(out.stdout, "", "nothing is printed for a failed template");
    assert!(
        out.stderr.contains("broken.j2") && out.stderr.contains("line 3"),
        "the error names the template and line 3:\n{}",
        out.stderr
    );
    assert_eq!(sb.listing(), before, "render must not write any file");
    assert_snapshot!(
        "undefined_variable_error",
        redact_timestamps(&sb.redact(&out.stderr))
    );
}

/// A config with two templates, `a.conf.j2` -> out/a.conf and
/// `b.conf.j2` -> out/b.conf; returns the config path.
fn two_template_config(sb: &Sandbox) -> std::path::PathBuf {
    sb.write(
        "tpl/a.conf.j2",
        "# a for {{ pod.hostname }}\n{% for p in peers %}server {{ p }};\n{% endfor %}",
    );
    sb.write("tpl/b.conf.j2", "leader={{ leader }}\n");
    sb.mkdir("out");
    let root = sb.path().display();
    sb.write(
        "peerplate.yaml",
        &format!(
            "identity:\n  hostname: web-1\npeers:\n  static:\n    - web-0.nginx.default.svc.cluster.local\n    - web-1.nginx.default.svc.cluster.local\ntemplates:\n  - source: {root}/tpl/a.conf.j2\n    destination: {root}/out/a.conf\n  - source: {root}/tpl/b.conf.j2\n    destination: {root}/out/b.conf\n"
        ),
    )
}

#[test]
fn several_templates_are_listed_under_destination_headers() {
    let sb = Sandbox::new();
    let config = two_template_config(&sb);
    let before = sb.listing();
    let out = run(&mut sb.peerplate(["--config", &config.display().to_string(), "render"]));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(sb.listing(), before, "render must not write any file");
    let stdout = sb.redact(&out.stdout);
    let a = stdout.find("==> [TMP]/out/a.conf <==\n");
    let b = stdout.find("==> [TMP]/out/b.conf <==\n");
    assert!(
        matches!((a, b), (Some(a), Some(b)) if a < b),
        "one header per destination, in config order:\n{stdout}"
    );
    assert!(
        stdout.contains("\n\n==> [TMP]/out/b.conf <==\n"),
        "one blank line between outputs:\n{stdout}"
    );
    assert_snapshot!("two_templates", stdout);
}

#[test]
fn template_flag_picks_one_by_name_source_or_destination() {
    let sb = Sandbox::new();
    let config = two_template_config(&sb);
    let config = config.display().to_string();
    let expected = "leader=web-0.nginx.default.svc.cluster.local";
    for name in [
        "b.conf.j2".to_string(),
        sb.join("tpl/b.conf.j2").display().to_string(),
        sb.join("out/b.conf").display().to_string(),
    ] {
        let out = run(&mut sb.peerplate(["--config", &config, "render", "--template", &name]));
        assert_eq!(out.code, Some(0), "--template {name}\n{}", out.dump());
        assert_eq!(
            out.stdout.trim_end(),
            expected,
            "--template {name} prints only that template, with no header"
        );
    }
    let out = run(&mut sb.peerplate(["--config", &config, "render", "--template", "nope.j2"]));
    assert_eq!(
        out.code,
        Some(2),
        "an unknown template name is a usage error\n{}",
        out.dump()
    );
    assert!(out.stderr.contains("nope.j2"), "{}", out.dump());
}

#[test]
fn peer_flags_replace_the_configured_peers() {
    let sb = Sandbox::new();
    let config = two_template_config(&sb);
    let out = run(&mut sb.peerplate([
        "--config",
        &config.display().to_string(),
        "render",
        "--template",
        "a.conf.j2",
        "--peer",
        "web-7.nginx.default.svc.cluster.local",
        "--peer",
        "web-1.nginx.default.svc.cluster.local",
    ]));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        out.stdout.trim_end(),
        "# a for web-1\nserver web-1.nginx.default.svc.cluster.local;\nserver web-7.nginx.default.svc.cluster.local;",
        "the --peer set, sorted, instead of the static list"
    );
}
