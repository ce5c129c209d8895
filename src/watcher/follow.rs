//! Following the chain: a `newHeads` subscription over WebSocket where the endpoint offers one, polling
//! at a fraction of the block time otherwise. RPC trouble of any kind is retried with a back-off that
//! starts over after every block synced and never waits longer than a block time, so the keeper is
//! following again within a block of an endpoint's return; it never stops for it.

use super::{Head, SyncReport, Watcher, WatcherError};
use crate::{
    chain::{redact_url, trouble::Backoff},
    protocol::LendingProtocol,
};
use alloy::{
    primitives::{Address, TxHash},
    providers::{Provider, ProviderBuilder, WsConnect},
};
use futures::StreamExt;
use std::time::Duration;
use std::{future::Future, time::Instant};
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

/// What runs after every block the watcher processes: the keeper (async), or a closure for simple
/// callers that only report.
pub trait OnBlock<P> {
    /// What stops following.
    type Error;
    /// Called with the watcher at the new block and what the sync did.
    fn on_block(
        &mut self,
        watcher: &Watcher<P>,
        report: SyncReport,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Called with each head as it arrives (at `received`), before the watcher syncs to it: what
    /// must not wait for the sync. Nothing by default.
    fn on_head(
        &mut self,
        _head: &Head,
        _received: Instant,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Contracts whose pending transactions it wants ([`Self::on_pending`]); none by default. They
    /// are watched over a `newHeads` subscription's WebSocket (`newPendingTransactions`), not when
    /// polling.
    fn pending_watch(&self) -> Vec<Address> {
        Vec::new()
    }

    /// Called between blocks with a pending transaction to one of [`Self::pending_watch`].
    fn on_pending(
        &mut self,
        _watcher: &Watcher<P>,
        _tx: TxHash,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }
}

impl<P, E, F> OnBlock<P> for F
where
    F: FnMut(&Watcher<P>, SyncReport) -> Result<(), E> + Send,
    E: Send,
{
    type Error = E;
    fn on_block(
        &mut self,
        watcher: &Watcher<P>,
        report: SyncReport,
    ) -> impl Future<Output = Result<(), E>> + Send {
        std::future::ready(self(watcher, report))
    }
}

/// The first wait after a failed sync; it doubles up to the caller's cap.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Follows the chain until `cancel` fires, calling `on_sync` with the watcher and the report after
/// every sync that reached a new block (or handled a reorg). RPC trouble is retried with a back-off
/// of at most `retry_cap` (a block time: the chain is followed again within a block of an endpoint's
/// return) that starts over after each block; returns an error only for what retrying cannot fix
/// (the store, a reorg deeper than the cursor keeps), or the first error `on_sync` returns.
pub async fn follow<P, E>(
    watcher: &mut Watcher<P>,
    heads: Heads,
    retry_cap: Duration,
    cancel: CancellationToken,
    on_sync: &mut impl OnBlock<P, Error = E>,
) -> Result<(), E>
where
    P: LendingProtocol,
    E: From<WatcherError>,
{
    let mut backoff = Backoff::new(FIRST_RETRY, retry_cap.max(FIRST_RETRY));
    let mut mode = heads;
    while !cancel.is_cancelled() {
        let result = match &mode {
            Heads::Subscribe { ws_url } => {
                follow_subscription(watcher, ws_url, &cancel, &mut backoff, on_sync).await
            }
            Heads::Poll { every } => {
                follow_polling(watcher, *every, &cancel, &mut backoff, on_sync).await
            }
        };
        match result {
            Ok(()) => backoff.reset(),
            Err(FollowError::Handler(e)) => return Err(e),
            Err(FollowError::Watcher(e)) if e.is_fatal() => return Err(e.into()),
            Err(FollowError::Watcher(e)) => {
                let wait = backoff.next_wait();
                crate::telemetry::metrics::set_backoff(wait);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "sync failed, retrying");
                sleep_or_cancel(wait, &cancel).await;
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

enum FollowError<E> {
    Watcher(WatcherError),
    Subscription(String),
    Handler(E),
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = cancel.cancelled() => {}
    }
}

/// Syncs to `head` (received at `received`) and hands the report on when it reached a new block, or
/// `always`. A sync that succeeds starts the back-off over.
async fn sync_and_handle<P: LendingProtocol, E>(
    watcher: &mut Watcher<P>,
    head: Head,
    received: Instant,
    always: bool,
    backoff: &mut Backoff,
    on_sync: &mut impl OnBlock<P, Error = E>,
) -> Result<(), FollowError<E>> {
    on_sync
        .on_head(&head, received)
        .await
        .map_err(FollowError::Handler)?;
    let before = watcher.cursor().map(|c| (c.block, c.hash));
    let mut report = watcher.sync_to(head).await.map_err(FollowError::Watcher)?;
    backoff.reset();
    crate::telemetry::metrics::set_backoff(Duration::ZERO);
    let moved = watcher.cursor().map(|c| (c.block, c.hash)) != before;
    if !always && !moved && report.reorg_depth.is_none() {
        return Ok(());
    }
    report.head_received = Some(received);
    on_sync
        .on_block(watcher, report)
        .await
        .map_err(FollowError::Handler)
}

async fn follow_polling<P: LendingProtocol, E>(
    watcher: &mut Watcher<P>,
    every: Duration,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
    on_sync: &mut impl OnBlock<P, Error = E>,
) -> Result<(), FollowError<E>> {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = cancel.cancelled() => return Ok(()),
        }
        let head = watcher.latest_head().await.map_err(FollowError::Watcher)?;
        sync_and_handle(watcher, head, Instant::now(), false, backoff, on_sync).await?;
    }
}

async fn follow_subscription<P: LendingProtocol, E>(
    watcher: &mut Watcher<P>,
    ws_url: &str,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
    on_sync: &mut impl OnBlock<P, Error = E>,
) -> Result<(), FollowError<E>> {
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
    let mut pending = watch_mempool(&ws, on_sync.pending_watch()).await;
    // Catch up before the first notification, and report it: the subscription is live from here.
    let head = watcher.latest_head().await.map_err(FollowError::Watcher)?;
    sync_and_handle(watcher, head, Instant::now(), true, backoff, on_sync).await?;
    let mut stream = subscription.into_stream();
    loop {
        let header = tokio::select! {
            biased;
            h = stream.next() => h,
            Some(tx) = pending.recv() => {
                // A new head cuts planning the pending block short: it is handled at once, and its
                // wait is timed from its arrival.
                tokio::select! {
                    biased;
                    h = stream.next() => h,
                    handled = on_sync.on_pending(watcher, tx) => {
                        handled.map_err(FollowError::Handler)?;
                        continue;
                    }
                }
            }
            _ = cancel.cancelled() => return Ok(()),
        };
        let received = Instant::now();
        let Some(header) = header else {
            // The connection dropped: subscribe again after a back-off.
            return Err(FollowError::Watcher(WatcherError::Chain(
                crate::chain::ChainError::rpc(
                    "the newHeads subscription ended",
                    alloy::transports::RpcError::NullResp,
                ),
            )));
        };
        let head = Head::of_header(&header);
        sync_and_handle(watcher, head, received, false, backoff, on_sync).await?;
    }
}

/// Pending transactions to `contracts`, from a `newPendingTransactions` subscription on `ws`: a task
/// of its own reads each one announced and passes on those sent to one of them, so that a busy
/// mempool never holds up a head. Nothing comes when `contracts` is empty or the node refuses the
/// subscription (logged).
async fn watch_mempool(
    ws: &impl Provider,
    contracts: Vec<Address>,
) -> tokio::sync::mpsc::Receiver<TxHash> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    if contracts.is_empty() {
        return rx;
    }
    let subscription = match ws.subscribe_pending_transactions().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "newPendingTransactions subscription unavailable: price updates are planned when they are mined");
            return rx;
        }
    };
    let ws = ws.root().clone();
    tokio::spawn(async move {
        let mut hashes = subscription.into_stream();
        loop {
            let hash = tokio::select! {
                h = hashes.next() => match h {
                    Some(h) => h,
                    None => return,
                },
                // Following stopped: so does the subscription.
                _ = tx.closed() => return,
            };
            let to = match ws.get_transaction_by_hash(hash).await {
                Ok(Some(t)) => alloy::consensus::Transaction::to(&t),
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(%hash, error = %e, "reading a pending transaction failed");
                    continue;
                }
            };
            if to.is_some_and(|to| contracts.contains(&to)) && tx.send(hash).await.is_err() {
                return;
            }
        }
    });
    rx
}
