#!/usr/bin/env bash
# Scales the example's StatefulSet in DNS: ./scale.sh N makes the pods
# web-0 .. web-(N-1) (pod K at 10.244.K/250.(K%250+2)), replacing the Service's
# SRV records and the pods' A records in one dynamic update, as the cluster's
# DNS does when the StatefulSet scales. ./scale.sh N web-K=IP moves pod K to a
# new IP (a restarted pod). Needs run.sh running.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${PORT:-5353}"
state="$here/state"
n="${1:?usage: scale.sh N [web-K=IP ...]}"
shift
svc=nginx.default.svc.cluster.local.
old="$(cat "$state/pods" 2>/dev/null || echo 0)"
weight=$(( n > 0 ? (100 / n > 0 ? 100 / n : 1) : 1 ))

declare -A ip
for ((k = 0; k < n; k++)); do ip[web-$k]="10.244.$((k / 250)).$((k % 250 + 2))"; done
for arg in "$@"; do ip[${arg%%=*}]="${arg#*=}"; done

{
  echo "server 127.0.0.1 $port"
  echo "zone cluster.local"
  echo "update delete $svc SRV"
  for ((k = 0; k < (old > n ? old : n); k++)); do echo "update delete web-$k.$svc A"; done
  for ((k = 0; k < n; k++)); do
    echo "update add $svc 30 IN SRV 0 $weight 80 web-$k.$svc"
    echo "update add web-$k.$svc 30 IN A ${ip[web-$k]}"
  done
  echo "send"
} | nsupdate -k "$state/update.key"
echo "$n" > "$state/pods"
echo "scale.sh: $n pod(s) in DNS" >&2
