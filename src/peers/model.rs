//! The peer model: who the peers are, in what order, and which one is this pod.
//!
//! A [`Peer`] is one pod's DNS name broken into the parts templates need; a
//! [`PeerSet`] is the sorted, deduplicated list that every consumer
//! (templates, hooks, peer-finder) sees in the same order. Names that are not
//! valid RFC 1123 host names are dropped here, once, so they can never reach
//! a template or a hook's stdin. [`Identity`] is this pod as the peer set
//! names it, worked out in this one place.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;

/// One member of the peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The full name, lower case, without the trailing dot.
    pub fqdn: String,
    /// The first label of `fqdn`.
    pub hostname: String,
    /// The StatefulSet ordinal: the trailing number of a `hostname` of the
    /// form `<name>-<N>` whose `<name>` has a letter ([`ordinal_of`]).
    pub ordinal: Option<u64>,
    /// The SRV port, when the peer came from DNS: the lowest of its ports
    /// when the answer lists several (the same on every pod).
    pub port: Option<u16>,
    /// Every SRV port the answer lists for this peer, lowest first.
    pub ports: Vec<u16>,
    /// The peer's addresses, when `peers.dns.addresses` is on.
    pub addresses: Vec<IpAddr>,
    /// Whether the pod is ready: listed by the ready-only Service
    /// (`peers.dns.ready_service`); true when there is none.
    pub ready: bool,
}

impl Peer {
    /// Parses a DNS name into a peer, or says why it is not a valid host name.
    pub fn parse(name: &str, port: Option<u16>) -> Result<Peer, String> {
        let fqdn = name.trim().trim_end_matches('.').to_ascii_lowercase();
        validate_hostname(&fqdn)?;
        let hostname = fqdn.split('.').next().unwrap_or_default().to_string();
        let ordinal = ordinal_of(&hostname);
        Ok(Peer {
            fqdn,
            hostname,
            ordinal,
            port,
            ports: port.into_iter().collect(),
            addresses: Vec::new(),
            ready: true,
        })
    }
}

/// The StatefulSet ordinal of a host name: `N` in `<name>-<N>` where
/// `<name>` has a letter (`web-2`: 2). Names that only look numbered have
/// none: CoreDNS's names for pods without a hostname (`10-244-1-6`, a hash
/// like `3339386563373339`) and the first label of an IP address (`10`).
pub fn ordinal_of(hostname: &str) -> Option<u64> {
    let (name, digits) = hostname.rsplit_once('-')?;
    let numbered = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if !numbered || !name.bytes().any(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    digits.parse().ok()
}

/// RFC 1123: at most 253 characters, labels of 1 to 63 letters, digits and
/// hyphens that neither start nor end with a hyphen.
fn validate_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 253 {
        return Err(format!("{} characters, more than 253", name.len()));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("label {label:?} must have 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "label {label:?} has characters other than letters, digits and '-'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// The peers in the order every consumer sees them: by StatefulSet ordinal
/// (web-2 before web-10), then by name; one entry per name.
///
/// Immutable and shared: a clone is a reference count, not a copy. The DNS
/// poller, the loop, the render context and `/status` each hold the same
/// set; with 300 peers each copy was ~70 kB, and the copies a change made
/// at once were most of the daemon's peak heap (issue 18).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSet {
    peers: Arc<Vec<Peer>>,
}

impl PeerSet {
    /// Builds a set from parsed peers: sorts, and keeps one entry per name
    /// (a Service with two ports lists every pod twice): its `port` the
    /// lowest, `ports` all of them, whatever order the answer had.
    pub fn new(mut peers: Vec<Peer>) -> PeerSet {
        // A stable sort keeps the first of two equal names first, and puts
        // them side by side for dedup_by to drop the later one.
        peers.sort_by(|a, b| {
            (a.ordinal.is_none(), a.ordinal, &a.fqdn).cmp(&(
                b.ordinal.is_none(),
                b.ordinal,
                &b.fqdn,
            ))
        });
        peers.dedup_by(|later, first| {
            if later.fqdn != first.fqdn {
                return false;
            }
            first.ports.extend(later.ports.iter().copied());
            true
        });
        for peer in &mut peers {
            peer.ports.sort_unstable();
            peer.ports.dedup();
            if let Some(lowest) = peer.ports.first() {
                peer.port = Some(*lowest);
            }
        }
        PeerSet {
            peers: Arc::new(peers),
        }
    }

    /// Builds a set from raw names, dropping (with a warning) every name that
    /// is not a valid host name. `origin` says where the names came from.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>, origin: &str) -> PeerSet {
        let (set, invalid) = PeerSet::parse_names(names);
        for (name, why) in invalid {
            tracing::warn!(name, origin, reason = %why, "dropping a peer name that is not a valid host name");
        }
        set
    }

    /// Builds a set from raw names, and lists the names that are not valid
    /// host names, each with why, for the caller to report.
    pub fn parse_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> (PeerSet, Vec<(String, String)>) {
        let mut invalid = Vec::new();
        let peers = names
            .into_iter()
            .filter_map(|name| match Peer::parse(name, None) {
                Ok(peer) => Some(peer),
                Err(why) => {
                    invalid.push((name.to_string(), why));
                    None
                }
            })
            .collect();
        (PeerSet::new(peers), invalid)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Peer> {
        self.peers.iter()
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// The peers that are ready, in order.
    pub fn ready(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(|p| p.ready)
    }

    /// The peer with this FQDN.
    pub fn get(&self, fqdn: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.fqdn == fqdn)
    }

    /// Marks as not ready the peers whose first label is not in `ready`.
    pub fn with_ready(mut self, ready: &BTreeSet<String>) -> PeerSet {
        // Copies the peers only if another holder shares them.
        for peer in Arc::make_mut(&mut self.peers) {
            peer.ready = ready.contains(&peer.hostname);
        }
        self
    }

    /// The peers' names, in order: what hooks read on stdin and logs print.
    pub fn names(&self) -> Vec<&str> {
        self.peers.iter().map(|p| p.fqdn.as_str()).collect()
    }

    /// The names in `self` that `before` lacks (added) and the names in
    /// `before` that `self` lacks (removed), each in set order.
    pub fn diff<'a>(&'a self, before: &'a PeerSet) -> (Vec<&'a str>, Vec<&'a str>) {
        let now: BTreeSet<&str> = self.peers.iter().map(|p| p.fqdn.as_str()).collect();
        let was: BTreeSet<&str> = before.peers.iter().map(|p| p.fqdn.as_str()).collect();
        let added = self
            .names()
            .into_iter()
            .filter(|n| !was.contains(n))
            .collect();
        let removed = before
            .names()
            .into_iter()
            .filter(|n| !now.contains(n))
            .collect();
        (added, removed)
    }
}

/// This pod: its names, and how to tell it in a peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The pod's short name (`identity.hostname`), e.g. `web-1`.
    pub hostname: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The full name peers list it under, when the source says what it is
    /// (`peers.dns.service`): `<hostname>.<service>.<namespace>.svc.<domain>`.
    /// `None`: the peer whose first label is `hostname` is this pod.
    pub fqdn: Option<String>,
    /// The StatefulSet ordinal of `hostname` ([`ordinal_of`]), if any.
    pub ordinal: Option<u64>,
}

impl Identity {
    /// This pod as `config` describes it.
    pub fn of(config: &Config) -> Identity {
        Identity {
            hostname: config.identity.hostname.clone(),
            namespace: config.identity.namespace.clone(),
            fqdn: config.pod_fqdn.clone(),
            ordinal: Peer::parse(&config.identity.hostname, None)
                .ok()
                .and_then(|p| p.ordinal),
        }
    }

    /// Whether `peer` is this pod: the same full name when DNS says what it
    /// is, otherwise the same first label.
    pub fn is_self(&self, peer: &Peer) -> bool {
        match &self.fqdn {
            // A bare name (`render --peer web-1`) can only be told by its label.
            Some(fqdn) => {
                peer.fqdn == *fqdn || (!peer.fqdn.contains('.') && peer.hostname == self.hostname)
            }
            None => peer.hostname == self.hostname,
        }
    }

    /// Whether `peers` holds this pod.
    pub fn is_in(&self, peers: &PeerSet) -> bool {
        peers.iter().any(|p| self.is_self(p))
    }

    /// The name this pod is looked for under: its FQDN when known.
    pub fn name(&self) -> &str {
        self.fqdn.as_deref().unwrap_or(&self.hostname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts() {
        let p = Peer::parse("Web-10.nginx.default.svc.cluster.local.", Some(80)).unwrap();
        assert_eq!(p.fqdn, "web-10.nginx.default.svc.cluster.local");
        assert_eq!(p.hostname, "web-10");
        assert_eq!(p.ordinal, Some(10));
        assert_eq!(p.port, Some(80));
        assert_eq!(Peer::parse("db", None).unwrap().ordinal, None);
        for name in [
            "10-244-1-6.s",
            "3339386563373339.s",
            "10.0.0.5",
            "web7.s",
            "-1",
        ] {
            assert_eq!(ordinal_of(name.split('.').next().unwrap()), None, "{name}");
        }
        assert_eq!(ordinal_of("my-db-2"), Some(2));
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in [
            "",
            "-web.x",
            "web-.x",
            "we_b.x",
            "a..b",
            "web 0",
            "$(reboot)",
            &"a".repeat(64),
        ] {
            assert!(
                Peer::parse(bad, None).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn sorts_by_ordinal_then_name_and_dedups() {
        let set = PeerSet::from_names(
            [
                "web-10.s", "web-2.s", "db.s", "web-2.s", "bad_name", "app-2.s",
            ],
            "test",
        );
        assert_eq!(set.names(), ["app-2.s", "web-2.s", "web-10.s", "db.s"]);
    }

    #[test]
    fn a_pod_listed_once_per_port_has_the_lowest_port_whatever_the_order() {
        let peer = |port| Peer::parse("web-0.nginx.default.svc.cluster.local", Some(port)).unwrap();
        for order in [[9100, 80], [80, 9100]] {
            let set = PeerSet::new(order.iter().map(|p| peer(*p)).collect());
            let p = set.iter().next().unwrap();
            assert_eq!(set.len(), 1);
            assert_eq!(p.port, Some(80), "{order:?}");
            assert_eq!(p.ports, [80, 9100], "{order:?}");
        }
        let one = PeerSet::new(vec![peer(8080)]);
        assert_eq!(one.iter().next().unwrap().ports, [8080]);
    }
}
