//! The architecture, checked: no import cycles between the files of any
//! crate, the request machine and the cluster core free of IO, and the
//! crates that must not link a model runtime (server, cluster, gateway)
//! linking neither libtorch nor wasmtime.
//!
//! A file's imports are the other files of its crate it names through
//! `crate::…`, `super::…` or `self::…` paths (in `use` trees or inline),
//! each resolved to the deepest module file that exists. A file naming an
//! item of a module it belongs to (its `mod.rs` or `lib.rs` ancestors)
//! does not count: children may use what their parent declares.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Source roots of every crate: the directory of each `lib.rs` or `main.rs`
/// (test-support and bench crates included), outside build outputs.
fn crate_roots() -> Vec<PathBuf> {
    let mut roots = BTreeSet::new();
    for entry in walkdir::WalkDir::new(root()).into_iter().filter_entry(|e| {
        let name = e.file_name().to_string_lossy();
        !(name == "target" || name == ".git" || name == "node_modules" || name.starts_with('.'))
    }) {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy();
        if name == "lib.rs" || name == "main.rs" {
            if let Some(dir) = entry.path().parent() {
                roots.insert(dir.to_path_buf());
            }
        }
    }
    roots.into_iter().collect()
}

/// The module path of a file under `src` (`a/b.rs` and `a/b/mod.rs` → `[a, b]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The file of module `path` under `src`, if it is a file of its own.
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    if path.is_empty() {
        return ["lib.rs", "main.rs"].iter().map(|f| src.join(f)).find(|p| p.exists());
    }
    let base: PathBuf = path.iter().collect();
    let flat = src.join(&base).with_extension("rs");
    let nested = src.join(&base).join("mod.rs");
    [flat, nested].into_iter().find(|p| p.exists())
}

/// The paths a `use` tree (or an inline path) starting at `text` names:
/// `a::b`, `{a, b::{c, d}}`, each as segments.
fn use_paths(text: &str) -> Vec<Vec<String>> {
    fn tree(chars: &mut std::iter::Peekable<std::str::Chars>, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut path = prefix;
        let mut word = String::new();
        loop {
            match chars.peek().copied() {
                Some(c) if c.is_alphanumeric() || c == '_' => {
                    word.push(c);
                    chars.next();
                }
                Some(':') => {
                    chars.next();
                    if chars.peek() == Some(&':') {
                        chars.next();
                    }
                    if !word.is_empty() {
                        path.push(std::mem::take(&mut word));
                    }
                }
                Some('{') => {
                    chars.next();
                    loop {
                        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                            chars.next();
                        }
                        if chars.peek() == Some(&'}') {
                            chars.next();
                            return;
                        }
                        if chars.peek().is_none() {
                            return;
                        }
                        tree(chars, path.clone(), out);
                    }
                }
                _ => {
                    if !word.is_empty() {
                        path.push(word);
                    }
                    out.push(path);
                    return;
                }
            }
        }
    }
    let mut out = Vec::new();
    tree(&mut text.chars().peekable(), Vec::new(), &mut out);
    out
}

/// Each file of the crate at `src` and the files it imports.
fn imports(src: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut graph = BTreeMap::new();
    for entry in walkdir::WalkDir::new(src).into_iter().flatten() {
        let file = entry.path();
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        // A nested crate (its own lib.rs or main.rs) is checked on its own.
        if file.parent() != Some(src) && ["lib.rs", "main.rs"].iter().any(|f| file.parent().is_some_and(|p| p.join(f).exists())) {
            continue;
        }
        let module = module_of(src, file);
        // Its ancestors' root files (and its own).
        let ancestors: BTreeSet<PathBuf> = (0..=module.len()).filter_map(|n| file_of(src, &module[..n])).collect();
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let mut deps = BTreeSet::new();
        for (prefix, base) in [
            ("crate::", Vec::new()),
            ("super::", {
                // `super` of `a/b.rs` ([a, b]) and of `a/b/mod.rs` ([a, b]) is `a`.
                let mut m = module.clone();
                m.pop();
                m
            }),
            ("self::", module.clone()),
        ] {
            for (i, _) in code.match_indices(prefix) {
                // Not part of a longer name (`my_crate::`).
                if code[..i].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                for path in use_paths(&code[i + prefix.len()..]) {
                    let mut at = base.clone();
                    for seg in &path {
                        let mut next = at.clone();
                        next.push(seg.clone());
                        if file_of(src, &next).is_some() {
                            at = next;
                        } else {
                            break;
                        }
                    }
                    if let Some(target) = file_of(src, &at) {
                        if !ancestors.contains(&target) && target != file {
                            deps.insert(target);
                        }
                    }
                }
            }
        }
        graph.insert(file.to_path_buf(), deps);
    }
    graph
}

/// Every import cycle of `graph`, each once.
fn cycles(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    fn visit(
        n: &PathBuf,
        g: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        path: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
        found: &mut Vec<Vec<PathBuf>>,
    ) {
        if let Some(at) = path.iter().position(|p| p == n) {
            found.push(path[at..].to_vec());
            return;
        }
        if done.contains(n) {
            return;
        }
        path.push(n.clone());
        for d in g.get(n).into_iter().flatten() {
            visit(d, g, path, done, found);
        }
        path.pop();
        done.insert(n.clone());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        visit(n, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn the_scan_sees_imports_and_finds_a_cycle() {
    assert_eq!(use_paths("{a, b::{c, d}};"), vec![vec!["a"], vec!["b", "c"], vec!["b", "d"]]);
    assert_eq!(use_paths("core::groups::plan(x)"), vec![vec!["core", "groups", "plan"]]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("repo")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod repo;\n").unwrap();
    std::fs::write(src.join("repo/mod.rs"), "mod build;\nmod check;\npub use build::X;\n").unwrap();
    std::fs::write(src.join("repo/build.rs"), "use super::check::labels;\nuse super::Repo;\n").unwrap();
    std::fs::write(src.join("repo/check.rs"), "// use super::build::nothing;\nfn f() { super::build::prepare(); }\n").unwrap();
    let graph = imports(src);
    assert_eq!(graph[&src.join("repo/build.rs")], [src.join("repo/check.rs")].into_iter().collect(), "the parent does not count");
    let found = cycles(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    std::fs::write(src.join("repo/check.rs"), "fn f() {}\n").unwrap();
    assert!(cycles(&imports(src)).is_empty());
}

#[test]
fn no_import_cycle_between_the_files_of_any_crate() {
    let roots = crate_roots();
    assert!(roots.iter().any(|r| r.ends_with("crates/runtime/src")), "{roots:?}");
    let runtime = imports(&root().join("crates/runtime/src"));
    let build = root().join("crates/runtime/src/repository/build.rs");
    assert!(runtime[&build].contains(&root().join("crates/runtime/src/repository/check.rs")), "the scan sees imports");
    let mut all = Vec::new();
    for src in &roots {
        for cycle in cycles(&imports(src)) {
            let names: Vec<String> = cycle.iter().map(|p| p.strip_prefix(root()).unwrap_or(p).display().to_string()).collect();
            all.push(names.join(" -> "));
        }
    }
    assert!(all.is_empty(), "import cycles:\n{}", all.join("\n"));
}

/// Files of `dir` (under the workspace root), tests excepted.
fn sources(dir: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root().join(dir))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "rs"))
        .filter(|e| e.file_name() != "tests.rs")
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[test]
fn the_request_machine_and_the_cluster_core_do_no_io() {
    let checked = [("crates/server/src/request", &["quinn::", "tokio::", "Instant::now()", "crate::"][..]), (
        "crates/cluster/src/core",
        &["async_nats", "tokio::", "Instant::now()", "SystemTime::now()", "std::fs", "std::net"][..],
    )];
    for (dir, banned) in checked {
        let files = sources(dir);
        assert!(files.len() > 1, "{dir}: {files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Unit tests may use a clock: what they test may not.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
            for b in banned {
                assert!(!code.contains(b), "{} uses {b}", file.display());
            }
        }
    }
    let tensor = std::fs::read_to_string(root().join("crates/backends/core/src/tensor.rs")).unwrap();
    assert!(!tensor.contains("tch::") && !tensor.contains("wasmtime"), "the host's tensors are its own");
}

#[test]
fn the_server_cluster_and_gateway_link_neither_libtorch_nor_wasmtime() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for package in ["tensorgate-server", "tensorgate-cluster", "tensorgate-gateway"] {
        let out = std::process::Command::new(&cargo)
            .args(["tree", "--offline", "-p", package, "--edges", "normal,build", "--prefix", "none", "--format", "{p}"])
            .current_dir(root())
            .output()
            .expect("cargo tree runs");
        assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(tree.lines().any(|l| l.starts_with("tokio ")), "{package}: the tree is read: {tree}");
        for banned in ["tch ", "torch-sys ", "wasmtime ", "cranelift", "tensorgate-runtime ", "tensorgate-backend-torch "] {
            assert!(!tree.lines().any(|l| l.starts_with(banned)), "{package} depends on {banned}");
        }
    }
    let out = std::process::Command::new(&cargo)
        .args(["tree", "--offline", "-p", "tensorgate-worker", "--edges", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(root())
        .output()
        .expect("cargo tree runs");
    assert!(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("tch ")), "a worker does run models");
}
