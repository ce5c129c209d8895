//! The watcher: finds every borrower of a market from its events and keeps their health current every
//! block at a cost in RPC requests that does not grow with the number of borrowers.
//!
//! Per new block it makes two requests, both pinned to the block's hash: `eth_getLogs` for the market's
//! events (whom they touch is re-read, batched) and one `aggregate3` with every reserve's indexes and
//! configuration and every price. Health is then computed off-chain with the protocol's own math:
//! users holding a reserve whose price or parameters moved, users touched by an event, and users near
//! the threshold every block; everyone every [`WatcherOptions::full_reprice_every`] blocks (interest
//! accrual moves health slowly). Positions computed below 1 are checked against the chain's own
//! `getUserAccountData` (one more batched request) before anything acts on them.
//!
//! Reorgs: the cursor keeps recent block hashes. When a new head does not extend the cursor, the
//! watcher walks back to the last block whose hash still matches, re-reads every user touched since
//! then at the new head, and continues from there.

pub mod backfill;
pub mod follow;
pub mod table;
pub mod tap;

use crate::{
    chain::{ChainError, Rpc},
    protocol::{BlockRef, LendingProtocol, MarketChange},
    store::{BackfillCursor, Cursor, MarketStore, StoreError, StoredPosition},
    units::{HealthFactor, WAD},
};
use alloy::{
    eips::BlockNumberOrTag,
    primitives::{Address, B256, U256},
    providers::Provider,
    rpc::types::Filter,
};
use backfill::{RangePolicy, RpcLogs};
use std::{
    collections::{BTreeMap, HashSet},
    time::{Duration, Instant},
};
use table::PositionTable;
use tap::{LogTap, TappedLogs};

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// Talking to the chain failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A reorg went deeper than the hashes the cursor keeps.
    #[error("reorg deeper than the {0} recent blocks kept: rebuild the store with --rebuild-store")]
    DeepReorg(usize),
}

impl WatcherError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Chain(e) if e.is_retryable())
    }

    /// What following the chain must stop for: the store failing, or a reorg deeper than the cursor
    /// keeps. RPC trouble of any kind is not: an endpoint that answers wrongly now may answer right
    /// later, and a keeper that exits sees nothing.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Store(_) | Self::DeepReorg(_))
    }
}

/// Tables at least this large are re-priced on every core after a price move (below it the threads
/// cost more than they save).
const PARALLEL_REPRICE_FROM: usize = 2_048;

/// Tuning.
#[derive(Debug, Clone)]
pub struct WatcherOptions {
    /// Discovery starts here (the market's deployment block).
    pub deployment_block: u64,
    /// Every this many blocks, every position is re-priced (interest accrual).
    pub full_reprice_every: u64,
    /// getLogs ranges.
    pub ranges: RangePolicy,
    /// Show a progress bar during discovery (on a terminal).
    pub progress: bool,
    /// Read the chain's own `getUserAccountData` for every position computed below 1, before reporting
    /// it. What a person watching wants; the keeper turns it off, since the simulation of the exact
    /// liquidation, which it runs anyway, is the chain's word on the same question (the Pool reverts a
    /// liquidation of a healthy position) and the read would delay every plan of a price move.
    pub verify_below_one: bool,
}

impl Default for WatcherOptions {
    fn default() -> Self {
        Self {
            deployment_block: 0,
            full_reprice_every: 100,
            ranges: RangePolicy::default(),
            progress: false,
            verify_below_one: true,
        }
    }
}

/// A block header as far as the watcher cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The block.
    pub block: BlockRef,
    /// Its parent's hash.
    pub parent_hash: B256,
    /// Its transactions root: a block equal to a pending block seen before has the same parent and
    /// the same root.
    pub transactions_root: B256,
}

impl Head {
    /// The head a header describes.
    pub fn of_header(header: &alloy::rpc::types::Header) -> Self {
        Self {
            block: BlockRef::of_header(header),
            parent_hash: header.parent_hash,
            transactions_root: header.transactions_root,
        }
    }
}

/// A position computed below a health factor of 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The borrower.
    pub user: Address,
    /// Health factor computed off-chain.
    pub health_factor: HealthFactor,
    /// The chain's `getUserAccountData` health factor at the same block, when it was read.
    pub onchain_health_factor: Option<HealthFactor>,
    /// Collateral (base currency).
    pub collateral_base: U256,
    /// Debt (base currency).
    pub debt_base: U256,
}

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    /// The head reached.
    pub block: Option<BlockRef>,
    /// Blocks processed.
    pub blocks: u64,
    /// Users whose state was (re-)read.
    pub loaded: usize,
    /// Positions whose health was recomputed.
    pub repriced: usize,
    /// CPU time of the re-pricing (the sum over its threads).
    pub reprice_time: Duration,
    /// Liquidatable positions (computed below 1, checked on-chain).
    pub liquidatable: Vec<Candidate>,
    /// Depth of a reorg handled, if one was.
    pub reorg_depth: Option<u64>,
    /// A discovery backfill ran.
    pub backfilled: bool,
    /// Liquidations on the market in the blocks processed (not during discovery), by anyone.
    pub market_liquidations: Vec<crate::protocol::MarketLiquidation>,
    /// When the head that started this sync was received (set by [`follow`]).
    pub head_received: Option<Instant>,
    /// The [`LogTap`]'s logs of the block, when the sync processed exactly one new block (none after
    /// a gap, a reorg or a discovery: the tap's consumer must read its state again).
    pub tapped: Option<TappedLogs>,
}

/// The watcher of one market.
pub struct Watcher<P> {
    protocol: P,
    rpc: Rpc,
    store: MarketStore,
    opts: WatcherOptions,
    positions: PositionTable,
    cursor: Option<Cursor>,
    /// Users touched by each recent block, so a reorg can re-read them.
    touched_in: BTreeMap<u64, Vec<Address>>,
    last_full_reprice: u64,
    /// The protocol's market state has been read in this process.
    market_loaded: bool,
    /// What the market reads since the last block applied changed, not yet applied to the positions:
    /// a block whose sync fails after its market read (its logs, its users' reads) leaves the
    /// protocol's state moved, and the next read of the market sees no change; the positions a price
    /// move touched are re-priced all the same when the block is tried again.
    unapplied: MarketChange,
    /// Other contracts' logs fetched with each block's own.
    tap: Option<LogTap>,
}

impl<P: LendingProtocol> Watcher<P> {
    /// A watcher resuming from what `store` holds.
    pub fn open(
        protocol: P,
        rpc: Rpc,
        store: MarketStore,
        opts: WatcherOptions,
    ) -> Result<Self, WatcherError> {
        let mut watcher = Self {
            protocol,
            rpc,
            cursor: store.cursor()?,
            store,
            opts,
            positions: PositionTable::default(),
            touched_in: BTreeMap::new(),
            last_full_reprice: 0,
            market_loaded: false,
            unapplied: MarketChange::default(),
            tap: None,
        };
        for (user, position) in watcher.store.positions()? {
            watcher.insert(user, position);
        }
        Ok(watcher)
    }

    /// Fetches `tap`'s logs with each new block's own (see [`tap`]).
    pub fn tap_logs(&mut self, tap: LogTap) {
        self.tap = Some(tap);
    }

    /// The protocol (its market state as of the last block).
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// The provider it reads through.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// The cursor.
    pub fn cursor(&self) -> Option<&Cursor> {
        self.cursor.as_ref()
    }

    /// Positions tracked.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// No positions tracked.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Every tracked position with its health at the last block.
    pub fn positions(
        &self,
    ) -> impl Iterator<Item = (Address, &StoredPosition, crate::protocol::Health)> {
        self.positions.iter().map(|(a, p, h)| (a, p, *h))
    }

    /// Whether positions computed below 1 are checked on-chain before they are reported (see
    /// [`WatcherOptions::verify_below_one`]).
    pub fn set_verify_below_one(&mut self, verify: bool) {
        self.opts.verify_below_one = verify;
    }

    /// The stored position of `user`, if it has debt.
    pub fn position(&self, user: Address) -> Option<&StoredPosition> {
        self.positions.get(&user).map(|(p, _)| p)
    }

    /// A position's health recomputed now, at the market state of the last block (the cached figure of
    /// a position above 1 may be some blocks of interest old: it is re-priced before interest alone
    /// could bring it to 1, [`crate::protocol::Health::recheck_at`]).
    pub fn current_health(&self, user: Address) -> Option<crate::protocol::Health> {
        self.positions
            .get(&user)
            .map(|(p, _)| self.protocol.health(p))
    }

    /// Recomputes every position's health at the market state of the last block, off-chain, and
    /// returns the CPU time it took: what a full re-price costs (the benchmark's figure).
    pub fn reprice_all(&mut self) -> Duration {
        let started = cpu_time::ThreadTime::now();
        for (_, position, health) in self.positions.iter_mut() {
            *health = self.protocol.health(position);
        }
        started.elapsed()
    }

    /// The users computed below a health factor of 1 at the last block.
    pub fn liquidatable(&self) -> Vec<Address> {
        self.positions
            .iter()
            .filter(|(_, _, h)| h.health_factor < WAD)
            .map(|(a, _, _)| a)
            .collect()
    }

    fn insert(&mut self, user: Address, position: StoredPosition) {
        // As stored; a position loaded now is re-priced in this block's pass (it was touched).
        let health = crate::protocol::Health {
            collateral_base: position.collateral_base,
            debt_base: position.debt_base,
            health_factor: position.health_factor,
            recheck_at: 0,
        };
        self.positions.insert(user, position, health);
    }

    fn remove(&mut self, user: Address) {
        self.positions.remove(&user);
    }

    /// The chain's latest block.
    pub async fn latest_head(&self) -> Result<Head, WatcherError> {
        self.head_at(BlockNumberOrTag::Latest).await
    }

    /// The head of block `at`.
    pub async fn head_at(&self, at: BlockNumberOrTag) -> Result<Head, WatcherError> {
        let block = self
            .rpc
            .get_block_by_number(at)
            .await
            .map_err(|e| ChainError::rpc(format!("eth_getBlockByNumber({at})"), e))?
            .ok_or_else(|| {
                ChainError::rpc(
                    format!("block {at} not found"),
                    alloy::transports::RpcError::NullResp,
                )
            })?;
        Ok(Head::of_header(&block.header))
    }

    /// Brings the watcher to the chain's latest block.
    pub async fn sync(&mut self) -> Result<SyncReport, WatcherError> {
        let head = self.latest_head().await?;
        self.sync_to(head).await
    }

    /// Brings the watcher to `head`: discovery on first run, one block at a time when following the
    /// chain, a range scan after a gap, and reorg handling when `head` does not extend the cursor.
    pub async fn sync_to(&mut self, head: Head) -> Result<SyncReport, WatcherError> {
        let Some(cursor) = self.cursor.clone() else {
            return self.discover(head).await;
        };
        if head.block.number == cursor.block + 1 && head.parent_hash == cursor.hash {
            return self.advance(cursor.block + 1, head.block, Vec::new()).await;
        }
        if head.block.number <= cursor.block || head.block.number == cursor.block + 1 {
            // Either nothing new, or a head that does not build on ours.
            if head.block.number == cursor.block && head.block.hash == cursor.hash {
                if !self.market_loaded {
                    // Restarted with nothing new on chain: the positions came from the store, the
                    // market state (indexes, prices) has to be read before any health is computed.
                    return self
                        .apply(head.block, Vec::new(), true, &cursor, false)
                        .await;
                }
                return Ok(SyncReport {
                    block: Some(head.block),
                    ..Default::default()
                });
            }
            return self.handle_reorg(head).await;
        }
        // A gap: make sure our head is still canonical, then scan the gap as a range.
        let ours = self.head_at(BlockNumberOrTag::Number(cursor.block)).await?;
        if ours.block.hash != cursor.hash {
            return self.handle_reorg(head).await;
        }
        self.advance(cursor.block + 1, head.block, Vec::new()).await
    }

    /// First run: every event since the deployment block, in adaptive ranges, persisting progress so
    /// an interrupted discovery resumes where it stopped.
    async fn discover(&mut self, head: Head) -> Result<SyncReport, WatcherError> {
        // The log filter needs the reserves (their aTokens): read the market first.
        self.protocol.refresh_market(&self.rpc, head.block).await?;
        self.market_loaded = true;
        let progress = self.store.backfill()?.unwrap_or(BackfillCursor {
            next: self.opts.deployment_block,
            to: head.block.number,
        });
        let to = progress.to.max(head.block.number);
        let (addresses, topics) = self.protocol.log_filter();
        let source = RpcLogs {
            rpc: self.rpc.clone(),
            addresses,
            topics,
        };
        let total = to.saturating_sub(progress.next) + 1;
        let bar = self.opts.progress.then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "discovering borrowers {bar:40} {pos}/{len} blocks, {msg}",
                )
                .expect("static template"),
            );
            bar
        });
        let mut found = 0usize;
        let store = self.store.clone();
        let protocol = &self.protocol;
        let stats = backfill::scan(
            &source,
            progress.next..=to,
            self.opts.ranges,
            |range, logs| {
                let mut users = Vec::new();
                for log in &logs {
                    protocol.touched_users(log, &mut users);
                }
                users.sort();
                users.dedup();
                found += users.len();
                store
                    .record_backfill(
                        BackfillCursor {
                            next: range.end() + 1,
                            to,
                        },
                        &users,
                    )
                    .map_err(|e| {
                        ChainError::rpc(
                            "recording discovery progress",
                            alloy::transports::RpcError::LocalUsageError(Box::new(e)),
                        )
                    })?;
                match &bar {
                    Some(bar) => {
                        bar.inc(range.end() - range.start() + 1);
                        bar.set_message(format!("{found} user sightings"));
                    }
                    None => tracing::info!(
                        from = range.start(),
                        to = range.end(),
                        logs = logs.len(),
                        "discovery range scanned"
                    ),
                }
                Ok(())
            },
        )
        .await?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let users = self.store.pending_users()?;
        tracing::info!(
            users = users.len(),
            ranges = stats.ranges.len(),
            refused = stats.refused,
            retried = stats.retried,
            "discovery scanned"
        );

        // State at the head the scan ended on; events after it are picked up by the next sync.
        let end = self.head_at(BlockNumberOrTag::Number(to)).await?;
        let mut cursor = Cursor::default();
        cursor.advance(end.block.number, end.block.hash);
        let mut report = self.apply(end.block, users, true, &cursor, false).await?;
        self.store.finish_backfill(&cursor)?;
        self.cursor = Some(cursor);
        report.backfilled = true;
        Ok(report)
    }

    /// Processes `from..=to.number` (one block, or a gap as a range) and applies it at `to`.
    async fn advance(
        &mut self,
        from: u64,
        to: BlockRef,
        mut extra_users: Vec<Address>,
    ) -> Result<SyncReport, WatcherError> {
        let (mut addresses, mut topics) = self.protocol.log_filter();
        let mut touched = Vec::new();
        let mut liquidations = Vec::new();
        let mut market_read = false;
        let mut tapped = None;
        if from == to.number {
            // The tap's addresses and events ride along (no contract of the market emits the tap's
            // events, nor is one of its addresses).
            let tap = self.tap.as_ref().and_then(LogTap::filter);
            if let Some((tap_addresses, tap_topics)) = &tap {
                addresses.extend_from_slice(tap_addresses);
                topics.extend_from_slice(tap_topics);
            }
            // Pinned to the block's hash: these are the logs of exactly this block. The market's
            // prices are read at the same hash side by side: one round trip's wait, not two.
            let filter = Filter::new()
                .address(addresses)
                .event_signature(topics)
                .at_block_hash(to.hash);
            let (rpc, protocol) = (&self.rpc, &mut self.protocol);
            let started = Instant::now();
            let (logs, change) = tokio::join!(
                async {
                    rpc.get_logs(&filter)
                        .await
                        .map_err(|e| ChainError::rpc("eth_getLogs", e))
                },
                protocol.refresh_market(rpc, to)
            );
            // Kept before the logs' error is returned: the market has moved to `to` already.
            self.unapplied.merge(change?);
            market_read = true;
            let logs = logs?;
            tracing::debug!(
                block = to.number,
                logs = logs.len(),
                read_ms = started.elapsed().as_secs_f64() * 1e3,
                "the block's logs and market read"
            );
            let logs = match tap {
                Some((tap_addresses, _)) => {
                    let (theirs, ours): (Vec<_>, Vec<_>) = logs
                        .into_iter()
                        .partition(|l| tap_addresses.binary_search(&l.address()).is_ok());
                    tapped = Some(TappedLogs {
                        addresses: tap_addresses,
                        logs: theirs,
                    });
                    ours
                }
                None => logs,
            };
            for log in &logs {
                self.protocol.touched_users(log, &mut touched);
                liquidations.extend(self.protocol.liquidation(log));
            }
        } else {
            let source = RpcLogs {
                rpc: self.rpc.clone(),
                addresses,
                topics,
            };
            let protocol = &self.protocol;
            backfill::scan(&source, from..=to.number, self.opts.ranges, |_, logs| {
                for log in &logs {
                    // A removed log was undone by a reorg: its user is re-read all the same.
                    protocol.touched_users(log, &mut touched);
                    liquidations.extend(protocol.liquidation(log));
                }
                Ok(())
            })
            .await?;
        }
        touched.append(&mut extra_users);
        touched.sort();
        touched.dedup();
        let mut cursor = self.cursor.clone().unwrap_or_default();
        cursor.advance(to.number, to.hash);
        self.touched_in.insert(to.number, touched.clone());
        while self.touched_in.len() > crate::store::RECENT_BLOCKS {
            self.touched_in.pop_first();
        }
        let report = self.apply(to, touched, false, &cursor, market_read).await?;
        self.cursor = Some(cursor);
        Ok(SyncReport {
            blocks: to.number + 1 - from,
            market_liquidations: liquidations,
            tapped,
            ..report
        })
    }

    /// Walks back to the last block we processed that is still canonical, then re-reads everyone
    /// touched after it at the new head.
    async fn handle_reorg(&mut self, head: Head) -> Result<SyncReport, WatcherError> {
        let cursor = self.cursor.clone().unwrap_or_default();
        let mut ancestor = None;
        for &(number, hash) in cursor.recent.iter().rev() {
            if number > head.block.number {
                continue;
            }
            let canonical = if number == head.block.number {
                head.block.hash
            } else {
                self.head_at(BlockNumberOrTag::Number(number))
                    .await?
                    .block
                    .hash
            };
            if canonical == hash {
                ancestor = Some(number);
                break;
            }
        }
        let Some(ancestor) = ancestor else {
            return Err(WatcherError::DeepReorg(crate::store::RECENT_BLOCKS));
        };
        let depth = cursor.block - ancestor;
        // Users touched in orphaned blocks; if we do not know them (blocks processed before a restart),
        // re-read everyone.
        let orphaned: Vec<u64> = self
            .touched_in
            .range(ancestor + 1..)
            .map(|(n, _)| *n)
            .collect();
        let knows_all = (ancestor + 1..=cursor.block).all(|n| {
            self.touched_in.contains_key(&n) || !cursor.recent.iter().any(|(m, _)| *m == n)
        });
        let mut users: Vec<Address> = orphaned
            .iter()
            .flat_map(|n| self.touched_in.remove(n).unwrap_or_default())
            .collect();
        if !knows_all {
            users = self.positions.users().to_vec();
        }
        tracing::warn!(
            ancestor,
            depth,
            new_head = head.block.number,
            reread = users.len(),
            "reorg: rolling back to the common ancestor"
        );
        let mut rewound = cursor;
        rewound.rewind_to(ancestor);
        self.cursor = Some(rewound);
        let mut report = if head.block.number > ancestor {
            self.advance(ancestor + 1, head.block, users).await?
        } else {
            let mut c = self.cursor.clone().unwrap_or_default();
            c.advance(head.block.number, head.block.hash);
            let r = self.apply(head.block, users, false, &c, false).await?;
            self.cursor = Some(c);
            r
        };
        report.reorg_depth = Some(depth);
        Ok(report)
    }

    /// At `block`: refresh the market (unless `market_read`: read with the block's logs), re-read
    /// `touched` users, re-price who needs it, verify positions below 1 on-chain, and commit with
    /// `cursor`.
    async fn apply(
        &mut self,
        block: BlockRef,
        touched: Vec<Address>,
        reprice_all: bool,
        cursor: &Cursor,
        market_read: bool,
    ) -> Result<SyncReport, WatcherError> {
        let started = Instant::now();
        if !market_read {
            let change = self.protocol.refresh_market(&self.rpc, block).await?;
            self.unapplied.merge(change);
        }
        self.market_loaded = true;

        let mut updated = Vec::new();
        let mut removed = Vec::new();
        let mut users_read = started.elapsed();
        if !touched.is_empty() {
            let loaded = self.protocol.load_users(&self.rpc, &touched, block).await?;
            users_read = started.elapsed();
            for (user, position) in touched.iter().zip(loaded) {
                match position {
                    Some(p) => {
                        self.insert(*user, p.clone());
                        updated.push((*user, p));
                    }
                    None => {
                        if self.positions.contains(user) {
                            removed.push(*user);
                        }
                        self.remove(*user);
                    }
                }
            }
        }

        // Nothing fails from here to the pass that applies the market's changes.
        let change = std::mem::take(&mut self.unapplied);
        let full = reprice_all
            || change.all
            || block.number >= self.last_full_reprice + self.opts.full_reprice_every;
        if full {
            self.last_full_reprice = block.number;
        }
        // One pass over every position, no index to maintain: a position is re-priced when it was
        // touched, holds a reserve whose price or parameters changed or whose borrow rate rose, or
        // has reached the time interest alone could bring it to 1 (`Health::recheck_at`: every block
        // below 1, rarely above). No band of positions near 1 re-priced every block. When a price
        // moved, most of the table is re-priced: the pass is split across the cores (the node is
        // idle while the keeper prices, so they are free), and its CPU time is the sum of the parts.
        let touched_set: HashSet<Address> = touched.iter().copied().collect();
        let protocol = &self.protocol;
        let now = block.timestamp;
        let due = |position: &StoredPosition, health: &crate::protocol::Health, user: &Address| {
            full || now >= health.recheck_at
                || (!change.reserves.is_empty() && protocol.moved_by(position, &change.reserves))
                || (!change.rates_rose.is_empty()
                    && protocol.moved_by(position, &change.rates_rose))
                || touched_set.contains(user)
        };
        let many = full || !change.reserves.is_empty();
        let parts = if many && self.positions.len() >= PARALLEL_REPRICE_FROM {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        let pass = |chunk: &mut dyn Iterator<
            Item = (Address, &StoredPosition, &mut crate::protocol::Health),
        >| {
            // CPU time, not wall: on two cores shared with the node a thread can be preempted.
            let started = cpu_time::ThreadTime::now();
            let (mut repriced, mut below_one) = (0usize, Vec::new());
            for (user, position, health) in chunk {
                if !due(position, health, &user) {
                    continue;
                }
                *health = protocol.health(position);
                repriced += 1;
                if health.health_factor < WAD {
                    below_one.push(user);
                }
            }
            (repriced, below_one, started.elapsed())
        };
        // A block that moved no price, parameter or rate: only the positions due by their horizon and
        // those an event touched can have changed, and the healths alone say which are due.
        let quiet = !full && change.reserves.is_empty() && change.rates_rose.is_empty();
        let passes: Vec<(usize, Vec<Address>, Duration)> = if quiet {
            let mut rows = self.positions.due_at(now);
            rows.extend(touched.iter().filter_map(|u| self.positions.row(u)));
            rows.sort_unstable();
            rows.dedup();
            vec![pass(&mut self.positions.rows_mut(&rows))]
        } else if parts == 1 {
            vec![pass(&mut self.positions.iter_mut())]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = self
                    .positions
                    .chunks_mut(parts)
                    .map(|mut chunk| scope.spawn(move || pass(&mut chunk)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a re-pricing thread panicked"))
                    .collect()
            })
        };
        let mut repriced = 0usize;
        let mut below_one = Vec::new();
        let mut reprice_time = Duration::ZERO;
        for (n, below, took) in passes {
            repriced += n;
            below_one.extend(below);
            reprice_time += took;
        }

        // Positions as stored carry the health at the block they were loaded.
        for (user, position) in &mut updated {
            if let Some((_, health)) = self.positions.get(user) {
                position.health_factor = health.health_factor;
                position.collateral_base = health.collateral_base;
                position.debt_base = health.debt_base;
                position.block = block.number;
            }
        }
        let repriced_at = started.elapsed();
        self.store.commit_block(&updated, &removed, cursor)?;
        // Where a block's sync goes (its logs and the market were read before, side by side).
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            block = block.number,
            users = touched.len(),
            users_read_ms = ms(users_read),
            repriced_ms = ms(repriced_at),
            committed_ms = ms(started.elapsed()),
            "positions applied"
        );

        below_one.sort();
        let onchain = if self.opts.verify_below_one && !below_one.is_empty() {
            self.protocol
                .onchain_health(&self.rpc, &below_one, block)
                .await?
        } else {
            vec![None; below_one.len()]
        };
        let liquidatable = below_one
            .iter()
            .zip(onchain)
            .map(|(user, chain_hf)| {
                let (_, health) = self
                    .positions
                    .get(user)
                    .expect("a position below one is tracked");
                Candidate {
                    user: *user,
                    health_factor: HealthFactor(health.health_factor),
                    onchain_health_factor: chain_hf.map(HealthFactor),
                    collateral_base: health.collateral_base,
                    debt_base: health.debt_base,
                }
            })
            .collect();
        Ok(SyncReport {
            block: Some(block),
            blocks: 1,
            loaded: touched.len(),
            repriced,
            reprice_time,
            liquidatable,
            reorg_depth: None,
            backfilled: false,
            market_liquidations: Vec::new(),
            head_received: None,
            tapped: None,
        })
    }
}
