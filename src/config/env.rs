//! What the config's defaults come from: the pod's environment (host name,
//! namespace, resolv.conf, the pod's own line in /etc/hosts), read once at
//! the edge and passed into the otherwise pure resolution.

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
    /// `/etc/hosts` (or `$PEERPLATE_HOSTS`) as text, empty if unreadable:
    /// where `peers.dns.service` comes from when the config names none
    /// (see [`pod_subdomain`]).
    pub hosts: String,
}

impl Env {
    /// Reads this process's environment.
    pub fn from_process() -> Env {
        Env {
            hostname: default_hostname(),
            namespace: default_namespace(),
            resolv: ResolvConf::load(),
            hosts: read_hosts(),
        }
    }
}

/// The most of /etc/hosts read: kubelet's file is a few hundred bytes; a
/// bigger one (host aliases) still has the pod's own line near the top.
const HOSTS_MAX: u64 = 64 * 1024;

/// The hosts file's path: `$PEERPLATE_HOSTS` (tests, unusual pods), else
/// `/etc/hosts`.
pub fn hosts_path() -> PathBuf {
    std::env::var_os("PEERPLATE_HOSTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/hosts"))
}

/// The hosts file's text (at most [`HOSTS_MAX`] bytes), empty if unreadable.
fn read_hosts() -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(hosts_path()) {
        let _ = file.take(HOSTS_MAX).read_to_string(&mut text);
    }
    text
}

/// The pod's subdomain, i.e. its StatefulSet's `serviceName`, from the line
/// kubelet writes into a pod's /etc/hosts when the pod has a hostname and a
/// subdomain (every StatefulSet pod):
/// `<ip>\t<host>.<service>.<namespace>.svc.<cluster domain>\t<host>`
/// (Kubernetes, "DNS for Services and Pods": A/AAAA records of a pod with
/// `hostname` and `subdomain`). `None` when no name on any line starts with
/// `<hostname>.` and has `svc` as its fourth label.
pub fn pod_subdomain(hosts: &str, hostname: &str) -> Option<String> {
    hosts
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .flat_map(|line| line.split_whitespace().skip(1))
        .find_map(|name| {
            let rest = name.strip_prefix(hostname)?.strip_prefix('.')?;
            let labels: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
            (labels.len() >= 4 && labels[2] == "svc" && labels.iter().all(|l| !l.is_empty()))
                .then(|| labels[0].to_string())
        })
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
    /// `$PEERPLATE_RESOLV_CONF`, else `/etc/resolv.conf`.
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

#[cfg(test)]
mod tests {
    use super::pod_subdomain;

    /// /etc/hosts as kubelet writes it for pod web-1 of a StatefulSet whose
    /// serviceName is "blue-redis" (kubelet's managed-hosts header, tabs).
    const KUBELET_HOSTS: &str = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.244.1.7\tredis-1.blue-redis.shop.svc.cluster.local\tredis-1\n\n# Entries added by HostAliases.\n10.0.0.9\tredis-1.other.x\n";

    #[test]
    fn the_service_is_the_pods_own_subdomain() {
        assert_eq!(
            pod_subdomain(KUBELET_HOSTS, "redis-1").as_deref(),
            Some("blue-redis")
        );
    }

    #[test]
    fn no_line_of_this_pod_gives_none() {
        // Another pod's name, a prefix of this one's, a plain host file.
        assert_eq!(pod_subdomain(KUBELET_HOSTS, "redis-0"), None);
        assert_eq!(pod_subdomain(KUBELET_HOSTS, "redis"), None);
        assert_eq!(pod_subdomain("127.0.0.1 localhost\n", "redis-1"), None);
        assert_eq!(pod_subdomain("", "redis-1"), None);
        // A pod with a subdomain-less hostname (no serviceName): no svc label.
        assert_eq!(
            pod_subdomain("10.0.0.1\tredis-1.example.com\tredis-1\n", "redis-1"),
            None
        );
    }
}
