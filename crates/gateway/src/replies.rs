//! Replies from workers: each member answers its waiting item (the first
//! reply wins) and the message is confirmed to the worker, so that it
//! acknowledges the work to the engine.

use std::sync::Weak;

use bytes::Bytes;
use futures_util::StreamExt;
use tensorgate_cluster::engine::read_object;
use tensorgate_cluster::wire::{self, Payload, ReplyHead};
use tensorgate_protocol::ErrorCode;
use tensorgate_server::request::{ItemDone, ItemFailure};

use crate::{lock, Inner};

/// Hands each reply to its waiting item and confirms it to the worker.
pub(crate) async fn listen(inner: Weak<Inner>, mut replies: async_nats::Subscriber) {
    while let Some(msg) = replies.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let members = match wire::unpack::<ReplyHead>(&msg.payload) {
            Ok(m) => m,
            // Not confirmed: the worker hands the items back and they run again.
            Err(e) => {
                tracing::error!("unreadable reply from a worker: {e}");
                continue;
            }
        };
        // One lock for the whole message. None: already answered (a
        // redelivered duplicate) or no longer wanted.
        let waiters: Vec<_> = {
            let mut pending = lock(&inner.pending);
            members.into_iter().map(|(key, head, payload)| (pending.take(key), head, payload)).collect()
        };
        for (waiting, head, payload) in waiters {
            match (waiting, payload) {
                (Some(tx), Payload::Inline(bytes)) => {
                    let _ = tx.send(head.into_done(bytes));
                }
                // A large result: fetched from the store off this loop.
                (waiting, Payload::Object(name)) => {
                    let large = inner.engine.stores.large.clone();
                    tokio::spawn(async move {
                        if let Some(tx) = waiting {
                            let done = match read_object(&large, &name).await {
                                Ok(data) => head.into_done(Bytes::from(data)),
                                Err(e) => ItemDone {
                                    result: Err(ItemFailure::new(ErrorCode::Internal, format!("large result: {e}"))),
                                    timings: head.timings,
                                },
                            };
                            let _ = tx.send(done);
                        }
                        let _ = large.delete(&name).await;
                    });
                }
                (None, Payload::Inline(_)) => {}
            }
        }
        if let Some(reply) = msg.reply {
            let _ = inner.engine.client.publish(reply, Bytes::new()).await;
        }
    }
}
