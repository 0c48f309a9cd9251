//! The shape of `src/`: modules import only from the layers below them.
//!
//! Reads every source file, turns each `crate::a::b` and `super::x` path
//! (and `use child::...` of a file's own submodules) into an edge between
//! module files, and fails on any import cycle, naming its modules. This is
//! what keeps a module readable and testable on its own (issue 8).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::helpers::repo_file;

/// `src/a/b.rs` and `src/a/b/mod.rs` -> `a::b`; `src/lib.rs` -> `crate`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [only] if only == "lib" => "crate".into(),
        _ => parts.join("::"),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The paths `prefix::a::b::...` mentioned in code (comments skipped).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            let segments: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
            found.push(segments);
        }
    }
    found
}

/// The longest known module that `segments` (from `base`) names.
fn resolve(modules: &BTreeSet<String>, base: &[String], segments: &[&str]) -> Option<String> {
    let mut best = None;
    let mut path: Vec<String> = base.to_vec();
    for segment in segments {
        path.push((*segment).to_string());
        let name = path.join("::");
        if modules.contains(&name) {
            best = Some(name);
        }
    }
    best.or_else(|| (!base.is_empty()).then(|| base.join("::")))
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = repo_file("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let me = module_of(&src, file);
        let code = std::fs::read_to_string(file).expect("readable source");
        // A file's unit tests (`mod tests { use super::*; }`) are the file itself.
        let code = code.split("#[cfg(test)]").next().unwrap_or_default();
        let own: Vec<String> = if me == "crate" {
            Vec::new()
        } else {
            me.split("::").map(String::from).collect()
        };
        let parent: Vec<String> = own[..own.len().saturating_sub(1)].to_vec();
        let mut targets = BTreeSet::new();
        for segments in paths_after(code, "crate::") {
            targets.extend(resolve(&modules, &[], &segments));
        }
        for segments in paths_after(code, "super::") {
            targets.extend(resolve(&modules, &parent, &segments));
        }
        // `use child::...` of this file's own submodules.
        for segments in paths_after(code, "use ") {
            if let Some(first) = segments.first() {
                let mut child = own.clone();
                child.push((*first).to_string());
                if modules.contains(&child.join("::")) {
                    targets.extend(resolve(&modules, &own, &segments));
                }
            }
        }
        targets.remove(&me);
        targets.remove("crate");
        graph.entry(me).or_default().extend(targets);
    }
    graph
}

/// Tarjan's strongly connected components; only those of two or more.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn src_has_no_import_cycle() {
    let graph = import_graph();
    // The graph is real: the loop imports the stages, the DNS source the model.
    assert!(graph["cycle"].contains("render"), "{graph:#?}");
    assert!(graph["peers::dns"].contains("peers::model"), "{graph:#?}");
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "src/ has import cycles (each line one cycle); move the shared type to a lower layer:\n{}",
        found
            .iter()
            .map(|c| c.join(" <-> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    graph.insert("d".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&graph), [["a", "b", "c"]]);
}
