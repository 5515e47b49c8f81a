//! Reload latency: time from the start of an upload (or a `reload` command)
//! to the first reply from the new version, with a cold compile cache (the
//! plugin is compiled) and a warm one (the compiled plugin is reused).
//!
//! Usage: reload BUNDLE_DIR ITEM_FILE [--rounds N]
//! e.g.   reload target/repository/tabular/1 plugins/tabular/samples/jet-0.json
//! Prints one table row per mode: median, min and max over the rounds, and
//! the host-side share (the upload reply's `elapsed_us`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tensorgate_client::{Client, Input, Submission, Trust};
use tensorgate_runtime::{Host, HostConfig};

fn copy_dir(src: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for e in std::fs::read_dir(src)? {
        let p = e?.path();
        let target = dest.join(p.file_name().unwrap_or_default());
        if p.is_dir() {
            copy_dir(&p, &target)?;
        } else {
            std::fs::copy(&p, &target)?;
        }
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

async fn predict(client: &Client, name: &str, item: &[u8]) -> anyhow::Result<()> {
    let sub = Submission::new(name, vec![Input::json(item.to_vec())]).version(2);
    let r = client.predict(sub).await?;
    anyhow::ensure!(r.summary.ok == 1 && r.summary.version == 2, "new version did not answer: {:?}", r.outcomes);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: reload BUNDLE_DIR ITEM_FILE [--rounds N]";
    let bundle = PathBuf::from(args.get(1).context(usage)?);
    let item = std::fs::read(args.get(2).context(usage)?)?;
    let rounds: usize = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).context(usage)?.parse()?,
        None => 15,
    };
    let manifest = std::fs::read_to_string(bundle.join("manifest.toml"))?;
    let name = manifest
        .lines()
        .find_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
        .context("manifest name")?
        .to_string();

    let work = std::env::temp_dir().join(format!("tg-reload-{}", std::process::id()));
    let repo = work.join("repo");
    let state = work.join("state");
    copy_dir(&bundle, &repo.join(&name).join("1"))?;
    let v2 = work.join("v2");
    copy_dir(&bundle, &v2)?;
    std::fs::write(v2.join("manifest.toml"), manifest.replacen("version = 1", "version = 2", 1))?;
    let archive = bytes::Bytes::from(tensorgate_client::pack_bundle(&v2)?);

    let mut config = HostConfig::new(&repo, &state);
    config.front.listen = "127.0.0.1:0".parse()?;
    config.intra_op_threads = 1;
    let host = tokio::task::spawn_blocking(move || Host::load(config)).await??;
    let running = host.serve()?;
    let client = Client::connect(running.addr(), Trust::Fingerprint(running.fingerprint().to_string())).await?;

    println!("| mode | upload → first reply, median (min–max) | host-side load, median |");
    println!("|---|---|---|");
    for cold in [true, false] {
        let (mut total, mut host_side) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            if cold {
                let _ = std::fs::remove_dir_all(state.join("compiled"));
            }
            let t = Instant::now();
            let reply = client.upload_archive(archive.clone(), true).await?;
            predict(&client, &name, &item).await?;
            total.push(t.elapsed().as_secs_f64() * 1e3);
            host_side.push(reply.elapsed_us as f64 / 1e3);
        }
        let (m, lo, hi) = median(total);
        let label = if cold { "upload, cold (plugin compiled)" } else { "upload, compile cache" };
        println!("| {label} | {m:.1} ms ({lo:.1}–{hi:.1}) | {:.1} ms |", median(host_side).0);
    }
    // `reload` after a file change on disk (compile cache warm).
    let mut total = Vec::new();
    let on_disk = repo.join(&name).join("2").join("manifest.toml");
    for i in 0..rounds {
        let text = std::fs::read_to_string(&on_disk)?;
        std::fs::write(&on_disk, format!("{text}\n# touch {i}\n"))?;
        let t = Instant::now();
        let reply = client.reload(Some(&name)).await?;
        anyhow::ensure!(reply.models.len() == 1, "reload loaded nothing: {}", reply.message);
        predict(&client, &name, &item).await?;
        total.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (m, lo, hi) = median(total);
    println!("| reload after a change on disk, compile cache | {m:.1} ms ({lo:.1}–{hi:.1}) | |");
    client.close().await;
    running.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
