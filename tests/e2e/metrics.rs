//! Observability: the Prometheus endpoint, scraped over HTTP and parsed (its
//! own test binary, since the recorder is process-wide), and the perf map
//! that names plugin code for `perf`.

use std::collections::HashMap;

use tensorgate_client::{Input, Submission};
use tensorgate_tests::{root, TestHost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Parses Prometheus text format into `name{labels}` → value.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("metrics endpoint up");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{}", out.lines().next().unwrap_or(""));
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_counts_items_and_times_stages() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let host = TestHost::start_with(tensorgate_tests::repository(), move |c| c.front.metrics_listen = Some(metrics_addr)).await;
    let client = host.client().await;
    let text = std::fs::read_to_string(root().join("plugins/tabular/reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let good = Input::json(serde_json::to_vec(&v["cases"][0]["request"]).unwrap());
    let bad = Input::json(b"{\"keys\": [], \"values\": []}".to_vec());
    let mut items = vec![good; 40];
    items.extend(vec![bad; 2]);
    let reply = client.predict(Submission::new("tabular", items)).await.unwrap();
    assert_eq!((reply.summary.ok, reply.summary.failed), (40, 2));

    // The exporter renders asynchronously; poll briefly.
    let mut m = HashMap::new();
    for _ in 0..50 {
        m = parse(&scrape(metrics_addr).await);
        if m.get(r#"tensorgate_items_total{model="tabular",status="ok"}"#) == Some(&40.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(m.get(r#"tensorgate_items_total{model="tabular",status="ok"}"#), Some(&40.0), "{m:#?}");
    assert_eq!(m.get(r#"tensorgate_items_total{model="tabular",status="plugin_error"}"#), Some(&2.0));
    assert_eq!(m.get(r#"tensorgate_requests_total{model="tabular",status="partial",protocol="quic"}"#), Some(&1.0));
    for stage in ["queue", "preprocess", "forward", "postprocess"] {
        let count = m.get(&format!(r#"tensorgate_{stage}_seconds_count{{model="tabular"}}"#)).copied();
        assert_eq!(count, Some(40.0), "{stage} times only for items that succeeded");
    }
    assert_eq!(m.get(r#"tensorgate_item_seconds_count{model="tabular"}"#), Some(&42.0));
    let forwards = m.get(r#"tensorgate_batch_rows_count{model="tabular"}"#).copied().unwrap_or(0.0);
    let rows = m.get(r#"tensorgate_batch_rows_sum{model="tabular"}"#).copied().unwrap_or(0.0);
    assert_eq!(rows, 40.0, "rows through forward passes");
    assert!(forwards >= 1.0 && forwards <= 40.0);
    assert!(m.contains_key(r#"tensorgate_queue_depth{model="tabular"}"#));
    assert!(m.get(r#"tensorgate_plugin_instances{model="tabular"}"#).is_some_and(|&n| n >= 1.0));
    client.close().await;
    host.stop().await;
}

/// With `TENSORGATE_WASM_PERFMAP` set, the host writes `/tmp/perf-PID.map`
/// naming its plugins' JIT code (what `perf report` shows instead of
/// `[unknown]`); without it, none.
#[test]
fn the_perfmap_switch_names_plugin_code_for_perf() {
    /// The host process, killed and reaped when dropped (also when a check panics).
    struct Stopped(std::process::Child);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    use std::process::{Command, Stdio};
    use tensorgate_tests::cluster::{host_binary, wait_for_file};
    let start = |perfmap: bool| {
        let state = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(host_binary());
        cmd.args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .arg("--repository")
            .arg(tensorgate_tests::repository())
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn")
            .env_remove(tensorgate_runtime::plugin::PERFMAP_ENV)
            .stdout(Stdio::null());
        if perfmap {
            cmd.env(tensorgate_runtime::plugin::PERFMAP_ENV, "1");
        }
        let mut host = Stopped(cmd.spawn().expect("host starts"));
        let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", host.0.id()));
        wait_for_file(&state.path().join("listening"), std::time::Duration::from_secs(60), "host", &mut host.0);
        let text = std::fs::read_to_string(&map).ok();
        drop(host);
        let _ = std::fs::remove_file(&map);
        text
    };
    let text = start(true).expect("perf map written");
    let plugin_lines = text.lines().filter(|l| l.contains("wasm[")).count();
    assert!(plugin_lines > 10, "plugin functions named in the map: {plugin_lines}");
    assert_eq!(start(false), None, "no map unless asked for");
}
