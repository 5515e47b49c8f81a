//! Compiled plugins are cached in the state directory: a restart skips
//! compilation, and a corrupt cache entry is recompiled, never fatal.

use std::path::PathBuf;

use tensorgate_client::{Input, Submission};
use tensorgate_tests::{repository, root, TestHost};

async fn start(state: PathBuf) -> TestHost {
    TestHost::start_with(repository(), move |c| c.front.state_dir = state).await
}

fn from_cache(host: &TestHost) -> Vec<bool> {
    host.host.repository().all().iter().map(|a| a.plugin.from_cache()).collect()
}

fn tabular_from_cache(host: &TestHost) -> bool {
    host.host.repository().resolve("tabular", None).unwrap().plugin.from_cache()
}

/// Distinct plugin components in the repository (bundles may share one).
fn distinct_plugins() -> usize {
    let mut seen = std::collections::HashSet::new();
    for app in std::fs::read_dir(repository()).unwrap() {
        for version in std::fs::read_dir(app.unwrap().path()).unwrap() {
            seen.insert(std::fs::read(version.unwrap().path().join("plugin.wasm")).unwrap());
        }
    }
    seen.len()
}

async fn serves(host: &TestHost) {
    let client = host.client().await;
    let body = std::fs::read(root().join("plugins/tabular/samples/jet-0.json")).unwrap();
    let reply = client.predict(Submission::new("tabular", vec![Input::json(body)])).await.unwrap();
    assert_eq!(reply.summary.ok, 1);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_uses_the_compile_cache_and_survives_corruption() {
    let state = tempfile::tempdir().unwrap();
    let first = start(state.path().to_path_buf()).await;
    // Bundles sharing one plugin (the generic tensors one) compile it once.
    assert!(!tabular_from_cache(&first), "nothing cached on the first start");
    let compiled = from_cache(&first).iter().filter(|c| !**c).count();
    let distinct = distinct_plugins();
    assert!(distinct >= 2, "tabular and the generic tensors plugin at least");
    assert_eq!(compiled, distinct, "one compilation per distinct plugin");
    serves(&first).await;
    first.stop().await;

    let second = start(state.path().to_path_buf()).await;
    let cached = from_cache(&second);
    assert!(!cached.is_empty() && cached.iter().all(|c| *c), "restart recompiled: {cached:?}");
    serves(&second).await;
    second.stop().await;

    let dir = state.path().join("compiled");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not a compiled component").unwrap();
        n += 1;
    }
    assert!(n >= 2, "expected cache entries in {}", dir.display());
    let third = start(state.path().to_path_buf()).await;
    assert!(third.host.repository().failures().is_empty(), "{:?}", third.host.repository().failures());
    assert!(!tabular_from_cache(&third), "corrupt entries must be recompiled");
    assert_eq!(from_cache(&third).iter().filter(|c| !**c).count(), distinct);
    serves(&third).await;
    third.stop().await;
}
