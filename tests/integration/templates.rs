//! The template library in `templates/`: each template rendered by the real
//! `peerplate render` for three peers (web-0..web-2 under the headless
//! Service `db`), as the leader web-0 and as the follower web-1, snapshotted
//! (in `snapshots/`), checked for what an operator relies on, and, where
//! Debian ships the application and it checks a config offline, accepted
//! by the application itself:
//!
//! - haproxy.cfg.j2: `haproxy -c -f`;
//! - redis.conf.j2: `redis-server` started on the rendered file (on a free
//!   loopback port) answers PING and reports the expected replication role;
//! - etcd.conf.yml.j2: a one-member cluster (`localhost`) rendered by the
//!   template starts with `etcd --config-file` and reports healthy; the
//!   three-peer renders are parsed as YAML;
//! - galera.cnf.j2: `mariadbd --defaults-file=FILE --help --verbose`, which
//!   parses every option without starting the server;
//! - zoo.cfg.j2 and myid.j2: snapshots and structural checks only (ZooKeeper
//!   has no config-test mode, and a Java ensemble start is not a quick
//!   offline check).
//!
//! Every `templates/*.j2`, a new one too, also has the snapshots
//! `leader@<file>` and `follower@<file>` (insta's `glob!`: web-0..web-2 of
//! the Service `nginx`, every var at its default), so adding a template adds
//! them. nginx.conf.j2 is covered by `render.rs` and `nginx.rs`. The
//! checkers are system components: skipped when missing, except under
//! `CI=true`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use insta::assert_snapshot;

use crate::helpers::{
    find_program, free_ports, http_get, peers, repo_file, require_component, run, Daemon, Sandbox,
};

const PEERS: [&str; 3] = [
    "web-0.db.default.svc.cluster.local",
    "web-1.db.default.svc.cluster.local",
    "web-2.db.default.svc.cluster.local",
];

/// `peerplate --config C render --template templates/<name> --peer P... --hostname H`,
/// where C holds `vars` (YAML lines `key: value`), and the environment has no
/// REDIS_PASSWORD unless `env` sets it. Returns stdout; fails on a non-zero exit.
fn render_with(
    sb: &Sandbox,
    name: &str,
    hostname: &str,
    peers: &[&str],
    vars: &[&str],
    env: &[(&str, &str)],
) -> String {
    let vars = if vars.is_empty() {
        "vars: {}\n".to_string()
    } else {
        let mut s = "vars:\n".to_string();
        for v in vars {
            s.push_str("  ");
            s.push_str(v);
            s.push('\n');
        }
        s
    };
    let config = sb.write(
        "peerplate.yaml",
        &format!(
            "identity:\n  namespace: default\npeers:\n  static: [placeholder.db.default.svc.cluster.local]\ntemplates: []\n{vars}"
        ),
    );
    let mut args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "render".into(),
        "--template".into(),
        repo_file(&format!("templates/{name}"))
            .display()
            .to_string(),
        "--hostname".into(),
        hostname.into(),
    ];
    for p in peers {
        args.push("--peer".into());
        args.push((*p).into());
    }
    let mut cmd = sb.peerplate(&args);
    cmd.env_remove("REDIS_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert_eq!(
        out.code,
        Some(0),
        "rendering {name} for {hostname} failed\n{}",
        out.dump()
    );
    out.stdout
}

/// `render_with` for the three PEERS, no extra environment.
fn render(sb: &Sandbox, name: &str, hostname: &str, vars: &[&str]) -> String {
    render_with(sb, name, hostname, &PEERS, vars, &[])
}

fn lines_starting_with<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

// --- the library as a whole ---------------------------------------------------

#[test]
fn every_template_has_a_header_and_a_readme_row() {
    let dir = repo_file("templates");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("templates/README.md");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("read templates/")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".j2"))
        .collect();
    names.sort();
    for expected in [
        "etcd.conf.yml.j2",
        "galera.cnf.j2",
        "haproxy.cfg.j2",
        "myid.j2",
        "nginx.conf.j2",
        "redis.conf.j2",
        "zoo.cfg.j2",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "templates/{expected} is missing: {names:?}"
        );
    }
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).expect("read template");
        assert!(
            text.starts_with("{#-") && text.contains("-#}"),
            "templates/{name} starts with a `{{#- ... -#}}` header comment"
        );
        assert!(
            text.contains("vars"),
            "templates/{name}'s header says which vars it takes"
        );
        let header = &text[..text.find("-#}").expect("header end")];
        assert!(
            header.contains("\n    Reload: "),
            "templates/{name}'s header has a `Reload:` paragraph: how its app takes a new file"
        );
        let reload_table = readme
            .split_once("## How each app reloads")
            .expect("templates/README.md has \"## How each app reloads\"")
            .1
            .split("\n## ")
            .next()
            .unwrap_or_default();
        assert!(
            reload_table
                .lines()
                .any(|l| l.starts_with('|') && l.contains(&format!("`{name}`"))),
            "templates/README.md's reload table has a row for `{name}`"
        );
        assert!(
            readme
                .lines()
                .any(|l| l.starts_with('|') && l.contains(&format!("`{name}`"))),
            "templates/README.md has a table row for `{name}`"
        );
    }
}

/// Every template in `templates/` (a new one too, with no test of its own
/// yet), rendered by the real binary for web-0..web-2 of the Service
/// `nginx` with every var at its default and no REDIS_PASSWORD, as the
/// leader web-0 and as the follower web-1: snapshots
/// `leader@<file>` and `follower@<file>`.
#[test]
fn every_template_renders_as_leader_and_follower() {
    let sb = Sandbox::new();
    insta::glob!("../../templates", "*.j2", |path| {
        for (snapshot, hostname) in [("leader", "web-0"), ("follower", "web-1")] {
            let mut args = vec![
                "render".to_string(),
                "--template".into(),
                path.display().to_string(),
                "--hostname".into(),
                hostname.into(),
            ];
            for peer in peers(0..3).lines() {
                args.push("--peer".into());
                args.push(peer.into());
            }
            let out = run(sb.peerplate(&args).env_remove("REDIS_PASSWORD"));
            assert_eq!(
                out.code,
                Some(0),
                "rendering {} as {hostname} failed\n{}",
                path.display(),
                out.dump()
            );
            assert_snapshot!(snapshot, out.stdout);
        }
    });
}

// --- HAProxy ------------------------------------------------------------------

#[test]
fn haproxy_has_one_checked_server_per_peer_the_same_on_every_pod() {
    let sb = Sandbox::new();
    let leader = render(&sb, "haproxy.cfg.j2", "web-0", &[]);
    let follower = render(&sb, "haproxy.cfg.j2", "web-1", &[]);
    assert_eq!(
        leader, follower,
        "the leader and the others balance over the same servers"
    );
    let servers = lines_starting_with(&follower, "    server ");
    assert_eq!(servers.len(), 3, "one server per peer:\n{follower}");
    for (i, line) in servers.iter().enumerate() {
        assert!(
            line.starts_with(&format!(
                "    server web-{i} web-{i}.db.default.svc.cluster.local:80 check "
            )),
            "server named by host name at fqdn:port, checked: {line}"
        );
        assert!(
            line.contains("resolvers cluster") && line.contains("init-addr last,libc,none"),
            "re-resolved at run time, and an unresolvable peer does not stop HAProxy: {line}"
        );
        assert!(!line.contains("backup"), "no backups by default: {line}");
    }
    assert!(
        follower.contains("    nameserver ns1 127.0.0.1:53\n"),
        "the resolvers come from PEERPLATE_RESOLV_CONF:\n{follower}"
    );
    assert_snapshot!("haproxy", follower);
}

#[test]
fn haproxy_leader_only_makes_the_others_backups() {
    let sb = Sandbox::new();
    let out = render(
        &sb,
        "haproxy.cfg.j2",
        "web-2",
        &[
            "leader_only: true",
            "mode: http",
            "listen: 9000",
            "port: 8080",
        ],
    );
    let servers = lines_starting_with(&out, "    server ");
    assert_eq!(servers.len(), 3, "{out}");
    assert!(
        !servers[0].contains("backup")
            && servers[0].contains("web-0.db.default.svc.cluster.local:8080"),
        "the leader is the active server, on vars.port: {}",
        servers[0]
    );
    assert!(
        servers[1].ends_with(" backup") && servers[2].ends_with(" backup"),
        "the others are backups:\n{out}"
    );
    assert!(out.contains("    bind :9000\n"), "{out}");
    assert!(
        out.contains("    mode http\n    log global\n    option httplog\n"),
        "{out}"
    );
    assert_snapshot!("haproxy_leader_only", out);
}

fn haproxy_check(sb: &Sandbox, config: &str, what: &str) {
    let haproxy = find_program("haproxy").expect("haproxy found");
    let file = sb.write("haproxy.cfg", config);
    let test = run(Command::new(haproxy).arg("-c").arg("-f").arg(&file));
    assert_eq!(
        test.code,
        Some(0),
        "haproxy -c rejects {what}:\n{}\n--- config ---\n{config}",
        test.stderr
    );
    let all = format!("{}{}", test.stdout, test.stderr);
    assert!(all.contains("Configuration file is valid"), "{all}");
    // The peers' names do not resolve here; nothing else may be wrong.
    for line in all
        .lines()
        .filter(|l| l.contains("[WARNING]") || l.contains("[ALERT]"))
    {
        assert!(
            line.contains("[WARNING]") && line.contains("could not resolve address 'web-"),
            "haproxy -c has more to say about {what} than unresolvable peers: {line}\n{all}"
        );
    }
}

#[test]
fn haproxy_configs_pass_haproxy_c() {
    if !require_component("haproxy") {
        return;
    }
    let sb = Sandbox::new();
    // An IPv4 and an IPv6 name server, as the rendered `nameserver` lines need them.
    sb.write(
        "resolv.conf",
        "nameserver 10.96.0.10\nnameserver fd00::10\n",
    );
    for hostname in ["web-0", "web-1"] {
        let out = render(&sb, "haproxy.cfg.j2", hostname, &[]);
        assert!(out.contains("nameserver ns2 [fd00::10]:53"), "{out}");
        haproxy_check(&sb, &out, &format!("the default config for {hostname}"));
        let out = render(
            &sb,
            "haproxy.cfg.j2",
            hostname,
            &["leader_only: true", "mode: http", "balance: leastconn"],
        );
        haproxy_check(
            &sb,
            &out,
            &format!("the leader_only http config for {hostname}"),
        );
    }
    // With no name servers at all, there is no resolvers section to use.
    sb.write("resolv.conf", "# none\n");
    let out = render(&sb, "haproxy.cfg.j2", "web-1", &[]);
    assert!(!out.contains("resolvers"), "{out}");
    haproxy_check(&sb, &out, "the config without name servers");
}

// --- Redis --------------------------------------------------------------------

#[test]
fn redis_follower_replicates_from_the_leader() {
    let sb = Sandbox::new();
    let out = render(&sb, "redis.conf.j2", "web-1", &[]);
    assert_eq!(
        lines_starting_with(&out, "replicaof "),
        ["replicaof web-0.db.default.svc.cluster.local 6379"],
        "{out}"
    );
    assert!(out.contains("\nprotected-mode no\n"), "no password: {out}");
    assert!(!out.contains("requirepass"), "{out}");
    assert_snapshot!("redis_follower", out);
}

#[test]
fn redis_leader_replicates_from_no_one() {
    let sb = Sandbox::new();
    let out = render(&sb, "redis.conf.j2", "web-0", &[]);
    assert!(
        !out.contains("replicaof"),
        "the leader is the primary:\n{out}"
    );
    assert_snapshot!("redis_leader", out);
}

#[test]
fn redis_password_comes_from_the_environment_quoted() {
    let sb = Sandbox::new();
    let out = render_with(
        &sb,
        "redis.conf.j2",
        "web-1",
        &PEERS,
        &["password_env: MY_REDIS_SECRET"],
        &[("MY_REDIS_SECRET", r#"s3"cr\et"#)],
    );
    assert!(out.contains("\nrequirepass \"s3\\\"cr\\\\et\"\n"), "{out}");
    assert!(out.contains("\nmasterauth \"s3\\\"cr\\\\et\"\n"), "{out}");
    assert!(out.contains("\nprotected-mode yes\n"), "{out}");
}

/// One RESP request, one reply: a status/error/integer line, or a bulk string.
fn redis_call(stream: &mut BufReader<TcpStream>, args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream
        .get_mut()
        .write_all(req.as_bytes())
        .expect("send to redis");
    let mut line = String::new();
    stream.read_line(&mut line).expect("redis reply");
    if let Some(len) = line.strip_prefix('$') {
        let len: i64 = len.trim().parse().expect("bulk length");
        if len < 0 {
            return String::new();
        }
        let mut buf = vec![0; usize::try_from(len).expect("length") + 2];
        stream.read_exact(&mut buf).expect("bulk body");
        buf.truncate(buf.len() - 2);
        return String::from_utf8_lossy(&buf).into_owned();
    }
    line.trim_end().to_string()
}

fn redis_connect(port: u16) -> Option<BufReader<TcpStream>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    Some(BufReader::new(stream))
}

/// Start `redis-server` on the config rendered for `hostname` (bind, port and
/// dir moved to the sandbox through vars), wait for it to answer, and return
/// the sandbox (dropped last), the daemon (stopped by the caller) and
/// `INFO replication`.
fn redis_start(hostname: &str, password: Option<&str>) -> (Sandbox, Daemon, String) {
    let redis = find_program("redis-server").expect("redis-server found");
    let sb = Sandbox::new();
    let [port] = free_ports();
    let data = sb.mkdir("data");
    let vars = [
        "bind: 127.0.0.1".to_string(),
        format!("port: {port}"),
        format!("dir: {}", data.display()),
    ];
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = password
        .map(|p| ("REDIS_PASSWORD", p))
        .into_iter()
        .collect();
    let out = render_with(&sb, "redis.conf.j2", hostname, &PEERS, &vars, &env);
    let conf = sb.write("redis.conf", &out);
    let mut cmd = Command::new(redis);
    cmd.arg(&conf).current_dir(sb.path());
    let mut daemon = Daemon::spawn(cmd);
    let mut conn = None;
    daemon.wait_until(
        Duration::from_secs(5),
        &format!("redis-server on 127.0.0.1:{port} to accept a connection"),
        |_| {
            conn = redis_connect(port);
            conn.is_some()
        },
    );
    let mut conn = conn.expect("connected");
    if let Some(pw) = password {
        let denied = redis_call(&mut conn, &["PING"]);
        assert!(
            denied.starts_with("-NOAUTH"),
            "requirepass is in force: {denied}\n{}",
            daemon.logs()
        );
        let auth = redis_call(&mut conn, &["AUTH", pw]);
        assert_eq!(
            auth,
            "+OK",
            "the rendered password works\n{}",
            daemon.logs()
        );
    }
    let pong = redis_call(&mut conn, &["PING"]);
    assert_eq!(pong, "+PONG", "{}", daemon.logs());
    let info = redis_call(&mut conn, &["INFO", "replication"]);
    (sb, daemon, info)
}

#[test]
fn redis_server_runs_the_follower_config_as_a_replica_of_the_leader() {
    if !require_component("redis-server") {
        return;
    }
    let (_sb, mut daemon, info) = redis_start("web-1", None);
    assert!(
        info.contains("role:slave\r\n")
            && info.contains("master_host:web-0.db.default.svc.cluster.local\r\n"),
        "redis took replicaof from the rendered file:\n{info}"
    );
    assert!(daemon.terminate().success(), "{}", daemon.logs());
}

#[test]
fn redis_server_runs_the_leader_config_as_the_primary_with_its_password() {
    if !require_component("redis-server") {
        return;
    }
    let (_sb, mut daemon, info) = redis_start("web-0", Some(r#"s3"cr\et"#));
    assert!(info.contains("role:master\r\n"), "{info}");
    assert!(daemon.terminate().success(), "{}", daemon.logs());
}

/// The shipped Redis path of deploy/overlays/add-sidecar, with real uids:
/// peerplate as 65532 renders redis.conf `mode: "0640"` into a folder made
/// as kubelet makes an emptyDir of the pod's fsGroup (group-owned, setgid),
/// and redis-server as uid 999, with that group as kubelet gives it, starts
/// on the file and answers PING; without the group it cannot read it.
#[test]
fn redis_reads_its_0640_file_through_the_pods_fs_group() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    if !require_component("redis-server") || !require_component("setpriv") {
        return;
    }
    const FS_GROUP: u32 = 4321;
    let redis = find_program("redis-server").expect("redis-server found");
    let setpriv = find_program("setpriv").expect("setpriv found");
    let sb = Sandbox::new();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    chmod(sb.path(), 0o755);
    // kubelet's emptyDir with fsGroup: group fsGroup, group-writable, setgid.
    let conf = sb.mkdir("conf");
    chown(&conf, Some(0), Some(FS_GROUP)).expect("chown conf");
    chmod(&conf, 0o2770);
    let data = sb.mkdir("data");
    chown(&data, Some(999), Some(999)).expect("chown data");
    let [port] = free_ports();
    sb.write(
        "redis.conf.j2",
        &std::fs::read_to_string(repo_file("templates/redis.conf.j2")).expect("template"),
    );
    sb.write(
        "peerplate.yaml",
        &format!(
            "identity: {{hostname: web-0}}\npeers: {{static: [{}]}}\ntemplates:\n  - source: redis.conf.j2\n    destination: conf/redis.conf\n    mode: \"0640\"\nreload: false\nvars: {{bind: 127.0.0.1, port: {port}, dir: {}}}\n",
            PEERS.join(", "),
            data.display()
        ),
    );
    let bin = sb.path().join("peerplate");
    std::fs::copy(crate::helpers::bin(), &bin).expect("copy the binary");
    let out = crate::helpers::run(
        sb.clean_env(&mut Command::new(&setpriv))
            .args(["--reuid", "65532", "--regid", "65532", "--groups"])
            .arg(FS_GROUP.to_string())
            .arg(&bin)
            .args(["--config", "peerplate.yaml", "once"]),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let file = conf.join("redis.conf");
    let meta = std::fs::metadata(&file).expect("rendered");
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (65532, FS_GROUP));

    let as_redis = |groups: &[&str]| {
        let mut cmd = Command::new(&setpriv);
        cmd.args(["--reuid", "999", "--regid", "999"])
            .args(groups)
            .arg(&redis)
            .arg(&file)
            .current_dir(sb.path());
        cmd
    };
    // Without the group: refused.
    let out = crate::helpers::run(&mut as_redis(&["--clear-groups"]));
    assert_ne!(out.code, Some(0), "{}", out.dump());
    assert!(
        (out.stdout.clone() + &out.stderr).contains("Permission denied"),
        "{}",
        out.dump()
    );
    // With the pod's fsGroup: it runs on the file.
    let mut daemon = Daemon::spawn(as_redis(&["--groups", &FS_GROUP.to_string()]));
    let mut conn = None;
    daemon.wait_until(
        Duration::from_secs(5),
        &format!("redis-server on 127.0.0.1:{port} to accept a connection"),
        |_| {
            conn = redis_connect(port);
            conn.is_some()
        },
    );
    let mut conn = conn.expect("connected");
    assert_eq!(
        redis_call(&mut conn, &["PING"]),
        "+PONG",
        "{}",
        daemon.logs()
    );
    let info = redis_call(&mut conn, &["INFO", "replication"]);
    assert!(info.contains("role:master\r\n"), "{info}");
    assert!(daemon.terminate().success(), "{}", daemon.logs());
}

// --- etcd ---------------------------------------------------------------------

fn yaml_str<'a>(doc: &'a serde_yaml::Value, key: &str) -> &'a str {
    doc.get(key)
        .and_then(serde_yaml::Value::as_str)
        .unwrap_or_else(|| panic!("{key} is a string in {doc:?}"))
}

/// The rendered file is YAML whose member list names every peer, and whose
/// own entry is what it advertises (etcd refuses to start otherwise).
fn etcd_structure(out: &str, hostname: &str, members: usize, scheme: &str) {
    let doc: serde_yaml::Value = serde_yaml::from_str(out).expect("etcd config is YAML");
    assert_eq!(yaml_str(&doc, "name"), hostname);
    let cluster: Vec<&str> = yaml_str(&doc, "initial-cluster").split(',').collect();
    assert_eq!(cluster.len(), members, "{out}");
    for (i, entry) in cluster.iter().enumerate() {
        assert_eq!(
            *entry,
            format!("web-{i}={scheme}://web-{i}.db.default.svc.cluster.local:2380")
        );
    }
    let own = format!(
        "{hostname}={}",
        yaml_str(&doc, "initial-advertise-peer-urls")
    );
    assert!(cluster.contains(&own.as_str()), "{own} in {cluster:?}");
    assert_eq!(
        yaml_str(&doc, "advertise-client-urls"),
        format!("{scheme}://{hostname}.db.default.svc.cluster.local:2379")
    );
    assert_eq!(yaml_str(&doc, "initial-cluster-state"), "new");
}

#[test]
fn etcd_follower_and_leader_list_the_same_initial_cluster() {
    let sb = Sandbox::new();
    let leader = render(&sb, "etcd.conf.yml.j2", "web-0", &[]);
    let follower = render(&sb, "etcd.conf.yml.j2", "web-1", &[]);
    etcd_structure(&leader, "web-0", 3, "http");
    etcd_structure(&follower, "web-1", 3, "http");
    assert_eq!(
        lines_starting_with(&leader, "initial-cluster:"),
        lines_starting_with(&follower, "initial-cluster:")
    );
    assert_snapshot!("etcd_leader", leader);
    assert_snapshot!("etcd_follower", follower);
}

#[test]
fn etcd_replicas_names_the_whole_intended_cluster_before_dns_does() {
    let sb = Sandbox::new();
    // Only web-0 is in DNS yet (OrderedReady), but the cluster is to have 5.
    let out = render_with(
        &sb,
        "etcd.conf.yml.j2",
        "web-0",
        &[PEERS[0]],
        &["replicas: 5", "tls_dir: /etc/etcd/tls"],
        &[],
    );
    etcd_structure(&out, "web-0", 5, "https");
    let doc: serde_yaml::Value = serde_yaml::from_str(&out).expect("YAML");
    for section in ["client-transport-security", "peer-transport-security"] {
        let s = &doc[section];
        assert_eq!(
            s["cert-file"].as_str(),
            Some("/etc/etcd/tls/tls.crt"),
            "{out}"
        );
        assert_eq!(s["client-cert-auth"].as_bool(), Some(true), "{out}");
    }
    assert_snapshot!("etcd_replicas_tls", out);
}

#[test]
fn etcd_starts_a_one_member_cluster_from_the_rendered_file() {
    if !require_component("etcd") {
        return;
    }
    let etcd = find_program("etcd").expect("etcd found");
    let sb = Sandbox::new();
    let [client, peer] = free_ports();
    let data = sb.join("etcd-data");
    let vars = [
        format!("data_dir: {}", data.display()),
        format!("client_port: {client}"),
        format!("peer_port: {peer}"),
    ];
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();
    // `localhost` is a name that resolves here: the member advertises it.
    let out = render_with(
        &sb,
        "etcd.conf.yml.j2",
        "localhost",
        &["localhost"],
        &vars,
        &[],
    );
    assert!(
        out.contains(&format!(
            "initial-cluster: \"localhost=http://localhost:{peer}\""
        )),
        "{out}"
    );
    let conf = sb.write("etcd.conf.yml", &out);
    let mut cmd = Command::new(etcd);
    cmd.arg("--config-file").arg(&conf).current_dir(sb.path());
    let mut daemon = Daemon::spawn(cmd);
    let mut health = String::new();
    daemon.wait_until(
        Duration::from_secs(8),
        "etcd to report healthy on /health",
        |_| {
            health = http_get(client, "/health")
                .map(|r| r.body)
                .unwrap_or_default();
            health.contains(r#""health":"true""#)
        },
    );
    assert!(
        Path::new(&data).join("member").is_dir(),
        "etcd used the rendered data-dir\n{}",
        daemon.logs()
    );
    daemon.terminate();
}

// --- ZooKeeper ----------------------------------------------------------------

#[test]
fn zookeeper_lists_every_peer_with_id_ordinal_plus_one() {
    let sb = Sandbox::new();
    let leader = render(&sb, "zoo.cfg.j2", "web-0", &[]);
    let follower = render(&sb, "zoo.cfg.j2", "web-1", &[]);
    for out in [&leader, &follower] {
        assert_eq!(
            lines_starting_with(out, "server."),
            [
                "server.1=web-0.db.default.svc.cluster.local:2888:3888",
                "server.2=web-1.db.default.svc.cluster.local:2888:3888",
                "server.3=web-2.db.default.svc.cluster.local:2888:3888",
            ],
            "{out}"
        );
        assert!(out.contains("\ndataDir=/data\n"), "{out}");
    }
    assert!(follower.starts_with("# ZooKeeper for web-1.db.default.svc.cluster.local: myid 2\n"));
    assert_snapshot!("zoo_leader", leader);
    assert_snapshot!("zoo_follower", follower);
}

#[test]
fn zookeeper_replicas_names_the_whole_ensemble() {
    let sb = Sandbox::new();
    let out = render_with(
        &sb,
        "zoo.cfg.j2",
        "web-0",
        &[PEERS[0]],
        &["replicas: 5", "data_dir: /var/lib/zookeeper"],
        &[],
    );
    let servers = lines_starting_with(&out, "server.");
    assert_eq!(servers.len(), 5, "{out}");
    assert_eq!(
        servers[4],
        "server.5=web-4.db.default.svc.cluster.local:2888:3888"
    );
    assert!(out.contains("\ndataDir=/var/lib/zookeeper\n"), "{out}");
}

#[test]
fn zookeeper_myid_is_the_ordinal_plus_one() {
    let sb = Sandbox::new();
    assert_eq!(render(&sb, "myid.j2", "web-0", &[]), "1\n");
    assert_eq!(render(&sb, "myid.j2", "web-2", &[]), "3\n");
    // A pod name without an ordinal has no id: an error, not a wrong file.
    let out = run(&mut sb.peerplate([
        "render",
        "--template",
        &repo_file("templates/myid.j2").display().to_string(),
        "--peer",
        "zk.db.default.svc.cluster.local",
        "--hostname",
        "zk",
    ]));
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(out.stderr.contains("myid.j2"), "{}", out.stderr);
}

// --- MariaDB Galera -----------------------------------------------------------

const ALL_PEERS: &str = "wsrep_cluster_address=gcomm://web-0.db.default.svc.cluster.local,web-1.db.default.svc.cluster.local,web-2.db.default.svc.cluster.local";

#[test]
fn galera_every_pod_lists_all_peers() {
    let sb = Sandbox::new();
    let leader = render(&sb, "galera.cnf.j2", "web-0", &[]);
    let follower = render(&sb, "galera.cnf.j2", "web-1", &[]);
    for (out, host) in [(&leader, "web-0"), (&follower, "web-1")] {
        assert_eq!(
            lines_starting_with(out, "wsrep_cluster_address="),
            [ALL_PEERS]
        );
        assert!(
            out.contains(&format!("\nwsrep_node_name={host}\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "\nwsrep_node_address={host}.db.default.svc.cluster.local\n"
            )),
            "{out}"
        );
    }
    assert_snapshot!("galera_leader", leader);
    assert_snapshot!("galera_follower", follower);
}

#[test]
fn galera_bootstraps_only_the_leader_alone_and_only_when_asked() {
    let sb = Sandbox::new();
    // Asked to bootstrap, alone in DNS: the first pod of a new cluster.
    let first = render_with(
        &sb,
        "galera.cnf.j2",
        "web-0",
        &[PEERS[0]],
        &["bootstrap: true"],
        &[],
    );
    assert_eq!(
        lines_starting_with(&first, "wsrep_cluster_address="),
        ["wsrep_cluster_address=gcomm://"],
        "{first}"
    );
    assert_snapshot!("galera_bootstrap", first);
    // Asked, but the others are there: a restarted leader rejoins them.
    let rejoin = render(&sb, "galera.cnf.j2", "web-0", &["bootstrap: true"]);
    assert_eq!(
        lines_starting_with(&rejoin, "wsrep_cluster_address="),
        [ALL_PEERS]
    );
    // Asked, on a follower: never.
    let follower = render(&sb, "galera.cnf.j2", "web-1", &["bootstrap: true"]);
    assert_eq!(
        lines_starting_with(&follower, "wsrep_cluster_address="),
        [ALL_PEERS]
    );
    // Not asked, alone: list itself, which fails to join instead of bootstrapping.
    let alone = render_with(&sb, "galera.cnf.j2", "web-0", &[PEERS[0]], &[], &[]);
    assert_eq!(
        lines_starting_with(&alone, "wsrep_cluster_address="),
        ["wsrep_cluster_address=gcomm://web-0.db.default.svc.cluster.local"]
    );
}

/// `mariadbd --defaults-file=FILE --help --verbose`: parses FILE's options
/// (an unknown one is an error) and prints the values it ended up with.
fn mariadbd_parse(sb: &Sandbox, config: &str) -> crate::helpers::Outcome {
    let mariadbd = find_program("mariadbd").expect("mariadbd found");
    let file = sb.write("galera.cnf", config);
    let datadir = sb.mkdir("mysql-data");
    run(Command::new(mariadbd)
        .arg(format!("--defaults-file={}", file.display()))
        .arg(format!("--datadir={}", datadir.display()))
        .arg("--help")
        .arg("--verbose"))
}

#[test]
fn galera_configs_pass_mariadbd() {
    if !require_component("mariadbd") {
        return;
    }
    let sb = Sandbox::new();
    for (hostname, peers, vars) in [
        ("web-0", &PEERS[..], &[][..]),
        ("web-1", &PEERS[..], &[][..]),
        ("web-0", &PEERS[..1], &["bootstrap: true"][..]),
    ] {
        let out = render_with(&sb, "galera.cnf.j2", hostname, peers, vars, &[]);
        let parsed = mariadbd_parse(&sb, &out);
        assert_eq!(
            parsed.code,
            Some(0),
            "mariadbd rejects the config for {hostname}:\n{}\n--- config ---\n{out}",
            parsed.stderr
        );
        assert!(!parsed.stderr.contains("[ERROR]"), "{}", parsed.stderr);
        let address = lines_starting_with(&out, "wsrep_cluster_address=")[0]
            .trim_start_matches("wsrep_cluster_address=")
            .to_string();
        for (option, value) in [
            ("wsrep-cluster-address", address.as_str()),
            ("wsrep-node-name", hostname),
            ("wsrep-on", "TRUE"),
            ("binlog-format", "ROW"),
            ("innodb-autoinc-lock-mode", "2"),
        ] {
            assert!(
                parsed.stdout.lines().any(|l| {
                    let mut words = l.split_whitespace();
                    words.next() == Some(option)
                        && words.next() == Some(value)
                        && words.next().is_none()
                }),
                "mariadbd read {option} = {value:?} from the file\n{}",
                parsed.stdout
            );
        }
    }
    // The check can fail: mariadbd refuses a misspelt option.
    let out = render(&sb, "galera.cnf.j2", "web-1", &[]);
    let bad = mariadbd_parse(&sb, &out.replace("wsrep_node_name=", "wsrep_nodename="));
    assert_ne!(bad.code, Some(0), "{}", bad.stderr);
    assert!(bad.stderr.contains("unknown variable"), "{}", bad.stderr);
}
