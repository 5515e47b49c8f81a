//! Memory cost of plugin instances: loads one application's plugin, then
//! grows its instance pool and reports the process RSS per extra instance.
//! Usage: plugin-memory REPO/NAME/VERSION [INSTANCES] [COMPILE_CACHE]
//! (with a compile cache filled by an earlier run, the process never runs
//! the compiler, whose freed memory would otherwise stay in its RSS).

use std::time::Duration;

use tensorgate_runtime::plugin::PluginEngine;
use tensorgate_server::manifest::Manifest;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).ok_or_else(|| anyhow::anyhow!("usage: plugin-memory BUNDLE_DIR [N] [COMPILE_CACHE]"))?);
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let manifest = Manifest::load(&dir)?;
    let start = rss_kb();
    let cache = args.get(3).map(std::path::PathBuf::from);
    let engine = PluginEngine::new(cache)?;
    let pool = engine.load(&manifest.name, &dir.join(&manifest.plugin.file), &manifest, Duration::from_secs(10), 1 << 30)?;
    pool.describe()?; // one instance, used once
    let base = rss_kb();
    let from_cache = pool.from_cache();
    pool.warm(n + 1)?;
    let grown = rss_kb();
    let per = (grown.saturating_sub(base)) as f64 / n as f64;
    println!(
        "{}",
        serde_json::json!({ "app": manifest.name, "from_cache": from_cache, "rss_start_kb": start, "instances_added": n, "rss_before_kb": base, "rss_after_kb": grown, "kb_per_instance": per })
    );
    Ok(())
}
