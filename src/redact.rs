//! Keeping `file()` inputs (mounted Secrets) out of the log: apps quote the
//! offending value in their errors, so every occurrence of an input's whole
//! text, and of each of its lines, in text peerplate is about to log (a
//! check's stderr, an HTTP body, an exec's stderr) is replaced by
//! `[file PATH]` first. This is the second line: the output of a check or
//! action of a template that read inputs is not logged at all by default
//! (see `templates[].log_output`).
//!
//! Both steps are linear, so an input of 150,000 lines (within the 1 MiB
//! cap) costs milliseconds, and only when something is logged: building
//! the index (on the first use) hashes each distinct line once (a hash set,
//! not a scan of the lines so far), and [`Redactor::apply`] rolls one
//! hash (Rabin-Karp) over the text per distinct needle length, at most
//! about 1,450 lengths for 1 MiB of needles, and compares bytes only on a
//! hash hit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Lines shorter than this (after trimming) are not replaced on their own:
/// a `{` or a `1` is no secret, and replacing it everywhere would garble the
/// log. The whole text is always replaced.
pub const MIN_LINE: usize = 3;

/// The most input text, in bytes over every input of a redactor, that is
/// searched for in output: 256 KiB. The index costs about 150 bytes per
/// distinct line, so 1 MiB of short lines would take tens of MiB, past the
/// sidecar's 32 MiB limit; output that would need a larger index is
/// withheld (its size only), even with `log_output: true`.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// The rolling hash's base (odd, so multiplication mod 2^64 is invertible).
const BASE: u64 = 0x100_0000_01b3;

/// The texts to hide and what stands for them. Building one only copies
/// the inputs; the index is built on the first [`Redactor::apply`] of a
/// non-empty text, so a render that logs nothing pays nothing.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// `[file PATH]` or `[env NAME]` and the input's text, per input.
    inputs: Arc<Vec<(String, String)>>,
    index: Arc<OnceLock<Index>>,
    /// Log no output at all, only its size (see [`Redactor::shown`]).
    withhold: bool,
}

/// Every needle, and where to find it by length and hash.
#[derive(Debug, Default)]
struct Index {
    /// Each distinct needle and the index of its input's mark.
    needles: Vec<(String, usize)>,
    /// Needle length (bytes) -> hash -> indices into `needles`.
    by_len: BTreeMap<usize, HashMap<u64, Vec<usize>>>,
}

/// The polynomial hash of `bytes` (mod 2^64).
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(BASE).wrapping_add(u64::from(b))
    })
}

impl Index {
    /// Every input's whole text and each line of it; linear in their size.
    fn build(inputs: &[(String, String)]) -> Index {
        let mut index = Index::default();
        let mut seen: HashSet<&str> = HashSet::new();
        for (mark, (_, text)) in inputs.iter().enumerate() {
            let whole = text.trim();
            let lines = text
                .lines()
                .map(str::trim)
                .filter(|l| l.chars().count() >= MIN_LINE);
            for needle in std::iter::once(whole).chain(lines) {
                if needle.is_empty() || !seen.insert(needle) {
                    continue;
                }
                let at = index.needles.len();
                index
                    .by_len
                    .entry(needle.len())
                    .or_default()
                    .entry(hash(needle.as_bytes()))
                    .or_default()
                    .push(at);
                index.needles.push((needle.to_string(), mark));
            }
        }
        index
    }

    /// The mark of the candidate needle equal to `text[at..at + len]`, if
    /// that is a whole UTF-8 slice and one is.
    fn matching(&self, candidates: &[usize], text: &str, at: usize, len: usize) -> Option<usize> {
        let window = text.get(at..at + len)?;
        candidates
            .iter()
            .map(|&c| &self.needles[c])
            .find(|(n, _)| n == window)
            .map(|(_, mark)| *mark)
    }
}

impl Redactor {
    /// A redactor for these inputs (path, text).
    #[cfg(test)]
    pub fn new<'a>(inputs: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Redactor {
        Redactor::with_env(inputs, std::iter::empty())
    }

    /// A redactor for these `file()` inputs (path, text) and `env()`
    /// variables (name, value).
    pub fn with_env<'a>(
        inputs: impl IntoIterator<Item = (&'a Path, &'a str)>,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Redactor {
        let files = inputs
            .into_iter()
            .map(|(path, text)| (format!("[file {}]", path.display()), text));
        let vars = env
            .into_iter()
            .map(|(name, value)| (format!("[env {name}]"), value));
        Redactor {
            inputs: Arc::new(
                files
                    .chain(vars)
                    .filter(|(_, text)| !text.trim().is_empty())
                    .map(|(mark, text)| (mark, text.to_string()))
                    .collect(),
            ),
            index: Arc::new(OnceLock::new()),
            withhold: false,
        }
    }

    /// This redactor, withholding output altogether when `withhold` (a
    /// template that read inputs and does not set `log_output: true`).
    pub fn withholding(&self, withhold: bool) -> Redactor {
        Redactor {
            withhold,
            ..self.clone()
        }
    }

    /// What may be logged of an app's output `text` (a check's stderr, an
    /// exec action's stderr, an HTTP reload's body): with
    /// [`Redactor::withholding`] only its size and how to see it (an
    /// encoded or transformed secret, like its base64, cannot be found by
    /// search, so it is not logged at all); else the text, redacted.
    pub fn shown(&self, text: &str) -> String {
        let size = text.len() as u64;
        let text = text.trim();
        if text.is_empty() {
            return String::new();
        }
        match self.withheld(size) {
            Some(line) => line,
            None => self.apply(text),
        }
    }

    /// With [`Redactor::withholding`], what is logged in place of `size`
    /// bytes of an app's output; `None` when the output may be shown
    /// (redacted).
    pub fn withheld(&self, size: u64) -> Option<String> {
        self.withhold.then(|| format!(
            "[{size} bytes of output not logged: the template read file() or env() inputs, which the output may quote; run the command by hand to see it, or set templates[].log_output: true]"
        ))
    }

    /// `text` with every input replaced by `[file PATH]`: longer needles
    /// first, then left to right, never overlapping.
    pub fn apply(&self, text: &str) -> String {
        if self.inputs.is_empty() || text.is_empty() {
            return text.to_string();
        }
        let searched: usize = self.inputs.iter().map(|(_, input)| input.len()).sum();
        if searched > MAX_INPUT_BYTES {
            return format!(
                "[{} bytes of output not logged: the template's file() and env() inputs ({searched} bytes) are more than the {} KiB peerplate searches output for; run the command by hand to see it]",
                text.len(),
                MAX_INPUT_BYTES / 1024
            );
        }
        let index = self.index.get_or_init(|| Index::build(&self.inputs));
        let bytes = text.as_bytes();
        // starts: the mark and length of each match, by its first byte.
        let mut starts: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        let mut taken = vec![false; bytes.len()];
        for (&len, table) in index.by_len.iter().rev() {
            if len == 0 || len > bytes.len() {
                continue;
            }
            // How many bytes before i longer needles took: a window is free
            // when none of its bytes is taken (O(1) per position).
            let mut before = Vec::with_capacity(bytes.len() + 1);
            before.push(0usize);
            for t in &taken {
                before.push(before.last().copied().unwrap_or(0) + usize::from(*t));
            }
            // BASE^(len-1), to drop the byte leaving the window.
            let top = (1..len).fold(1u64, |p, _| p.wrapping_mul(BASE));
            let mut h = hash(&bytes[..len]);
            let mut free_from = 0;
            let mut i = 0;
            loop {
                if i >= free_from && before[i + len] == before[i] {
                    if let Some(mark) = table.get(&h).and_then(|c| index.matching(c, text, i, len))
                    {
                        taken[i..i + len].iter_mut().for_each(|t| *t = true);
                        starts.insert(i, (mark, len));
                        free_from = i + len;
                    }
                }
                if i + len >= bytes.len() {
                    break;
                }
                h = h
                    .wrapping_sub(u64::from(bytes[i]).wrapping_mul(top))
                    .wrapping_mul(BASE)
                    .wrapping_add(u64::from(bytes[i + len]));
                i += 1;
            }
        }
        if starts.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, (mark, len)) in starts {
            out.push_str(&text[at..start]);
            out.push_str(&self.inputs[mark].0);
            at = start + len;
        }
        out.push_str(&text[at..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_too_large_to_index_withhold_the_output() {
        let big = "line\n".repeat(MAX_INPUT_BYTES / 5 + 1);
        let r = Redactor::new([(Path::new("/big"), big.as_str())]);
        let shown = r.apply("complaint quoting line");
        assert!(
            shown.starts_with("[22 bytes of output not logged"),
            "{shown}"
        );
        assert!(!shown.contains("quoting"), "{shown}");
    }

    #[test]
    fn whole_text_and_each_line_are_replaced() {
        let r = Redactor::new([(Path::new("/s/pw"), "hunter22\nsecond-line\n{\n")]);
        assert_eq!(
            r.apply("bad value 'hunter22' near second-line {"),
            "bad value '[file /s/pw]' near [file /s/pw] {"
        );
        assert_eq!(Redactor::new([]).apply("hunter22"), "hunter22");
    }

    #[test]
    fn withheld_output_is_only_its_size_and_env_values_are_redacted() {
        let r = Redactor::with_env([], [("DB_PASSWORD", "pa55word")]);
        assert_eq!(r.shown("bad: pa55word\n"), "bad: [env DB_PASSWORD]");
        let w = r.withholding(true);
        assert_eq!(
            w.shown("cGE1NXdvcmQ= PA55WORD\n"),
            "[22 bytes of output not logged: the template read file() or env() inputs, which the output may quote; run the command by hand to see it, or set templates[].log_output: true]"
        );
        assert_eq!(w.shown("  \n"), "");
    }

    #[test]
    fn longer_needles_win_and_text_without_needles_is_kept() {
        let r = Redactor::new([(Path::new("/a"), "abc"), (Path::new("/b"), "xxabcxx\nzzz")]);
        assert_eq!(r.apply("1 xxabcxx 2 abc 3"), "1 [file /b] 2 [file /a] 3");
        assert_eq!(r.apply("née ünïcode"), "née ünïcode");
        assert_eq!(r.apply("ab"), "ab");
        assert_eq!(r.apply("zzzz"), "[file /b]z");
    }

    #[test]
    fn a_large_input_is_built_and_applied_in_linear_time() {
        // As many 7-byte lines as MAX_INPUT_BYTES holds.
        let lines = MAX_INPUT_BYTES / 7;
        let text: String = (0..lines).map(|i| format!("{i:06x}\n")).collect();
        let started = std::time::Instant::now();
        let r = Redactor::new([(Path::new("/big"), text.as_str())]);
        let quoted: String = (0..2_000).map(|i| format!("bad {i:06x};")).collect();
        let out = r.apply(&quoted);
        assert!(
            out.starts_with("bad [file /big];bad [file /big];"),
            "{out:.80}"
        );
        eprintln!(
            "{lines} lines: built and applied in {:?}",
            started.elapsed()
        );
    }
}
