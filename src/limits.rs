//! The bounds on what peerplate reads, and the one way it reads a file
//! within them.
//!
//! Every file that comes from outside (the config, also when re-read live,
//! a template, a `file()` input, the peers file, a pid file, resolv.conf)
//! is read by [`read_regular`]: only a regular file (a FIFO would block the reader
//! forever, `/dev/zero` would fill the memory), opened without blocking, and
//! never more than its limit. The limits fit the 32 MiB sidecar `deploy/`
//! runs.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest peers file: 1 MiB.
pub const PEERS_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// The most names a peers file may hold.
pub const PEERS_MAX_NAMES: usize = 10_000;

/// The largest config file: 1 MiB.
pub const CONFIG_MAX_BYTES: u64 = 1024 * 1024;

/// The largest small system file (resolv.conf, a namespace file, a pid
/// file): 64 KiB.
pub const SMALL_FILE_MAX_BYTES: u64 = 64 * 1024;

/// The largest template source, and the largest `file()` input: 1 MiB.
pub const TEMPLATE_MAX_BYTES: u64 = 1024 * 1024;

/// Reads `path` (through symlinks) if it is a regular file of at most `max`
/// bytes; anything else is an error that says what it is.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO without a writer must not wait for one.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ));
    }
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is larger than {} ({max} bytes)",
                bytesize::ByteSize::b(max).display().iec()
            ),
        )
    };
    if meta.len() > max {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow between the stat and the read.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The furthest peerplate ever waits: 30 years, tokio's "far future". Every
/// `instant + duration` goes through [`later`], so no configured duration,
/// however large, can overflow an `Instant` (a panic, and with
/// `panic = "abort"`, exit 134).
const FAR: std::time::Duration = std::time::Duration::from_secs(30 * 365 * 86_400);

/// `at + d`, or the far future (`at` + 30 years, else `at` itself) when
/// that overflows.
pub fn later(at: tokio::time::Instant, d: std::time::Duration) -> tokio::time::Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

/// [`later`] for a `std` instant.
pub fn later_std(at: std::time::Instant, d: std::time::Duration) -> std::time::Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(FAR))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn later_saturates_instead_of_overflowing() {
        let now = tokio::time::Instant::now();
        let huge = Duration::from_secs(18_000_000_000_000_000_000);
        assert!(later(now, huge) > later(now, Duration::from_secs(86_400)));
        assert_eq!(
            later(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        let std_now = std::time::Instant::now();
        assert!(later_std(std_now, huge) > std_now);
    }

    #[test]
    fn a_fifo_and_a_device_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .expect("mkfifo");
        let e = read_regular(&fifo, 10).expect_err("a FIFO");
        assert_eq!(e.to_string(), "it is a FIFO, not a regular file");
        let e = read_regular(Path::new("/dev/zero"), 10).expect_err("a device");
        assert_eq!(
            e.to_string(),
            "it is a character device, not a regular file"
        );
    }
}
