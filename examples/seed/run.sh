#!/usr/bin/env bash
# The seed scenario on one machine: BIND plays the cluster's DNS on
# 127.0.0.1:5353, and two "pods" each run nginx and a peerplate sidecar:
# web-0 on 127.0.0.10:8080 (the leader: answers with its own name) and web-1
# on 127.0.0.11:8080 (a follower: proxies to the leader, found through DNS).
# Runs until Ctrl-C, which stops everything it started. State and logs in
# ./state. Run it as root (sudo): Debian's nginx opens /var/log/nginx and
# /var/lib/nginx, compiled-in paths the shipped template does not override.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dns_port="${DNS_PORT:-5353}"
http_port="${HTTP_PORT:-8080}"
state="$here/state"
export PATH="$PATH:/usr/sbin:/sbin"

for prog in named nsupdate tsig-keygen dig nginx curl; do
  command -v "$prog" >/dev/null || {
    echo "run.sh: $prog not found; install: sudo apt-get install bind9 bind9-dnsutils nginx curl" >&2
    exit 1
  }
done

# peerplate: $PEERPLATE if set, else the one on PATH, else built with cargo.
if [ -n "${PEERPLATE:-}" ]; then
  pp="$PEERPLATE"
elif command -v peerplate >/dev/null; then
  pp="$(command -v peerplate)"
else
  echo "run.sh: building peerplate with cargo" >&2
  cargo build --quiet --manifest-path "$repo/Cargo.toml"
  pp="${CARGO_TARGET_DIR:-$repo/target}/debug/peerplate"
fi

pids=()
stop_all() {
  for k in 0 1; do
    if [ -s "$state/web-$k/nginx.pid" ]; then
      kill "$(cat "$state/web-$k/nginx.pid")" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# --- DNS: a fresh zone on every start -------------------------------------
rm -rf "$state"
mkdir -p "$state"
sed "s|@HTTP_PORT@|$http_port|g" "$here/cluster.local.zone" > "$state/cluster.local.zone"
tsig-keygen peerplate-example > "$state/update.key"
probe="$state/probe.conf"
echo 'options { max-records-per-type 0; };' > "$probe"
max_records=""
if named-checkconf "$probe" 2>/dev/null; then max_records="    max-records-per-type 0;"; fi
rm -f "$probe"
sed -e "s|@STATE@|$state|g" -e "s|@PORT@|$dns_port|g" -e "s|@MAX_RECORDS@|$max_records|" \
  "$here/named.conf.in" > "$state/named.conf"
named -g -4 -n 1 -c "$state/named.conf" > "$state/named.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  dig @127.0.0.1 -p "$dns_port" +short +time=1 +tries=1 cluster.local SOA 2>/dev/null | grep -q hostmaster && break
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "run.sh: named exited; its log ($state/named.log):" >&2
    cat "$state/named.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "run.sh: BIND answers on 127.0.0.1:$dns_port:" >&2
dig @127.0.0.1 -p "$dns_port" +noall +answer nginx.default.svc.cluster.local SRV >&2

# --- the pods: peerplate renders first, then nginx starts, then the sidecar loop
nginx_bin="$(command -v nginx)"
for k in 0 1; do
  host="web-$k" ip="127.0.0.1$k" dir="$state/web-$k"
  mkdir -p "$dir/logs"
  sed -e "s|@HOST@|$host|g" -e "s|@IP@|$ip|g" -e "s|@STATE@|$state|g" -e "s|@REPO@|$repo|g" \
    -e "s|@DNS_PORT@|$dns_port|g" -e "s|@HTTP_PORT@|$http_port|g" -e "s|@NGINX@|$nginx_bin|g" \
    "$here/peerplate.yaml.in" > "$dir/peerplate.yaml"
  # The init container: wait until this pod is in DNS, render, exit.
  HOSTNAME="$host" "$pp" --config "$dir/peerplate.yaml" once 2>> "$dir/peerplate.log"
  # The app: nginx daemonizes (master + worker), its pid in nginx.pid.
  nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" -g "pid $dir/nginx.pid;"
  # The sidecar: re-render on DNS changes, check, install, SIGHUP nginx.
  HOSTNAME="$host" "$pp" --config "$dir/peerplate.yaml" run 2>> "$dir/peerplate.log" &
  pids+=($!)
  echo "run.sh: pod $host: nginx on $ip:$http_port, peerplate log $dir/peerplate.log" >&2
done

for k in 0 1; do
  for _ in $(seq 50); do
    body="$(curl -s --max-time 1 "http://127.0.0.1$k:$http_port/" || true)"
    [ -n "$body" ] && break
    sleep 0.1
  done
  echo "curl http://127.0.0.1$k:$http_port/  ->  $body"
done
cat >&2 <<MSG

run.sh: running. In another terminal:
  curl http://127.0.0.11:$http_port/     # web-1 proxies to the leader: web-0
  examples/seed/pods.sh web-1            # the leader leaves DNS, web-1 leads
  curl http://127.0.0.11:$http_port/     # web-1 (re-rendered, checked, nginx reloaded)
  examples/seed/pods.sh web-0 web-1      # web-0 is back
  tail -f examples/seed/state/web-1/peerplate.log
Ctrl-C stops BIND, both nginx and both peerplate.
MSG
wait
