//! The template context: `peers`, `pod`, `leader`, `vars` and
//! `nameservers`, built from the config and a peer set.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Serde, Value};

use crate::config::Config;
use crate::peers::{Identity, Peer, PeerSet};

/// Builds the template context for `peers` as seen by the pod in `config`.
///
/// `leader` is the chosen leader (see `leader`): its last known record,
/// which may be missing from `peers` for a while; none while there are no
/// peers.
pub fn context(config: &Config, peers: &PeerSet, leader: Option<&Peer>) -> Value {
    let me = Identity::of(config);
    let leader = leader.filter(|_| !peers.is_empty());
    let leads = |p: &Peer| leader.is_some_and(|l| l.fqdn == p.fqdn);
    let values: Vec<Value> = peers
        .iter()
        .map(|p| {
            Value::from_object(PeerValue {
                peer: p.clone(),
                is_self: me.is_self(p),
                is_leader: leads(p),
            })
        })
        .collect();
    let is_leader = leader.is_some_and(|l| me.is_self(l));
    let leader = match leader {
        Some(l) => Value::from_object(PeerValue {
            peer: l.clone(),
            is_self: me.is_self(l),
            is_leader: true,
        }),
        None => Value::from(()),
    };
    let own = peers.iter().find(|p| me.is_self(p));
    let fqdn = me
        .fqdn
        .clone()
        .or_else(|| own.map(|p| p.fqdn.clone()))
        .unwrap_or_else(|| me.hostname.clone());
    let ordinal = me.ordinal;
    let pod = minijinja::context! {
        hostname => config.identity.hostname.as_str(),
        fqdn => fqdn,
        ordinal => ordinal,
        namespace => config.identity.namespace.as_str(),
        is_leader => is_leader,
    };
    let nameservers: Vec<String> = config.nameservers.iter().map(nameserver_text).collect();
    minijinja::context! {
        peers => values,
        leader => leader,
        pod => pod,
        vars => Value::from(Serde(&config.vars)),
        nameservers => nameservers,
    }
}

/// `10.96.0.10`, `127.0.0.1:5353`, `[fd00::10]`: the form nginx's `resolver`
/// and most other configs take.
fn nameserver_text(addr: &SocketAddr) -> String {
    match (addr.ip(), addr.port()) {
        (std::net::IpAddr::V4(ip), 53) => ip.to_string(),
        (std::net::IpAddr::V6(ip), 53) => format!("[{ip}]"),
        _ => addr.to_string(),
    }
}

/// A peer as templates see it: prints as its FQDN, and has the parts as
/// attributes. Unknown attributes are undefined, so strict mode catches typos.
#[derive(Debug)]
struct PeerValue {
    peer: Peer,
    is_self: bool,
    is_leader: bool,
}

pub(super) const PEER_KEYS: &[&str] = &[
    "fqdn",
    "hostname",
    "ordinal",
    "port",
    "ports",
    "is_self",
    "is_leader",
    "ready",
    "addresses",
];

impl Object for PeerValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let p = &self.peer;
        Some(match key.as_str()? {
            "fqdn" => Value::from(p.fqdn.as_str()),
            "hostname" => Value::from(p.hostname.as_str()),
            "ordinal" => Value::from(p.ordinal),
            "port" => Value::from(p.port),
            "ports" => Value::from(p.ports.clone()),
            "is_self" => Value::from(self.is_self),
            "is_leader" => Value::from(self.is_leader),
            "ready" => Value::from(p.ready),
            "addresses" => Value::from(
                p.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            ),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(PEER_KEYS)
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.peer.fqdn)
    }
}
