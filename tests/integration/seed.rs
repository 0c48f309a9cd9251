//! `seed` through the binary (`peerplate once` with `seed:` and no templates,
//! no `peers` section): the first run copies the tree like `cp -n -p -r`
//! (contents, modes including an executable, a 0600 file and a 0750
//! directory, modification times of files and directories, the owner when
//! run as root, a relative symlink kept as a symlink); a second run is a
//! no-op (no path's inode, mtime or ctime changes; the log says copied=0); a
//! file the app changed, re-moded or replaced is never overwritten; a file
//! the app deleted comes back on the next run (cp -n semantics: only what
//! exists is kept); `run` with `seed` warns and copies nothing; a `from` that
//! does not exist exits 1 naming it.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::helpers::{mode_of, run, Daemon, Outcome, Sandbox};

const WAIT: Duration = Duration::from_secs(10);

/// 2021-03-04 05:06:07 UTC, and a day later: times no copy would make up.
const OLD: u64 = 1_614_834_367;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn set_mtime(path: &Path, secs: u64) {
    let times = fs::FileTimes::new()
        .set_accessed(at(secs))
        .set_modified(at(secs));
    fs::File::open(path)
        .expect("open to set times")
        .set_times(times)
        .expect("set times");
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The seed tree under `src/`:
///
/// ```text
/// app.conf            0644  "listen 80;"
/// run.sh              0755  executable
/// secret              0600
/// link -> app.conf    relative symlink
/// nested/             0750
///   deeper/data.txt   0640
///   up -> ../app.conf relative symlink, one level up
/// ```
///
/// Every file and directory gets its own old mtime (files first, then
/// directories bottom-up, so filling them does not move their times).
fn seed_tree(sb: &Sandbox) -> PathBuf {
    let src = sb.mkdir("src");
    sb.write("src/app.conf", "listen 80;\n");
    sb.write("src/run.sh", "#!/bin/sh\necho seeded\n");
    sb.write("src/secret", "hunter2\n");
    sb.write("src/nested/deeper/data.txt", "payload\n");
    symlink("app.conf", src.join("link")).expect("symlink");
    symlink("../app.conf", src.join("nested/up")).expect("symlink");
    chmod(&src.join("app.conf"), 0o644);
    chmod(&src.join("run.sh"), 0o755);
    chmod(&src.join("secret"), 0o600);
    chmod(&src.join("nested/deeper/data.txt"), 0o640);
    chmod(&src.join("nested"), 0o750);
    for (i, rel) in ["app.conf", "run.sh", "secret", "nested/deeper/data.txt"]
        .iter()
        .enumerate()
    {
        set_mtime(&src.join(rel), OLD + 3600 * i as u64);
    }
    set_mtime(&src.join("nested/deeper"), OLD + 86_400);
    set_mtime(&src.join("nested"), OLD + 2 * 86_400);
    set_mtime(&src, OLD + 3 * 86_400);
    src
}

/// A config with only `identity` and `seed` (src -> dst), no peers, no
/// templates; `from` may be overridden.
fn config(sb: &Sandbox, from: &Path) -> PathBuf {
    sb.write(
        "peerplate.yaml",
        &format!(
            "identity: {{hostname: web-1, namespace: default}}\ntemplates: []\nseed:\n  - from: {}\n    to: {}\n",
            from.display(),
            sb.join("dst").display()
        ),
    )
}

fn once(sb: &Sandbox, config: &Path) -> Outcome {
    let out = run(&mut sb.peerplate(["--config", &config.display().to_string(), "once"]));
    assert_eq!(out.code, Some(0), "{}", out.dump());
    out
}

/// What would show any touch of a path (symlinks not followed): inode,
/// mtime, ctime, mode, size and, for a file, its bytes.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    size: u64,
    content: Vec<u8>,
}

fn stamp(path: &Path) -> Stamp {
    let m = fs::symlink_metadata(path).expect("lstat");
    Stamp {
        ino: m.ino(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        mode: m.mode(),
        size: m.size(),
        content: if m.is_file() {
            fs::read(path).expect("read")
        } else {
            Vec::new()
        },
    }
}

/// `dir` and every path under it (relative, sorted), stamped.
fn snapshot(dir: &Path) -> Vec<(String, Stamp)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Stamp)>) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            out.push((rel, stamp(&path)));
            if fs::symlink_metadata(&path).expect("lstat").is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = vec![(".".to_string(), stamp(dir))];
    walk(dir, dir, &mut out);
    out.sort_by(|x, y| x.0.cmp(&y.0));
    out
}

/// The `seeded` log line.
fn seeded_line(out: &Outcome) -> String {
    out.stderr
        .lines()
        .find(|l| l.contains("seeded"))
        .unwrap_or_else(|| panic!("no `seeded` log line\n{}", out.dump()))
        .to_string()
}

fn mtime(path: &Path) -> SystemTime {
    fs::symlink_metadata(path)
        .expect("lstat")
        .modified()
        .expect("mtime")
}

#[test]
fn first_once_copies_the_tree_keeping_modes_times_owner_and_symlinks() {
    let sb = Sandbox::new();
    let src = seed_tree(&sb);
    // /proc/self belongs to the effective user.
    let root_user = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if root_user {
        // As root, cp -p keeps the owner: give one file someone else's.
        std::os::unix::fs::chown(src.join("secret"), Some(4321), Some(4322)).expect("chown");
        std::os::unix::fs::lchown(src.join("link"), Some(4321), Some(4322)).expect("lchown");
    }
    let config = config(&sb, &src);
    let out = once(&sb, &config);
    let dst = sb.join("dst");

    // Contents.
    for (rel, want) in [
        ("app.conf", "listen 80;\n"),
        ("run.sh", "#!/bin/sh\necho seeded\n"),
        ("secret", "hunter2\n"),
        ("nested/deeper/data.txt", "payload\n"),
    ] {
        assert_eq!(
            fs::read_to_string(dst.join(rel)).ok().as_deref(),
            Some(want),
            "{rel}\n{}",
            out.dump()
        );
    }
    // Modes.
    for (rel, want) in [
        ("app.conf", 0o644),
        ("run.sh", 0o755),
        ("secret", 0o600),
        ("nested/deeper/data.txt", 0o640),
        ("nested", 0o750),
    ] {
        assert_eq!(mode_of(&dst.join(rel)), want, "mode of {rel}");
    }
    // The executable still runs.
    let ran = std::process::Command::new(dst.join("run.sh"))
        .output()
        .expect("run the seeded script");
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "seeded\n");
    // Symlinks are symlinks, with their relative targets as written.
    for (rel, target) in [("link", "app.conf"), ("nested/up", "../app.conf")] {
        let meta = fs::symlink_metadata(dst.join(rel)).expect("lstat");
        assert!(meta.file_type().is_symlink(), "{rel} is not a symlink");
        assert_eq!(
            fs::read_link(dst.join(rel)).expect("readlink"),
            Path::new(target)
        );
    }
    assert_eq!(
        fs::read_to_string(dst.join("nested/up")).expect("follow up"),
        "listen 80;\n",
        "a relative link resolves inside the copy"
    );
    // Modification times, of files and of directories.
    for rel in [
        "app.conf",
        "run.sh",
        "secret",
        "nested/deeper/data.txt",
        "nested/deeper",
        "nested",
        "",
    ] {
        assert_eq!(
            mtime(&dst.join(rel)),
            mtime(&src.join(rel)),
            "mtime of {:?}",
            if rel.is_empty() { "dst" } else { rel }
        );
    }
    // Owner.
    for rel in ["secret", "link", "app.conf"] {
        let (s, d) = (
            fs::symlink_metadata(src.join(rel)).expect("lstat"),
            fs::symlink_metadata(dst.join(rel)).expect("lstat"),
        );
        assert_eq!((d.uid(), d.gid()), (s.uid(), s.gid()), "owner of {rel}");
    }
    if root_user {
        let d = fs::metadata(dst.join("secret")).expect("stat");
        assert_eq!((d.uid(), d.gid()), (4321, 4322));
    }
    // Nothing else: no staging leftovers.
    let mut listing: Vec<String> = sb
        .listing()
        .into_iter()
        .filter_map(|p| p.strip_prefix("dst/").map(str::to_string))
        .collect();
    listing.sort();
    assert_eq!(
        listing,
        [
            "app.conf",
            "link",
            "nested",
            "nested/deeper",
            "nested/deeper/data.txt",
            "nested/up",
            "run.sh",
            "secret"
        ]
    );
    // dst itself + 8 entries.
    let line = seeded_line(&out);
    assert!(line.contains("copied=9"), "{line}");
    assert!(line.contains("kept=0"), "{line}");
}

#[test]
fn second_once_is_a_no_op() {
    let sb = Sandbox::new();
    let src = seed_tree(&sb);
    let config = config(&sb, &src);
    once(&sb, &config);
    let dst = sb.join("dst");
    let before = snapshot(&dst);
    // Let a touch, if any, show in the timestamps.
    std::thread::sleep(Duration::from_millis(20));

    let out = once(&sb, &config);
    let line = seeded_line(&out);
    assert!(line.contains("copied=0"), "{line}");
    assert!(line.contains("kept=9"), "{line}");
    assert_eq!(snapshot(&dst), before, "the second run touched something");
}

#[test]
fn app_changes_survive_and_deleted_files_come_back() {
    let sb = Sandbox::new();
    let src = seed_tree(&sb);
    let config = config(&sb, &src);
    once(&sb, &config);
    let dst = sb.join("dst");

    // The app at work between restarts.
    fs::write(dst.join("app.conf"), "listen 8080; # tuned by the app\n").expect("edit");
    chmod(&dst.join("run.sh"), 0o700);
    fs::remove_file(dst.join("link")).expect("remove link");
    fs::write(dst.join("link"), "a file where the seed has a symlink\n").expect("replace link");
    fs::remove_file(dst.join("nested/deeper/data.txt")).expect("delete");
    fs::write(dst.join("state.db"), "the app's own state\n").expect("new file");
    // And the image ships a new seed file.
    sb.write("src/nested/new.txt", "new in the image\n");
    let kept = [
        "app.conf",
        "run.sh",
        "link",
        "state.db",
        "secret",
        "nested/up",
    ]
    .map(|rel| (rel, stamp(&dst.join(rel))));

    let out = once(&sb, &config);

    // Nothing the app has is overwritten, re-moded or replaced.
    for (rel, before) in &kept {
        assert_eq!(&stamp(&dst.join(rel)), before, "{rel} was touched");
    }
    assert_eq!(
        fs::read_to_string(dst.join("app.conf")).expect("read"),
        "listen 8080; # tuned by the app\n"
    );
    assert_eq!(mode_of(&dst.join("run.sh")), 0o700);
    assert!(!fs::symlink_metadata(dst.join("link"))
        .expect("lstat")
        .is_symlink());

    // cp -n semantics: a seeded file the app deleted is copied again, as
    // seeded (contents, mode, time); new seed files arrive.
    assert_eq!(
        fs::read_to_string(dst.join("nested/deeper/data.txt"))
            .ok()
            .as_deref(),
        Some("payload\n"),
        "{}",
        out.dump()
    );
    assert_eq!(mode_of(&dst.join("nested/deeper/data.txt")), 0o640);
    assert_eq!(
        mtime(&dst.join("nested/deeper/data.txt")),
        mtime(&src.join("nested/deeper/data.txt"))
    );
    assert_eq!(
        fs::read_to_string(dst.join("nested/new.txt"))
            .ok()
            .as_deref(),
        Some("new in the image\n")
    );
    let line = seeded_line(&out);
    assert!(line.contains("copied=2"), "{line}");
}

#[test]
fn run_with_seed_warns_and_copies_nothing() {
    let sb = Sandbox::new();
    let src = seed_tree(&sb);
    let config = config(&sb, &src);
    let mut d = Daemon::spawn(sb.peerplate(["--config", &config.display().to_string(), "run"]));
    d.wait_for_log("seed runs with `once`", WAIT);
    let warning = d
        .stderr()
        .lines()
        .find(|l| l.contains("seed runs with `once`"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(warning.contains("WARN"), "{warning}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.is_running(), "{}", d.logs());
    assert!(
        fs::symlink_metadata(sb.join("dst")).is_err(),
        "run copied the seed\n{}",
        d.logs()
    );
    assert!(!d.stderr().contains("seeded"), "{}", d.logs());
    let status = d.terminate();
    assert_eq!(status.code(), Some(0), "{}", d.logs());
}

#[test]
fn a_missing_seed_source_exits_1_naming_it() {
    let sb = Sandbox::new();
    let missing = sb.join("no-such-seed");
    let config = config(&sb, &missing);
    let out = run(&mut sb.peerplate(["--config", &config.display().to_string(), "once"]));
    assert_eq!(out.code, Some(1), "{}", out.dump());
    assert!(
        out.stderr.contains(&missing.display().to_string()),
        "the error does not name {}\n{}",
        missing.display(),
        out.dump()
    );
    assert!(
        fs::symlink_metadata(sb.join("dst")).is_err(),
        "dst was created"
    );
}
