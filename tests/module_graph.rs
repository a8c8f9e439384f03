//! The module graph of `src/` has no cycle: every file is a node, every
//! `crate::…` path in it (in `use` lines and inline) an edge to the file
//! that defines the deepest module on the path. `super::` paths stay inside
//! a folder and are not edges; `src/main.rs` and `src/cli/` (the binary)
//! are left out. A cycle is printed with the edges that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`.
fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file
        .strip_prefix(root)
        .expect("under src/")
        .with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The source without `//` comments (doc links are not imports).
fn strip_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Splits `a, b::{c, d}` at top-level commas.
fn split_items(body: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
    for (i, ch) in body.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    items
}

/// Every path a `use` tree names, e.g. `a::{b, c::{d, e}}` → a::b, a::c::d, a::c::e.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<Module>) {
    for item in split_items(tree) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if let Some(open) = item.find('{') {
            let head: Module = item[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            let inner = &item[open + 1..item.rfind('}').unwrap_or(item.len())];
            let mut next = prefix.to_vec();
            next.extend(head);
            expand(&next, inner, out);
        } else {
            let item = item.split(" as ").next().unwrap_or(item);
            let mut path = prefix.to_vec();
            path.extend(
                item.split("::")
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty()),
            );
            out.push(path);
        }
    }
}

/// The `crate::` paths of a source file.
fn crate_paths(source: &str) -> Vec<Module> {
    let source = strip_comments(source);
    let bytes = source.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = source[at..].find("crate::") {
        let start = at + found + "crate::".len();
        let preceded = at + found > 0 && {
            let c = bytes[at + found - 1];
            c.is_ascii_alphanumeric() || c == b'_' || c == b'$'
        };
        at = start;
        if preceded {
            continue;
        }
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || b"_:".contains(&bytes[end]))
        {
            end += 1;
        }
        let head = &source[start..end];
        if bytes.get(end) == Some(&b'{') && (head.is_empty() || head.ends_with("::")) {
            let mut depth = 0usize;
            let mut close = end;
            for (i, &b) in bytes.iter().enumerate().skip(end) {
                match b {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let prefix: Module = head
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            expand(&prefix, &source[end + 1..close], &mut out);
        } else {
            out.push(
                head.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    out
}

/// The file module defining the deepest module on `path`.
fn resolve<'m>(modules: &'m BTreeSet<Module>, path: &[String]) -> Option<&'m Module> {
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n].to_vec()))
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'g> {
        edges: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g Module) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

fn graph(root: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let files: BTreeMap<Module, PathBuf> = files
        .into_iter()
        .map(|f| (module_of(root, &f), f))
        .filter(|(m, _)| {
            let first = m.first().map(String::as_str);
            !matches!(first, Some("lib" | "main" | "cli"))
        })
        .collect();
    let modules: BTreeSet<Module> = files.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &files {
        let source = std::fs::read_to_string(file).expect("a readable source file");
        let targets = edges.entry(module.clone()).or_default();
        for path in crate_paths(&source) {
            if let Some(target) = resolve(&modules, &path)
                && target != module
            {
                targets.insert(target.clone());
            }
        }
    }
    edges
}

#[test]
fn the_paths_of_a_use_tree_are_found() {
    let paths = crate_paths(
        "use crate::a::{b, c::{d, e as f}};\nlet x = crate::g::h(); // crate::not::this\n",
    );
    let names: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(names, ["a::b", "a::c::d", "a::c::e", "g::h"]);
}

#[test]
fn a_cycle_is_found() {
    let m = |s: &str| vec![s.to_owned()];
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), BTreeSet::from([m("b")]));
    edges.insert(m("b"), BTreeSet::from([m("c")]));
    edges.insert(m("c"), BTreeSet::from([m("a")]));
    edges.insert(m("d"), BTreeSet::from([m("a")]));
    assert_eq!(cycles(&edges).len(), 1);
    edges.insert(m("c"), BTreeSet::new());
    assert!(cycles(&edges).is_empty());
}

#[test]
fn src_has_no_import_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&root);
    assert!(
        edges.len() > 50,
        "the graph covers src/: {} files",
        edges.len()
    );
    let found = cycles(&edges);
    let mut report = String::new();
    for component in &found {
        let members: BTreeSet<&Module> = component.iter().collect();
        report.push_str(&format!("cycle of {} files:\n", component.len()));
        for m in &members {
            let inside: Vec<String> = edges[*m]
                .iter()
                .filter(|t| members.contains(t))
                .map(|t| t.join("::"))
                .collect();
            report.push_str(&format!("  {} -> {}\n", m.join("::"), inside.join(", ")));
        }
    }
    assert!(found.is_empty(), "{report}");
}
