//! `Failover` when the host in use dies mid-request (a relay in front of
//! the fake host goes silent, as a SIGKILLed host does): the error says the
//! connection was lost and names, in the caller's numbering, only the items
//! nobody answered; with a second address, only those items go there.

#[allow(dead_code)] // each test binary uses part of it
mod fake;

use std::time::Duration;

use fake::{start_host, start_host_holding_nothing, Relay};
use tensorgate_client::{ClientError, ConnectOptions, Event, Failover, Input, Submission, Trust};

/// Items 1 and 3 are held by the fake host; 0 and 2 are answered at once.
fn items() -> Vec<Input> {
    ["a", "hang", "c", "hang"].iter().map(|p| Input::new(p.as_bytes().to_vec(), "application/octet-stream")).collect()
}

/// Streams `items()` through `failover`, cutting `relay` once two items are
/// answered; returns the indices answered, in order, and the outcome.
async fn submit_and_cut(failover: &Failover, relay: &Relay) -> (Vec<u32>, Result<(), ClientError>) {
    let mut answered = Vec::new();
    let result = failover
        .predict_stream(Submission::new("echo", items()), |event| {
            if let Event::Item(Ok(r)) = event {
                answered.push(r.index);
                if answered.len() == 2 {
                    relay.cut();
                }
            }
        })
        .await;
    (answered, result.map(|_| ()))
}

fn options(fingerprint: &str) -> ConnectOptions {
    ConnectOptions::new(Trust::Fingerprint(fingerprint.to_string()))
}

#[tokio::test]
async fn the_only_host_dying_is_a_lost_connection_naming_only_the_unanswered_items() {
    let (host, fingerprint) = start_host().await;
    let relay = Relay::start(host).await;
    let failover = Failover::new(vec![(relay.addr, options(&fingerprint))]).expect("one address");
    let (answered, result) = tokio::time::timeout(Duration::from_secs(30), submit_and_cut(&failover, &relay)).await.expect("gives up in time");
    assert_eq!(answered, [2, 0], "the fake host answers in reverse order");
    let e = result.expect_err("two items never answered");
    let ClientError::Unanswered { reason, total, unanswered } = &e else { panic!("not an unanswered-items error: {e}") };
    assert_eq!((*total, unanswered.as_slice()), (4, &[1, 3][..]), "{e}");
    assert!(reason.contains(&format!("connection to {} lost", relay.addr)), "{e}");
    assert!(!e.to_string().contains("connecting to"), "the loss, not the failed reconnection, is the error: {e}");
}

#[tokio::test]
async fn with_a_second_address_only_the_unanswered_items_are_sent_again() {
    let (first, fingerprint) = start_host().await;
    let relay = Relay::start(first).await;
    let (second, second_fingerprint) = start_host_holding_nothing().await;
    let failover = Failover::new(vec![(relay.addr, options(&fingerprint)), (second, options(&second_fingerprint))]).expect("two addresses");
    let mut seen = Vec::new();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        failover.predict_stream(Submission::new("echo", items()), |event| {
            if let Event::Item(Ok(r)) = event {
                seen.push((r.index, String::from_utf8_lossy(&r.payload).into_owned()));
                if seen.len() == 2 {
                    relay.cut();
                }
            }
        }),
    )
    .await
    .expect("fails over in time");
    let summary = result.expect("every item answered");
    assert_eq!((summary.ok, summary.failed), (4, 0));
    // The second host got items 1 and 3 only (as its 0 and 1), answered in
    // reverse; they come back under their own indices, each once.
    let seen: Vec<(u32, &str)> = seen.iter().map(|(i, p)| (*i, p.as_str())).collect();
    assert_eq!(seen, [(2, "c"), (0, "a"), (3, "hang"), (1, "hang")]);
    failover.close().await;
}

#[tokio::test]
async fn predict_collects_in_input_order_as_the_client_does() {
    let (host, fingerprint) = start_host().await;
    let failover = Failover::new(vec![(host, options(&fingerprint))]).expect("one address");
    let items = ["x", "fail", "z"].iter().map(|p| Input::new(p.as_bytes().to_vec(), "text/plain")).collect();
    let reply = failover.predict(Submission::new("echo", items)).await.expect("predict");
    assert_eq!((reply.summary.ok, reply.summary.failed), (2, 1));
    let payloads: Vec<Option<&[u8]>> = reply.outcomes.iter().map(|o| o.as_ref().ok().map(|r| &r.payload[..])).collect();
    assert_eq!(payloads, [Some(&b"x"[..]), None, Some(&b"z"[..])]);
    assert_eq!(reply.outcomes[1].as_ref().err().map(|e| e.index), Some(1));
    failover.close().await;
}
