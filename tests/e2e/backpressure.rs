//! Overload and deadlines: a full model queue answers `busy` with a retry
//! hint instead of growing without bound; items past their deadline are
//! dropped with `deadline_exceeded`; every item is still answered once.

use std::collections::HashMap;

use tensorgate_client::protocol::ErrorCode;
use tensorgate_client::{Input, Submission};
use tensorgate_tests::{repository_with, root, TestHost};

fn items(n: usize) -> Vec<Input> {
    let text = std::fs::read_to_string(root().join("plugins/tabular/reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let body = serde_json::to_vec(&v["cases"][0]["request"]).unwrap();
    vec![Input::json(body); n]
}

fn count(reply: &tensorgate_client::Reply) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for o in &reply.outcomes {
        let key = match o {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code.to_string(),
        };
        *by.entry(key).or_default() += 1;
    }
    by
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_answers_busy_with_a_retry_hint() {
    let repo = repository_with(|name, text| {
        if name == "tabular" {
            *text = text.replace("max_batch = 64", "max_batch = 1\nmax_queue = 2");
        }
    });
    let host = TestHost::start_with(repo.path().to_path_buf(), |_| {}).await;
    let client = host.client().await;
    let reply = client.predict(Submission::new("tabular", items(2000))).await.unwrap();
    let by = count(&reply);
    eprintln!("{by:?}");
    assert_eq!(by.values().sum::<usize>(), 2000, "every item answered once");
    assert!(by.get("busy").copied().unwrap_or(0) > 0, "no busy under overload: {by:?}");
    assert!(by.get("ok").copied().unwrap_or(0) > 0, "nothing served: {by:?}");
    assert_eq!(by.len(), 2, "only ok and busy expected: {by:?}");
    let busy = reply.outcomes.iter().find_map(|o| o.as_ref().err().filter(|e| e.code == ErrorCode::Busy)).unwrap();
    assert!(busy.retry_after_ms.is_some_and(|ms| ms >= 1), "{busy:?}");
    assert!(busy.message.contains("max_queue = 2"), "{}", busy.message);
    // After the burst the model serves normally.
    let again = client.predict(Submission::new("tabular", items(1))).await.unwrap();
    assert_eq!(again.summary.ok, 1);
    client.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_items_are_dropped_with_deadline_exceeded() {
    let host = TestHost::start().await;
    let client = host.client().await;
    let mut sub = Submission::new("tabular", items(3000));
    sub.header.deadline_ms = Some(2);
    let reply = client.predict(sub).await.unwrap();
    let by = count(&reply);
    eprintln!("{by:?}");
    assert_eq!(by.values().sum::<usize>(), 3000);
    assert!(by.get("deadline_exceeded").copied().unwrap_or(0) > 0, "{by:?}");
    let e = reply.outcomes.iter().find_map(|o| o.as_ref().err()).unwrap();
    assert!(e.message.contains("deadline"), "{}", e.message);
    assert!(by.keys().all(|k| k == "ok" || k == "deadline_exceeded"), "{by:?}");
    // A generous deadline drops nothing.
    let mut sub = Submission::new("tabular", items(300));
    sub.header.deadline_ms = Some(60_000);
    assert_eq!(client.predict(sub).await.unwrap().summary.ok, 300);
    client.close().await;
    host.stop().await;
}
