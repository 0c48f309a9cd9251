//! Keeping `file()` inputs (mounted Secrets) out of the log: apps quote the
//! offending value in their errors, so every occurrence of an input's whole
//! text, and of each of its lines, in text peerplate is about to log (a
//! check's stderr, an HTTP body, an exec's stderr) is replaced by
//! `[file PATH]` first.

use std::path::Path;

/// Lines shorter than this (after trimming) are not replaced on their own:
/// a `{` or a `1` is no secret, and replacing it everywhere would garble the
/// log. The whole text is always replaced.
pub const MIN_LINE: usize = 3;

/// The texts to hide and what stands for them, longest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    needles: Vec<(String, String)>,
}

impl Redactor {
    /// A redactor for these inputs (path, text).
    pub fn new<'a>(inputs: impl IntoIterator<Item = (&'a Path, &'a str)>) -> Redactor {
        let mut needles: Vec<(String, String)> = Vec::new();
        for (path, text) in inputs {
            let mark = format!("[file {}]", path.display());
            let mut add = |needle: &str| {
                if !needle.is_empty() && !needles.iter().any(|(n, _)| n == needle) {
                    needles.push((needle.to_string(), mark.clone()));
                }
            };
            add(text.trim());
            for line in text.lines() {
                let line = line.trim();
                if line.chars().count() >= MIN_LINE {
                    add(line);
                }
            }
        }
        needles.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Redactor { needles }
    }

    /// `text` with every input replaced by `[file PATH]`.
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (needle, mark) in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), mark);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_text_and_each_line_are_replaced() {
        let r = Redactor::new([(Path::new("/s/pw"), "hunter22\nsecond-line\n{\n")]);
        assert_eq!(
            r.apply("bad value 'hunter22' near second-line {"),
            "bad value '[file /s/pw]' near [file /s/pw] {"
        );
        assert_eq!(Redactor::new([]).apply("hunter22"), "hunter22");
    }
}
