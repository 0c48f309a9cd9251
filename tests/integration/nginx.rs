//! The shipped seed template `templates/nginx.conf.j2`, rendered by
//! `peerplate render` for the leader and for a follower, is a config the real
//! nginx accepts (`nginx -t`), run with a prefix, pid file and error log in a
//! temp dir so it needs no system directories. The listen port is moved to an
//! unprivileged one through `vars.listen`. Skipped when nginx is missing,
//! except under `CI=true`.

use std::process::Command;

use crate::helpers::{find_program, repo_file, require_component, run, Sandbox};

fn render_and_test(hostname: &str) {
    if !require_component("nginx") {
        return;
    }
    let nginx = find_program("nginx").expect("nginx found");
    let sb = Sandbox::new();
    let config = sb.write(
        "peerplate.yaml",
        "identity:\n  namespace: default\npeers:\n  static: [web-0.nginx.default.svc.cluster.local]\ntemplates: []\nvars:\n  listen: 18080\n",
    );
    let mut args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "render".into(),
        "--template".into(),
        repo_file("templates/nginx.conf.j2").display().to_string(),
        "--hostname".into(),
        hostname.into(),
    ];
    for i in 0..3 {
        args.push("--peer".into());
        args.push(format!("web-{i}.nginx.default.svc.cluster.local"));
    }
    let out = run(&mut sb.peerplate(&args));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(
        out.stdout.contains("18080"),
        "vars.listen sets the listen port:\n{}",
        out.stdout
    );

    let prefix = sb.mkdir("nginx");
    let conf = sb.write("nginx/nginx.conf", &out.stdout);
    let globals = format!("pid {}/nginx.pid; error_log stderr;", prefix.display());
    let test = run(Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(format!("{}/", prefix.display()))
        .arg("-c")
        .arg(&conf)
        .arg("-g")
        .arg(&globals));
    assert_eq!(
        test.code,
        Some(0),
        "nginx -t rejects the config rendered for {hostname}:\n{}\n--- config ---\n{}",
        test.stderr,
        out.stdout
    );
    assert!(
        test.stderr.contains("test is successful"),
        "{}",
        test.stderr
    );
}

#[test]
fn seed_template_for_the_leader_passes_nginx_t() {
    render_and_test("web-0");
}

#[test]
fn seed_template_for_a_follower_passes_nginx_t() {
    render_and_test("web-1");
}
