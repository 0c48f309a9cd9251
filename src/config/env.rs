//! What the config's defaults come from: the pod's environment (host name,
//! namespace, resolv.conf), read once at the edge and passed into the
//! otherwise pure resolution.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::raw::parse_nameserver;

/// The file kubelet mounts into every pod with its namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// What the config's defaults come from: the pod's environment, read once.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `$HOSTNAME`, then gethostname(), first label; `None` if neither works.
    pub hostname: Option<String>,
    /// `$POD_NAMESPACE`, then the service-account namespace file, then `default`.
    pub namespace: String,
    /// `/etc/resolv.conf` (or `$PEERPLATE_RESOLV_CONF`).
    pub resolv: ResolvConf,
}

impl Env {
    /// Reads this process's environment.
    pub fn from_process() -> Env {
        Env {
            hostname: default_hostname(),
            namespace: default_namespace(),
            resolv: ResolvConf::load(),
        }
    }
}

/// The pod's short host name: `$HOSTNAME`, then gethostname(), first label.
pub fn default_hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_string())
}

fn default_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            read_small(std::path::Path::new(SERVICE_ACCOUNT_NAMESPACE))
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| "default".into())
}

/// A small system file's text, bounded (see [`crate::limits`]); `None`
/// when it cannot be read.
fn read_small(path: &std::path::Path) -> Option<String> {
    let bytes = crate::limits::read_regular(path, crate::limits::SMALL_FILE_MAX_BYTES).ok()?;
    String::from_utf8(bytes).ok()
}

/// What peerplate takes from /etc/resolv.conf (or `$PEERPLATE_RESOLV_CONF`,
/// which tests and unusual pods use to point elsewhere).
#[derive(Debug, Default, Clone)]
pub struct ResolvConf {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
}

impl ResolvConf {
    pub fn path() -> PathBuf {
        std::env::var_os("PEERPLATE_RESOLV_CONF")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf"))
    }

    pub fn load() -> ResolvConf {
        ResolvConf::parse(&read_small(&ResolvConf::path()).unwrap_or_default())
    }

    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(addr) = words.next().and_then(parse_nameserver) {
                        conf.nameservers.push(addr);
                    }
                }
                Some("search") => {
                    conf.search = words.map(|w| w.trim_end_matches('.').into()).collect()
                }
                _ => {}
            }
        }
        conf
    }

    /// The cluster domain from a pod's search list (`svc.cluster.local`), as
    /// peer-finder takes it.
    pub fn cluster_domain(&self) -> Option<String> {
        self.search
            .iter()
            .find_map(|s| s.strip_prefix("svc."))
            .filter(|d| !d.is_empty())
            .map(String::from)
    }
}
