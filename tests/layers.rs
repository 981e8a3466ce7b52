//! The layer order of `src/lib.rs`, checked: its module doc names the top-level modules top
//! to bottom, and no module may import (`use crate::x`, `crate::x::…`) one above it. Inside
//! `format/` no file may reach itself through its siblings' imports. Unit-test modules
//! (`#[cfg(test)] mod tests` at a file's end) may use anything and are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules in the order `src/lib.rs`'s doc gives them (the backquoted names
/// from "top to bottom" up to the next blank doc line).
fn declared_order(lib: &str) -> Vec<String> {
    let doc: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let start = doc
        .iter()
        .position(|l| l.contains("top to bottom"))
        .expect("src/lib.rs's doc states the layers \"top to bottom\"");
    let text: String = doc[start..]
        .iter()
        .take_while(|l| !l.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(String::from)
        .collect()
}

/// The `pub mod` names of `src/lib.rs`.
fn modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// Every `.rs` file of top-level module `m` (`src/m.rs` or everything under `src/m/`).
fn files_of(m: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{m}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut out = Vec::new();
    let mut dirs = vec![src().join(m)];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A file's code lines, numbered from 1: comments dropped, and nothing from a trailing
/// `#[cfg(test)] mod tests` on.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].trim() == "#[cfg(test)]"
                && lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim_start().starts_with("mod tests"))
        })
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, *l))
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .collect()
}

/// The first path segments after each `prefix` on a line: `prefix::a::b` gives `a`,
/// `prefix::{a, b::c}` gives `a` and `b`.
fn segments_after(line: &str, prefix: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (at, _) in line.match_indices(prefix) {
        let before = line[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &line[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(ident(&item));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// A `use` split over several lines joined into one, so `use crate::{\n a,\n b};` is read whole.
fn joined_statements(lines: &[(usize, &str)]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for &(n, l) in lines {
        match open.as_mut() {
            Some((_, s)) => {
                s.push(' ');
                s.push_str(l.trim());
                if l.contains(';') {
                    out.push(open.take().unwrap());
                }
            }
            None if l.trim_start().starts_with("use ")
                || l.trim_start().starts_with("pub use ") =>
            {
                if l.contains(';') {
                    out.push((n, l.to_string()));
                } else {
                    open = Some((n, l.to_string()));
                }
            }
            None => out.push((n, l.to_string())),
        }
    }
    out.extend(open);
    out
}

/// `(file, line, imported)` for every `crate::x` reference in module `m`'s code.
fn crate_refs(m: &str) -> Vec<(PathBuf, usize, String)> {
    let mut out = Vec::new();
    for f in files_of(m) {
        let text = fs::read_to_string(&f).unwrap();
        for (n, stmt) in joined_statements(&code_lines(&text)) {
            for target in segments_after(&stmt, "crate::") {
                out.push((f.clone(), n, target));
            }
        }
    }
    out
}

/// Every import of a module above the importer in `order`, as readable lines.
fn upward_imports(order: &[String]) -> Vec<String> {
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut bad = Vec::new();
    for (i, m) in order.iter().enumerate() {
        for (file, line, target) in crate_refs(m) {
            if let Some(j) = rank(&target) {
                if j < i {
                    let file = file
                        .strip_prefix(src())
                        .unwrap_or(&file)
                        .display()
                        .to_string();
                    bad.push(format!(
                        "src/{file}:{line}: `{m}` imports `{target}`, which is above it"
                    ));
                }
            }
        }
    }
    bad
}

/// The sibling files each file of `src/format/` imports (`super::x`, `crate::format::x`).
fn format_graph() -> BTreeMap<String, BTreeSet<String>> {
    let dir = src().join("format");
    let stems: BTreeSet<String> = files_of("format")
        .iter()
        .filter(|p| p.parent() == Some(dir.as_path()))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|s| s != "mod")
        .collect();
    let mut graph = BTreeMap::new();
    for s in &stems {
        let text = fs::read_to_string(dir.join(format!("{s}.rs"))).unwrap();
        let mut to = BTreeSet::new();
        for (_, stmt) in joined_statements(&code_lines(&text)) {
            for prefix in ["super::", "crate::format::"] {
                for t in segments_after(&stmt, prefix) {
                    if stems.contains(&t) && &t != s {
                        to.insert(t);
                    }
                }
            }
        }
        graph.insert(s.clone(), to);
    }
    graph
}

/// A circle in `graph`, as the path that closes it (`a → b → a`), if there is one.
fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(k) = path.iter().position(|p| p == n) {
            let mut circle = path[k..].to_vec();
            circle.push(n.to_string());
            return Some(circle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn lib_doc_orders_every_module() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let order = declared_order(&lib);
    let mut listed = order.clone();
    listed.sort();
    listed.dedup();
    assert_eq!(
        listed.len(),
        order.len(),
        "a module is named twice: {order:?}"
    );
    let mut mods = modules(&lib);
    mods.sort();
    assert_eq!(
        listed, mods,
        "src/lib.rs's layer order must name every module once"
    );
}

#[test]
fn no_import_runs_back_up() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let bad = upward_imports(&declared_order(&lib));
    assert!(
        bad.is_empty(),
        "imports against the layer order of src/lib.rs:\n{}",
        bad.join("\n")
    );
}

#[test]
fn format_has_no_circle() {
    let graph = format_graph();
    assert!(graph.contains_key("dcz") && graph.contains_key("bytes"));
    if let Some(c) = find_circle(&graph) {
        panic!("src/format/ imports run in a circle: {}", c.join(" → "));
    }
}

#[test]
fn the_readers_see_what_they_should() {
    assert_eq!(
        segments_after(
            "use crate::{config::Config, data, format::{a, b}};",
            "crate::"
        ),
        ["config", "data", "format"]
    );
    assert_eq!(
        segments_after("let x = crate::paths::read(dc_crate::x);", "crate::"),
        ["paths"]
    );
    let circle = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(find_circle(&circle).unwrap(), ["a", "b", "c", "a"]);
    let code = "use crate::a;\n// use crate::b;\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n";
    let lines = code_lines(code);
    assert_eq!(lines, [(1, "use crate::a;")]);
}
