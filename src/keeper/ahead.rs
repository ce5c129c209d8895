//! Planning ahead of a block: a price update waiting in the mempool is planned on the node's pending
//! block, and its liquidations are sent the moment that block is mined, with no simulation left to
//! wait for then.
//!
//! A pending transaction to one of the market's price setters ([`price_setters`]: the AaveOracle,
//! its fallback oracle, each reserve's source, and what `planner.watch_pending_to` adds) makes the
//! keeper read the pending block once it has settled (the arbitrage of the new price follows the
//! update within milliseconds): the market at `pending` (prices as the update leaves them), who
//! falls below 1 there, and then the usual sizing, simulation and pool check on that state, with a
//! copy of the book (the venues it knows and their ticks; pool states read at `pending`; the book
//! that follows mined blocks is not touched). The simulated transactions are held unsigned. A block
//! that is the pending block planned on (the same number, parent and transactions root, so the same
//! state) has them signed and sent first thing, each still paying at that block's real base fee; any
//! other block drops them and is planned as every block is. A pending block that changed while it
//! was planned on is planned again, a few times at most; a new head cuts planning short
//! ([`crate::watcher::follow`]), and that block is planned as it comes.
//!
//! Where the next block is seldom the node's pending block (builders on mainnet), held plans are
//! mostly dropped: that costs the reads, never a liquidation, which the block path still makes.

use super::{Keeper, KeeperError};
use crate::{
    chain::{
        ChainError, Rpc,
        bindings::{AaveOracle, Pool},
        multicall::{self, decode},
    },
    planner::Batch,
    protocol::{LendingProtocol, aave_v3::AaveV3},
    units::WAD,
    watcher::{Head, Watcher},
};
use alloy::{
    eips::{BlockId, BlockNumberOrTag},
    primitives::{Address, TxHash},
    providers::Provider,
    sol_types::SolCall,
};
use std::{sync::Arc, time::Instant};

/// Transactions planned on a pending block, held for its arrival.
pub(super) struct Ahead {
    /// The pending block planned on.
    head: Head,
    /// Simulated and claimed on it, not signed.
    batches: Vec<Batch>,
    /// The market as the pending block leaves it, which the batches were priced on.
    market: Arc<AaveV3>,
    /// The account's pending transaction count, read while planning.
    chain_nonce: Option<u64>,
    /// When the update was seen in the mempool.
    seen: Instant,
}

/// Times a pending block that changed while it was planned on is planned again.
const PLAN_AGAIN: usize = 3;

/// The contracts whose transactions move the market's prices: the AaveOracle, its fallback oracle
/// and each reserve's source, as the oracle names them now. (A Chainlink proxy's updates are sent
/// to its aggregator, not to the proxy: operators add those in `planner.watch_pending_to`.)
pub async fn price_setters(rpc: &Rpc, market: &AaveV3) -> Result<Vec<Address>, ChainError> {
    let assets = crate::chain::view(
        rpc,
        market.pool,
        Pool::getReservesListCall {},
        "the Pool's reserves",
    )
    .await?;
    let mut calls = vec![(
        market.oracle,
        AaveOracle::getFallbackOracleCall {}.abi_encode(),
    )];
    calls.extend(assets.iter().map(|&asset| {
        (
            market.oracle,
            AaveOracle::getSourceOfAssetCall { asset }.abi_encode(),
        )
    }));
    let results = multicall::aggregate3_raw(
        rpc,
        market.multicall,
        calls,
        BlockId::latest(),
        multicall::BATCH,
    )
    .await?;
    let mut setters = vec![market.oracle];
    // The fallback and every source decode alike (one address); one that fails is left out.
    setters.extend(
        results
            .iter()
            .filter_map(|r| decode::<AaveOracle::getSourceOfAssetCall>(r).ok())
            .filter(|a| !a.is_zero()),
    );
    setters.sort();
    setters.dedup();
    Ok(setters)
}

/// The node's pending block, as a head whose reads are made at `pending`.
async fn pending_head(rpc: &Rpc) -> Result<Head, ChainError> {
    let block = rpc
        .get_block_by_number(BlockNumberOrTag::Pending)
        .await
        .map_err(|e| ChainError::rpc("eth_getBlockByNumber(pending)", e))?
        .ok_or_else(|| {
            ChainError::rpc(
                "the node has no pending block",
                alloy::transports::RpcError::NullResp,
            )
        })?;
    let mut head = Head::of_header(&block.header);
    head.block.pending = true;
    Ok(head)
}

/// A pending block unchanged over this long is planned on: the transactions sent with an update (its
/// price's arbitrage, by the same hands or others') come within milliseconds of it.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(15);

/// Checks for a settled pending block before it is planned on as it stands.
const SETTLE_CHECKS: usize = 5;

/// The pending block once it has not changed for [`SETTLE`], or as it stands after
/// [`SETTLE_CHECKS`] checks.
async fn settled_pending_head(rpc: &Rpc) -> Result<Head, ChainError> {
    let mut head = pending_head(rpc).await?;
    for _ in 0..SETTLE_CHECKS {
        tokio::time::sleep(SETTLE).await;
        let now = pending_head(rpc).await?;
        if same_block(&head, &now) {
            break;
        }
        head = now;
    }
    Ok(head)
}

/// The same block: a mined one equal to the pending one planned on.
fn same_block(planned: &Head, mined: &Head) -> bool {
    planned.block.number == mined.block.number
        && planned.parent_hash == mined.parent_hash
        && planned.transactions_root == mined.transactions_root
}

impl Keeper {
    /// A pending transaction to a price setter (`update`): plans the pending block and holds its
    /// liquidations for it. RPC trouble is logged; only the journal failing is an error.
    pub(super) async fn plan_ahead(
        &mut self,
        watcher: &Watcher<AaveV3>,
        update: TxHash,
    ) -> Result<(), KeeperError> {
        if self.dry_run.is_some() {
            return Ok(());
        }
        let Some(cursor) = watcher.cursor().map(|c| c.hash) else {
            return Ok(());
        };
        let seen = Instant::now();
        let rpc = watcher.rpc().clone();
        for _ in 0..PLAN_AGAIN {
            let head = match settled_pending_head(&rpc).await {
                Ok(head) => head,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the pending block failed; the update is planned when it is mined");
                    return Ok(());
                }
            };
            if head.parent_hash != cursor {
                // The node has moved on, or holds a block we have not synced: the block path has it.
                return Ok(());
            }
            let mut market = watcher.protocol().clone();
            if let Err(e) = market.refresh_market(&rpc, head.block).await {
                tracing::warn!(error = %e, "reading the market at the pending block failed");
                return Ok(());
            }
            let below: Vec<Address> = watcher
                .positions()
                .filter(|(_, p, _)| market.health(p).health_factor < WAD)
                .map(|(user, _, _)| user)
                .collect();
            tracing::info!(
                %update,
                pending_block = head.block.number,
                below_one = below.len(),
                "price update pending"
            );
            if below.is_empty() {
                self.ahead = None;
                return Ok(());
            }
            let mut batches = Vec::new();
            let planner = Arc::new(self.planner.for_pending_block());
            let market = Arc::new(market);
            let chain_nonce = self
                .pursue(
                    watcher,
                    &below,
                    market.clone(),
                    planner,
                    seen,
                    Some(&mut batches),
                )
                .await?;
            // Planned on what the node held at the start: if more arrived meanwhile, again.
            match pending_head(&rpc).await {
                Ok(_) if batches.is_empty() => {
                    self.ahead = None;
                    return Ok(());
                }
                Ok(now) if same_block(&head, &now) => {
                    tracing::info!(
                        pending_block = head.block.number,
                        liquidations = batches.iter().map(|b| b.plans.len()).sum::<usize>(),
                        transactions = batches.len(),
                        planned_ms = seen.elapsed().as_secs_f64() * 1e3,
                        "liquidations planned on the pending block, held for it"
                    );
                    self.ahead = Some(Ahead {
                        head,
                        batches,
                        market,
                        chain_nonce,
                        seen,
                    });
                    return Ok(());
                }
                Ok(_) => tracing::debug!("the pending block changed while it was planned on"),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the pending block failed");
                    return Ok(());
                }
            }
        }
        self.ahead = None;
        Ok(())
    }

    /// A new head (`mined`, received at `arrived`), before the watcher syncs to it: sends what was
    /// planned for it while it was pending, when it is that block.
    pub(super) async fn send_ahead(
        &mut self,
        mined: Head,
        arrived: Instant,
    ) -> Result<(), KeeperError> {
        // A head older than the one planned for (polling sees one again) changes nothing.
        if self
            .ahead
            .as_ref()
            .is_none_or(|a| mined.block.number < a.head.block.number)
        {
            return Ok(());
        }
        let Some(ahead) = self.ahead.take() else {
            return Ok(());
        };
        // Its parent is the block the plans were made after, so this extends the chain they saw.
        if !same_block(&ahead.head, &mined) {
            tracing::info!(
                planned = ahead.head.block.number,
                mined = mined.block.number,
                "held liquidations dropped: the block is not the pending block they were planned on, and is planned now"
            );
            return Ok(());
        }
        // Priced at the base fee the pending block implied; the mined block sets the real one, which
        // can come out a little higher (see `Planner::reprice`): those are charged again at it, and
        // what no longer pays is left to the block path.
        let base_fee = mined.block.gas.map(|g| g.next_base_fee());
        let mut batches = Vec::with_capacity(ahead.batches.len());
        for batch in ahead.batches {
            let planned = batch
                .plans
                .iter()
                .map(|p| p.base_fee_wei)
                .min()
                .unwrap_or(0);
            match base_fee {
                Some(fee) if fee <= planned => batches.push(batch),
                Some(fee) => match self.planner.reprice(batch, &ahead.market, fee) {
                    Ok(batch) => batches.push(batch),
                    Err(refused) => tracing::info!(
                        planned_base_fee = planned,
                        block_base_fee = fee,
                        borrowers = ?refused.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
                        "a held transaction no longer pays at the block's base fee; its liquidations are planned again"
                    ),
                },
                None => tracing::info!(
                    "the block carries no base fee to check the held transaction against; its liquidations are planned again"
                ),
            }
        }
        // All go at once, and a large fall's do not all fit the block: the most profit for its room
        // goes first (sales into one pool keeping their order).
        let batches = crate::planner::block_order::order_batches(batches);
        let liquidations: usize = batches.iter().map(|b| b.plans.len()).sum();
        let Some(round) = self
            .start_sending(batches, arrived, ahead.chain_nonce)
            .await?
        else {
            return Ok(());
        };
        match round.await {
            Ok(round) => self.finish_sending(round, arrived).await?,
            Err(_) => tracing::error!(
                "a sending task panicked; what it journaled is re-sent by the next poll"
            ),
        }
        self.sent_ahead += liquidations;
        tracing::info!(
            liquidations,
            lead_ms = arrived.saturating_duration_since(ahead.seen).as_secs_f64() * 1e3,
            "sent the liquidations planned on the pending block"
        );
        Ok(())
    }
}
