//! The tensorgate host: serves applications (a TorchScript model plus a
//! WebAssembly plugin doing its pre- and post-processing) over QUIC.
//!
//! The path of one item, module by module:
//! ```text
//! server::stream (QUIC pump) ⇄ request (sans-IO machine: frame order, limits,
//!   deadline, bookkeeping, summary, coalescing) → repository (route by
//!   model/version) → pipeline: plugin.preprocess (plugin, instance pool)
//!   → executor (batcher, tch forward on the model's device thread)
//!   → plugin.postprocess → request (reply encoded) → server::stream (written)
//! ```
//! In a cluster (`cluster`), a gateway runs `server` and `request` with a
//! remote item runner that queues items in NATS; a worker pulls them and
//! runs the rest of the path.
//!
//! Modules, bottom-up (each uses only those before it): `tensor`, `device`,
//! `metrics`, `request` (uses none of the host), `executor`, `manifest`,
//! `plugin`, `application`, `pipeline`, `auth`, `config`, `repository`,
//! `tls`, `server`, `cluster`.

pub mod application;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod device;
pub mod executor;
pub mod manifest;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod repository;
pub mod request;
pub mod server;
pub mod tensor;
pub mod tls;

pub use config::HostConfig;
pub use server::{Host, RunningHost};

/// The host's top-level modules must not import each other in a cycle: each
/// has one reason to change and a newcomer can read them bottom-up.
#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// `crate::NAME` references of each top-level module (its file or folder).
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for entry in walkdir::WalkDir::new(&src).into_iter().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap();
            let deps = graph.entry(top.clone()).or_default();
            // `crate::a::…`, and the names inside `use crate::{a, b::c}`.
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + 7..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => {
                        let group = &group[..group.find('}').unwrap_or(group.len())];
                        group.split(',').map(|s| s.trim().split("::").next().unwrap_or("")).collect()
                    }
                    None => vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")],
                };
                for n in names {
                    if !n.is_empty() && n != top {
                        deps.insert(n.to_string());
                    }
                }
            }
        }
        graph
    }

    #[test]
    fn no_import_cycle_between_top_level_modules() {
        let graph = imports();
        assert!(graph.contains_key("request") && graph.contains_key("repository"), "{graph:?}");
        assert!(graph["repository"].contains("pipeline"), "the scan sees imports");
        // Depth-first search for a back edge.
        fn visit<'a>(
            n: &'a str,
            g: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) {
            if let Some(at) = path.iter().position(|p| *p == n) {
                panic!("import cycle: {} -> {n}", path[at..].join(" -> "));
            }
            if !done.insert(n) {
                return;
            }
            path.push(n);
            for d in g.get(n).into_iter().flatten() {
                visit(d, g, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for n in graph.keys() {
            visit(n, &graph, &mut Vec::new(), &mut done);
        }
    }

    #[test]
    fn the_request_machine_and_tensors_use_no_io_or_wit_types() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for dir in ["request"] {
            let files = walkdir::WalkDir::new(src.join(dir)).into_iter().flatten();
            for entry in files.filter(|e| e.file_type().is_file() && e.file_name() != "tests.rs") {
                let text = std::fs::read_to_string(entry.path()).unwrap();
                for banned in ["quinn::", "tokio::", "Instant::now()", "crate::"] {
                    assert!(!text.contains(banned), "{} uses {banned}", entry.path().display());
                }
            }
        }
        let tensor = std::fs::read_to_string(src.join("tensor.rs")).unwrap();
        assert!(!tensor.contains("crate::plugin") && !tensor.contains("tch::"), "tensor.rs is the host's own");
    }
}
