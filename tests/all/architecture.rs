//! The host's modules import one way: a test reads the `crate::` paths of
//! `host/src` (in `use` lines, in code and in doc links, not in tests) and
//! fails on any cycle between its top-level modules, naming them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the modules it names, each with a file that names it.
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The top-level module a file of `host/src` belongs to (`None`: the
/// crate's roots, `lib.rs` and `main.rs`, which may name every module).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The text of a file without its `#[cfg(test)]` module (doc links stay:
/// one pointing up ties the docs in a loop as an import would).
fn without_tests(text: &str) -> &str {
    text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text)
}

/// The modules a file's code names: `crate::name` anywhere, and the
/// names of a grouped `use crate::{a::..., b, ...}`.
fn named(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's top-level items: `a::...` or `b`, up to its `}`.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        names.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(ident(rest));
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.clone()];
    let mut graph = Graph::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap().to_owned();
        let (Some(module), Some("rs")) =
            (module_of(&rel), path.extension().and_then(|e| e.to_str()))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let edges = graph.entry(module.clone()).or_default();
        for name in named(without_tests(&text))
            .into_iter()
            .filter(|n| *n != module)
        {
            edges
                .entry(name)
                .or_insert_with(|| rel.display().to_string());
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|to, _| modules.contains(to));
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        found: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.graph[v].keys() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.stack.contains(&w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().rposition(|m| *m == v).unwrap();
                let scc: Vec<String> = self.stack.drain(at..).map(str::to_owned).collect();
                if scc.len() > 1 {
                    self.found.push(scc);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
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
fn the_host_modules_import_one_way() {
    let graph = graph();
    assert!(graph.len() > 20, "read only {} modules", graph.len());
    let found = cycles(&graph);
    let explain: Vec<String> = found
        .iter()
        .map(|scc| {
            let edges: Vec<String> = scc
                .iter()
                .flat_map(|from| {
                    graph[from]
                        .iter()
                        .filter(|(to, _)| scc.contains(to))
                        .map(move |(to, file)| format!("{from} -> {to} ({file})"))
                })
                .collect();
            format!("cycle of {}: {}", scc.join(", "), edges.join("; "))
        })
        .collect();
    assert!(found.is_empty(), "{}", explain.join("\n"));
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let edge = |to: &str| (to.to_owned(), "f.rs".to_owned());
    let graph: Graph = [
        ("a".to_owned(), [edge("b")].into()),
        ("b".to_owned(), [edge("c")].into()),
        ("c".to_owned(), [edge("a")].into()),
        ("d".to_owned(), [edge("a")].into()),
    ]
    .into();
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        named("use crate::{keys::x, pools::{A, B}};\nlet y = crate::text::cap(z);"),
        ["keys", "pools", "text"].map(str::to_owned).into()
    );
}
