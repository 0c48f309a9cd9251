//! The `dns` peer source against a real BIND (`named` from Debian's bind9),
//! changed live with `nsupdate` the way a StatefulSet scales: 2 -> 3 -> 1
//! pods re-render each time in ordinal order, and 300 pods (an answer BIND
//! truncates over UDP) all reach the output. Skipped on a machine without
//! bind9; a failure under `CI=true`.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::bind_server::{self, Bind};
use crate::dns::{count_lines, dns_pod, expected, wait_for_installs, Opts, DEFAULT};
use crate::dns_server::{ask, pod_names};
use crate::helpers::Daemon;
use crate::helpers::{SVC, WAIT};
use crate::pod::Pod;

/// BIND serving web-0 and web-1, and pod web-1 asking it, started, once it
/// has rendered both; None (a skip) without bind9 on a laptop.
fn started() -> Option<(Bind, Pod, Daemon)> {
    if !bind_server::available() {
        return None;
    }
    let bind = Bind::start(&["web-0", "web-1"]);
    let pod = dns_pod(&bind.nameserver(), &DEFAULT);
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    Some((bind, pod, d))
}

#[test]
fn bind_scaling_through_nsupdate_rerenders() {
    let Some((mut bind, pod, mut d)) = started() else {
        return;
    };

    bind.set_pods(&["web-0", "web-1", "web-2"]);
    pod.wait_for(&mut d, &expected(&["web-0", "web-1", "web-2"], false));

    // Down to two: this pod (web-1) stays; a set without it would be held.
    bind.set_pods(&["web-0", "web-1"]);
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    wait_for_installs(&mut d, 3);
    assert!(d.is_running(), "{}", d.logs());
}

#[test]
fn bind_three_hundred_pods_all_reach_the_output() {
    let Some((mut bind, pod, mut d)) = started() else {
        return;
    };

    bind.scale(300);
    // BIND cannot fit this answer in a UDP datagram: the client must use TCP.
    let udp = ask(
        bind.addr(),
        "nginx.default.svc.cluster.local.",
        RecordType::SRV,
        Duration::from_secs(2),
    )
    .expect("BIND answers over UDP");
    assert!(
        udp.metadata.truncation,
        "300 SRV records are truncated over UDP"
    );
    let names = pod_names(300);
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    pod.wait_for(&mut d, &expected(&hosts, false));
    assert_eq!(pod.output().unwrap_or_default().lines().count(), 301);
}

/// BIND serving `n` pods (`minimal` responses: no additionals) and pod
/// web-1 asking it with `opts`, once it has rendered them all.
fn started_with(n: usize, minimal: bool, opts: &Opts) -> Option<(Bind, Pod, Daemon)> {
    if !bind_server::available() {
        return None;
    }
    let names = pod_names(n);
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    let bind = Bind::start_with(
        &hosts,
        bind_server::Records {
            minimal_responses: minimal,
            ..bind_server::Records::default()
        },
    );
    let pod = dns_pod(&bind.nameserver(), opts);
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&hosts, opts.addresses));
    // Let the fetch window after the first serial seen pass.
    std::thread::sleep(Duration::from_secs(3));
    Some((bind, pod, d))
}

#[test]
fn bind_1000_quiet_pods_cost_soa_polls_and_refreshes_and_a_new_pod_shows_at_once() {
    let opts = Opts {
        dns_extra: "refresh: 10s",
        ..DEFAULT
    };
    let Some((mut bind, pod, mut d)) = started_with(1000, false, &opts) else {
        return;
    };
    // 3 quiet seconds at a 200 ms interval: the SOA every poll, the SRV
    // set at most once (a refresh at an edge). How many fetches a quiet
    // serial costs over time (one per refresh) is the unit test
    // peers::dns::schedule::tests::a_quiet_serial_costs_one_fetch_per_refresh.
    let (srv, soa) = (bind.count("SRV"), bind.count("SOA"));
    std::thread::sleep(Duration::from_secs(3));
    let (srv, soa) = (bind.count("SRV") - srv, bind.count("SOA") - soa);
    assert!(soa >= 5, "the SOA is asked every poll: {soa} in 3 s");
    assert!(
        srv <= 1,
        "3 s at refresh 10s allow one SRV fetch (a refresh at an edge), saw {srv}"
    );
    assert!(d.is_running(), "{}", d.logs());

    // One pod more: it shows on the poll after the update, not the refresh.
    let names = pod_names(1001);
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    bind.scale(1001);
    let polls = bind.count("SOA");
    pod.wait_for(&mut d, &expected(&hosts, false));
    let took = bind.count("SOA") - polls;
    // Interval (one poll) plus one second (five polls of 200 ms).
    assert!(
        took <= 6,
        "the new pod showed {took} polls after the update, more than interval + 1 s"
    );
}

#[test]
fn bind_300_pods_with_addresses_asks_addresses_only_for_a_new_pod() {
    let opts = Opts {
        addresses: true,
        ..DEFAULT
    };
    // minimal-responses: no A records in the SRV answer, so they are asked.
    let Some((mut bind, pod, mut d)) = started_with(300, true, &opts) else {
        return;
    };
    let asked = |bind: &Bind| {
        bind.queries()
            .into_iter()
            .filter(|(_, t)| t == "A" || t == "AAAA")
            .collect::<Vec<_>>()
    };
    let first = asked(&bind);
    assert!(
        first.len() >= 600,
        "the first round asks A and AAAA of each pod"
    );
    // Quiet, within the TTL (30 s): no address queries at all.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        asked(&bind).len(),
        first.len(),
        "no address queries while nothing changes"
    );

    let names = pod_names(301);
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    bind.scale(301);
    pod.wait_for(&mut d, &expected(&hosts, true));
    let new = asked(&bind).split_off(first.len());
    let web300 = "web-300.nginx.default.svc.cluster.local".to_string();
    assert_eq!(
        new,
        vec![
            (web300.clone(), "A".to_string()),
            (web300, "AAAA".to_string())
        ],
        "one new pod: queries for that pod only"
    );
}

#[test]
fn bind_a_change_of_1000_peers_to_999_logs_one_short_line() {
    // BIND: the in-process server cannot fit 1,000 SRV records in 64 KiB.
    let Some((mut bind, pod, mut d)) = started_with(1000, false, &DEFAULT) else {
        return;
    };
    let names = pod_names(1000);
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    let first = d.wait_for_line(0, &["peer set changed"], WAIT);
    assert!(
        first.contains("count=1000") && first.contains("\"and 990 more\"]"),
        "the first set lists ten names and a count: {first}"
    );
    let mark = d.mark();
    bind.scale(999);
    pod.wait_for(&mut d, &expected(&hosts[..999], false));
    let line = d.wait_for_line(mark, &["peer set changed"], WAIT);
    assert!(line.len() < 2048, "{} bytes: {line}", line.len());
    assert!(
        line.contains("count=999")
            && line.contains("added=[]")
            && line.contains(&format!("removed=[\"web-999.{SVC}\"]")),
        "{line}"
    );
    assert_eq!(count_lines(&d, mark, "peer set changed"), 1, "{}", d.logs());
    assert_eq!(
        count_lines(&d, 0, "peer set in full"),
        0,
        "the full list only at -vv"
    );
}
