#!/usr/bin/env bash
# Builds the two images the container tests run (tests/integration/image.rs,
# tests/integration/container_pod.rs), with podman and no registry:
#
#   localhost/peerplate-test/peerplate:test
#       the Dockerfile's final stage itself: its lines are cut out of the
#       Dockerfile and built by `podman build`, with two substitutions only
#       (checked: the build fails when either no longer matches): the
#       distroless base becomes a local stand-in holding what distroless
#       static ships besides a binary (/etc/passwd, /etc/group,
#       /etc/nsswitch.conf, /tmp, /home/nonroot, Debian's CA bundle), and
#       `COPY --from=builder /out/` copies the builder's /out as made here:
#       the static binary of scripts/build-release.sh and peer-finder, a
#       relative symlink to it.
#   localhost/peerplate-test/nginx:test
#       Debian bookworm (debootstrap --variant=minbase) with nginx-light: the
#       app container of the seed pod. The root filesystem is cached as a
#       tarball in $PEERPLATE_CI_CACHE (default /var/cache/peerplate-ci) and
#       reused while this recipe ($nginx_recipe) is the same.
#
# Needs root (debootstrap, image import), podman, runc, debootstrap and
# ca-certificates; .ci/run installs them. Runs podman with
# tests/podman/containers.conf unless CONTAINERS_CONF is set.
#
#   scripts/test-images.sh               # both images
#   PEERPLATE_RELEASE_BIN=PATH scripts/test-images.sh   # a binary already built
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

export CONTAINERS_CONF="${CONTAINERS_CONF:-$repo/tests/podman/containers.conf}"
cache="${PEERPLATE_CI_CACHE:-/var/cache/peerplate-ci}"
mirror="${PEERPLATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
peerplate_image=localhost/peerplate-test/peerplate:test
base_image=localhost/peerplate-test/distroless-static:nonroot
nginx_image=localhost/peerplate-test/nginx:test
nginx_recipe="bookworm-minbase-nginx-light-v1"

say() { printf 'test-images: %s\n' "$*" >&2; }
die() { printf 'test-images: error: %s\n' "$*" >&2; exit 1; }

work=$(mktemp -d /tmp/peerplate-test-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---- the peerplate image ------------------------------------------------------
started=$(date +%s)
bin="${PEERPLATE_RELEASE_BIN:-$(scripts/build-release.sh | tail -n1)}"
[ -x "$bin" ] || die "no release binary at $bin"
say "release binary $bin ($(stat -c %s "$bin") bytes)"

# The distroless static base, as far as a static binary can tell: the same
# users and groups (distroless's /etc/passwd and /etc/group), /tmp, the
# nonroot home, and a CA bundle (distroless takes Debian's ca-certificates).
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || die "$ca missing: apt-get install ca-certificates"
root="$work/distroless"
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot" "$root/root"
cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 1777 "$root/tmp"
chmod 0700 "$root/home/nonroot" "$root/root"
chown 65532:65532 "$root/home/nonroot"
tar --numeric-owner -C "$root" -cf "$work/distroless.tar" .
podman import --quiet --change 'USER 65532:65532' "$work/distroless.tar" "$base_image" >/dev/null

# The builder's /out, as the Dockerfile's builder stage leaves it.
ctx="$work/context"
mkdir -p "$ctx/out"
cp "$bin" "$ctx/out/peerplate"
chmod 0755 "$ctx/out/peerplate"
ln -s peerplate "$ctx/out/peer-finder"

# The final stage: from the last FROM to the end of the Dockerfile.
last_from=$(grep -n '^FROM ' Dockerfile | tail -n1 | cut -d: -f1)
tail -n "+$last_from" Dockerfile > "$work/final-stage"
from_re='^FROM gcr\.io/distroless/static-debian12:nonroot(@sha256:[0-9a-f]{64})?$'
copy_line='COPY --from=builder /out/ /usr/local/bin/'
[ "$(grep -cE "$from_re" "$work/final-stage")" = 1 ] \
  || die "the Dockerfile's final stage no longer starts FROM gcr.io/distroless/static-debian12:nonroot[@sha256:...]; update this script with it"
[ "$(grep -cxF "$copy_line" "$work/final-stage")" = 1 ] \
  || die "the Dockerfile's final stage no longer has '$copy_line'; update this script with it"
grep -E '^(COPY|ADD) ' "$work/final-stage" | grep -vxF "$copy_line" \
  && die "the Dockerfile's final stage copies something this script does not provide"
sed -E -e "s#$from_re#FROM $base_image#" -e "s#^COPY --from=builder /out/ #COPY out/ #" \
  "$work/final-stage" > "$ctx/Containerfile"
say "final stage of the Dockerfile, as built here:"
grep -vE '^\s*(#|$)' "$ctx/Containerfile" | sed 's/^/    /' >&2
podman build --quiet --pull=never -f "$ctx/Containerfile" -t "$peerplate_image" "$ctx" >/dev/null
say "$peerplate_image built in $(( $(date +%s) - started ))s"

# ---- the nginx image -----------------------------------------------------------
started=$(date +%s)
tarball="$cache/nginx-rootfs-$nginx_recipe.tar"
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || die "debootstrap is not installed"
  say "debootstrap bookworm (minbase, nginx-light) from $mirror: not cached yet"
  mkdir -p "$cache"
  rootfs="$work/nginx-rootfs"
  debootstrap --variant=minbase --include=nginx-light bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  # What an image does not need: package caches, lists, docs, locales.
  rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  say "cached $tarball ($(du -h "$tarball" | cut -f1)) in $(( $(date +%s) - started ))s"
fi
label="peerplate.test.rootfs=$nginx_recipe-$(stat -c %s-%Y "$tarball")"
have=$(podman image inspect --format '{{index .Config.Labels "peerplate.test.rootfs"}}' "$nginx_image" 2>/dev/null || true)
if [ "peerplate.test.rootfs=$have" != "$label" ]; then
  podman import --quiet --change "LABEL $label" --change 'USER 65532:65532' \
    --change 'CMD ["nginx", "-e", "stderr", "-c", "/conf/nginx.conf", "-g", "daemon off;"]' \
    "$tarball" "$nginx_image" >/dev/null
  say "$nginx_image imported in $(( $(date +%s) - started ))s"
else
  say "$nginx_image is up to date"
fi
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^localhost/peerplate-test/' >&2
