#!/usr/bin/env bash
# Starts BIND on 127.0.0.1:5353 serving cluster.local (see cluster.local.zone),
# then `peerplate run` against it in the foreground. Ctrl-C stops both.
# No root needed. State (key, zone journal, named.log) goes to ./state.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${PORT:-5353}"
state="$here/state"
export PATH="$PATH:/usr/sbin:/sbin"

for prog in named nsupdate tsig-keygen dig; do
  command -v "$prog" >/dev/null || { echo "run.sh: $prog not found; install: sudo apt-get install bind9 bind9-dnsutils" >&2; exit 1; }
done

# A fresh zone on every start; the key is made once and reused by scale.sh.
mkdir -p "$state" "$here/out"
rm -f "$state"/cluster.local.zone* "$state/pods"
cp "$here/cluster.local.zone" "$state/"
echo 2 > "$state/pods"
[ -s "$state/update.key" ] || tsig-keygen peerplate-example > "$state/update.key"

# BIND 9.18.28+ refuses more than 100 records of one type per name unless
# told otherwise; older versions do not know the option.
probe="$state/probe.conf"
echo 'options { max-records-per-type 0; };' > "$probe"
max_records=""
if named-checkconf "$probe" 2>/dev/null; then max_records="    max-records-per-type 0;"; fi
rm -f "$probe"
sed -e "s|@STATE@|$state|g" -e "s|@PORT@|$port|g" -e "s|@MAX_RECORDS@|$max_records|" \
  "$here/named.conf.in" > "$state/named.conf"

named -g -4 -n 1 -c "$state/named.conf" > "$state/named.log" 2>&1 &
named_pid=$!
stop_named() { kill "$named_pid" 2>/dev/null && wait "$named_pid" 2>/dev/null || true; }
trap stop_named EXIT
trap 'exit 130' INT TERM

for _ in $(seq 50); do
  if dig @127.0.0.1 -p "$port" +short +time=1 +tries=1 cluster.local SOA 2>/dev/null | grep -q hostmaster; then
    break
  fi
  if ! kill -0 "$named_pid" 2>/dev/null; then
    echo "run.sh: named exited; its log ($state/named.log):" >&2
    cat "$state/named.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "run.sh: BIND answers on 127.0.0.1:$port (log: $state/named.log)" >&2
dig @127.0.0.1 -p "$port" +noall +answer nginx.default.svc.cluster.local SRV >&2

# peerplate: $PEERPLATE if set, else the one on PATH, else build it with cargo.
if [ -n "${PEERPLATE:-}" ]; then
  pp=("$PEERPLATE")
elif command -v peerplate >/dev/null; then
  pp=(peerplate)
else
  pp=(cargo run --quiet --manifest-path "$here/../../Cargo.toml" --)
fi
"${pp[@]}" --config "$here/peerplate.yaml" run
