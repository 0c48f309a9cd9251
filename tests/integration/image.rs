//! The image as it ships, run by podman: the Dockerfile's final stage
//! (`scripts/test-images.sh` builds those very lines, on a stand-in for the
//! distroless base that carries what distroless static ships besides a
//! binary), every container read-only, as uid/gid 65532, with no
//! capability.
//!
//! It shows: the image's user, entrypoint, command and port are the
//! Dockerfile's, `/usr/local/bin` holds the static binary and `peer-finder`
//! as a symlink to it, and there is no shell and no libc; `--version`;
//! `check` and `render` of deploy/base's config, mounted as the pod mounts
//! it; `once` with `seed:` copying the binary out (deploy/'s install step)
//! and, in the nginx image, that copy as `peer-finder` running the
//! peer-finder overlay's script against BIND; `run` serving `/healthz`,
//! re-rendering on a change and ending with 0 on `podman stop`; and
//! `peer-finder` by its name, with the original's messages and exit codes.

use std::fs;
use std::path::Path;

use crate::bind_server::{self, Bind};
use crate::helpers::{
    free_port, http_get, inode_and_mtime, mode_of, peers, repo_file, ConfigMapDir, Sandbox, SVC,
};
use crate::podman::{
    self, mount, ok, volume_dir, wait_for, Container, HARDENED, NGINX_IMAGE, PEERPLATE_IMAGE,
    PODMAN_TIMEOUT,
};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `podman run --rm HARDENED EXTRA PEERPLATE_IMAGE ARGS`.
fn run_image(extra: &[&str], args: &[&str]) -> crate::helpers::Outcome {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(HARDENED);
    all.extend_from_slice(extra);
    all.push(PEERPLATE_IMAGE);
    all.extend_from_slice(args);
    podman::run(&all)
}

/// The final stage of the Dockerfile: its lines from the last `FROM` on,
/// comments and blank lines dropped.
fn final_stage() -> Vec<String> {
    let text = fs::read_to_string(repo_file("Dockerfile")).expect("read Dockerfile");
    let lines: Vec<&str> = text.lines().collect();
    let from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    lines[from..]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// The argument of the final stage's `INSTRUCTION`.
fn instruction(stage: &[String], name: &str) -> String {
    stage
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the Dockerfile's final stage: {stage:?}"))
        .trim()
        .to_string()
}

#[test]
fn the_image_is_the_dockerfiles_final_stage_with_no_shell_and_no_libc() {
    if !podman::available(&[PEERPLATE_IMAGE]) {
        return;
    }
    let stage = final_stage();
    let config = |field: &str| ok(&["image", "inspect", "--format", field, PEERPLATE_IMAGE]);
    assert_eq!(
        config("{{.Config.User}}").trim(),
        instruction(&stage, "USER")
    );
    assert_eq!(
        config("{{json .Config.Entrypoint}}").trim(),
        instruction(&stage, "ENTRYPOINT").replace(", ", ",")
    );
    assert_eq!(
        config("{{json .Config.Cmd}}").trim(),
        instruction(&stage, "CMD").replace(", ", ",")
    );
    let port = instruction(&stage, "EXPOSE");
    assert!(
        config("{{json .Config.ExposedPorts}}").contains(&format!("\"{port}/tcp\"")),
        "EXPOSE {port}"
    );

    // The files, as `podman export` gives them.
    let sb = Sandbox::new();
    let name = podman::unique_name("layout");
    ok(&["create", "--name", &name, PEERPLATE_IMAGE]);
    let _guard = Container { name: name.clone() };
    let tar = sb.join("image.tar");
    ok(&["export", "-o", &tar.display().to_string(), &name]);
    let out = crate::helpers::run(std::process::Command::new("tar").arg("-tvf").arg(&tar));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let listing = out.stdout;
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .nth(5)
                    .is_some_and(|p| p.trim_start_matches("./").trim_end_matches('/') == path)
            })
            .unwrap_or_else(|| panic!("no {path} in the image:\n{listing}"))
            .to_string()
    };
    assert!(
        entry("usr/local/bin/peerplate").starts_with("-rwxr-xr-x"),
        "{}",
        entry("usr/local/bin/peerplate")
    );
    let finder = entry("usr/local/bin/peer-finder");
    assert!(
        finder.starts_with('l') && finder.ends_with("-> peerplate"),
        "peer-finder is a relative symlink to peerplate: {finder}"
    );
    assert!(entry("tmp").starts_with("drwxrwxrwt"), "{}", entry("tmp"));
    entry("etc/passwd");
    entry("etc/group");
    entry("etc/ssl/certs/ca-certificates.crt");
    for line in listing.lines() {
        let path = line.split_whitespace().nth(5).unwrap_or_default();
        let path = path.trim_start_matches("./");
        let base = path.rsplit('/').next().unwrap_or_default();
        assert!(
            !(["sh", "bash", "busybox"].contains(&base)
                || base.starts_with("libc.so")
                || base.starts_with("ld-linux")),
            "the image holds {path}: no shell and no libc expected\n{listing}"
        );
    }

    // Its size, as shipped (uncompressed) and as a registry stores it
    // (each layer gzipped).
    let size: u64 = config("{{.Size}}").trim().parse().expect("image size");
    let saved = sb.join("image.oci.tar");
    ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &saved.display().to_string(),
        PEERPLATE_IMAGE,
    ]);
    let gz = crate::helpers::run(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -9 -c '{}' | wc -c", saved.display())),
    );
    eprintln!(
        "image {PEERPLATE_IMAGE}: {size} bytes uncompressed, {} bytes gzipped",
        gz.stdout.trim()
    );
}

#[test]
fn version_runs_read_only_as_65532_and_there_is_no_shell() {
    if !podman::available(&[PEERPLATE_IMAGE]) {
        return;
    }
    let out = run_image(&["--network", "none"], &["--version"]);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        out.stdout,
        format!("peerplate {VERSION} (release, features: https)\n")
    );

    let out = podman::run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "/bin/sh",
        PEERPLATE_IMAGE,
        "-c",
        "true",
    ]);
    assert_ne!(
        out.code,
        Some(0),
        "a shell ran in the image\n{}",
        out.dump()
    );
}

/// `render` of deploy/base's config (mounted at /etc/peerplate) in the
/// image, as web-1 of the peers web-0 and web-1; asserts it exits 0.
fn render_as_web_1(extra: &[&str]) -> crate::helpers::Outcome {
    let web0 = format!("web-0.{SVC}");
    let web1 = format!("web-1.{SVC}");
    let out = run_image(
        extra,
        &[
            "--config",
            "/etc/peerplate/peerplate.yaml",
            "render",
            "--hostname",
            "web-1",
            "--peer",
            &web0,
            "--peer",
            &web1,
        ],
    );
    assert_eq!(out.code, Some(0), "render\n{}", out.dump());
    out
}

/// deploy/base's peerplate.yaml and template in a kubelet-style ConfigMap
/// folder, as the pod mounts them at /etc/peerplate.
fn base_configmap(sb: &Sandbox) -> ConfigMapDir {
    let config = fs::read_to_string(repo_file("deploy/base/peerplate.yaml")).expect("config");
    let template = fs::read_to_string(repo_file("deploy/base/nginx.conf.j2")).expect("template");
    ConfigMapDir::create(
        &sb.join("etc-peerplate"),
        &[("peerplate.yaml", &config), ("nginx.conf.j2", &template)],
    )
}

#[test]
fn check_and_render_take_deploy_bases_config_as_the_pod_mounts_it() {
    if !podman::available(&[PEERPLATE_IMAGE]) {
        return;
    }
    let sb = Sandbox::new();
    let mut cm = base_configmap(&sb);
    let volume = mount(cm.mount(), "/etc/peerplate", true);
    let env = [
        "-v",
        &volume,
        "-e",
        "POD_NAMESPACE=default",
        "-e",
        "HOSTNAME=web-1",
    ];
    let config = ["--config", "/etc/peerplate/peerplate.yaml"];

    let out = run_image(&env, &[config[0], config[1], "check"]);
    assert_eq!(out.code, Some(0), "check\n{}", out.dump());

    let web0 = format!("web-0.{SVC}");
    let out = render_as_web_1(&env);
    assert!(
        out.stdout.contains(&format!("set $leader \"{web0}\";")),
        "web-1 proxies to web-0:\n{}",
        out.stdout
    );

    // A template that does not compile: check says where, and fails.
    let config_text = fs::read_to_string(repo_file("deploy/base/peerplate.yaml")).expect("read");
    cm.update(&[
        ("peerplate.yaml", &config_text),
        ("nginx.conf.j2", "events {}\n{% if %}\n"),
    ]);
    let out = run_image(&env, &[config[0], config[1], "check"]);
    assert_ne!(
        out.code,
        Some(0),
        "check of a broken template\n{}",
        out.dump()
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("nginx.conf.j2") && said.contains("line 2"),
        "check names the file and line:\n{said}"
    );
}

#[test]
fn once_with_seed_copies_the_binary_and_peer_finder_runs_its_script_in_the_app_image() {
    if !podman::available(&[PEERPLATE_IMAGE, NGINX_IMAGE]) || !bind_server::available() {
        return;
    }
    let sb = Sandbox::new();
    // deploy/overlays/peer-finder's install step: `once` with only a seed
    // copies the binary as /work-dir/peer-finder.
    let install = fs::read_to_string(repo_file("deploy/overlays/peer-finder/install.yaml"))
        .expect("install.yaml");
    let cm = ConfigMapDir::create(&sb.join("install"), &[("install.yaml", &install)]);
    let work_dir = sb.join("work-dir");
    volume_dir(&work_dir);
    let args = [
        "-v".to_string(),
        mount(cm.mount(), "/etc/peerplate", true),
        "-v".to_string(),
        mount(&work_dir, "/work-dir", false),
        "--network".to_string(),
        "none".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let once = ["--config", "/etc/peerplate/install.yaml", "once"];
    let out = run_image(&args, &once);
    assert_eq!(out.code, Some(0), "once\n{}", out.dump());
    let copy = work_dir.join("peer-finder");
    assert_eq!(mode_of(&copy), 0o755, "the mode is kept");
    let before = inode_and_mtime(&copy);
    // Every start runs it again: what is there is never overwritten.
    let out = run_image(&args, &once);
    assert_eq!(out.code, Some(0), "once again\n{}", out.dump());
    assert_eq!(inode_and_mtime(&copy), before, "the copy was left alone");

    // The copy, in the app's image (which has sh), as peer-finder with the
    // overlay's flags and script, against BIND on the host's loopback.
    let bind = Bind::start(&["web-0", "web-1"]);
    let resolv = sb.write(
        "dns/resolv.conf",
        &format!(
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver {}\noptions ndots:5\n",
            bind.nameserver()
        ),
    );
    let conf = sb.join("conf");
    volume_dir(&conf);
    let scripts = repo_file("deploy/overlays/peer-finder");
    let mut all = vec![
        "run".to_string(),
        "--rm".to_string(),
        "--network".to_string(),
        "host".to_string(),
        "-e".to_string(),
        "POD_NAMESPACE=default".to_string(),
        "-e".to_string(),
        "HOSTNAME=web-1".to_string(),
        "-e".to_string(),
        "PEERPLATE_RESOLV_CONF=/etc/pod-dns/resolv.conf".to_string(),
        "-v".to_string(),
        mount(resolv.parent().expect("dns dir"), "/etc/pod-dns", true),
        "-v".to_string(),
        mount(&work_dir, "/work-dir", true),
        "-v".to_string(),
        mount(&scripts, "/scripts", true),
        "-v".to_string(),
        mount(&conf, "/conf", false),
    ];
    all.extend(HARDENED.iter().map(|s| s.to_string()));
    all.extend(
        [
            NGINX_IMAGE,
            "/work-dir/peer-finder",
            "-on-start=/scripts/on-start.sh",
            "-service=nginx",
        ]
        .map(str::to_string),
    );
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = podman::run(&all);
    assert_eq!(
        out.code,
        Some(0),
        "peer-finder in the app image\n{}",
        out.dump()
    );
    assert!(
        out.stderr.contains(&format!(
            "on-start: leader web-0.{SVC}, wrote /conf/nginx.conf"
        )),
        "the script ran with the peers on stdin:\n{}",
        out.dump()
    );
    let written = fs::read_to_string(conf.join("nginx.conf")).expect("on-start.sh wrote it");
    assert!(
        written.contains(&format!("set $leader \"web-0.{SVC}\"")),
        "{written}"
    );
}

#[test]
fn peer_finder_by_its_name_has_the_originals_messages_and_exit_codes() {
    if !podman::available(&[PEERPLATE_IMAGE]) {
        return;
    }
    let finder = [
        "--network",
        "none",
        "--entrypoint",
        "/usr/local/bin/peer-finder",
    ];
    let out = run_image(&finder, &[]);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(
        out.stderr.contains("Incomplete args, require -on-change and/or -on-start, -service and -ns or an env var for POD_NAMESPACE."),
        "{}",
        out.dump()
    );
    let out = run_image(&finder, &["-bogus=1"]);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(
        out.stderr.contains("flag provided but not defined: -bogus")
            && out.stderr.contains("Usage of peer-finder:"),
        "{}",
        out.dump()
    );
    // The same as a subcommand of the entrypoint.
    let out = run_image(&["--network", "none"], &["peer-finder", "-service=nginx"]);
    assert_eq!(out.code, Some(1), "{}", out.dump());
}

#[test]
fn run_serves_health_re_renders_on_a_change_and_exits_0_on_podman_stop() {
    if !podman::available(&[PEERPLATE_IMAGE]) {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let data = sb.mkdir("data");
    sb.write("data/peers", &peers(&[0, 1]));
    let config = format!(
        "identity: {{hostname: web-1, namespace: default}}\npeers:\n  file: /data/peers\ntemplates:\n  - source: peers.j2\n    destination: /conf/peers.txt\nwait: {{min: 0s, max: 0s}}\nhttp: {{listen: \"127.0.0.1:{port}\"}}\n"
    );
    let cm = ConfigMapDir::create(
        &sb.join("etc-peerplate"),
        &[
            ("peerplate.yaml", &config),
            (
                "peers.j2",
                "leader={{ leader.hostname }} peers={{ peers | length }}\n",
            ),
        ],
    );
    let conf = sb.join("conf");
    volume_dir(&conf);
    let name = podman::unique_name("run");
    let volumes = [
        mount(cm.mount(), "/etc/peerplate", true),
        mount(&data, "/data", true),
        mount(&conf, "/conf", false),
    ];
    let mut args = vec!["--network", "host"];
    args.extend_from_slice(HARDENED);
    for v in &volumes {
        args.extend(["-v", v.as_str()]);
    }
    args.extend([
        PEERPLATE_IMAGE,
        "--config",
        "/etc/peerplate/peerplate.yaml",
        "run",
    ]);
    let c = Container::run(&name, &args);
    let healthy = wait_for(PODMAN_TIMEOUT, || {
        http_get(port, "/readyz").is_ok_and(|r| r.status == 200)
    });
    assert!(healthy, "/readyz never answered 200\n{}", c.logs());
    let out = conf.join("peers.txt");
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    assert_eq!(read(&out), "leader=web-0 peers=2\n");
    let metrics = http_get(port, "/metrics").expect("GET /metrics");
    assert!(
        metrics
            .body
            .contains(&format!("peerplate_build_info{{version=\"{VERSION}\"}} 1")),
        "{}",
        metrics.body
    );

    sb.replace("data/peers", &peers(&[0, 1, 2]));
    let changed = wait_for(PODMAN_TIMEOUT, || read(&out) == "leader=web-0 peers=3\n");
    assert!(changed, "{:?}\n{}", read(&out), c.logs());

    // `kubectl exec POD -c peerplate -- peerplate status`, in the
    // shell-less image: what has converged, for a person.
    let status = podman::run(&[
        "exec",
        &name,
        "peerplate",
        "--config",
        "/etc/peerplate/peerplate.yaml",
        "status",
    ]);
    assert_eq!(status.code, Some(0), "{}", status.dump());
    assert!(
        status
            .stdout
            .starts_with("converged: every output, reload and hook is done\n"),
        "{}",
        status.dump()
    );
    assert!(
        status
            .stdout
            .contains("template peers.j2 -> /conf/peers.txt\n")
            && status.stdout.contains("peers (3):\n"),
        "{}",
        status.dump()
    );

    // PID 1 of its container: SIGTERM from `podman stop` ends it cleanly.
    ok(&["stop", "-t", "10", &name]);
    assert_eq!(c.exit_code(), 0, "{}", c.logs());
}

/// A CI pipeline or a laptop runs the image with no network: no
/// `/etc/resolv.conf` to find a DNS server in. `check` is a linter that runs
/// anywhere (it warns, naming the file and line, about what `run` would
/// refuse; `--strict` makes that exit 2), and `render --peer` never asks DNS.
#[test]
fn check_and_render_run_in_the_image_without_a_network() {
    if !podman::available(&[PEERPLATE_IMAGE]) {
        return;
    }
    let sb = Sandbox::new();
    let cm = base_configmap(&sb);
    let volume = mount(cm.mount(), "/etc/peerplate", true);
    let env = [
        "--network",
        "none",
        "-v",
        &volume,
        "-e",
        "POD_NAMESPACE=default",
        "-e",
        "HOSTNAME=web-1",
    ];
    let config = ["--config", "/etc/peerplate/peerplate.yaml"];
    let refusal = "/etc/peerplate/peerplate.yaml:11: peers.dns: no DNS server to ask (no peers.dns.nameservers, and no nameserver line in /etc/resolv.conf); `run` and `once` refuse to start without one: set peers.dns.nameservers, or give the pod an /etc/resolv.conf with a nameserver line";

    let out = run_image(&env, &[config[0], config[1], "check"]);
    assert_eq!(out.code, Some(0), "check\n{}", out.dump());
    assert!(
        out.stderr.contains(&format!(
            "WARN `run` would refuse this config detail={refusal}"
        )),
        "{}",
        out.dump()
    );
    assert!(
        out.stdout
            .contains("/etc/peerplate/peerplate.yaml: ok, 1 template(s)"),
        "{}",
        out.dump()
    );

    let out = run_image(&env, &[config[0], config[1], "check", "--strict"]);
    assert_eq!(out.code, Some(2), "check --strict\n{}", out.dump());
    assert!(
        out.stderr
            .contains(&format!("error: check --strict: {refusal}")),
        "{}",
        out.dump()
    );

    let web0 = format!("web-0.{SVC}");
    let out = render_as_web_1(&env);
    assert!(
        // No resolver to name at request time: the leader is written in.
        out.stdout
            .contains(&format!("location / {{ proxy_pass http://{web0}; }}")),
        "web-1 proxies to web-0:\n{}",
        out.stdout
    );
}
