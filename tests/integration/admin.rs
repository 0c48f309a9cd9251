//! The admin endpoints of `peerplate run`, over real HTTP on 127.0.0.1:
//! `/healthz` answers 200 while the loop runs; `/readyz` answers 503 until
//! every template has rendered and installed once (this pod not yet in DNS,
//! or one template failing every render), then 200, and stays 200 when a
//! template breaks later; an unknown path is 404. `/metrics` is OpenMetrics
//! text that a real parser (Python's `prometheus_client`) accepts, with every
//! family; and its numbers move: the peers gauge and renders{changed} on a
//! peer change, renders{unchanged} on a no-op cycle, renders{failed} on a
//! broken template, checks_failed on a failing `check`, reloads{signalled}
//! and {no_process}, hook_runs{ok,failed,timeout}, dns_lookups{answer} and,
//! with the server answering SERVFAIL, {failure}; the last-success timestamp
//! is recent.
//!
//! The parser: under `CI=true` a missing `prometheus_client` fails the tests
//! (CI installs it); elsewhere the format test is skipped and the counter
//! tests read the samples with a minimal line reader.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;

use crate::dns_server::{DnsServer, Mode};
use crate::helpers::{http_get, http_status, peers, poll_until, Daemon, SVC, WAIT};
use crate::pod::Pod;

/// Never set in the tests' environment (each command removes it): a template
/// reading it compiles, then fails at every render.
const UNSET: &str = "PEERPLATE_TEST_SURELY_UNSET";

// --- metrics ---------------------------------------------------------------

/// Python's OpenMetrics parser, fed the scraped text on stdin; prints one
/// `F name type` line per family and one `S name labels value` line per
/// sample (tab-separated, labels as sorted `k=v` joined by `,`).
const PARSE: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print("F\t%s\t%s" % (f.name, f.type))
    for s in f.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        print("S\t%s\t%s\t%r" % (s.name, labels, float(s.value)))
"#;

/// The interpreter: `$PEERPLATE_TEST_PYTHON` (set by .ci/run to the one it
/// installed prometheus_client into), else `python3` on PATH.
fn python() -> String {
    std::env::var("PEERPLATE_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Whether `python3` with `prometheus_client` is here. Missing: a failure
/// under `CI=true`, else false (the caller skips or falls back).
fn parser_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        Command::new(python())
            .args(["-c", "import prometheus_client.openmetrics.parser"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    if !available && std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{} with prometheus_client is not installed, and CI=true: .ci/run installs it (pip install prometheus-client)",
            python()
        );
    }
    available
}

/// A parsed scrape.
#[derive(Debug, Default)]
struct Metrics {
    /// Family name to type, e.g. `peerplate_renders` -> `counter`.
    families: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    text: String,
}

impl Metrics {
    /// Parses `text` with the real parser; panics, showing the text, if it
    /// rejects it.
    fn parse_strict(text: &str) -> Metrics {
        let mut child = Command::new(python())
            .args(["-c", PARSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed the parser");
        let out = child.wait_with_output().expect("python3 output");
        assert!(
            out.status.success(),
            "prometheus_client's OpenMetrics parser rejects /metrics:\n{}\n--- the text ---\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut m = Metrics {
            text: text.to_string(),
            ..Metrics::default()
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let parts: Vec<&str> = line.split('\t').collect();
            match parts.as_slice() {
                ["F", name, kind] => {
                    m.families.insert(name.to_string(), kind.to_string());
                }
                ["S", name, labels, value] => m.samples.push((
                    name.to_string(),
                    labels
                        .split(',')
                        .filter(|kv| !kv.is_empty())
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    value.parse().expect("a float from the parser"),
                )),
                _ => panic!("unexpected parser line {line:?}"),
            }
        }
        m
    }

    /// The minimal reader used only where the real parser is missing (and
    /// not under CI): `name{k="v",...} value` lines.
    fn parse_lines(text: &str) -> Metrics {
        let mut m = Metrics {
            text: text.to_string(),
            ..Metrics::default()
        };
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            m.samples
                .push((name.to_string(), labels, value.parse().expect("value")));
        }
        m
    }

    /// The sample `name` with exactly `labels`; 0 when absent (a counter no
    /// event has created yet).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
            .unwrap_or(0.0)
    }
}

/// GET /metrics and parse it (strictly when the parser is here).
fn scrape(port: u16) -> Metrics {
    let reply = http_get(port, "/metrics").expect("GET /metrics");
    assert_eq!(reply.status, 200, "{reply:?}");
    if parser_available() {
        Metrics::parse_strict(&reply.body)
    } else {
        Metrics::parse_lines(&reply.body)
    }
}

fn renders(m: &Metrics, template: &str, result: &str) -> f64 {
    m.value(
        "peerplate_renders_total",
        &[("template", template), ("result", result)],
    )
}

// --- the pod ---------------------------------------------------------------

/// Pod web-1 with peers from `dns` (every 100 ms, waiting for itself), templates given as (file name, source, extra keys indented by
/// 4) rendered to `out/<stem>`, and `http.listen` on a free loopback port;
/// `extra_yaml` is appended.
fn dns_pod(dns: &DnsServer, templates: &[(&str, &str, &str)], extra_yaml: &str) -> Pod {
    with_templates(
        Pod::builder().dns(&[&dns.nameserver()], "100ms"),
        templates,
        extra_yaml,
    )
}

/// The same with peers from the file `peers` (holding `ks`).
fn file_pod(ks: &[usize], templates: &[(&str, &str, &str)], extra_yaml: &str) -> Pod {
    with_templates(Pod::builder().peers_file(&peers(ks)), templates, extra_yaml)
}

fn with_templates(
    mut pod: crate::pod::PodBuilder,
    templates: &[(&str, &str, &str)],
    extra_yaml: &str,
) -> Pod {
    for (name, source, keys) in templates {
        let stem = name.trim_end_matches(".j2");
        pod = pod.template_with(name, source, &format!("out/{stem}"), keys);
    }
    pod.wait_for_self()
        .http()
        .yaml(extra_yaml)
        .env_remove(UNSET)
        .build()
}

/// Waits until GET `path` answers `status`.
fn wait_status(pod: &Pod, d: &mut Daemon, path: &str, status: u16) {
    let port = pod.port;
    d.wait_until(WAIT, &format!("GET {path} to answer {status}"), |_| {
        http_status(port, path) == status
    });
}

/// Waits until a scrape satisfies `cond`; returns that scrape.
fn wait_metrics(pod: &Pod, d: &mut Daemon, what: &str, cond: impl Fn(&Metrics) -> bool) -> Metrics {
    let port = pod.port;
    let mut last = None;
    d.wait_until(WAIT, what, |_| {
        let m = scrape(port);
        let ok = cond(&m);
        last = Some(m);
        ok
    });
    last.expect("scraped")
}

/// `/readyz` keeps answering `want` for `for_` (it does not flip on its own).
fn assert_stays(port: u16, path: &str, want: u16, for_: Duration) {
    let flipped = poll_until(for_, || http_status(port, path) != want);
    assert!(!flipped, "GET {path} stopped answering {want}");
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

// --- health and readiness --------------------------------------------------

#[test]
fn readyz_is_503_until_this_pod_is_in_dns_then_200() {
    let dns = DnsServer::start("cluster.local");
    dns.set_pods(&["web-0"]);
    let pod = dns_pod(
        &dns,
        &[("t.j2", "{% for p in peers %}{{ p }}\n{% endfor %}", "")],
        "",
    );
    let mut d = pod.start();
    let port = pod.port;

    // Polling, but web-1 is not in DNS: alive, not ready, nothing rendered.
    let healthz = http_get(port, "/healthz").expect("GET /healthz");
    assert_eq!(healthz.status, 200, "{healthz:?}");
    d.wait_for_log("waiting for this pod to appear", WAIT);
    let readyz = http_get(port, "/readyz").expect("GET /readyz");
    assert_eq!(readyz.status, 503, "{readyz:?}\n{}", d.logs());
    assert!(readyz.body.contains("not ready"), "{readyz:?}");
    assert_stays(port, "/readyz", 503, Duration::from_millis(400));
    assert_eq!(pod.read("out/t"), None, "nothing rendered yet");

    // web-1 shows up: the first render makes it ready, right away.
    dns.set_pods(&["web-0", "web-1"]);
    d.wait_until(WAIT, "out/t to be rendered", |_| {
        pod.read("out/t").is_some()
    });
    let ready = poll_until(Duration::from_secs(1), || {
        http_status(port, "/readyz") == 200
    });
    assert!(
        ready,
        "/readyz not 200 within 1s of the first render\n{}",
        d.logs()
    );
    assert_eq!(
        pod.read("out/t").as_deref(),
        Some(format!("web-0.{SVC}\nweb-1.{SVC}\n").as_str())
    );
    assert_eq!(http_status(port, "/healthz"), 200);

    // Paths that are not ours.
    for path in ["/", "/nope", "/metrics/extra", "/healthz/"] {
        let r = http_get(port, path).expect("GET");
        assert_eq!(r.status, 404, "GET {path}: {r:?}");
    }
    d.terminate();
}

#[test]
fn readyz_stays_200_when_a_template_breaks_later() {
    let pod = file_pod(&[0, 1], &[("t.j2", "count={{ peers|length }}\n", "")], "");
    let mut d = pod.start();
    wait_status(&pod, &mut d, "/readyz", 200);

    // The template now fails at every render: counted, the old output stays,
    // and the pod stays ready (readiness means "rendered once").
    pod.replace("t.j2", &format!("count={{{{ env(\"{UNSET}\") }}}}\n"));
    wait_metrics(&pod, &mut d, "renders{t.j2,failed} >= 1", |m| {
        renders(m, "t.j2", "failed") >= 1.0
    });
    // A peer change renders again, and fails again.
    pod.replace("peers", &peers(&[0, 1, 2]));
    wait_metrics(&pod, &mut d, "renders{t.j2,failed} >= 2", |m| {
        renders(m, "t.j2", "failed") >= 2.0
    });
    assert_eq!(pod.read("out/t").as_deref(), Some("count=2\n"));
    assert_eq!(http_status(pod.port, "/readyz"), 200, "{}", d.logs());
    assert_eq!(http_status(pod.port, "/healthz"), 200);
    d.terminate();
}

#[test]
fn readyz_stays_503_while_one_of_two_templates_fails_every_render() {
    // A template that does not compile stops `run` at startup (exit 2); one
    // that compiles but fails at render time lets the loop run, and keeps
    // the pod unready while the other one renders.
    let pod = file_pod(
        &[0, 1],
        &[
            // Each its own reload group: one failing does not hold the other.
            (
                "good.j2",
                "count={{ peers|length }}\n",
                "    reload: false\n",
            ),
            (
                "bad.j2",
                &format!("{{{{ env(\"{UNSET}\") }}}}\n"),
                "    reload: false\n",
            ),
        ],
        "",
    );
    let mut d = pod.start();
    d.wait_until(WAIT, "out/good to be rendered", |_| {
        pod.read("out/good").is_some()
    });
    wait_metrics(&pod, &mut d, "renders{bad.j2,failed} >= 1", |m| {
        renders(m, "bad.j2", "failed") >= 1.0
    });
    assert_eq!(pod.read("out/bad"), None);
    assert_eq!(http_status(pod.port, "/readyz"), 503, "{}", d.logs());
    assert_eq!(http_status(pod.port, "/healthz"), 200);

    // More cycles do not make it ready.
    pod.replace("peers", &peers(&[0, 1, 2]));
    d.wait_until(WAIT, "out/good to say count=3", |_| {
        pod.read("out/good").as_deref() == Some("count=3\n")
    });
    assert_stays(pod.port, "/readyz", 503, Duration::from_millis(300));

    // Fixed: the next cycle renders it, and the pod is ready.
    pod.replace("bad.j2", "fixed\n");
    wait_status(&pod, &mut d, "/readyz", 200);
    assert_eq!(pod.read("out/bad").as_deref(), Some("fixed\n"));
    d.terminate();
}

// --- metrics ---------------------------------------------------------------

/// One row of README's metrics table: the family, its OpenMetrics type and
/// its label names.
#[derive(Debug)]
struct Documented {
    family: String,
    kind: String,
    labels: Vec<String>,
}

/// README.md's "Metrics" table (`| name | type | labels | meaning |`): the
/// contract this test holds `/metrics` to. Label names are the backticked
/// words of the labels column outside parentheses (which list values).
fn documented_metrics() -> Vec<Documented> {
    let readme =
        std::fs::read_to_string(crate::helpers::repo_file("README.md")).expect("README.md");
    let table = readme
        .split_once("| name | type | labels | meaning |")
        .map(|(_, rest)| rest)
        .expect("README.md has the metrics table (| name | type | labels | meaning |)");
    let backticked = |cell: &str| -> Vec<String> {
        let mut depth = 0;
        let mut outside = String::new();
        for c in cell.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => outside.push(c),
                _ => {}
            }
        }
        outside
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    table
        .lines()
        .skip(2) // the rest of the header line, and |---|
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert!(cells.len() >= 5, "a metrics row with 4 cells: {line}");
            Documented {
                family: cells[1].trim_matches('`').to_string(),
                kind: cells[2].to_string(),
                labels: backticked(cells[3]),
            }
        })
        .collect()
}

#[test]
fn every_documented_metric_is_exported_as_openmetrics_text() {
    if !parser_available() {
        crate::helpers::skip("python3 with prometheus_client not installed");
        return;
    }
    // A pod where every family has samples: DNS peers, a template that
    // renders and reloads a live process, one whose check fails until the
    // file `pass` exists, and an on_start hook.
    let dns = DnsServer::start("cluster.local");
    dns.set_pods(&["web-0", "web-1"]);
    let pod = dns_pod(
        &dns,
        &[
            ("a.j2", "count={{ peers|length }}\n", ""),
            (
                "b.j2",
                "b {{ peers|length }}\n",
                // Its own reload group, so a's installs do not wait for it.
                "    check: \"test -e ROOT/pass\"\n    reload: false\n",
            ),
        ],
        "reload: {signal: HUP, pid_file: ROOT/app.pid, min_age: 0s}\nhooks: {on_start: \"cat > /dev/null\"}\n",
    );
    // The app survives its SIGHUPs (caught, and does nothing with them): a
    // killed one would be a zombie, which is not running, so `no_process`;
    // one that ignored them would not be sent them.
    let app = Daemon::spawn({
        let mut c = Command::new("sh");
        c.args(["-c", "trap ':' HUP; while :; do sleep 0.05; done"]);
        c
    });
    pod.sb.write("app.pid", &format!("{}\n", app.pid()));

    let mut d = pod.start();
    wait_metrics(
        &pod,
        &mut d,
        "checks_failed{b.j2} == 1 and hook_runs == 1",
        |m| {
            m.value("peerplate_checks_failed_total", &[("template", "b.j2")]) == 1.0
                && m.value(
                    "peerplate_hook_runs_total",
                    &[("hook", "on_start"), ("result", "ok")],
                ) == 1.0
        },
    );
    // Now a cycle in which everything installs: the last success is set.
    pod.sb.write("pass", "");
    dns.set_pods(&["web-0", "web-1", "web-2"]);
    wait_status(&pod, &mut d, "/readyz", 200);

    let reply = http_get(pod.port, "/metrics").expect("GET /metrics");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(
        reply
            .content_type
            .starts_with("application/openmetrics-text"),
        "{reply:?}"
    );
    assert!(reply.body.ends_with("# EOF\n"), "{}", reply.body);
    let m = Metrics::parse_strict(&reply.body);
    let documented = documented_metrics();
    assert!(
        documented.len() >= 10,
        "README's metrics table has {} rows: {documented:?}",
        documented.len()
    );
    for row in &documented {
        assert_eq!(
            m.families.get(&row.family).map(String::as_str),
            Some(row.kind.as_str()),
            "family {} (README: {})\n{}",
            row.family,
            row.kind,
            m.text
        );
        for label in &row.labels {
            assert!(
                m.samples
                    .iter()
                    .any(|(name, labels, _)| name.starts_with(&row.family)
                        && labels.contains_key(label)),
                "no sample of {} has the label {label} that README documents\n{}",
                row.family,
                m.text
            );
        }
    }
    let others: Vec<&String> = m
        .families
        .keys()
        .filter(|f| !documented.iter().any(|row| &row.family == *f))
        .collect();
    assert!(
        others.is_empty(),
        "families missing from README's metrics table: {others:?}"
    );

    assert_eq!(m.value("peerplate_peers", &[]), 3.0, "{}", m.text);
    assert!(
        m.value("peerplate_dns_lookups_total", &[("result", "answer")]) >= 2.0,
        "{}",
        m.text
    );
    assert_eq!(renders(&m, "a.j2", "changed"), 2.0, "{}", m.text);
    assert_eq!(renders(&m, "b.j2", "failed"), 1.0, "{}", m.text);
    assert_eq!(renders(&m, "b.j2", "changed"), 1.0, "{}", m.text);
    assert_eq!(
        m.value("peerplate_checks_failed_total", &[("template", "b.j2")]),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value(
            "peerplate_reloads_total",
            &[("action", "default"), ("result", "signalled")]
        ),
        2.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value(
            "peerplate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "{}",
        m.text
    );
    let last = m.value("peerplate_last_success_timestamp_seconds", &[]);
    assert!(
        (now() - last).abs() < 60.0,
        "last success {last} is not recent (now {})",
        now()
    );
    d.terminate();
    drop(app);
}

/// Prometheus' instrumentation guide: "avoid missing metrics": a counter
/// whose label values are known up front should be there at 0 from the
/// start, or `increase(...{result="failed"}[5m])` misses the first failure
/// after a restart and dashboards show "no data". prometheus-client leaves
/// out a family with no series at all (no HELP, no TYPE), so before the first
/// reload, lookup or failure these families are absent.
#[test]
fn known_series_are_there_at_zero_from_the_start() {
    let pod = file_pod(
        &[0, 1],
        &[("t.j2", "count={{ peers|length }}\n", "")],
        "reload: {signal: HUP, process: surely-not-running-anywhere}\n",
    );
    let mut d = pod.start();
    wait_status(&pod, &mut d, "/readyz", 200);
    let m = scrape(pod.port);
    for series in [
        "peerplate_renders_total{template=\"t.j2\",result=\"failed\"} 0",
        "peerplate_checks_failed_total{template=\"t.j2\"} 0",
        "peerplate_reloads_total{action=\"default\",result=\"failed\"} 0",
    ] {
        assert!(m.text.contains(series), "no {series}\n{}", m.text);
    }
    d.terminate();
}

#[test]
fn renders_and_peers_move_on_changes_no_ops_and_failures() {
    let pod = file_pod(
        &[0, 1],
        &[("t.j2", "{% for p in peers %}{{ p }}\n{% endfor %}", "")],
        "",
    );
    let mut d = pod.start();
    wait_status(&pod, &mut d, "/readyz", 200);
    let m = scrape(pod.port);
    assert_eq!(m.value("peerplate_peers", &[]), 2.0, "{}", m.text);
    assert_eq!(renders(&m, "t.j2", "changed"), 1.0, "{}", m.text);
    assert_eq!(renders(&m, "t.j2", "failed"), 0.0, "{}", m.text);
    let first_success = m.value("peerplate_last_success_timestamp_seconds", &[]);
    assert!((now() - first_success).abs() < 60.0, "{}", m.text);

    // A new peer: one more Changed render, the gauge follows, and the
    // last-success time moves on.
    std::thread::sleep(Duration::from_millis(20));
    pod.replace("peers", &peers(&[0, 1, 2]));
    let m = wait_metrics(&pod, &mut d, "peers == 3 and renders{changed} == 2", |m| {
        m.value("peerplate_peers", &[]) == 3.0 && renders(m, "t.j2", "changed") == 2.0
    });
    assert!(
        m.value("peerplate_last_success_timestamp_seconds", &[]) > first_success,
        "{}",
        m.text
    );
    assert_eq!(pod.read("out/t"), Some(peers(&[0, 1, 2])));

    // A template edit that renders the same bytes: Unchanged.
    pod.replace(
        "t.j2",
        "{# same output #}{% for p in peers %}{{ p }}\n{% endfor %}",
    );
    wait_metrics(&pod, &mut d, "renders{unchanged} == 1", |m| {
        renders(m, "t.j2", "unchanged") == 1.0
    });

    // A template that fails to render: Failed, nothing else moves.
    pod.replace("t.j2", "{{ no_such_variable }}\n");
    let m = wait_metrics(&pod, &mut d, "renders{failed} == 1", |m| {
        renders(m, "t.j2", "failed") == 1.0
    });
    assert_eq!(renders(&m, "t.j2", "changed"), 2.0, "{}", m.text);
    assert_eq!(
        m.value("peerplate_checks_failed_total", &[("template", "t.j2")]),
        0.0,
        "{}",
        m.text
    );
    assert_eq!(pod.read("out/t"), Some(peers(&[0, 1, 2])));

    // Scaling down while broken: the gauge still follows the peer set.
    pod.replace("peers", &peers(&[1]));
    wait_metrics(&pod, &mut d, "peers == 1 and renders{failed} == 2", |m| {
        m.value("peerplate_peers", &[]) == 1.0 && renders(m, "t.j2", "failed") == 2.0
    });
    d.terminate();
}

#[test]
fn a_failing_check_counts_in_checks_failed() {
    // `check` is split into words, no shell: `false`, and `sh -c '...'` with
    // its quoted script as one word.
    let pod = file_pod(
        &[0, 1],
        &[
            ("a.j2", "a {{ peers|length }}\n", "    check: \"false\"\n"),
            (
                "b.j2",
                "b {{ peers|length }}\n",
                "    check: \"sh -c 'echo refused >&2; exit 3'\"\n",
            ),
            (
                "c.j2",
                "c {{ peers|length }}\n",
                // Not in a and b's reload group, so installed on its own.
                "    check: \"test -s {staged}\"\n    reload: false\n",
            ),
        ],
        "",
    );
    let mut d = pod.start();
    // The cycle checks a, b, c in turn: wait for its end (c installed).
    let m = wait_metrics(&pod, &mut d, "checks_failed{a,b} == 1, c installed", |m| {
        m.value("peerplate_checks_failed_total", &[("template", "a.j2")]) == 1.0
            && m.value("peerplate_checks_failed_total", &[("template", "b.j2")]) == 1.0
            && renders(m, "c.j2", "changed") == 1.0
    });
    assert_eq!(renders(&m, "a.j2", "failed"), 1.0, "{}", m.text);
    assert_eq!(renders(&m, "b.j2", "failed"), 1.0, "{}", m.text);
    assert_eq!(renders(&m, "c.j2", "changed"), 1.0, "{}", m.text);
    assert_eq!(
        m.value("peerplate_checks_failed_total", &[("template", "c.j2")]),
        0.0,
        "{}",
        m.text
    );
    assert_eq!(pod.read("out/a"), None);
    assert_eq!(pod.read("out/b"), None);
    assert_eq!(pod.read("out/c").as_deref(), Some("c 2\n"));
    d.wait_for_log("refused", WAIT);
    assert_eq!(http_status(pod.port, "/readyz"), 503, "{}", d.logs());

    pod.replace("peers", &peers(&[0, 1, 2]));
    wait_metrics(&pod, &mut d, "checks_failed{a,b} == 2", |m| {
        m.value("peerplate_checks_failed_total", &[("template", "a.j2")]) == 2.0
            && m.value("peerplate_checks_failed_total", &[("template", "b.j2")]) == 2.0
    });
    d.terminate();
}

#[test]
fn reloads_count_signalled_and_no_process() {
    let pod = file_pod(
        &[0, 1],
        &[("t.j2", "count={{ peers|length }}\n", "")],
        "reload: {signal: HUP, pid_file: ROOT/app.pid}\n",
    );
    let pid_file = pod.sb.join("app.pid");

    // The "app": counts its SIGHUPs.
    let hups = pod.sb.join("hups");
    let mut app = Daemon::spawn({
        let mut c = Command::new("sh");
        c.args([
            "-c",
            &format!(
                "trap 'echo hup >> {}' HUP\nwhile :; do sleep 0.05; done\n",
                hups.display()
            ),
        ]);
        c
    });
    std::fs::write(&pid_file, format!("{}\n", app.pid())).expect("write pid file");
    // Let sh install its trap before anything can signal it.
    std::thread::sleep(Duration::from_millis(200));

    let mut d = pod.start();
    // The first install is a change: one signal.
    let m = wait_metrics(&pod, &mut d, "reloads{signalled} == 1", |m| {
        m.value(
            "peerplate_reloads_total",
            &[("action", "default"), ("result", "signalled")],
        ) == 1.0
    });
    assert_eq!(
        m.value(
            "peerplate_reloads_total",
            &[("action", "default"), ("result", "no_process")]
        ),
        0.0,
        "{}",
        m.text
    );
    d.wait_until(WAIT, "the app to get its SIGHUP", |_| {
        std::fs::read_to_string(&hups).unwrap_or_default() == "hup\n"
    });

    // Another change: another signal.
    pod.replace("peers", &peers(&[0, 1, 2]));
    wait_metrics(&pod, &mut d, "reloads{signalled} == 2", |m| {
        m.value(
            "peerplate_reloads_total",
            &[("action", "default"), ("result", "signalled")],
        ) == 2.0
    });

    // The app is gone (its pid file left behind): NoProcess, not Failed.
    app.stop_with(Signal::SIGKILL, Duration::from_secs(2));
    pod.replace("peers", &peers(&[0, 1]));
    let m = wait_metrics(&pod, &mut d, "reloads{no_process} == 1", |m| {
        m.value(
            "peerplate_reloads_total",
            &[("action", "default"), ("result", "no_process")],
        ) == 1.0
    });
    assert_eq!(
        m.value(
            "peerplate_reloads_total",
            &[("action", "default"), ("result", "failed")]
        ),
        0.0,
        "{}",
        m.text
    );

    // No pid file at all (the app not started yet): NoProcess too.
    std::fs::remove_file(&pid_file).expect("remove pid file");
    pod.replace("peers", &peers(&[1]));
    let m = wait_metrics(&pod, &mut d, "reloads{no_process} == 2", |m| {
        m.value(
            "peerplate_reloads_total",
            &[("action", "default"), ("result", "no_process")],
        ) == 2.0
    });
    assert_eq!(
        m.value(
            "peerplate_reloads_total",
            &[("action", "default"), ("result", "signalled")]
        ),
        2.0,
        "{}",
        m.text
    );
    d.terminate();
}

#[test]
fn hook_runs_count_ok_failed_and_timeout() {
    let pod = file_pod(
        &[0, 1],
        &[("t.j2", "count={{ peers|length }}\n", "")],
        "hooks:\n  on_start: \"cat > /dev/null\"\n  on_change: \"sh ROOT/on-change.sh\"\n  timeout: 300ms\n",
    );
    let root = pod.sb.path().display().to_string();
    // ok: exit 0; hang: outlive the timeout; otherwise: exit 1.
    pod.sb.write(
        "on-change.sh",
        &format!(
            "cat > /dev/null\nif [ -e {root}/ok ]; then exit 0; fi\nif [ -e {root}/hang ]; then exec sleep 5; fi\nexit 1\n"
        ),
    );

    let mut d = pod.start();
    wait_metrics(&pod, &mut d, "hook_runs{on_start,ok} == 1", |m| {
        m.value(
            "peerplate_hook_runs_total",
            &[("hook", "on_start"), ("result", "ok")],
        ) == 1.0
    });

    let on_change = |m: &Metrics, result: &str| {
        m.value(
            "peerplate_hook_runs_total",
            &[("hook", "on_change"), ("result", result)],
        )
    };
    pod.replace("peers", &peers(&[0, 1, 2]));
    wait_metrics(&pod, &mut d, "hook_runs{on_change,failed} >= 1", |m| {
        on_change(m, "failed") >= 1.0
    });
    // A failed hook runs again (backoff, 0.5 s first), for the latest set:
    // now it succeeds.
    pod.sb.write("ok", "");
    wait_metrics(&pod, &mut d, "hook_runs{on_change,ok} == 1", |m| {
        on_change(m, "ok") == 1.0
    });

    std::fs::remove_file(pod.sb.join("ok")).expect("remove ok");
    pod.sb.write("hang", "");
    pod.replace("peers", &peers(&[1]));
    let m = wait_metrics(&pod, &mut d, "hook_runs{on_change,timeout} >= 1", |m| {
        on_change(m, "timeout") >= 1.0
    });
    assert!(on_change(&m, "failed") >= 1.0, "{}", m.text);
    assert_eq!(on_change(&m, "ok"), 1.0, "{}", m.text);
    assert_eq!(
        m.value(
            "peerplate_hook_runs_total",
            &[("hook", "on_start"), ("result", "ok")]
        ),
        1.0,
        "{}",
        m.text
    );
    d.terminate();
}

#[test]
fn dns_lookups_count_answers_and_servfail_failures() {
    let dns = DnsServer::start("cluster.local");
    dns.set_pods(&["web-0", "web-1"]);
    let pod = dns_pod(&dns, &[("t.j2", "count={{ peers|length }}\n", "")], "");
    let mut d = pod.start();
    wait_status(&pod, &mut d, "/readyz", 200);
    let answer = |m: &Metrics| m.value("peerplate_dns_lookups_total", &[("result", "answer")]);
    let failure = |m: &Metrics| m.value("peerplate_dns_lookups_total", &[("result", "failure")]);
    let m = wait_metrics(&pod, &mut d, "dns_lookups{answer} >= 2", |m| {
        answer(m) >= 2.0
    });
    assert_eq!(failure(&m), 0.0, "{}", m.text);
    assert_eq!(m.value("peerplate_peers", &[]), 2.0, "{}", m.text);

    // SERVFAIL: failures count up, the peer set (and the output) stay.
    dns.set_mode(Mode::ServFail);
    let m = wait_metrics(&pod, &mut d, "dns_lookups{failure} >= 3", |m| {
        failure(m) >= 3.0
    });
    assert_eq!(m.value("peerplate_peers", &[]), 2.0, "{}", m.text);
    assert_eq!(pod.read("out/t").as_deref(), Some("count=2\n"));
    assert_eq!(http_status(pod.port, "/readyz"), 200);
    // The outage is one source error of its kind (logged once), however
    // many polls fail in it.
    assert_eq!(
        m.value("peerplate_source_errors_total", &[("kind", "lookup")]),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value("peerplate_source_errors_total", &[("kind", "watch")]),
        0.0,
        "{}",
        m.text
    );

    // Back: answers count again, failures stop.
    dns.set_mode(Mode::Normal);
    let answered = answer(&m);
    let m = wait_metrics(&pod, &mut d, "dns_lookups{answer} to grow again", |m| {
        answer(m) >= answered + 2.0
    });
    let failed = failure(&m);
    std::thread::sleep(Duration::from_millis(300));
    let m = scrape(pod.port);
    assert_eq!(failure(&m), failed, "{}", m.text);
    d.terminate();
}
