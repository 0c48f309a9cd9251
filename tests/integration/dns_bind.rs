//! The `dns` peer source against a real BIND (`named` from Debian's bind9),
//! changed live with `nsupdate` the way a StatefulSet scales: 2 -> 3 -> 1
//! pods re-render each time in ordinal order, and 300 pods (an answer BIND
//! truncates over UDP) all reach the output. Skipped on a machine without
//! bind9; a failure under `CI=true`.

use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::bind_server::{self, Bind};
use crate::dns::{dns_pod, expected, wait_for_installs, DEFAULT};
use crate::dns_server::{ask, pod_names};
use crate::helpers::Daemon;
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
