//! The client over real QUIC against a minimal in-process host that speaks
//! the protocol (no libtorch, no plugins; `fake/`): predict echoes each
//! item, status and management answer canned replies. Checks the one write path (the
//! coalescing FrameWriter, large payloads alone) and the one reply loop.

#[allow(dead_code)] // each test binary uses part of it
mod fake;

use bytes::Bytes;
use fake::{start_host, FETCHED};
use tensorgate_client::protocol::{ErrorCode, COPY_MAX_BYTES};
use tensorgate_client::{Client, ClientError, Event, Input, Submission, Trust};

async fn client() -> Client {
    let (addr, fingerprint) = start_host().await;
    Client::connect(addr, Trust::Fingerprint(fingerprint)).await.expect("connect")
}

#[tokio::test]
async fn predict_collects_small_large_compressed_and_failed_items_in_input_order() {
    let client = client().await;
    let large = Bytes::from((0..COPY_MAX_BYTES * 3 + 5).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let items = vec![
        Input::json(&b"{\"a\": 1}"[..]).with_meta("run", "7"),
        Input::new(large.clone(), "application/octet-stream"),
        Input::new(&b"fail"[..], "text/plain"),
        Input::new(vec![0u8; COPY_MAX_BYTES], "application/x-npy"),
    ];
    for submission in [Submission::new("echo", items.clone()), Submission::new("echo", items.clone()).uncompressed()] {
        let reply = client.predict(submission).await.expect("predict");
        assert_eq!((reply.summary.ok, reply.summary.failed, reply.summary.model.as_str()), (3, 1, "echo"));
        let ok = |i: usize| reply.outcomes[i].as_ref().expect("ok");
        assert_eq!((&ok(0).payload[..], ok(0).metadata.get("run").map(String::as_str)), (&b"{\"a\": 1}"[..], Some("7")));
        assert_eq!(ok(1).payload, large);
        assert_eq!(ok(1).content_type, "application/octet-stream");
        let failed = reply.outcomes[2].as_ref().expect_err("fails");
        assert_eq!((failed.index, failed.code), (2, ErrorCode::PluginError));
        assert_eq!(ok(3).payload.len(), COPY_MAX_BYTES);
    }
    client.close().await;
}

#[tokio::test]
async fn predict_stream_reports_completion_order_then_the_summary() {
    let client = client().await;
    let items = (0..5).map(|i| Input::json(format!("{{\"i\": {i}}}").into_bytes())).collect();
    let mut events = Vec::new();
    let summary = client.predict_stream(Submission::new("echo", items), |e| events.push(e)).await.expect("stream");
    let order: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            Event::Item(Ok(r)) => Some(r.index),
            _ => None,
        })
        .collect();
    assert_eq!(order, [4, 3, 2, 1, 0]);
    assert_eq!(events.last(), Some(&Event::Summary(summary.clone())));
    assert_eq!(summary.ok, 5);
    // Nothing to send is a valid request too.
    assert_eq!(client.predict(Submission::new("echo", Vec::new())).await.expect("empty").summary.ok, 0);
    client.close().await;
}

#[tokio::test]
async fn a_request_error_is_the_hosts_code_and_message() {
    let client = client().await;
    let e = client.predict(Submission::new("missing", vec![Input::json(&b"{}"[..])])).await.expect_err("rejected");
    assert_eq!(e.code(), Some(ErrorCode::UnknownModel));
    assert!(e.to_string().contains("no application `missing`"), "{e}");
    let e = client.reload(None).await.expect_err("unsupported");
    assert_eq!(e.code(), Some(ErrorCode::Unsupported));
    client.close().await;
}

#[tokio::test]
async fn status_and_management_go_through_the_same_exchange() {
    let mut client = client().await;
    client.set_token(Some("secret".into()));
    let status = client.status().await.expect("status");
    assert_eq!((status.host_version.as_str(), status.uptime_s), ("fake", 7));
    // 9 MiB + 5: three upload chunks of at most 4 MiB, indexed from 0.
    let archive = Bytes::from(vec![3u8; (9 << 20) + 5]);
    let reply = client.upload_archive(archive, true).await.expect("upload");
    assert_eq!(reply.message, format!("{} bytes in 3 chunks [0, 1, 2] replace=true", (9 << 20) + 5));
    let fetched = client.fetch("tabular", Some(2)).await.expect("fetch");
    assert_eq!(&fetched[..], FETCHED);
    let e = client.models().await.expect_err("a Summary is no management reply");
    assert!(matches!(e, ClientError::Protocol(_)), "{e}");
    assert!(e.to_string().contains("Summary"), "{e}");
    client.close().await;
}
