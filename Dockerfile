# syntax=docker/dockerfile:1
# peerplate's container image: one static binary on a distroless base,
# running as uid/gid 65532, also installed as `peer-finder` (the drop-in for
# Kubernetes' peer-finder, chosen by the name it is invoked under).
#
#   docker build -t ghcr.io/peerplate/peerplate:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t IMAGE --push .
#
# The deploy/ manifests run this image and nginx as the same uid 65532, so
# peerplate can signal nginx with no capability; keep the two in step.
#
# Base images are pinned by digest (the multi-arch index digest). To move a
# pin, resolve the tag and paste the digest after the tag's `@sha256:`:
#   docker buildx imagetools inspect rust:1-bookworm --format '{{json .Manifest.Digest}}'
#   docker buildx imagetools inspect gcr.io/distroless/static-debian12:nonroot --format '{{json .Manifest.Digest}}'
# The release workflow (.github/workflows/release.yml) resolves every pinned
# digest first and fails on one that does not resolve.
#
# How this file is checked: the final stage is built and run by the
# container tests (scripts/test-images.sh cuts it out of this file and builds
# it with podman on a local stand-in for the distroless base, with the
# binary of scripts/build-release.sh, which the builder stage runs too;
# tests/integration/image.rs runs it read-only as uid 65532). The builder
# stage needs a registry, which CI here cannot reach: it runs in the release
# workflow. checkov scans this file (tests/integration/deploy.rs).
#
# The image is built with --features https (https:// URLs for the `http`
# reload action), as scripts/build-release.sh builds it.

# ---- build: a static binary, cross-compiled for the target platform ----------
# The builder runs on the build machine's own platform ($BUILDPLATFORM) and
# compiles for $TARGETARCH: arm64 is cross-compiled, never emulated.
FROM --platform=$BUILDPLATFORM rust:1-bookworm@sha256:93ce27a88655056a51dbdd8f5f2d7ddc071c7b0070fb288a37b5a285fc83971e AS builder
ARG TARGETARCH
WORKDIR /src
# The target's triple; for a foreign one, Debian's cross gcc and the
# target's glibc (static libraries for +crt-static) and Rust's std for it.
# Debian's gcc also answers to <arch>-linux-gnu-gcc natively, so the
# linker settings below hold for a native build too.
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; cross="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
      arm64) triple=aarch64-unknown-linux-gnu; cross="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
      *) echo "unsupported TARGETARCH: $TARGETARCH" >&2; exit 1 ;; \
    esac; \
    echo "$triple" > /triple; \
    if [ "$triple" != "$(rustc -vV | sed -n 's/^host: //p')" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends $cross; \
      rm -rf /var/lib/apt/lists/*; \
      rustup target add "$triple"; \
    fi
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# Dependencies in a layer of their own: built from the manifest and the
# lock file with empty sources, so a change under src/ rebuilds only
# peerplate. Both builds run scripts/build-release.sh, the one place the
# release's flags live (static glibc; on x86_64 also LLD, RELR relocations
# and the symbol order of build/peerplate.order), so both get the same
# RUSTFLAGS and the second reuses the first's dependencies. (--target keeps
# RUSTFLAGS away from build scripts and proc macros, which cannot be
# static.) Tried on the host with the stubs below: the stub build reuses
# nothing but the dependencies, and the real build needs both touches
# further down, or cargo keeps the empty stub library.
COPY Cargo.toml Cargo.lock ./
COPY scripts/build-release.sh scripts/
COPY build/ build/
RUN mkdir -p src benches tests/integration \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tests/integration/main.rs \
 && for b in render daemon dns reload leader verdict inputs; do echo 'fn main() {}' > "benches/$b.rs"; done \
 && TRIPLE="$(cat /triple)" scripts/build-release.sh \
 && rm -rf src benches tests
# The real build. peer-finder is a relative symlink to the binary, which
# chooses what to be by the name it is invoked under.
COPY . .
RUN touch src/main.rs src/lib.rs \
 && bin="$(TRIPLE="$(cat /triple)" scripts/build-release.sh | tail -n1)" \
 && mkdir -p /out \
 && cp "$bin" /out/peerplate \
 && ln -s peerplate /out/peer-finder

# ---- run: distroless static, non-root ----------------------------------------
# What goes in is this stage; the container tests build exactly these lines.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639
# A directory COPY keeps the symlink as a symlink: one copy of the binary.
COPY --from=builder /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 9090
# No shell in this image, and the probes are Kubernetes' (startupProbe on
# /readyz, livenessProbe on /healthz, see deploy/base/statefulset.yaml).
# checkov:skip=CKV_DOCKER_2:Health is checked by the Kubernetes probes on /healthz and /readyz; the image has no shell or HTTP client for a HEALTHCHECK.
ENTRYPOINT ["/usr/local/bin/peerplate"]
CMD ["run"]
