//! The `http` reload action against real Prometheus (Debian's package),
//! started on loopback with `--web.enable-lifecycle`, its config rendered by
//! peerplate with the peers as scrape targets (`examples/prometheus`):
//!
//! - a peer change: Prometheus's own API (`/api/v1/status/config`,
//!   `/api/v1/targets`) shows the new target, counted `accepted`;
//! - a template that renders a config Prometheus refuses: `/-/reload`
//!   answers 500, the file on disk goes back to the running config,
//!   Prometheus keeps the old targets, the log carries Prometheus's reason,
//!   `rejected` is counted, and the same bad render is not tried again on a
//!   peer change, only after the template changes.

use std::process::Command;

use crate::helpers::{
    find_program, free_port, http_get, http_status, metric, peers, repo_file, require_component,
    Daemon, WAIT,
};
use crate::pod::Pod;

const WEB: &str = "nginx.default.svc.cluster.local";

fn reloads(pod: &Pod, result: &str) -> f64 {
    metric(
        pod.port,
        &format!("peerplate_reloads_total{{action=\"prometheus\",result=\"{result}\"}}"),
    )
    .unwrap_or(-1.0)
}

/// `GET path` on Prometheus, the body.
fn api(port: u16, path: &str) -> String {
    http_get(port, path).map(|r| r.body).unwrap_or_default()
}

/// The scrape targets Prometheus has now (`/api/v1/targets`), sorted.
fn targets(port: u16) -> Vec<String> {
    let body = api(port, "/api/v1/targets");
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    let mut found: Vec<String> = json["data"]["activeTargets"]
        .as_array()
        .map(|targets| {
            targets
                .iter()
                .filter_map(|t| t["labels"]["instance"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn instances(ks: &[usize]) -> Vec<String> {
    ks.iter().map(|k| format!("web-{k}.{WEB}:9100")).collect()
}

#[test]
fn prometheus_reloads_accepts_a_peer_change_and_a_refused_config_is_rolled_back() {
    if !require_component("prometheus") {
        return;
    }
    let prometheus = find_program("prometheus").expect("prometheus");
    let template = std::fs::read_to_string(repo_file("examples/prometheus/prometheus.yml.j2"))
        .expect("the example's template");
    let prom_port = free_port();
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template_with(
            "prometheus.yml.j2",
            &template,
            "prom/prometheus.yml",
            "    reload: prometheus\n",
        )
        .http()
        .yaml(&format!(
            "reloads:\n  prometheus: {{http: {{url: \"http://127.0.0.1:{prom_port}/-/reload\", method: POST, timeout: 5s, retries: 3}}}}\n"
        ))
        .build();
    let mut d = pod.start();
    pod.wait_for_output_where(&mut d, "the first render", |o| o.contains("web-1."));
    // Nothing listens yet: no_process, the file stays, the reload is owed.
    d.wait_until(WAIT, "no_process", |_| reloads(&pod, "no_process") >= 1.0);

    let data = pod.sb.mkdir("prom/data");
    let mut prom = Daemon::spawn({
        let mut c = Command::new(&prometheus);
        c.arg(format!(
            "--config.file={}",
            pod.sb.join("prom/prometheus.yml").display()
        ))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--web.enable-lifecycle")
        .arg("--log.level=warn");
        c
    });
    prom.wait_until(WAIT, "Prometheus to be ready", |_| {
        http_status(prom_port, "/-/ready") == 200
    });
    // Prometheus hands targets to its scrape manager every few seconds.
    prom.wait_until(WAIT, "the first targets", |_| {
        targets(prom_port) == instances(&[0, 1])
    });

    // The owed reload converges once Prometheus answers.
    d.wait_until(WAIT, "the owed reload accepted", |_| {
        reloads(&pod, "accepted") == 1.0
    });
    d.wait_for_line(0, &["reload answered after trying again"], WAIT);

    // A peer change: rendered, POST /-/reload, accepted; Prometheus's API
    // shows the new target.
    pod.replace("peers", &peers(&[0, 1, 2]));
    d.wait_until(WAIT, "accepted", |_| reloads(&pod, "accepted") == 2.0);
    let config = api(prom_port, "/api/v1/status/config");
    assert!(config.contains(&format!("web-2.{WEB}:9100")), "{config}");
    prom.wait_until(WAIT, "the new target", |_| {
        targets(prom_port) == instances(&[0, 1, 2])
    });
    let good = pod.output().expect("the output");

    // A config Prometheus refuses: 500, rolled back, the reason in the log.
    let mark = d.mark();
    pod.replace(
        "prometheus.yml.j2",
        "global:\n  scrape_interval: banana\nscrape_configs: []\n",
    );
    let line = d.wait_for_line(mark, &["reload rejected by the app", "HTTP 500"], WAIT);
    assert!(
        line.contains("failed to reload config") && line.contains("banana"),
        "Prometheus's reason: {line}"
    );
    d.wait_for_line(mark, &["rolled back", "template=prometheus.yml.j2"], WAIT);
    assert_eq!(
        pod.output().as_deref(),
        Some(good.as_str()),
        "the running config is back"
    );
    assert_eq!(reloads(&pod, "rejected"), 1.0);
    assert_eq!(
        targets(prom_port),
        instances(&[0, 1, 2]),
        "Prometheus kept its targets"
    );

    // A peer change renders the same bad bytes: not installed, not tried
    // (a rejection is an answer: nothing is owed for those bytes).
    let mark = d.mark();
    pod.replace("peers", &peers(&[0, 1, 2, 3]));
    d.wait_for_line(
        mark,
        &["not installed: the app rejected these same bytes"],
        WAIT,
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(reloads(&pod, "rejected"), 1.0, "{}", d.logs());
    assert_eq!(pod.output().as_deref(), Some(good.as_str()));

    // The template fixed: installed, accepted, the fourth peer is a target.
    pod.replace("prometheus.yml.j2", &template);
    d.wait_until(WAIT, "accepted again", |_| reloads(&pod, "accepted") == 3.0);
    prom.wait_until(WAIT, "four targets", |_| {
        targets(prom_port) == instances(&[0, 1, 2, 3])
    });
}

#[test]
fn prometheus_whose_config_changes_0_to_50ms_after_it_starts_never_dies_of_the_reload_signal() {
    if !require_component("prometheus") {
        return;
    }
    let prometheus = find_program("prometheus").expect("prometheus");
    let template = std::fs::read_to_string(repo_file("examples/prometheus/prometheus.yml.j2"))
        .expect("the example's template");
    let pod = Pod::builder()
        .peers_file(&peers(&[0, 1]))
        .template_with(
            "prometheus.yml.j2",
            &template,
            "prom/prometheus.yml",
            "    reload: prometheus\n",
        )
        .http()
        .yaml("reloads:\n  prometheus: {signal: HUP, process: prometheus}\n")
        .build();
    let mut d = pod.start();
    pod.wait_for_output_where(&mut d, "the first render", |o| o.contains("web-1."));
    for round in 0..5usize {
        let prom_port = free_port();
        let data = pod.sb.mkdir(&format!("prom/data{round}"));
        let mut prom = Daemon::spawn({
            let mut c = Command::new(&prometheus);
            c.arg(format!(
                "--config.file={}",
                pod.sb.join("prom/prometheus.yml").display()
            ))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn");
            c
        });
        // The config changes 0-50 ms after Prometheus started, before it
        // handles SIGHUP (whose default action is to end it).
        std::thread::sleep(std::time::Duration::from_millis(fastrand::u64(0..=50)));
        let ks: Vec<usize> = (0..round + 3).collect();
        pod.replace("peers", &peers(&ks[..]));
        let want = format!("web-{}.{WEB}:9100", round + 2);
        prom.wait_until(WAIT, "Prometheus with the new config", |_| {
            api(prom_port, "/api/v1/status/config").contains(&want)
        });
        assert!(
            prom.is_running(),
            "round {round}: Prometheus died\n{}",
            prom.logs()
        );
        drop(prom);
    }
    assert!(d.is_running(), "{}", d.logs());
}
