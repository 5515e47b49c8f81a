//! The engine (NATS with JetStream), as gateways and workers use it: one
//! connection, the work stream, the fleet's KV bucket and object stores,
//! and the few calls everything else is built from. Decisions live in
//! [`crate::core`]; this module only moves bytes.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::{self, kv, message::PublishMessage, object_store};
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::io::AsyncReadExt;

use crate::core::retry::{PublishError, PublishRetry};
use crate::wire::{self, Budget, Names};
use crate::{ClusterConfig, ClusterError, EngineAuth};

/// The engine-side stores of one cluster.
#[derive(Clone)]
pub struct Stores {
    /// Desired state and default-version policies.
    pub kv: kv::Store,
    /// Bundle archives.
    pub bundles: object_store::ObjectStore,
    /// Item payloads and results too large for one engine message (each
    /// deleted once its item is answered; an hour's age limit clears what a
    /// lost gateway or worker leaves behind).
    pub large: object_store::ObjectStore,
}

/// A connection to one cluster's engine.
#[derive(Clone)]
pub struct Engine {
    /// The NATS connection.
    pub client: async_nats::Client,
    /// JetStream on it.
    pub js: jetstream::Context,
    /// The cluster's names.
    pub names: Names,
    /// Its stores.
    pub stores: Stores,
}

impl Engine {
    /// Connects as `name` (it reconnects by itself for the life of the
    /// process), and creates the work stream and the stores when missing
    /// (every role does; the first one's settings stand).
    pub async fn connect(config: &ClusterConfig, name: &str) -> Result<Engine, ClusterError> {
        let client = connect(config, name).await?;
        let js = jetstream::new(client.clone());
        let names = Names::new(&config.prefix);
        ensure_work_stream(&js, &names, config).await?;
        let stores = stores(&js, &names).await?;
        Ok(Engine { client, js, names, stores })
    }

    /// The size budget of this engine's messages.
    pub fn budget(&self) -> Budget {
        Budget::new(self.client.server_info().max_payload)
    }

    /// Queues one work message and waits for the engine to confirm it,
    /// retrying as [`PublishRetry`] decides with the same `msg_id` (the
    /// engine drops duplicates).
    pub async fn publish_work(&self, subject: &str, headers: HeaderMap, body: Bytes, msg_id: &str) -> Result<(), PublishError> {
        let mut retry = PublishRetry::new();
        loop {
            let publish = PublishMessage::build().payload(body.clone()).headers(headers.clone()).message_id(msg_id);
            let error = match self.js.send_publish(subject.to_string(), publish).await {
                Ok(ack) => match ack.into_future().await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == jetstream::context::PublishErrorKind::TimedOut => PublishError::TimedOut(e.to_string()),
                    Err(e) => PublishError::Refused(e.to_string()),
                },
                Err(e) => PublishError::Send(e.to_string()),
            };
            tracing::debug!(subject, "engine did not take a message: {}", error.message());
            if !retry.again(&error) {
                return Err(error);
            }
        }
    }

    /// Stores `data` as object `name` in chunks as large as one message
    /// allows (fewer round trips than the default 128 KiB).
    pub async fn write_object(&self, store: &object_store::ObjectStore, name: &str, data: &[u8]) -> Result<(), String> {
        let meta = object_store::ObjectMetadata {
            name: name.to_string(),
            chunk_size: Some(self.budget().object_chunk()),
            ..Default::default()
        };
        let mut reader = data;
        store.put(meta, &mut reader).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Items of `model` `version` queued in the engine and not yet pulled.
    pub async fn queued(&self, model: &str, version: u64) -> Option<u64> {
        let stream = self.js.get_stream(self.names.work_stream()).await.ok()?;
        let mut consumer = stream.get_consumer::<jetstream::consumer::pull::Config>(&self.names.consumer(model, version)).await.ok()?;
        consumer.info().await.ok().map(|i| i.num_pending)
    }
}

/// The bytes of one object.
pub async fn read_object(store: &object_store::ObjectStore, name: &str) -> Result<Vec<u8>, String> {
    let mut obj = store.get(name).await.map_err(|e| format!("{name}: {e}"))?;
    let mut data = Vec::with_capacity(obj.info().size);
    obj.read_to_end(&mut data).await.map_err(|e| format!("{name}: {e}"))?;
    Ok(data)
}

/// Connects to the engine; reconnects by itself for the life of the process
/// (workers and gateways keep serving what they hold meanwhile).
async fn connect(config: &ClusterConfig, name: &str) -> Result<async_nats::Client, ClusterError> {
    let err = |reason: String| ClusterError::Connect { url: config.url.clone(), reason };
    let mut options = match &config.auth {
        EngineAuth::None => async_nats::ConnectOptions::new(),
        EngineAuth::User { user, password } => async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone()),
        EngineAuth::Nkey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        EngineAuth::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| err(format!("credentials file {}: {e}", path.display())))?,
    };
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let name = name.to_string();
    options = options
        .name(&name)
        .ping_interval(Duration::from_secs(2))
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .max_reconnects(None)
        .event_callback(move |event| {
            let name = name.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::info!(%name, "engine connected"),
                    async_nats::Event::Disconnected => tracing::warn!(%name, "engine disconnected; reconnecting"),
                    other => tracing::debug!(%name, "engine event: {other}"),
                }
            }
        });
    options.connect(config.url.as_str()).await.map_err(|e| err(e.to_string()))
}

/// Creates the work stream if it does not exist.
async fn ensure_work_stream(js: &jetstream::Context, names: &Names, config: &ClusterConfig) -> Result<(), ClusterError> {
    let stream = jetstream::stream::Config {
        name: names.work_stream(),
        subjects: vec![names.all_work()],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        storage: jetstream::stream::StorageType::File,
        discard: jetstream::stream::DiscardPolicy::New,
        max_bytes: config.max_queued_bytes,
        duplicate_window: Duration::from_secs(120),
        description: Some("tensorgate items waiting for a worker".into()),
        ..Default::default()
    };
    js.get_or_create_stream(stream).await.map(|_| ()).map_err(|e| ClusterError::JetStream(e.to_string()))
}

/// Opens (creating when missing) the cluster's KV bucket and object stores.
async fn stores(js: &jetstream::Context, names: &Names) -> Result<Stores, ClusterError> {
    let bucket = names.fleet_bucket();
    let kv = match js.get_key_value(&bucket).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: bucket.clone(),
                description: "tensorgate: bundles the fleet should hold".into(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| ClusterError::JetStream(format!("creating the fleet KV bucket {bucket}: {e}")))?,
    };
    let bundles = object_store(js, names.bundle_store(), "bundle archives", Duration::ZERO).await?;
    let large = object_store(js, names.large_store(), "payloads larger than one engine message", Duration::from_secs(3600)).await?;
    Ok(Stores { kv, bundles, large })
}

/// Opens the object store `bucket`, creating it (file storage, objects
/// older than `max_age` removed; zero: kept) when missing.
async fn object_store(
    js: &jetstream::Context,
    bucket: String,
    what: &str,
    max_age: Duration,
) -> Result<object_store::ObjectStore, ClusterError> {
    if let Ok(store) = js.get_object_store(&bucket).await {
        return Ok(store);
    }
    let config = object_store::Config {
        bucket: bucket.clone(),
        description: Some(format!("tensorgate: {what}")),
        storage: jetstream::stream::StorageType::File,
        max_age,
        ..Default::default()
    };
    js.create_object_store(config).await.map_err(|e| ClusterError::JetStream(format!("creating the object store {bucket}: {e}")))
}

/// The current value and revision of a KV key (`None`: absent or deleted).
pub async fn entry(kv: &kv::Store, key: &str) -> Result<Option<(Bytes, u64)>, String> {
    match kv.entry(key).await.map_err(|e| e.to_string())? {
        Some(e) if e.operation == kv::Operation::Put => Ok(Some((e.value, e.revision))),
        _ => Ok(None),
    }
}

/// Whether the bucket holds any bundle key (it may hold only policies).
pub async fn has_bundles(kv: &kv::Store) -> bool {
    use futures_util::StreamExt;
    match kv.keys().await {
        Ok(mut keys) => {
            while let Some(k) = keys.next().await {
                match k {
                    Ok(k) if wire::parse_bundle_key(&k).is_some() => return true,
                    Ok(_) => {}
                    Err(_) => return true,
                }
            }
            false
        }
        // An empty bucket can answer "no keys" as an error.
        Err(_) => false,
    }
}

/// Every bundle key's `(name, version)` in the bucket.
pub async fn bundle_keys(kv: &kv::Store) -> Vec<(String, u64)> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    if let Ok(mut keys) = kv.keys().await {
        while let Some(Ok(k)) = keys.next().await {
            out.extend(wire::parse_bundle_key(&k));
        }
    }
    out
}
