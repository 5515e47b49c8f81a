//! Memory stays bounded under a flood: a request far larger than the host's
//! in-flight window is read only as fast as its items finish; QUIC flow
//! control holds the rest at the client. And loading and unloading versions
//! does not leak. (Tests that measure this process's RSS run one at a time.)

use std::time::Duration;

use tensorgate_client::{Input, Submission};
use tensorgate_plugin::npy::write_npy;
use tensorgate_plugin::{Dtype, Tensor};

use tensorgate_tests::{repository_with, repository_with_slow, root, rss_bytes, tabular_bundle, TestHost};

/// RSS measurements need the process to themselves.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_is_read_only_as_fast_as_items_finish() {
    let _alone = ALONE.lock().await;
    let repo = repository_with_slow();
    let host = TestHost::start_with(repo.path().to_path_buf(), |c| c.front.max_items_in_flight = 32).await;
    let client = std::sync::Arc::new(host.client().await);
    // 2,000 items of 64 KiB for a model that needs tens of ms per item: the
    // bytes arrive far faster than the model can use them.
    let x = Tensor::from_parts(Dtype::F32, vec![64, 256], vec![0; 64 * 256 * 4]).unwrap();
    let items = vec![Input::new(write_npy(&x), "application/x-npy"); 2000];
    let flood = {
        let client = client.clone();
        tokio::spawn(async move { client.predict(Submission::new("slow", items).uncompressed()).await })
    };
    let mut worst = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let status = client.status().await.unwrap();
        let slow = status.models.iter().find(|m| m.name == "slow").expect("slow loaded");
        worst = worst.max(slow.queued + slow.items_ok + slow.items_failed);
        assert!(slow.queued <= 32, "{} items queued at the model: reading is not bounded", slow.queued);
    }
    assert!(worst > 0, "the flood never reached the model");
    flood.abort(); // walk away; the host cancels the rest
    client.status().await.unwrap();
    host.stop().await;
}

/// Loading and unloading a version 100 times costs no more memory than 10 times.
#[tokio::test(flavor = "multi_thread")]
async fn load_unload_cycles_do_not_grow_memory() {
    let _alone = ALONE.lock().await;
    let repo = repository_with(|_, _| {});
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let work = tempfile::tempdir().unwrap();
    let bundle = tabular_bundle(work.path(), "v2", 2, |_| {});
    let archive = bytes::Bytes::from(tensorgate_client::pack_bundle(&bundle).unwrap());
    let jet = Input::json(std::fs::read(root().join("plugins/tabular/samples/jet-0.json")).unwrap());
    let cycle = async |n: usize| {
        for _ in 0..n {
            client.upload_archive(archive.clone(), false).await.unwrap();
            let r = client.predict(Submission::new("tabular", vec![jet.clone()])).await.unwrap();
            assert_eq!(r.summary.version, 2);
            client.delete("tabular", Some(2)).await.unwrap();
        }
    };
    cycle(10).await;
    let after_10 = rss_bytes();
    cycle(90).await;
    let after_100 = rss_bytes();
    let growth = after_100 as f64 - after_10 as f64;
    eprintln!("RSS after 10 cycles {:.1} MB, after 100 {:.1} MB", after_10 as f64 / 1e6, after_100 as f64 / 1e6);
    assert!(growth < 20e6, "RSS grew {:.1} MB over 90 load/unload cycles", growth / 1e6);
    client.close().await;
    host.stop().await;
}
