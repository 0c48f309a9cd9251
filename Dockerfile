# syntax=docker/dockerfile:1
# peerplate's container image: one static binary on a distroless base,
# running as uid/gid 65532, also installed as `peer-finder` (the drop-in for
# Kubernetes' peer-finder, chosen by the name it is invoked under).
#
#   docker build -t ghcr.io/peerplate/peerplate:0.1.0 .
#
# The deploy/ manifests run this image and nginx as the same uid 65532, so
# peerplate can signal nginx with no capability; keep the two in step.
#
# How this file was checked: no Docker engine runs where it was written, so
# the builder stage's command was run on the host (Debian 12, x86_64, the
# Rust toolchain of the repository's CI):
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu
# (now with --features https, the `http` reload action's https:// URLs, as
# scripts/build-release.sh builds it)
# and its output checked: `file` says "static-pie linked", `ldd` says
# "statically linked", no linker warnings; `peerplate --version` prints
# "peerplate 0.1.0"; invoked through a symlink named peer-finder it prints
# peer-finder's own "Incomplete args" message (exit 1) and its Go-style usage
# for an unknown flag (exit 2); and in an empty root holding nothing but
# /usr/local/bin as this image lays it out (`unshare --map-root-user
# --root=DIR`: no libc, no /etc) it runs `--version`, answers as peer-finder,
# and runs `once` with a seed that copies the binary out, as the deploy/
# overlays do. The Dockerfile itself is scanned by checkov
# (tests/integration/deploy.rs).

# ---- build: a static binary --------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# --target (the builder's own triple, x86_64-unknown-linux-gnu on amd64) keeps
# RUSTFLAGS away from build scripts and proc macros, which cannot be static.
# peer-finder is a relative symlink to the binary, which chooses what to be
# by the name it is invoked under.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --features https --target "$target" \
 && mkdir -p /out \
 && cp "target/$target/release/peerplate" /out/peerplate \
 && ln -s peerplate /out/peer-finder \
 && /out/peerplate --version

# ---- run: distroless static, non-root ----------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
# A directory COPY keeps the symlink as a symlink: one copy of the binary.
COPY --from=builder /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 9090
# No shell in this image, and the probes are Kubernetes' (startupProbe on
# /readyz, livenessProbe on /healthz, see deploy/base/statefulset.yaml).
# checkov:skip=CKV_DOCKER_2:Health is checked by the Kubernetes probes on /healthz and /readyz; the image has no shell or HTTP client for a HEALTHCHECK.
ENTRYPOINT ["/usr/local/bin/peerplate"]
CMD ["run"]
