//! A test that the modules of `union/` import one another one way: no module names (by
//! `super::X` or `crate::union::X`) a sibling that names it back, directly or through
//! others. `mod.rs` is the parent (it declares the modules and holds `Union`, whose `impl`
//! is split among them), so names it takes from a child count as that child's. Read from
//! the sources as text, test modules left out.

use std::collections::BTreeMap;
use std::path::Path;

/// The sibling modules each module of `dir` names.
fn graph(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let source = |name: &str| {
        let text = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
        let end = text.find("#[cfg(test)]").unwrap_or(text.len());
        text[..end].to_string()
    };
    let mut mods: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".rs").map(str::to_string))
        .filter(|m| m != "mod")
        .collect();
    mods.sort();
    let ident = |s: &str| -> String {
        let s = s.trim_start();
        let n = s.find(|c: char| !c.is_alphanumeric() && c != '_');
        s[..n.unwrap_or(s.len())].to_string()
    };
    // Each name after `prefix`, or each item of the `{...}` group after it.
    let named = |text: &str, prefix: &str| -> Vec<String> {
        let mut out = Vec::new();
        for (at, _) in text.match_indices(prefix) {
            let rest = &text[at + prefix.len()..];
            match rest.strip_prefix('{') {
                Some(group) => {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    out.extend(group.split(',').map(ident));
                }
                None => out.push(ident(rest)),
            }
        }
        out
    };
    // What mod.rs takes from each child: `use child::...;`.
    let mod_rs = source("mod");
    let mut from_child = BTreeMap::new();
    for line in mod_rs.lines() {
        for m in &mods {
            for name in named(line, &format!("use {m}::")) {
                from_child.insert(name, m.clone());
            }
        }
    }
    let mut edges = BTreeMap::new();
    for m in &mods {
        let text = source(m);
        let mut to: Vec<String> = ["super::", "crate::union::"]
            .iter()
            .flat_map(|p| named(&text, p))
            .filter_map(|n| match mods.contains(&n) {
                true => Some(n),
                false => from_child.get(&n).cloned(),
            })
            .filter(|t| t != m)
            .collect();
        to.sort();
        to.dedup();
        edges.insert(m.clone(), to);
    }
    edges
}

/// A chain of imports from a module back to itself, if there is one.
fn cycle(edges: &BTreeMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn walk(edges: &BTreeMap<String, Vec<String>>, path: &mut Vec<String>) -> bool {
        let last = path.last().unwrap().clone();
        for t in &edges[&last] {
            if *t == path[0] {
                path.push(t.clone());
                return true;
            }
            if !path.contains(t) {
                path.push(t.clone());
                if walk(edges, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    edges.keys().find_map(|m| {
        let mut path = vec![m.clone()];
        walk(edges, &mut path).then_some(path)
    })
}

#[test]
fn the_modules_of_union_import_one_way() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/union");
    let edges = graph(&dir);
    assert!(edges["readdir"].contains(&"inode".to_string()), "{edges:?}");
    assert!(edges["inode"].contains(&"listing".to_string()), "{edges:?}");
    assert_eq!(cycle(&edges), None, "{edges:#?}");
}

#[test]
fn a_cycle_is_found() {
    let e = |v: &[(&str, &[&str])]| -> BTreeMap<String, Vec<String>> {
        v.iter()
            .map(|(k, t)| (k.to_string(), t.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    let circle = e(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
    assert_eq!(cycle(&circle).unwrap(), ["a", "b", "c", "a"]);
    assert_eq!(cycle(&e(&[("a", &["b"]), ("b", &[]), ("c", &["a"])])), None);
}
