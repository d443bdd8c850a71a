//! The kernel's files import one another in one direction only: no two files of kernel/src
//! import each other, directly or through a cycle (issue 14, "a kernel you can find your way
//! in"). Read from the sources: `crate::…`, `super::…` and a parent's `child::…` paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`live::frames`) → file, for every file under `dir`.
fn modules(src: &Path, dir: &Path, out: &mut BTreeMap<Vec<String>, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            modules(src, &p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut path: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if path.last().is_some_and(|l| l == "mod" || l == "lib") {
                path.pop();
            }
            out.insert(path, p);
        }
    }
}

/// The module a path like `a::b::Item` names: the longest prefix that is a module.
fn resolve(start: &[String], names: &[&str], mods: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    let mut path = start.to_vec();
    for n in names {
        path.push(n.to_string());
        if !mods.contains_key(&path) {
            path.pop();
            break;
        }
    }
    mods.contains_key(&path).then_some(path)
}

/// The code of a file without its unit tests (a `mod tests` at the end uses its own file).
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

fn imports(me: &[String], is_dir_module: bool, code: &str, mods: &BTreeMap<Vec<String>, PathBuf>) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let end = (i..bytes.len()).find(|&j| !(is_ident(bytes[j]) || bytes[j] == b':')).unwrap_or(bytes.len());
        let words: Vec<&str> = code[i..end].split("::").collect();
        i = end;
        if words.len() < 2 {
            continue;
        }
        // `super` of a mod.rs is its parent; of a.rs, the module that declares it.
        let here: Vec<String> = me.to_vec();
        let parent: Vec<String> = me[..me.len().saturating_sub(1)].to_vec();
        let target = match words[0] {
            "crate" => resolve(&[], &words[1..], mods),
            "super" => resolve(&parent, &words[1..], mods),
            "self" => resolve(&here, &words[1..], mods),
            // A child module named without `self::` in a module that has children.
            child if is_dir_module || me.is_empty() => resolve(&here, &[child], mods).filter(|p| p.len() == here.len() + 1).and_then(|_| resolve(&here, &words, mods)),
            _ => None,
        };
        if let Some(t) = target.filter(|t| t.as_slice() != me) {
            found.insert(t);
        }
    }
    found
}

#[test]
fn no_two_files_of_the_kernel_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut mods = BTreeMap::new();
    modules(&src, &src, &mut mods);
    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = mods
        .iter()
        .map(|(m, file)| {
            let dir_module = file.file_name().is_some_and(|f| f == "mod.rs");
            (m.clone(), imports(m, dir_module, &code_of(file), &mods))
        })
        .collect();
    // Every file reachable from each import; a file reaching itself is in a cycle.
    let name = |m: &Vec<String>| if m.is_empty() { "lib".to_string() } else { m.join("::") };
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(Vec<String>, Vec<String>)> = graph[start].iter().map(|n| (n.clone(), vec![name(start), name(n)])).collect();
        while let Some((m, trail)) = stack.pop() {
            if &m == start {
                cycles.push(trail.join(" → "));
                break;
            }
            if !seen.insert(m.clone()) {
                continue;
            }
            for n in graph.get(&m).into_iter().flatten() {
                let mut t = trail.clone();
                t.push(name(n));
                stack.push((n.clone(), t));
            }
        }
    }
    assert!(graph.len() > 20, "found only {:?}", graph.keys().collect::<Vec<_>>());
    assert!(graph[&vec!["server".to_string()]].contains(&vec!["executor".to_string()]), "the reader misses plain imports");
    assert!(cycles.is_empty(), "files importing each other:\n{}", cycles.join("\n"));
}
