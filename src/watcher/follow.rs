//! Following the chain: a `newHeads` subscription over WebSocket where the endpoint offers one, polling
//! at a fraction of the block time otherwise. Transient RPC trouble is retried with back-off; the
//! watcher never stops for it.

use super::{Head, SyncReport, Watcher, WatcherError};
use crate::{
    chain::redact_url,
    protocol::{BlockRef, LendingProtocol},
};
use alloy::providers::{Provider, ProviderBuilder, WsConnect};
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where new heads come from.
#[derive(Debug, Clone)]
pub enum Heads {
    /// `eth_subscribe("newHeads")` on this WebSocket URL.
    Subscribe {
        /// ws:// or wss:// URL.
        ws_url: String,
    },
    /// `eth_getBlockByNumber("latest")` this often.
    Poll {
        /// Interval.
        every: Duration,
    },
}

impl Heads {
    /// A subscription when `url` is a WebSocket URL, else polling at a quarter of the block time
    /// (between 100 ms and 3 s).
    pub fn for_url(url: &str, block_time: Duration) -> Self {
        if url.starts_with("ws://") || url.starts_with("wss://") {
            Self::Subscribe {
                ws_url: url.to_owned(),
            }
        } else {
            Self::Poll {
                every: (block_time / 4).clamp(Duration::from_millis(100), Duration::from_secs(3)),
            }
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Follows the chain until `cancel` fires, calling `on_sync` after every sync that reached a new block.
/// Returns an error only for what retrying cannot fix (the store, a reorg deeper than the cursor keeps).
pub async fn follow<P: LendingProtocol>(
    watcher: &mut Watcher<P>,
    heads: Heads,
    cancel: CancellationToken,
    mut on_sync: impl FnMut(&SyncReport),
) -> Result<(), WatcherError> {
    let mut backoff = Duration::from_millis(250);
    let mut mode = heads;
    while !cancel.is_cancelled() {
        let result = match &mode {
            Heads::Subscribe { ws_url } => {
                follow_subscription(watcher, ws_url, &cancel, &mut on_sync).await
            }
            Heads::Poll { every } => follow_polling(watcher, *every, &cancel, &mut on_sync).await,
        };
        match result {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(FollowError::Watcher(e)) if !e.is_retryable() => return Err(e),
            Err(FollowError::Watcher(e)) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "sync failed, retrying");
                sleep_or_cancel(backoff, &cancel).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(FollowError::Subscription(reason)) => {
                // No subscription to be had: poll instead, at a steady pace.
                tracing::warn!(%reason, "newHeads subscription unavailable, polling instead");
                mode = Heads::Poll {
                    every: Duration::from_millis(500),
                };
            }
        }
    }
    Ok(())
}

enum FollowError {
    Watcher(WatcherError),
    Subscription(String),
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = cancel.cancelled() => {}
    }
}

async fn follow_polling<P: LendingProtocol>(
    watcher: &mut Watcher<P>,
    every: Duration,
    cancel: &CancellationToken,
    on_sync: &mut impl FnMut(&SyncReport),
) -> Result<(), FollowError> {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        let before = watcher.cursor().map(|c| c.block);
        let report = watcher.sync().await.map_err(FollowError::Watcher)?;
        if watcher.cursor().map(|c| c.block) != before || report.reorg_depth.is_some() {
            on_sync(&report);
        }
    }
}

async fn follow_subscription<P: LendingProtocol>(
    watcher: &mut Watcher<P>,
    ws_url: &str,
    cancel: &CancellationToken,
    on_sync: &mut impl FnMut(&SyncReport),
) -> Result<(), FollowError> {
    let ws = ProviderBuilder::new()
        .connect_ws(WsConnect::new(ws_url))
        .await
        .map_err(|e| {
            FollowError::Subscription(format!("connecting to {}: {e}", redact_url(ws_url)))
        })?;
    let subscription = ws
        .subscribe_blocks()
        .await
        .map_err(|e| FollowError::Subscription(format!("eth_subscribe newHeads: {e}")))?;
    // Catch up before the first notification.
    let report = watcher.sync().await.map_err(FollowError::Watcher)?;
    on_sync(&report);
    let mut stream = subscription.into_stream();
    loop {
        let header = tokio::select! {
            h = stream.next() => h,
            _ = cancel.cancelled() => return Ok(()),
        };
        let Some(header) = header else {
            // The connection dropped: subscribe again after a back-off.
            return Err(FollowError::Watcher(WatcherError::Chain(
                crate::chain::ChainError::rpc(
                    "the newHeads subscription ended",
                    alloy::transports::RpcError::NullResp,
                ),
            )));
        };
        let head = Head {
            block: BlockRef {
                number: header.number,
                hash: header.hash,
                timestamp: header.timestamp,
            },
            parent_hash: header.parent_hash,
        };
        let report = watcher.sync_to(head).await.map_err(FollowError::Watcher)?;
        on_sync(&report);
    }
}
