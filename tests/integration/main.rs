//! The integration test binary: it runs the real `peerplate` executable the way
//! an operator or a template author would, and asserts only on what they see:
//! files on disk, exit codes, stdout and stderr.
//!
//! The test kit: `helpers` holds the shared pieces (temp dirs, a
//! kubelet-style ConfigMap writer, a daemon guard, peer lists, free ports,
//! HTTP), `procfs` looks at processes through `/proc` (the benches include
//! both by `#[path]`), `pod` builds one pod's sandbox and config, and
//! `dns_server` / `bind_server` answer its DNS, and `podman` runs real
//! containers (the images of `scripts/test-images.sh`); every other module
//! covers one area.

mod bind_server;
mod cgroup;
mod dns_server;
mod helpers;
mod pod;
mod podman;
mod procfs;

mod admin;
mod bounded;
mod check;
mod container_pod;
mod converge;
mod deploy;
mod dns;
mod dns_bind;
mod e2e;
mod examples;
mod hooks;
mod image;
mod inputs;
mod leader;
mod limits;
mod live_config;
mod logs;
mod messages;
mod nginx;
mod once;
mod peer_finder;
mod prometheus;
mod release;
mod reload;
mod reloads;
mod render;
mod run;
mod safety;
mod seed;
mod structure;
mod supervision;
mod templates;
mod untrusted;
mod usability;
mod verify;
