#!/bin/sh
# Inputs settle -> converged: an app whose reload endpoint answers 503 until
# it "can accept" (a file appears) at a chosen moment; how long after that
# moment `peerplate run` has the reload accepted. The target is at most one
# backoff step (0.5 s doubling to 30 s, +-20 %) after the app can accept.
#
#   scripts/bench-converge.sh [SECONDS_UNTIL_THE_APP_ACCEPTS ...]   (default: 1 3 10)
#
# Needs python3 and a built target/release/peerplate (or PEERPLATE=path).
set -eu
bin=${PEERPLATE:-$(dirname "$0")/../target/release/peerplate}
[ -x "$bin" ] || bin=$(dirname "$0")/../target/debug/peerplate
dir=$(mktemp -d)
trap 'kill $app $pp 2>/dev/null; rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/app.py" <<EOF
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        code = 200 if os.path.exists("$dir/ready") else 503
        self.send_response(code); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", $port), H).serve_forever()
EOF
python3 "$dir/app.py" & app=$!
printf 'web-0.nginx.default.svc.cluster.local\n' > "$dir/peers"
printf 'x {{ peers | length }}\n' > "$dir/t.j2"
for wait in ${*:-1 3 10}; do
  rm -f "$dir/ready" "$dir/out" "$dir/log"
  cat > "$dir/peerplate.yaml" <<EOF
identity: {hostname: web-0, namespace: default}
peers: {file: $dir/peers}
templates: [{source: $dir/t.j2, destination: $dir/out}]
reload: {http: {url: "http://127.0.0.1:$port/-/reload", retries: 0}}
EOF
  "$bin" --config "$dir/peerplate.yaml" run 2> "$dir/log" & pp=$!
  sleep "$wait"
  touch "$dir/ready"
  start=$(date +%s.%N)
  until grep -q 'reload accepted' "$dir/log"; do sleep 0.01; done
  end=$(date +%s.%N)
  kill $pp; wait $pp 2>/dev/null || true
  tries=$(grep -c 'reload not answered' "$dir/log" || true)
  echo "app accepts after ${wait}s: converged $(echo "$end - $start" | bc) s later ($tries unanswered tries before)"
done
