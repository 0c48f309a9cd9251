//! Render time: what one cycle spends turning a peer set into bytes.
//!
//! For 10, 1,000 and 10,000 peers (`web-0.nginx.default.svc.cluster.local`,
//! ...) this measures, through the library API, two templates:
//!
//! - `seed`: the shipped `templates/nginx.conf.j2`, which only looks at the
//!   leader and this pod;
//! - `upstream`: an nginx `upstream` block that loops over every peer
//!   (`server {{ p.fqdn }}:80;` per peer), written to a temp file.
//!
//! For each, `cycle` is what a render cycle does (build the context from the
//! config and the peer set, then render), and `render_only` is the render with
//! a context built once outside the timed loop, so the difference is the
//! context's cost. `peer_set` times `PeerSet::from_names` (parse, validate,
//! sort), which the peer source does before a cycle is even due.
//!
//! Run: `cargo bench --bench render` (about a minute on 2 cores). One group:
//! `cargo bench --bench render -- upstream`. Numbers are informational; no
//! test asserts them.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use peerplate::peers::PeerSet;
use peerplate::render::{context, Renderer};
use peerplate::Config;

const SIZES: [usize; 3] = [10, 1_000, 10_000];

const UPSTREAM: &str = "\
events {}
http {
  upstream web {
{% for p in peers %}
    server {{ p.fqdn }}:80;
{% endfor %}
  }
  server {
    listen 80;
    location / { proxy_pass http://web; }
  }
}
";

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("web-{i}.nginx.default.svc.cluster.local"))
        .collect()
}

fn config(template: &Path, dir: &Path) -> Config {
    let yaml = format!(
        "identity: {{hostname: web-1, namespace: default}}\n\
         templates:\n  - source: {}\n    destination: /tmp/unused\n",
        template.display()
    );
    let env = peerplate::config::Env::from_process();
    Config::parse(&yaml, &dir.join("peerplate.yaml"), &env).expect("the bench config parses")
}

fn bench_template(c: &mut Criterion, group: &str, template: &Path, dir: &Path) {
    let config = config(template, dir);
    let renderer = Renderer::load(&config);
    assert!(
        renderer.errors().is_empty(),
        "template loads: {:?}",
        renderer.errors()
    );
    let mut g = c.benchmark_group(group);
    for n in SIZES {
        let names = names(n);
        let peers = PeerSet::from_names(names.iter().map(String::as_str), "bench");
        assert_eq!(peers.len(), n, "every bench name is a valid peer");
        let ctx = context(&config, &peers, peers.iter().next());
        let out = renderer.render(0, &ctx).expect("the template renders");
        eprintln!("{group}/{n}: output {} bytes", out.len());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("cycle", n), &peers, |b, peers| {
            b.iter(|| {
                let ctx = context(&config, black_box(peers), peers.iter().next());
                renderer.render(0, &ctx).expect("renders")
            })
        });
        g.bench_with_input(BenchmarkId::new("render_only", n), &ctx, |b, ctx| {
            b.iter(|| renderer.render(0, black_box(ctx)).expect("renders"))
        });
    }
    g.finish();
}

fn bench_peer_set(c: &mut Criterion) {
    let mut g = c.benchmark_group("peer_set");
    for n in SIZES {
        let names = names(n);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("from_names", n), &names, |b, names| {
            b.iter(|| PeerSet::from_names(names.iter().map(String::as_str), "bench"))
        });
    }
    g.finish();
}

fn main() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.96.0.10\n").expect("write resolv.conf");
    // Set before any config is parsed; the bench is single-threaded here.
    std::env::set_var("PEERPLATE_RESOLV_CONF", &resolv);

    let seed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates/nginx.conf.j2");
    let upstream = dir.path().join("upstream.conf.j2");
    std::fs::write(&upstream, UPSTREAM).expect("write the upstream template");

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_template(&mut c, "seed", &seed, dir.path());
    bench_template(&mut c, "upstream", &upstream, dir.path());
    bench_peer_set(&mut c);
    c.final_summary();
}
