//! The `dns` peer source against the in-process server of `dns_server`
//! (CoreDNS's answer format, TTL 30, records changed while peerplate runs,
//! polled every 200 ms): scaling re-renders in ordinal order; a pod waits for
//! its own record, logging the wait once; 300 pods come through the TCP
//! retry; SERVFAIL, a silent server and a stopped server keep the output byte
//! for byte with one warning per outage, and it recovers; NXDOMAIN renders no
//! peers; names that are not host names never reach the output; a change is
//! seen within an interval whatever the TTL; polls keep a fixed beat, one
//! interval apart; `once` exits 0, or 3 naming the
//! query and what it saw; `addresses: true` takes addresses from the
//! additional section or looks them up, and follows a new IP; the cluster
//! domain comes from resolv.conf's search list; `render` asks once (and
//! exits 1 when DNS does not answer); a second nameserver stands in for a
//! dead first one; and a closed stderr neither stops polling nor swallows
//! SIGTERM.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::dns_server::{pod_ip, pod_names, DnsServer, Mode, Proto};
use crate::helpers::{inode_and_mtime, run, Daemon, SVC, WAIT};
pub use crate::pod::Pod;

/// One line per peer: name, port and (when known) addresses; a count first
/// so an empty peer set still writes something.
const TEMPLATE: &str = "count={{ peers|length }}\n{% for p in peers %}\n{{ p }} {{ p.port }}{{ \" \" ~ p.addresses|join(\",\") if p.addresses else \"\" }}\n{% endfor %}";

/// The options a test varies.
pub struct Opts {
    /// `cluster_domain:`; None leaves it to resolv.conf.
    pub cluster_domain: Option<&'static str>,
    pub addresses: bool,
    pub timeout: &'static str,
    /// More keys of `peers:`, each line indented by two spaces.
    pub peers_extra: &'static str,
    /// More keys of `peers.dns:` (one line, like `refresh: 2s`).
    pub dns_extra: &'static str,
}

pub const DEFAULT: Opts = Opts {
    cluster_domain: Some("cluster.local"),
    addresses: false,
    timeout: "0s",
    peers_extra: "",
    dns_extra: "",
};

/// Pod web-1 of StatefulSet `web` behind Service `nginx`, asking
/// `nameserver` (`127.0.0.1:PORT`) every 200 ms and waiting for itself; its
/// output (`out/peers.txt`) lists the peers.
pub fn dns_pod(nameserver: &str, opts: &Opts) -> Pod {
    dns_pod_asking(&[nameserver], opts)
}

pub fn dns_pod_asking(nameservers: &[&str], opts: &Opts) -> Pod {
    Pod::builder()
        .dns(nameservers, "200ms")
        .cluster_domain(opts.cluster_domain)
        .dns_option(&format!("addresses: {}", opts.addresses))
        .dns_option(opts.dns_extra)
        .wait_for_self()
        .peers_option(&format!("timeout: {}", opts.timeout))
        .peers_option(opts.peers_extra)
        .template("peers.j2", TEMPLATE, "out/peers.txt")
        .build()
}

/// The expected output for `hosts` (in the expected order), without or with
/// their [`pod_ip`]s.
pub fn expected(hosts: &[&str], addresses: bool) -> String {
    let mut s = format!("count={}\n", hosts.len());
    for h in hosts {
        s.push_str(&format!("{h}.{SVC} 80"));
        if addresses {
            s.push_str(&format!(" {}", pod_ip(h)));
        }
        s.push('\n');
    }
    s
}

/// Waits until stderr has `n` `rendered ... changed=true` lines: the output
/// file is in place a moment before its log line is written.
pub fn wait_for_installs(daemon: &mut Daemon, n: usize) {
    daemon.wait_until(WAIT, &format!("{n} installs logged"), |d| {
        count_lines(d, 0, "changed=true") >= n
    });
}

/// How many stderr lines since `mark` contain `text`.
pub fn count_lines(daemon: &Daemon, mark: usize, text: &str) -> usize {
    daemon
        .lines_since(mark)
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

#[test]
fn scaling_rerenders_in_ordinal_order() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));

    dns.scale(3);
    pod.wait_for(&mut d, &expected(&["web-0", "web-1", "web-2"], false));

    // The server answers in name order (web-10 before web-2); the output is
    // in ordinal order.
    dns.scale(11);
    let names = pod_names(11);
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    pod.wait_for(&mut d, &expected(&hosts, false));

    // Down to two (this pod, web-1, stays in the set: a set without it is
    // held, see nxdomain_after_the_last_pod_is_held_not_rendered).
    dns.scale(2);
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    wait_for_installs(&mut d, 4);
    let renders = count_lines(&d, 0, "changed=true");
    assert_eq!(renders, 4, "one install per peer set\n{}", d.logs());
    assert!(d.is_running());
}

#[test]
fn waits_for_its_own_record_then_renders() {
    let dns = DnsServer::start("cluster.local");
    dns.set_pods(&["web-0"]);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut d = pod.start();
    d.wait_for_log("waiting for this pod to appear in the peer set", WAIT);
    let polls = dns.queries_of(RecordType::SOA);
    // Several polls go by: nothing is written and the wait is logged once.
    d.wait_until(WAIT, "five more polls", |_| {
        dns.queries_of(RecordType::SOA) >= polls + 5
    });
    assert_eq!(
        pod.output(),
        None,
        "nothing rendered before web-1 is in DNS"
    );
    assert_eq!(
        count_lines(&d, 0, "waiting for this pod to appear in the peer set"),
        1,
        "{}",
        d.logs()
    );
    let line = d.wait_for_line(0, &["waiting for this pod"], WAIT);
    assert!(
        line.contains(&format!("web-1.{SVC}")) && line.contains(&format!("web-0.{SVC}")),
        "the wait names the pod waited for and the peers seen: {line}"
    );

    dns.set_pods(&["web-0", "web-1"]);
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    d.wait_for_log("this pod is in the peer set", WAIT);
    assert_eq!(count_lines(&d, 0, "this pod is in the peer set"), 1);
    assert_eq!(
        count_lines(&d, 0, "waiting for this pod to appear"),
        1,
        "{}",
        d.logs()
    );
}

/// Polls keep a fixed beat: poll k asks its SOA question k intervals after
/// the first one did, give or take the thread's wake-up, so the offsets
/// from the beat do not drift. Each poll used to wait the interval less up
/// to 5% (30 polls of 200 ms came about 145 ms early by the end), and a
/// sleep of one interval after each poll would drift the other way by the
/// poll's own time. A slow poll that skips a beat counts as skipping it.
#[test]
fn polls_keep_a_fixed_beat_one_interval_apart() {
    let dns = DnsServer::start("cluster.local");
    dns.set_pods(&["web-0", "web-1"]);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    let from = dns.arrivals_of(RecordType::SOA).len();
    d.wait_until(WAIT, "31 more polls", |_| {
        dns.arrivals_of(RecordType::SOA).len() >= from + 31
    });
    let soa = dns.arrivals_of(RecordType::SOA);
    let polls = &soa[from..from + 31];
    let interval = 0.2;
    // Each poll's beat: the next one, or a later one after a skip.
    let mut beat = 0.0;
    let mut offsets_ms = vec![0.0];
    for pair in polls.windows(2) {
        let gap = pair[1].duration_since(pair[0]).as_secs_f64();
        beat += (gap / interval).round().max(1.0);
        let since = pair[1].duration_since(polls[0]).as_secs_f64();
        offsets_ms.push((since - beat * interval) * 1000.0);
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let drift = median(&offsets_ms[21..]) - median(&offsets_ms[..10]);
    assert!(
        drift.abs() < 15.0,
        "the last ten polls are as far off the beat as the first ten: drift {drift:.1} ms (offsets: {offsets_ms:.1?})"
    );
}

/// A pod asking `dns`, which serves 300 pods, once its output lists them
/// all (a count line and 300 peers).
fn three_hundred_pods_rendered(dns: &DnsServer) -> Daemon {
    dns.scale(300);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut d = pod.start();
    let names = pod_names(300);
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    pod.wait_for(&mut d, &expected(&hosts, false));
    let text = pod.output().unwrap_or_default();
    assert_eq!(text.lines().count(), 301, "count line + 300 peers");
    d
}

#[test]
fn three_hundred_pods_arrive_over_tcp() {
    let dns = DnsServer::start("cluster.local");
    let _d = three_hundred_pods_rendered(&dns);
    assert!(
        dns.queries(Proto::Udp, RecordType::SRV) >= 1,
        "asked over UDP first"
    );
    assert!(
        dns.queries(Proto::Tcp, RecordType::SRV) >= 1,
        "the truncated UDP answer was retried over TCP"
    );
}

/// A server that ignores the 1,232 bytes peerplate offers and sends 300 SRV
/// records (~17 kB) in one datagram: peerplate's UDP buffer (4 KiB) holds
/// only its start, so the answer is asked again over TCP, as a truncated
/// one is, and every peer arrives.
#[test]
fn an_answer_longer_than_the_udp_buffer_is_asked_again_over_tcp() {
    let dns = DnsServer::start("cluster.local");
    dns.set_udp_oversize(true);
    let d = three_hundred_pods_rendered(&dns);
    assert!(
        dns.queries(Proto::Tcp, RecordType::SRV) >= 1,
        "the datagram that filled the buffer was asked again over TCP"
    );
    assert!(!d.logs().contains("WARN"), "{}", d.logs());
}

/// How the server fails in an outage test.
#[derive(Clone, Copy)]
enum Outage {
    Servfail,
    Refused,
    Silent,
    Stopped,
}

/// Two pods rendered; the server fails (and the StatefulSet scales to 3
/// meanwhile); over several polls the output stays byte for byte, one warning
/// is logged and nothing is rendered; when the server is back, the 3 pods
/// render and recovery is logged once.
fn outage(kind: Outage, pods: usize) {
    let mut dns = DnsServer::start("cluster.local");
    dns.scale(pods);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut d = pod.start();
    let names = pod_names(pods + 1);
    let hosts: Vec<&str> = names.iter().map(String::as_str).collect();
    let two = expected(&hosts[..pods], false);
    pod.wait_for(&mut d, &two);
    wait_for_installs(&mut d, 1);
    let before = inode_and_mtime(&pod.out);
    let mark = d.mark();

    match kind {
        Outage::Servfail => dns.set_mode(Mode::ServFail),
        Outage::Refused => dns.set_mode(Mode::Refused),
        Outage::Silent => dns.set_mode(Mode::Drop),
        Outage::Stopped => dns.stop(),
    }
    dns.scale(pods + 1);
    let warning = format!("DNS lookup of {SVC} failed");
    let line = d.wait_for_line(mark, &[&warning], WAIT);
    assert!(
        line.contains("WARN") && line.contains("keeping the last known peers"),
        "{line}"
    );
    // Several more failed polls: a silent server costs a 1 s timeout each.
    let failed_at = Instant::now();
    let polls = dns.queries_of(RecordType::SRV);
    let span = match kind {
        Outage::Silent => Duration::from_millis(3500),
        _ => Duration::from_millis(1500),
    };
    std::thread::sleep(span);
    if !matches!(kind, Outage::Stopped) {
        assert!(
            dns.queries_of(RecordType::SRV) >= polls + 2,
            "peerplate kept polling during the outage ({} queries in {:?})",
            dns.queries_of(RecordType::SRV) - polls,
            failed_at.elapsed()
        );
    }
    assert!(d.is_running(), "a failed lookup is survived\n{}", d.logs());
    assert_eq!(pod.output().as_deref(), Some(two.as_str()), "{}", d.logs());
    assert_eq!(
        inode_and_mtime(&pod.out),
        before,
        "the output was not touched"
    );
    assert_eq!(
        count_lines(&d, mark, &warning),
        1,
        "one warning per outage\n{}",
        d.logs()
    );
    assert_eq!(
        count_lines(&d, mark, "rendered"),
        0,
        "no render because of a failed lookup\n{}",
        d.logs()
    );

    match kind {
        Outage::Stopped => dns.restart(),
        _ => dns.set_mode(Mode::Normal),
    }
    pod.wait_for(&mut d, &expected(&hosts, false));
    d.wait_for_log("DNS lookups work again", WAIT);
    assert_eq!(count_lines(&d, mark, "DNS lookups work again"), 1);
    assert_eq!(count_lines(&d, mark, &warning), 1, "{}", d.logs());
}

#[test]
fn servfail_keeps_the_last_peers_and_recovers() {
    outage(Outage::Servfail, 2);
}

#[test]
fn refused_keeps_the_last_peers_and_recovers() {
    outage(Outage::Refused, 2);
}

#[test]
fn a_silent_server_keeps_the_last_peers_and_recovers() {
    outage(Outage::Silent, 2);
}

#[test]
fn a_stopped_server_keeps_the_last_peers_and_recovers() {
    outage(Outage::Stopped, 2);
}

/// A big Service is asked over TCP; a server restart breaks that
/// connection, and the next polls must open a new one.
#[test]
fn a_restarted_server_with_300_pods_recovers_over_tcp() {
    outage(Outage::Stopped, 300);
}

#[test]
fn a_second_nameserver_answers_when_the_first_is_down() {
    let mut down = DnsServer::start("cluster.local");
    down.stop();
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = dns_pod_asking(&[&down.nameserver(), &dns.nameserver()], &DEFAULT);
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    dns.scale(3);
    pod.wait_for(&mut d, &expected(&["web-0", "web-1", "web-2"], false));
}

#[test]
fn nxdomain_after_the_last_pod_is_held_not_rendered() {
    // With publishNotReadyAddresses a running pod is always in its own
    // Service: an empty answer (or one without this pod) is a partial view.
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut d = pod.start();
    let before = expected(&["web-0", "web-1"], false);
    pod.wait_for(&mut d, &before);
    // The output is in place a moment before its log line: mark after it.
    d.wait_for_line(0, &["rendered", "changed=true"], WAIT);
    let mark = d.mark();
    // Each poll asks the SOA first (the SRV set only when it moved).
    let polls = dns.queries_of(RecordType::SOA);
    dns.scale(0);
    let line = d.wait_for_line(mark, &["WARN", "holding back a partial peer set"], WAIT);
    assert!(line.contains("reason=\"self_missing\""), "{line}");
    assert!(
        line.contains("web-1.nginx.default.svc.cluster.local is not in it"),
        "{line}"
    );
    // Several polls go by: the output stays, the warning is not repeated.
    d.wait_until(WAIT, "five more polls", |_| {
        dns.queries_of(RecordType::SOA) >= polls + 6
    });
    assert_eq!(pod.output().as_deref(), Some(before.as_str()));
    assert_eq!(count_lines(&d, mark, "holding back"), 1, "{}", d.logs());
    assert_eq!(count_lines(&d, mark, "changed=true"), 0, "{}", d.logs());
    assert_eq!(
        count_lines(&d, mark, "DNS lookup of"),
        0,
        "NXDOMAIN is an answer, not a failure\n{}",
        d.logs()
    );
    // The same with NOERROR and no records; then the set back: nothing
    // changes either, and one line says the hold ended.
    dns.set_nodata(true);
    dns.scale(2);
    d.wait_for_line(mark, &["a whole peer set again; no longer holding"], WAIT);
    assert_eq!(pod.output().as_deref(), Some(before.as_str()));
    assert_eq!(count_lines(&d, mark, "changed=true"), 0, "{}", d.logs());
}

#[test]
fn with_min_0_and_no_wait_for_self_an_empty_answer_is_a_real_state() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = Pod::builder()
        .dns(&[&dns.nameserver()], "200ms")
        .cluster_domain(Some("cluster.local"))
        .peers_option("wait_for_self: false")
        .peers_option("min: 0")
        .template("peers.j2", TEMPLATE, "out/peers.txt")
        .build();
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    let mark = d.mark();
    dns.scale(0);
    pod.wait_for(&mut d, "count=0\n");
    d.wait_for_line(mark, &["rendered", "changed=true"], WAIT);
    assert_eq!(count_lines(&d, mark, "holding back"), 0, "{}", d.logs());
}

#[test]
fn invalid_target_names_never_reach_the_output() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    dns.set_extra_targets(&[
        &format!("bad_name.{SVC}"),
        &format!("-dash.{SVC}"),
        &format!("$(reboot).{SVC}"),
    ]);
    // No serial check: the SRV set, bad names and all, comes every poll.
    let pod = dns_pod(
        &dns.nameserver(),
        &Opts {
            dns_extra: "refresh: 0s",
            ..DEFAULT
        },
    );
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    let line = d.wait_for_line(0, &["WARN", "bad_name"], WAIT);
    assert!(line.contains("not a valid host name"), "{line}");
    d.wait_for_line(0, &["WARN", "-dash"], WAIT);
    d.wait_for_line(0, &["WARN", "reboot"], WAIT);
    // Polls go on; each bad name is warned about once, not once a poll.
    let polls = dns.queries_of(RecordType::SRV);
    d.wait_until(WAIT, "five more polls", |_| {
        dns.queries_of(RecordType::SRV) >= polls + 5
    });
    assert_eq!(count_lines(&d, 0, "bad_name"), 1, "{}", d.logs());
    let out = pod.output().unwrap_or_default();
    assert_eq!(out, expected(&["web-0", "web-1"], false));
}

#[test]
fn a_change_shows_within_an_interval_despite_ttl_30() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    let steps: [&[&str]; 3] = [
        &["web-0", "web-1", "web-2"],
        &["web-0", "web-1"],
        &["web-0", "web-1", "web-2", "web-3"],
    ];
    for hosts in steps {
        dns.set_pods(hosts);
        let took = pod.wait_for(&mut d, &expected(hosts, false));
        assert!(
            took < Duration::from_secs(2),
            "a change with TTL 30 took {took:?} to reach the output (interval 200ms)"
        );
    }
}

#[test]
fn once_renders_and_exits_0_when_the_pod_is_in_dns() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(3);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let out = run(&mut pod.sb.peerplate(pod.args("once")));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        pod.output().as_deref(),
        Some(expected(&["web-0", "web-1", "web-2"], false).as_str())
    );
}

#[test]
fn once_exits_3_naming_the_query_and_what_it_saw() {
    let dns = DnsServer::start("cluster.local");
    dns.set_pods(&["web-0", "web-2"]);
    let pod = dns_pod(
        &dns.nameserver(),
        &Opts {
            timeout: "1s",
            ..DEFAULT
        },
    );
    let started = Instant::now();
    let out = run(&mut pod.sb.peerplate(pod.args("once")));
    let took = started.elapsed();
    assert_eq!(out.code, Some(3), "{}", out.dump());
    assert!(
        out.stderr.contains(&format!(
            "timed out after 1s waiting for web-1.{SVC} to appear in the SRV records of {SVC}; seen: web-0.{SVC}, web-2.{SVC}"
        )),
        "{}",
        out.dump()
    );
    assert!(took < Duration::from_secs(5), "gave up after {took:?}");
    assert_eq!(pod.output(), None, "nothing written");
}

#[test]
fn once_exits_3_when_dns_never_answers() {
    let dns = DnsServer::start("cluster.local");
    dns.set_mode(Mode::ServFail);
    let pod = dns_pod(
        &dns.nameserver(),
        &Opts {
            timeout: "1s",
            ..DEFAULT
        },
    );
    let out = run(&mut pod.sb.peerplate(pod.args("once")));
    assert_eq!(out.code, Some(3), "{}", out.dump());
    assert!(
        out.stderr.contains(&format!(
            "timed out after 1s waiting for web-1.{SVC} to appear in the SRV records of {SVC}; seen: no answer yet"
        )),
        "{}",
        out.dump()
    );
    assert!(
        out.stderr.contains(&format!("DNS lookup of {SVC} failed")),
        "{}",
        out.dump()
    );
    assert_eq!(pod.output(), None, "nothing written");
}

#[test]
fn addresses_come_from_the_additional_section() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = dns_pod(
        &dns.nameserver(),
        &Opts {
            addresses: true,
            ..DEFAULT
        },
    );
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], true));

    // web-0 comes back with a new IP under the same name.
    let new_ip = Ipv4Addr::new(10, 244, 9, 9);
    dns.set_pod_ips(&[("web-0", new_ip), ("web-1", pod_ip("web-1"))]);
    let want = format!(
        "count=2\nweb-0.{SVC} 80 {new_ip}\nweb-1.{SVC} 80 {}\n",
        pod_ip("web-1")
    );
    pod.wait_for(&mut d, &want);
    assert_eq!(
        (
            dns.queries_of(RecordType::A),
            dns.queries_of(RecordType::AAAA)
        ),
        (0, 0),
        "the additional section covered every target: no address lookups"
    );
}

#[test]
fn addresses_are_looked_up_without_additionals() {
    let dns = DnsServer::start("cluster.local");
    // Looked-up addresses are kept for their TTL: a new IP under the same
    // name shows once it expired.
    dns.set_ttl(1);
    dns.scale(2);
    dns.set_additionals(false);
    let pod = dns_pod(
        &dns.nameserver(),
        &Opts {
            addresses: true,
            ..DEFAULT
        },
    );
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], true));
    assert!(
        dns.queries_of(RecordType::A) >= 2,
        "one A lookup per peer at least, saw {}",
        dns.queries_of(RecordType::A)
    );
    let new_ip = Ipv4Addr::new(10, 244, 9, 9);
    dns.set_pod_ips(&[("web-0", pod_ip("web-0")), ("web-1", new_ip)]);
    let want = format!(
        "count=2\nweb-0.{SVC} 80 {}\nweb-1.{SVC} 80 {new_ip}\n",
        pod_ip("web-0")
    );
    pod.wait_for(&mut d, &want);
}

#[test]
fn cluster_domain_comes_from_the_resolv_conf_search_list() {
    let dns = DnsServer::start("k8s.example");
    dns.scale(2);
    let pod = dns_pod(
        &dns.nameserver(),
        &Opts {
            cluster_domain: None,
            ..DEFAULT
        },
    );
    pod.sb.write(
        "resolv.conf",
        "search default.svc.k8s.example svc.k8s.example k8s.example\nnameserver 127.0.0.1\noptions ndots:5\n",
    );
    let mut d = pod.start();
    let want =
        "count=2\nweb-0.nginx.default.svc.k8s.example 80\nweb-1.nginx.default.svc.k8s.example 80\n";
    pod.wait_for(&mut d, want);
}

#[test]
fn render_asks_dns_once_and_prints_the_peers() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(3);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    pod.sb.write(
        "peers.j2",
        "{{ pod.fqdn }} via {{ nameservers|join(\",\") }}\n{% for p in peers %}\n{{ p }} {{ p.port }}{{ \" self\" if p.is_self else \"\" }}\n{% endfor %}",
    );
    let out = run(&mut pod.sb.peerplate(pod.args("render")));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        out.stdout,
        format!(
            "web-1.{SVC} via {ns}\nweb-0.{SVC} 80\nweb-1.{SVC} 80 self\nweb-2.{SVC} 80\n",
            ns = dns.nameserver()
        )
    );
    assert_eq!(dns.queries_of(RecordType::SRV), 1, "one lookup");
    assert_eq!(pod.output(), None, "render writes nothing");

    // No answer: exit 1, saying what failed and how to render without DNS.
    dns.set_mode(Mode::Refused);
    let out = run(&mut pod.sb.peerplate(pod.args("render")));
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(
        out.stderr.contains(&format!("DNS lookup of {SVC} failed"))
            && out.stderr.contains("--peer"),
        "{}",
        out.dump()
    );
    assert_eq!(out.stdout, "");
}

/// A `peerplate run` whose stderr is a pipe the test closes once the first
/// output is in place (a log collector that went away). Returns the child.
fn start_then_close_stderr(pod: &Pod) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = pod
        .sb
        .peerplate(pod.args("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn peerplate");
    let stderr = child.stderr.take().expect("stderr pipe");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let rendered = lines.any(|l| l.is_ok_and(|l| l.contains("rendered")));
        let _ = tx.send(rendered);
        // Dropping `lines` closes the read end: later writes get EPIPE.
    });
    assert_eq!(rx.recv_timeout(WAIT), Ok(true), "first render logged");
    child
}

/// Waits (bounded) for `child` to exit; kills it and returns None if not.
fn exit_within(child: &mut std::process::Child, timeout: Duration) -> Option<i32> {
    let mut status = None;
    crate::helpers::poll_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status.and_then(|s| s.code())
}

#[test]
fn keeps_polling_after_stderr_closes() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut child = start_then_close_stderr(&pod);
    // An outage makes the DNS worker log a warning into the closed pipe.
    dns.set_mode(Mode::ServFail);
    let polls = dns.queries_of(RecordType::SRV);
    let more = crate::helpers::poll_until(WAIT, || dns.queries_of(RecordType::SRV) >= polls + 3);
    dns.set_mode(Mode::Normal);
    dns.scale(3);
    let want = expected(&["web-0", "web-1", "web-2"], false);
    let followed = crate::helpers::poll_until(Duration::from_secs(5), || {
        pod.output().as_deref() == Some(want.as_str())
    });
    let exited = child.try_wait().expect("try_wait");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        more && followed,
        "peerplate stopped following DNS once its stderr was closed (polled during the outage: {more}; exited: {exited:?})"
    );
}

#[test]
fn sigterm_stops_it_after_stderr_closes() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut child = start_then_close_stderr(&pod);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    assert_eq!(
        exit_within(&mut child, Duration::from_secs(2)),
        Some(0),
        "SIGTERM must end peerplate within a second even when its stderr is gone"
    );
}

/// The pods `web-0` .. `web-<n-1>` as `&str`s for [`expected`].
fn hosts_of(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

#[test]
fn a_truncated_answer_over_tcp_keeps_the_last_peers_with_one_warning() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(300);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut d = pod.start();
    let names = pod_names(301);
    let hosts = hosts_of(&names);
    let before = expected(&hosts[..300], false);
    pod.wait_for(&mut d, &before);
    wait_for_installs(&mut d, 1);
    let mark = d.mark();

    // Past 64 KiB a server answers over TCP with TC set (BIND: no records
    // at all): not an empty peer set, a failed lookup.
    dns.set_tcp_truncated(true);
    dns.scale(301);
    let line = d.wait_for_line(mark, &["WARN", "64 KiB"], WAIT);
    assert!(
        line.contains(&format!("DNS lookup of {SVC} failed"))
            && line.contains("keeping the last known peers"),
        "{line}"
    );
    let tcp = dns.queries(Proto::Tcp, RecordType::SRV);
    d.wait_until(WAIT, "three more truncated answers", |_| {
        dns.queries(Proto::Tcp, RecordType::SRV) >= tcp + 3
    });
    assert_eq!(
        pod.output().as_deref(),
        Some(before.as_str()),
        "{}",
        d.logs()
    );
    assert_eq!(
        count_lines(&d, mark, "64 KiB"),
        1,
        "one warning\n{}",
        d.logs()
    );
    assert_eq!(count_lines(&d, mark, "changed=true"), 0, "{}", d.logs());

    dns.set_tcp_truncated(false);
    pod.wait_for(&mut d, &expected(&hosts, false));
    d.wait_for_log("DNS lookups work again", WAIT);
    assert_eq!(count_lines(&d, mark, "64 KiB"), 1, "{}", d.logs());
}

#[test]
fn a_serial_that_never_moves_falls_back_to_fetching_every_interval() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    dns.freeze_serial();
    let pod = dns_pod(
        &dns.nameserver(),
        &Opts {
            dns_extra: "refresh: 3s",
            ..DEFAULT
        },
    );
    let mut d = pod.start();
    pod.wait_for(&mut d, &expected(&["web-0", "web-1"], false));
    // The window after the first serial seen passes: the SOA is asked
    // every poll, the SRV set no more.
    let mut quiet = (
        dns.queries_of(RecordType::SRV),
        dns.queries_of(RecordType::SOA),
    );
    d.wait_until(WAIT, "five SOA polls without an SRV fetch", |_| {
        let now = (
            dns.queries_of(RecordType::SRV),
            dns.queries_of(RecordType::SOA),
        );
        if now.0 != quiet.0 {
            quiet = now;
        }
        now.1 >= quiet.1 + 5
    });
    let mark = d.mark();

    // The serial does not move: the refresh finds the change, says so once.
    dns.scale(3);
    pod.wait_for(&mut d, &expected(&["web-0", "web-1", "web-2"], false));
    let line = d.wait_for_line(mark, &["did not announce"], WAIT);
    assert!(
        line.contains("WARN") && line.contains("zone=cluster.local"),
        "{line}"
    );

    // From then on the SRV set is fetched every interval, without the SOA.
    let (srv, soa) = (
        dns.queries_of(RecordType::SRV),
        dns.queries_of(RecordType::SOA),
    );
    d.wait_until(WAIT, "five SRV fetches", |_| {
        dns.queries_of(RecordType::SRV) >= srv + 5
    });
    assert_eq!(
        dns.queries_of(RecordType::SOA),
        soa,
        "no SOA while the serial is not trusted"
    );
    dns.scale(4);
    pod.wait_for(
        &mut d,
        &expected(&["web-0", "web-1", "web-2", "web-3"], false),
    );
    assert_eq!(count_lines(&d, mark, "did not announce"), 1, "{}", d.logs());
}

#[test]
fn json_logs_carry_added_and_removed_as_json_arrays() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(30);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut args = vec!["--log-format".to_string(), "json".into()];
    args.extend(pod.args("run"));
    let mut d = Daemon::spawn(pod.peerplate(args));
    let names = pod_names(30);
    let hosts = hosts_of(&names);
    pod.wait_for(&mut d, &expected(&hosts, false));
    let mark = d.mark();
    dns.scale(15);
    pod.wait_for(&mut d, &expected(&hosts[..15], false));
    let line = d.wait_for_line(mark, &["peer set changed"], WAIT);
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    let list = |key: &str| -> Vec<String> {
        serde_json::from_value(event[key].clone())
            .unwrap_or_else(|e| panic!("{key} is a JSON array of strings: {e}\n{line}"))
    };
    assert_eq!(event["count"], 15, "{line}");
    assert_eq!(list("added"), Vec::<String>::new());
    let removed = list("removed");
    assert_eq!(removed.len(), 11, "{removed:?}");
    assert_eq!(removed[0], format!("web-15.{SVC}"));
    assert_eq!(removed[10], "and 5 more");
}

/// With `-vv` the whole set is logged too, on a line of its own.
#[test]
fn the_full_peer_list_is_logged_at_vv() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(12);
    let pod = dns_pod(&dns.nameserver(), &DEFAULT);
    let mut args = vec!["-vv".to_string()];
    args.extend(pod.args("run"));
    let mut d = Daemon::spawn(pod.peerplate(args));
    let names = pod_names(12);
    pod.wait_for(&mut d, &expected(&hosts_of(&names), false));
    let line = d.wait_for_line(0, &["peer set in full"], WAIT);
    assert!(line.contains(&format!("\"web-11.{SVC}\"]")), "{line}");
    assert!(!line.contains("more"), "{line}");
}

/// /etc/hosts of pod web-1 as kubelet writes it for a StatefulSet whose
/// serviceName is `nginx` (tab-separated, kubelet's header first).
const KUBELET_HOSTS: &str = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.244.0.3\tweb-1.nginx.default.svc.cluster.local\tweb-1\n";

/// A config naming no Service asks for the pod's own subdomain from
/// /etc/hosts, and for its `-ready` twin: a renamed StatefulSet (kustomize
/// namePrefix) needs no edit of peerplate.yaml.
#[test]
fn the_service_comes_from_the_pods_line_in_etc_hosts() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    dns.set_ready(&["web-0"]);
    let sb = crate::helpers::Sandbox::new();
    sb.write(
        "t.j2",
        "{% for p in peers %}{{ p.fqdn }} ready={{ p.ready }}\n{% endfor %}",
    );
    sb.write(
        "peerplate.yaml",
        &format!(
            "peers:\n  dns: {{nameservers: [\"{}\"], interval: 1s}}\ntemplates:\n  - {{source: t.j2, destination: out/t}}\n",
            dns.nameserver()
        ),
    );
    let once = |sb: &crate::helpers::Sandbox| {
        run(sb
            .peerplate(["--config", "peerplate.yaml", "once"])
            .env("HOSTNAME", "web-1"))
    };
    // Not a StatefulSet's pod: no line for web-1, and the error says so.
    let out = once(&sb);
    assert_eq!(out.code, Some(2), "{}", out.dump());
    assert!(
        out.stderr
            .contains("/etc/hosts has no line naming this pod web-1.<service>"),
        "{}",
        out.dump()
    );
    sb.write("hosts", KUBELET_HOSTS);
    let out = once(&sb);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert_eq!(
        std::fs::read_to_string(sb.join("out/t")).expect("rendered"),
        format!("web-0.{SVC} ready=True\nweb-1.{SVC} ready=False\n")
    );
}

/// `peers.dns.port_name` and a Service with two ports: without it every pod
/// renders the same `peer.port` (the lowest) whatever order the answer
/// lists the ports in, `peer.ports` lists both, and a warning says to set
/// `port_name`; with it, `_metrics._tcp.<service>` is asked and the named
/// port is the one.
#[test]
fn a_service_with_two_ports_gives_the_lowest_on_every_pod_and_port_name_picks_one() {
    let dns = DnsServer::start("cluster.local");
    dns.scale(2);
    dns.set_named_ports(&[("metrics", 9100), ("http", 80)]);
    let template =
        "{% for p in peers %}{{ p.hostname }} {{ p.port }} {{ p.ports | join(',') }}\n{% endfor %}";
    let pods: Vec<_> = ["web-0", "web-1"]
        .iter()
        .map(|h| {
            Pod::builder()
                .hostname(h)
                .dns(&[&dns.nameserver()], "100ms")
                .template("t.j2", template, "out/t")
                .build()
        })
        .collect();
    let want = "web-0 80 80,9100\nweb-1 80 80,9100\n";
    for pod in &pods {
        // Several polls: the server rotates the order of the ports.
        let mut d = pod.start();
        pod.wait_for(&mut d, want);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(pod.output().as_deref(), Some(want), "{}", d.logs());
        let line = d.wait_for_line(0, &["the Service has several ports"], WAIT);
        assert!(line.contains("set peers.dns.port_name"), "{line}");
        assert!(line.contains("ports=[80,9100]"), "{line}");
    }

    let named = Pod::builder()
        .dns(&[&dns.nameserver()], "100ms")
        .dns_option("port_name: metrics")
        .template("t.j2", template, "out/t")
        .build();
    let mut d = named.start();
    named.wait_for(&mut d, "web-0 9100 9100\nweb-1 9100 9100\n");
    assert!(!d.stderr().contains("several ports"), "{}", d.logs());
    let queries = dns.queries_of(RecordType::SRV);
    assert!(queries > 0);
}
