//! The examples' READMEs, step by step, through the binary: every sentence
//! that says what a step does is checked here (issue 14). Each example is
//! copied into a sandbox first (with `templates/` beside it, where its
//! config expects it), so the repository is never written.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::helpers::{poll_until, repo_file, run, Daemon, Sandbox};

const WAIT: Duration = Duration::from_secs(10);

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("type");
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_symlink() {
            let link = fs::read_link(entry.path()).expect("readlink");
            std::os::unix::fs::symlink(link, &target).expect("symlink");
        } else if kind.is_file() {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// `<sb>/examples/NAME` and `<sb>/templates`, as in the repository.
fn example(name: &str) -> (Sandbox, std::path::PathBuf) {
    let sb = Sandbox::new();
    copy_dir(&repo_file("templates"), &sb.join("templates"));
    let dir = sb.join(&format!("examples/{name}"));
    copy_dir(&repo_file(&format!("examples/{name}")), &dir);
    // What a run in the repository left behind (git ignores it).
    let _ = fs::remove_file(dir.join("out/nginx.conf"));
    let _ = fs::remove_dir_all(dir.join("state"));
    (sb, dir)
}

#[test]
fn examples_local_readme_steps() {
    let (sb, dir) = example("local");
    let config = dir.join("peerplate.yaml").display().to_string();
    let out = dir.join("out/nginx.conf");
    let mut d = Daemon::spawn(sb.peerplate(["--config", &config, "run"]));
    // "renders out/nginx.conf as pod web-1 (a follower that proxies to web-0)"
    assert!(poll_until(WAIT, || out.exists()), "{}", d.logs());
    let first = fs::read_to_string(&out).expect("output");
    assert!(
        first.contains("set $leader \"web-0.nginx.default.svc.cluster.local\";")
            || first.contains("proxy_pass http://web-0.nginx.default.svc.cluster.local"),
        "{first}"
    );

    // "scale up: the log says `peer set changed` and renders changed=false"
    let mark = d.mark();
    let peers = dir.join("peers");
    let text = fs::read_to_string(&peers).expect("peers");
    fs::write(
        &peers,
        format!("{text}web-2.nginx.default.svc.cluster.local\n"),
    )
    .expect("write");
    let line = d.wait_for_line(mark, &["rendered", "changed=false"], WAIT);
    assert!(line.contains("nginx.conf"), "{line}");
    assert!(
        d.lines_since(mark)
            .iter()
            .any(|l| l.contains("peer set changed")),
        "{}",
        d.logs()
    );
    assert_eq!(fs::read_to_string(&out).expect("output"), first);

    // "the leader goes away: web-1 is now peer 0 and serves its own name"
    let mark = d.mark();
    let text = fs::read_to_string(&peers).expect("peers");
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("web-0"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&peers, without).expect("write");
    d.wait_for_line(mark, &["rendered", "changed=true"], WAIT);
    let now = fs::read_to_string(&out).expect("output");
    assert!(now.contains("return 200 \"web-1\\n\";"), "{now}");

    // "break it ({{ pod.hostnam }}): the log names the template and the
    // line while out/nginx.conf keeps its last good content"
    let mark = d.mark();
    let template = sb.join("templates/nginx.conf.j2");
    let good = fs::read_to_string(&template).expect("template");
    fs::write(
        &template,
        good.replace("{{ pod.hostname }}", "{{ pod.hostnam }}"),
    )
    .expect("write");
    let line = d.wait_for_line(mark, &["render failed", "nginx.conf.j2"], WAIT);
    assert!(line.contains("line "), "{line}");
    assert_eq!(fs::read_to_string(&out).expect("output"), now);
    d.terminate();

    // "For an init container's single pass ... once"; "render ... --hostname web-0"
    fs::write(&template, good).expect("restore");
    // `check` of the example: ok, and no warning about the shipped template
    // (its `{{ leader.port }}` sits inside `{% if leader.port %}`).
    let check = run(&mut sb.peerplate(["--config", &config, "check"]));
    assert_eq!(check.code, Some(0), "{}", check.dump());
    assert!(!check.stderr.contains("WARN"), "{}", check.dump());
    let once = run(&mut sb.peerplate(["--config", &config, "once"]));
    assert_eq!(once.code, Some(0), "{}", once.dump());
    let render = run(&mut sb.peerplate(["--config", &config, "render", "--hostname", "web-0"]));
    assert_eq!(render.code, Some(0), "{}", render.dump());
    assert!(render.stdout.contains("events {}"), "{}", render.dump());
}

#[test]
fn examples_seed_volume_readme_steps() {
    let (sb, dir) = example("seed-volume");
    let config = dir.join("peerplate.yaml").display().to_string();
    let once = || run(&mut sb.peerplate(["--config", &config, "once"]));
    let first = once();
    assert_eq!(first.code, Some(0), "{}", first.dump());
    assert!(
        first.stderr.contains("copied=6") && first.stderr.contains("kept=0"),
        "{}",
        first.dump()
    );
    let hello = dir.join("state/bin/hello");
    let ran = run(&mut std::process::Command::new(&hello));
    assert_eq!(
        ran.code,
        Some(0),
        "the executable kept its mode: {}",
        ran.dump()
    );
    let app = dir.join("state/conf.d/app.conf");
    let changed = format!(
        "{}maxmemory 128mb\n",
        fs::read_to_string(&app).expect("app.conf")
    );
    fs::write(&app, &changed).expect("write");
    let second = once();
    assert!(
        second.stderr.contains("copied=0") && second.stderr.contains("kept=6"),
        "{}",
        second.dump()
    );
    assert_eq!(
        fs::read_to_string(&app).expect("app.conf"),
        changed,
        "the change stays"
    );
    fs::remove_file(&hello).expect("rm");
    let third = once();
    assert!(third.stderr.contains("copied=1"), "{}", third.dump());
    assert!(hello.exists(), "what was deleted comes back");
}

/// README.md starts where a newcomer does: what it is, the two commands
/// (exactly as the tests above run the first), a five-minute tour, then the
/// reference, whose contents list every section below it with the anchor
/// GitHub gives it; the status table names no internal issue.
#[test]
fn the_readme_leads_with_the_two_commands_a_tour_and_a_table_of_contents() {
    let readme = std::fs::read_to_string(repo_file("README.md")).expect("README.md");
    let at = |heading: &str| {
        readme
            .find(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("README.md has no {heading:?}"))
    };
    let (two, tour, reference) = (
        at("## Two commands"),
        at("## A five-minute tour"),
        at("## Reference"),
    );
    assert!(
        two < tour && tour < reference,
        "two commands, tour, reference"
    );
    assert!(
        readme.lines().take_while(|l| !l.starts_with("## ")).count() <= 15,
        "what it is, in a few lines, before the two commands"
    );
    for command in [
        "cargo run -- --config examples/local/peerplate.yaml run\n",
        "scripts/test.sh\n",
    ] {
        assert!(
            readme[two..tour].contains(command),
            "the two commands include {command:?}"
        );
    }
    let slug = |heading: &str| -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    };
    let below = &readme[reference + 1..];
    let contents: Vec<&str> = below
        .lines()
        .skip(1)
        .skip_while(|l| !l.trim_start().starts_with("- ["))
        .take_while(|l| l.trim_start().starts_with("- ["))
        .collect();
    let mut in_code = false;
    let mut headings = 0;
    for line in below.lines().skip(1) {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let Some(heading) = line
            .strip_prefix("## ")
            .or_else(|| line.strip_prefix("### "))
            .filter(|_| !in_code)
        else {
            continue;
        };
        headings += 1;
        let entry = format!("[{heading}](#{})", slug(heading));
        assert!(
            contents
                .iter()
                .any(|c| c.trim_start() == format!("- {entry}")),
            "the contents list {entry}:\n{}",
            contents.join("\n")
        );
    }
    assert_eq!(contents.len(), headings, "one entry per section");
    let status = &readme[at("## Status")..];
    let status = &status[..status[3..].find("\n## ").map_or(status.len(), |i| i + 3)];
    for word in ["issue ", "item "] {
        assert!(
            !status.contains(word),
            "the status table names no internal {word:?}:\n{status}"
        );
    }
}
