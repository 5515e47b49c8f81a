//! `tensorgate submit`: files in, one JSON line (or one output file) per item out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tensorgate_client::{ClientError, Event, Failover, Input, Submission};

/// Compression switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// Compress items and accept compressed replies.
    On,
    /// Send and receive raw bytes.
    Off,
}

/// Options of `tensorgate submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Application (model) name.
    #[arg(long)]
    model: String,
    /// Version (default: the model's default version: the newest, unless `promote` or
    /// `rollback` chose another; a canary on trial may take a share).
    #[arg(long)]
    version: Option<u64>,
    /// Content type of every item (default: from each file's extension).
    #[arg(long)]
    content_type: Option<String>,
    /// zstd compression of items and replies.
    #[arg(long, value_enum, default_value = "on")]
    compress: OnOff,
    /// Requests in flight at once (the items are split between them).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Items per request (default: all items split evenly over --concurrency requests).
    #[arg(long)]
    items_per_request: Option<usize>,
    /// Write each result's payload to DIR/<input stem>.<ext> instead of printing it.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Metadata KEY=VALUE sent with every item (repeatable), e.g. `--meta run=5328`.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Per-item metadata: a JSON Lines file, one object per item naming its
    /// input file, e.g. `{"file": "jets/j1.json", "jet_id": 17}` (values
    /// that are not strings are sent as JSON text); merged over `--meta`.
    #[arg(long, value_name = "FILE")]
    meta_file: Option<PathBuf>,
    /// Input files, directories (their files, sorted) or quoted glob patterns.
    #[arg(required = true)]
    inputs: Vec<String>,
}

fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Expands paths, directories and glob patterns into a sorted file list.
/// The `--meta-file` entries by input file; every file named must be one
/// of `files` (as given on the command line, or its canonical path).
fn per_item_meta(path: &Path, files: &[PathBuf]) -> anyhow::Result<HashMap<PathBuf, Vec<(String, String)>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let known: HashMap<PathBuf, PathBuf> = files.iter().map(|f| (canonical(f), f.clone())).collect();
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = || format!("{} line {}", path.display(), n + 1);
        let serde_json::Value::Object(mut obj) = serde_json::from_str(line).with_context(at)? else {
            bail!("{}: not a JSON object", at());
        };
        let Some(serde_json::Value::String(file)) = obj.remove("file") else {
            bail!("{}: no \"file\" naming the item's input file", at());
        };
        let Some(input) = known.get(&canonical(Path::new(&file))) else {
            bail!("{}: {file} is not one of the files submitted", at());
        };
        let meta = obj
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
        out.insert(input.clone(), meta);
    }
    Ok(out)
}

fn expand(inputs: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading directory {input}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            inside.sort();
            files.extend(inside);
        } else if path.exists() {
            files.push(path.to_path_buf());
        } else if input.contains(['*', '?', '[']) {
            let before = files.len();
            for entry in glob::glob(input).with_context(|| format!("bad glob pattern {input}"))? {
                let p = entry?;
                if p.is_file() {
                    files.push(p);
                }
            }
            if files.len() == before {
                bail!("pattern {input} matches no file");
            }
        } else {
            bail!("no such file or directory: {input}");
        }
    }
    Ok(files)
}

fn extension_for(content_type: &str) -> &'static str {
    match content_type {
        t if t.contains("json") => "json",
        "application/x-npy" => "npy",
        "application/x-npz" => "npz",
        "image/png" => "png",
        t if t.starts_with("text/") => "txt",
        _ => "bin",
    }
}

struct Totals {
    ok: u64,
    failed: u64,
}

pub async fn run(client: Arc<Failover>, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let files = Arc::new(expand(&args.inputs)?);
    if files.is_empty() {
        bail!("no input files in {:?}", args.inputs);
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let per_item = match &args.meta_file {
        Some(path) => per_item_meta(path, &files)?,
        None => HashMap::new(),
    };
    let n = files.len();
    let per_request = args.items_per_request.unwrap_or_else(|| n.div_ceil(args.concurrency.max(1))).max(1);
    let pb = if args.quiet || n < 2 {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(n as u64);
        pb.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} items {per_sec} eta {eta} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    };
    let totals = Arc::new(Mutex::new(Totals { ok: 0, failed: 0 }));
    let start = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let args = Arc::new(args);
    let mut tasks = tokio::task::JoinSet::new();
    for first in (0..n).step_by(per_request) {
        let last = (first + per_request).min(n);
        let mut items = Vec::with_capacity(last - first);
        for f in &files[first..last] {
            let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            let ct = args.content_type.as_deref().unwrap_or_else(|| tensorgate_client::content_type_for(f));
            let mut input = Input::new(data, ct).with_meta("filename", &f.display().to_string());
            for (k, v) in args.meta.iter().chain(per_item.get(f).into_iter().flatten()) {
                input = input.with_meta(k, v);
            }
            items.push(input);
        }
        let mut sub = Submission::new(&args.model, items);
        if let Some(v) = args.version {
            sub = sub.version(v);
        }
        if args.compress == OnOff::Off {
            sub = sub.uncompressed();
        }
        let permit = semaphore.clone().acquire_owned().await?;
        let (client, files, args, totals, pb) = (client.clone(), files.clone(), args.clone(), totals.clone(), pb.clone());
        tasks.spawn(async move {
            let _permit = permit;
            // Which of this request's items were answered (printed) already.
            let mut answered = vec![false; last - first];
            let result = client
                .predict_stream(sub, |event| {
                    let Event::Item(outcome) = event else { return };
                    let local = match &outcome {
                        Ok(r) => r.index,
                        Err(e) => e.index,
                    } as usize;
                    if let Some(slot) = answered.get_mut(local) {
                        *slot = true;
                    }
                    let line = match outcome {
                        Ok(r) => {
                            let global = first + r.index as usize;
                            let file = &files[global.min(files.len() - 1)];
                            totals.lock().unwrap_or_else(|p| p.into_inner()).ok += 1;
                            let mut line = match &args.output_dir {
                                Some(dir) => {
                                    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| global.to_string());
                                    let out = dir.join(format!("{stem}.{}", extension_for(&r.content_type)));
                                    match std::fs::write(&out, &r.payload) {
                                        Ok(()) => json!({ "index": global, "file": file, "ok": true, "output": out }),
                                        Err(e) => json!({ "index": global, "file": file, "ok": true, "error": format!("writing {}: {e}", out.display()) }),
                                    }
                                }
                                None => {
                                    let result = if r.content_type.contains("json") {
                                        serde_json::from_slice(&r.payload).unwrap_or_else(|_| json!(String::from_utf8_lossy(&r.payload)))
                                    } else {
                                        json!({ "bytes": r.payload.len(), "content_type": r.content_type })
                                    };
                                    json!({ "index": global, "file": file, "ok": true, "result": result })
                                }
                            };
                            // The reply's metadata: the item's own, with the plugin's entries over it.
                            if !r.metadata.is_empty() {
                                line["metadata"] = json!(r.metadata);
                            }
                            line
                        }
                        Err(e) => {
                            let global = first + e.index as usize;
                            totals.lock().unwrap_or_else(|p| p.into_inner()).failed += 1;
                            let mut line = json!({ "index": global, "file": files.get(global), "ok": false, "code": e.code, "error": e.message });
                            if !e.metadata.is_empty() {
                                line["metadata"] = json!(e.metadata);
                            }
                            line
                        }
                    };
                    pb.suspend(|| println!("{line}"));
                    pb.inc(1);
                })
                .await;
            if let Err(e) = result {
                // The request failed as a whole: one line names the items
                // it left unanswered (not those printed above), and they count as failed.
                let unanswered: Vec<usize> = (0..answered.len()).filter(|&i| !answered[i]).map(|i| first + i).collect();
                let line = request_failure(&e, &unanswered, &files);
                pb.suspend(|| println!("{line}"));
                totals.lock().unwrap_or_else(|p| p.into_inner()).failed += unanswered.len() as u64;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined?;
    }
    pb.finish_and_clear();
    let t = totals.lock().unwrap_or_else(|p| p.into_inner());
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{} ok, {} failed, {} items in {:.2} s ({:.1} items/s)", t.ok, t.failed, n, secs, n as f64 / secs.max(1e-9));
    Ok(if t.failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The line printed for a request that failed as a whole: the items it
/// left unanswered (indices over all files submitted, and their files), the
/// error code (`connection` when the connection was lost) and why.
fn request_failure(e: &ClientError, unanswered: &[usize], files: &[PathBuf]) -> serde_json::Value {
    let (code, error) = match e {
        ClientError::Request { code, message } => (json!(code), message.clone()),
        // The client's own item list counts within the request: the line's `items` say it over all files.
        ClientError::Unanswered { reason, .. } => (json!("connection"), reason.clone()),
        other => (json!("connection"), other.to_string()),
    };
    let named: Vec<&PathBuf> = unanswered.iter().filter_map(|&i| files.get(i)).collect();
    json!({ "items": unanswered, "files": named, "ok": false, "code": code, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_request_names_its_unanswered_items_and_their_files() {
        let files = vec![PathBuf::from("a.json"), PathBuf::from("b.json"), PathBuf::from("c.json")];
        let e = ClientError::Request { code: tensorgate_client::protocol::ErrorCode::UnknownModel, message: "no version 9".into() };
        let line = request_failure(&e, &[2], &files);
        assert_eq!(line, json!({ "items": [2], "files": ["c.json"], "ok": false, "code": "unknown_model", "error": "no version 9" }));
    }

    #[test]
    fn a_meta_file_gives_each_named_file_its_metadata_and_names_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("tg-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.json"), dir.join("b.json"));
        for f in [&a, &b] {
            std::fs::write(f, b"{}").unwrap();
        }
        let meta = dir.join("items.jsonl");
        let line = |file: &Path, rest: &str| format!("{{\"file\": \"{}\"{rest}}}\n", file.display());
        std::fs::write(&meta, line(&a, ", \"jet_id\": 17, \"tag\": \"x\"") + "\n").unwrap();
        let got = per_item_meta(&meta, &[a.clone(), b.clone()]).unwrap();
        let mut want = vec![("jet_id".to_string(), "17".to_string()), ("tag".to_string(), "x".to_string())];
        let mut have = got[&a].clone();
        have.sort();
        want.sort();
        assert_eq!(have, want);
        assert!(!got.contains_key(&b));
        std::fs::write(&meta, line(&dir.join("c.json"), "")).unwrap();
        let e = per_item_meta(&meta, &[a.clone()]).unwrap_err().to_string();
        assert!(e.ends_with("c.json is not one of the files submitted"), "{e}");
        std::fs::write(&meta, "{\"jet_id\": 1}\n").unwrap();
        let e = per_item_meta(&meta, &[a]).unwrap_err().to_string();
        assert!(e.contains("line 1: no \"file\""), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
