#!/usr/bin/env bash
# Idle memory of `peerplate run` (a file peer source, 2 peers, one
# template), read from /proc after it settles: VmRSS and RssAnon in kB.
# With FILE_INPUTS=1 the template also reads three files with file() (a
# Secret-style volume), which are then watched.
#
#   scripts/idle-rss.sh BIN            # e.g. "$(scripts/build-release.sh | tail -n1)"
#   FILE_INPUTS=1 scripts/idle-rss.sh BIN
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/out" "$dir/secret"
printf 'web-0.nginx.default.svc.cluster.local\nweb-1.nginx.default.svc.cluster.local\n' >"$dir/peers"
template='{% for p in peers %}server {{ p }};
{% endfor %}'
if [ "${FILE_INPUTS:-0}" = 1 ]; then
    for k in a b c; do printf 'secret-%s\n' "$k" >"$dir/secret/$k"; done
    template="$template
{{ file(\"secret/a\") }}{{ file(\"secret/b\") }}{{ file(\"secret/c\") }}"
fi
printf '%s\n' "$template" >"$dir/t.j2"
cat >"$dir/peerplate.yaml" <<YAML
identity: {hostname: web-1, namespace: default}
peers: {file: peers}
templates:
  - {source: t.j2, destination: out/t}
YAML
"$bin" --config "$dir/peerplate.yaml" run 2>"$dir/log" &
pid=$!
sleep "${SETTLE:-3}"
grep -E '^(VmRSS|RssAnon)' "/proc/$pid/status"
grep -c rendered "$dir/log" >/dev/null || { cat "$dir/log"; exit 1; }
