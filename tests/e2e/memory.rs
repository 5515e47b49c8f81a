//! Memory stays bounded under a flood: a request far larger than the host's
//! in-flight window is read only as fast as its items finish; QUIC flow
//! control holds the rest at the client.

use std::time::Duration;

use tensorgate_client::{Input, Submission};
use tensorgate_plugin::npy::write_npy;
use tensorgate_plugin::{Dtype, Tensor};
use tensorgate_tests::{repository_with_slow, TestHost};

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_is_read_only_as_fast_as_items_finish() {
    let repo = repository_with_slow();
    let host = TestHost::start_with(repo.path().to_path_buf(), |c| c.max_items_in_flight = 32).await;
    let client = std::sync::Arc::new(host.client().await);
    // 2,000 items of 64 KiB for a model that needs tens of ms per item: the
    // bytes arrive far faster than the model can use them.
    let x = Tensor { dtype: Dtype::F32, shape: vec![64, 256], data: vec![0; 64 * 256 * 4] };
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
