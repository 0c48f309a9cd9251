#!/usr/bin/env bash
# Sets the pods the cluster's DNS knows: ./pods.sh web-1 leaves only web-1,
# ./pods.sh web-0 web-1 puts both back. Pod web-K is at 127.0.0.1K. One
# dynamic update replaces the Service's SRV records. Needs run.sh running.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dns_port="${DNS_PORT:-5353}"
http_port="${HTTP_PORT:-8080}"
svc=nginx.default.svc.cluster.local.
export PATH="$PATH:/usr/sbin:/sbin"

{
  echo "server 127.0.0.1 $dns_port"
  echo "zone cluster.local"
  echo "update delete $svc SRV"
  for host in "$@"; do
    k="${host#web-}"
    echo "update add $svc 30 IN SRV 0 50 $http_port $host.$svc"
    echo "update delete $host.$svc A"
    echo "update add $host.$svc 30 IN A 127.0.0.1$k"
  done
  echo "send"
} | nsupdate -k "$here/state/update.key"
echo "pods.sh: pods in DNS: ${*:-none}" >&2
