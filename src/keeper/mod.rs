//! The keeper: watcher → planner → executor, once per block.
//!
//! [`follow`](crate::watcher::follow::follow) hands every new block to [`Keeper::on_block`], which
//!
//! 1. records what the block did to the market (positions, debt by health band, everyone's
//!    liquidations — and ours lost to someone faster),
//! 2. counts which of our transactions in flight the block mined (the account's nonce at the block),
//! 3. sizes every position the watcher found below 1 and not in flight (concurrently: sizing only
//!    reads) and builds the sized plans into transactions of several liquidations as they come (the
//!    first plan alone at once, then a transaction when one is full or nothing more is being sized),
//!    simulates each (a few at a time: as many as the node has cores for), checks its sales against
//!    the pools as our sales still in flight and the block's earlier sends leave them, and signs and
//!    journals it; rounds of sends wait for the disk and the node in a task of their own while
//!    planning goes on,
//! 4. settles our transactions in flight: receipts become outcomes, stuck ones are re-priced, and one
//!    whose borrower is no longer liquidatable is cancelled.
//!
//! RPC trouble in steps 2–4 is logged and tried again at the next block; only the store or the journal
//! failing stops the keeper, since it could no longer promise to send each liquidation once.
//! [`startup`] builds a keeper from a config after checking it; [`dry_run`] points the planner and
//! executor at an anvil fork of the chain instead.

mod ahead;
pub mod dry_run;
pub mod startup;
pub mod summary;

use crate::{
    executor::{
        journal::{JournalEntry, JournalError, TxState},
        submit::{ExecError, Executor},
    },
    planner::{PlanError, Planner, Refusal, base_value},
    protocol::{MarketLiquidation, aave_v3::AaveV3},
    telemetry::metrics::{self as m, Liveness, Stage},
    units::{HealthFactor, WAD},
    watcher::{SyncReport, Watcher, WatcherError, follow::OnBlock},
};
use alloy::primitives::{Address, U256};
use dry_run::DryRun;
use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};
pub use summary::{Outcome, OutcomeKind};

/// What stops the keeper.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    /// The watcher cannot go on (the store, a reorg deeper than it keeps).
    #[error(transparent)]
    Watcher(#[from] WatcherError),
    /// The journal failed: sending on could send a liquidation twice.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The endpoint now serves another chain (a fallback URL misconfigured, a node repointed):
    /// liquidations signed for one chain must not be sent on another.
    #[error(
        "the RPC now serves chain {found}, not chain {expected}: check chain.rpc_urls (every URL must serve chain.chain_id)"
    )]
    ChainChanged {
        /// What the keeper signs for.
        expected: u64,
        /// What the endpoint said.
        found: u64,
    },
}

/// Blocks between checks that the endpoint still serves the chain the keeper signs for.
const CHAIN_ID_CHECK_BLOCKS: u64 = 64;

/// A borrower we have seen liquidatable.
#[derive(Debug, Clone)]
struct Pursuit {
    /// The first block we saw it below 1.
    crossed_block: u64,
    /// The kind of refusal last logged, so a position refused every block is logged once.
    refusal: Option<String>,
    /// When the block we last sent for it arrived, to time inclusion.
    sent_from: Option<Instant>,
}

/// A round of sends, signed and journaled on the keeper's loop and sent from a task of its own.
struct SendRound {
    /// Each liquidation signed, with its nonce and transaction hash.
    signed: Vec<(crate::planner::Plan, u64, alloy::primitives::TxHash)>,
    /// Each one's send (one result per liquidation), or the journal failing before any was sent.
    results: Result<Vec<crate::executor::submit::Sent>, JournalError>,
    /// When its transactions were ready to sign.
    ready: Instant,
    /// When they were signed and journaled (not yet on disk).
    signed_at: Instant,
}

/// The keeper of one market.
pub struct Keeper {
    planner: Arc<Planner>,
    executor: Executor,
    liquidator: Address,
    native_asset: Address,
    liveness: Liveness,
    dry_run: Option<DryRun>,
    pursuits: HashMap<Address, Pursuit>,
    outcomes: Vec<Outcome>,
    /// The journal left by an earlier run has been reconciled.
    recovered: bool,
    /// Each liquidation sent: from its block's arrival to the send returning.
    send_latencies: Vec<Duration>,
    /// Venues being read ahead for positions close to liquidation.
    warming: Option<tokio::task::JoinHandle<()>>,
    /// Contracts whose pending transactions move prices ([`ahead`]).
    pending_watch: Vec<Address>,
    /// Liquidations planned on the pending block, waiting for it.
    ahead: Option<ahead::Ahead>,
    /// Liquidations sent from plans made on the pending block, in this run.
    sent_ahead: usize,
    /// The cascade map's gauges: recomputed at most every this many blocks (0: never).
    map_every_blocks: u64,
    /// The block the gauges were last computed at, and the task computing them.
    mapping: Option<(u64, tokio::task::JoinHandle<()>)>,
}

/// Positions below this health factor (×1000) have their venues read ahead: a move of a few percent
/// makes them liquidatable, and the block it happens in should not wait for pool ticks.
const WARM_BELOW_MILLI: u64 = 1_050;

impl Keeper {
    /// A keeper sending through `executor` to `liquidator`.
    pub fn new(
        planner: Planner,
        executor: Executor,
        liquidator: Address,
        native_asset: Address,
        liveness: Liveness,
        dry_run: Option<DryRun>,
    ) -> Self {
        Self {
            planner: Arc::new(planner),
            executor,
            liquidator,
            native_asset,
            liveness,
            dry_run,
            pursuits: HashMap::new(),
            outcomes: Vec::new(),
            recovered: false,
            send_latencies: Vec::new(),
            warming: None,
            pending_watch: Vec::new(),
            ahead: None,
            sent_ahead: 0,
            map_every_blocks: 0,
            mapping: None,
        }
    }

    /// Publishes the cascade map's headline (`cascade_liquidatable_debt_usd`) at most every `blocks`
    /// blocks, computed off the hot path on blocks without liquidations to make.
    pub fn map_every(&mut self, blocks: u64) {
        self.map_every_blocks = blocks;
    }

    /// Watches the mempool for transactions to `contracts` (the market's price setters): each makes
    /// the keeper plan the pending block (see the `ahead` module).
    pub fn watch_pending_to(&mut self, contracts: Vec<Address>) {
        self.pending_watch = contracts;
    }

    /// Liquidations sent in this run from plans made while their price update was pending.
    pub fn sent_ahead(&self) -> usize {
        self.sent_ahead
    }

    /// Every liquidation that reached an outcome in this run, oldest first.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// Detection to submission of each liquidation sent in this run: from the arrival of the block
    /// it was planned at to `eth_sendRawTransaction` (or the bundle) returning.
    pub fn send_latencies(&self) -> &[Duration] {
        &self.send_latencies
    }

    /// The executor (its journal).
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Liquidations journaled before a restart and not yet final: rebroadcasts them (never re-signs a
    /// new liquidation) and records those that became final. Runs at the first block.
    async fn recover(&mut self, watcher: &Watcher<AaveV3>) -> Result<(), KeeperError> {
        let open = self.executor.journal().open()?;
        if open.is_empty() {
            return Ok(());
        }
        tracing::info!(
            open = open.len(),
            "reconciling liquidations journaled before the restart"
        );
        match self.executor.reconcile().await {
            Ok(finished) => self.record_final(watcher, finished),
            Err(ExecError::Journal(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "reconciling the journal failed; open entries are polled (and re-sent when stuck) each block")
            }
        }
        Ok(())
    }

    /// Everything the keeper does at one block; see the module docs.
    pub async fn handle_block(
        &mut self,
        watcher: &Watcher<AaveV3>,
        report: SyncReport,
    ) -> Result<(), KeeperError> {
        let Some(block) = report.block else {
            return Ok(());
        };
        let arrived = report.head_received.unwrap_or_else(Instant::now);
        if !self.recovered {
            self.recover(watcher).await?;
            self.recovered = true;
        }
        self.liveness.block(block.number);
        if block.number.is_multiple_of(CHAIN_ID_CHECK_BLOCKS) && self.dry_run.is_none() {
            self.check_chain_id(watcher).await?;
        }
        if report.reorg_depth.is_some() {
            self.planner.reorged();
        } else if let Some(tapped) = &report.tapped {
            self.planner.follow_block(block.number, tapped);
        }
        m::stage(Stage::Repriced, arrived);
        self.record_market_liquidations(watcher, &report.market_liquidations, block.number);

        let any_open = !self.executor.journal().open_keys()?.is_empty();
        if report.liquidatable.is_empty() && !any_open {
            self.pursuits.clear();
            record_positions(watcher);
            self.warm_venues(watcher, block);
            self.map_headline(watcher, block);
            return Ok(());
        }
        if let Some(fork) = &self.dry_run {
            // The fork follows the upstream head: plans and sends see exactly the state the keeper
            // would act on upstream.
            if let Err(e) = fork.follow(block.number).await {
                tracing::warn!(error = %e, block = block.number, "dry run: resetting the fork failed");
                record_positions(watcher);
                return Ok(());
            }
            self.executor.resync_nonce();
        }
        // Settled in two steps around planning. Before it, only what planning needs: which of ours
        // the block mined (one request), so their borrowers can be planned again and their sales
        // leave the pools' in-flight count. After the sends, everything else: receipts and outcomes,
        // fee bumps, cancellations (after a block that mined many of ours, their receipts take longer
        // to read than the rest of the block path before planning: docs/performance.md).
        if any_open {
            let synced_ms = arrived.elapsed().as_secs_f64() * 1e3;
            match self.executor.note_mined(block.number).await {
                Ok(count) => tracing::debug!(
                    synced_ms,
                    noted_ms = arrived.elapsed().as_secs_f64() * 1e3,
                    mined_count = count,
                    "our mined transactions counted"
                ),
                // Then the block's mined ones count as in flight until the receipts are read:
                // their borrowers wait a block, their sales are counted twice (plans only smaller).
                Err(e) => {
                    tracing::debug!(error = %e, "reading the account's mined count failed")
                }
            }
        }
        let liquidatable: Vec<Address> = report.liquidatable.iter().map(|c| c.user).collect();
        let market = Arc::new(watcher.protocol().clone());
        let planner = Arc::clone(&self.planner);
        self.pursue(watcher, &liquidatable, market, planner, arrived, None)
            .await?;
        if any_open {
            let planned_ms = arrived.elapsed().as_secs_f64() * 1e3;
            self.settle(watcher).await?;
            tracing::debug!(
                planned_ms,
                settled_ms = arrived.elapsed().as_secs_f64() * 1e3,
                "liquidations in flight settled"
            );
        }
        self.forget_recovered(&report)?;
        // Gauges over every position: after the block's liquidations are sent, not before.
        record_positions(watcher);
        Ok(())
    }

    /// Stops the keeper when the endpoint serves another chain than the one it signs for (a read that
    /// fails is left for the next check).
    async fn check_chain_id(&self, watcher: &Watcher<AaveV3>) -> Result<(), KeeperError> {
        use alloy::providers::Provider;
        let expected = self.executor.chain_id();
        match watcher.rpc().get_chain_id().await {
            Ok(found) if found != expected => Err(KeeperError::ChainChanged { expected, found }),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "reading the chain id failed");
                Ok(())
            }
        }
    }

    /// Reads ahead, in the background, the venues of positions close to liquidation that the planner
    /// does not hold yet; one such read at a time.
    fn warm_venues(&mut self, watcher: &Watcher<AaveV3>, block: crate::protocol::BlockRef) {
        if self.warming.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let near = HealthFactor::from_milli(WARM_BELOW_MILLI).0;
        let pairs = self.planner.cold_pairs(
            watcher.protocol(),
            watcher
                .positions()
                .filter(|(_, _, h)| h.health_factor < near)
                .map(|(_, p, _)| p),
            block.number,
        );
        if pairs.is_empty() {
            return;
        }
        let planner = Arc::clone(&self.planner);
        self.warming = Some(tokio::spawn(
            async move { planner.warm(pairs, block).await },
        ));
    }

    /// Computes the cascade map's headline in a task of its own when it is due: the falls of
    /// [`crate::map::HEADLINE_DROPS_BPS`] of the market's largest volatile collateral, on the venues
    /// the planner follows, sized on its CPU-bound threads, never on the block loop.
    fn map_headline(&mut self, watcher: &Watcher<AaveV3>, block: crate::protocol::BlockRef) {
        if self.map_every_blocks == 0 {
            return;
        }
        if let Some((at, task)) = &self.mapping
            && (!task.is_finished() || block.number < at + self.map_every_blocks)
        {
            return;
        }
        let market = watcher.protocol().clone();
        let positions: Vec<_> = watcher
            .positions()
            .map(|(user, position, _)| (user, position.clone()))
            .collect();
        let planner = Arc::clone(&self.planner);
        let task = tokio::spawn(async move {
            let Some(asset) = crate::map::largest_volatile_collateral(&market, &positions) else {
                return;
            };
            let costs = match planner.sizing_costs(&market).await {
                Ok(costs) => costs,
                Err(e) => {
                    tracing::debug!(error = %e, "the map's gas price was not read; the gauges wait for the next try");
                    return;
                }
            };
            let snapshot = match crate::map::snapshot(
                &market,
                positions,
                planner.book(),
                block,
                costs,
            )
            .await
            {
                Ok(snapshot) => snapshot,
                Err(e) => {
                    tracing::debug!(error = %e, "the map's venues were not read; the gauges wait for the next try");
                    return;
                }
            };
            let started = Instant::now();
            let Ok(steps) =
                tokio::task::spawn_blocking(move || crate::map::headline(&snapshot, asset)).await
            else {
                tracing::error!("computing the cascade map's gauges panicked");
                return;
            };
            for (drop, step) in crate::map::HEADLINE_DROPS_BPS.iter().zip(&steps) {
                let drop = (drop / 100).to_string();
                for (kind, usd) in [
                    ("round0", step.round0_debt_usd),
                    ("cascade", step.cascade_debt_usd),
                ] {
                    metrics::gauge!(m::LIQUIDATABLE_DEBT, "drop" => drop.clone(), "kind" => kind)
                        .set(usd);
                }
            }
            tracing::debug!(
                block = block.number,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "cascade map gauges"
            );
        });
        self.mapping = Some((block.number, task));
    }

    /// A position back above 1 with nothing in flight is no longer pursued: if it crosses again, that
    /// is a new crossing, timed from its own block.
    fn forget_recovered(&mut self, report: &SyncReport) -> Result<(), KeeperError> {
        let below: std::collections::HashSet<Address> =
            report.liquidatable.iter().map(|c| c.user).collect();
        let open = self.executor.journal().open_borrowers()?;
        self.pursuits
            .retain(|user, _| below.contains(user) || open.contains(user));
        Ok(())
    }

    /// Receipts, fee bumps, and cancellations of liquidations whose position is gone.
    async fn settle(&mut self, watcher: &Watcher<AaveV3>) -> Result<(), KeeperError> {
        match self.executor.poll().await {
            Ok(finished) => self.record_final(watcher, finished),
            Err(ExecError::Journal(e)) => return Err(e.into()),
            Err(e) => tracing::warn!(error = %e, "checking liquidations in flight failed"),
        }
        for (_, borrower) in self.executor.journal().open_keys()? {
            let gone = watcher
                .current_health(borrower)
                .is_none_or(|h| h.health_factor >= WAD);
            if !gone {
                continue;
            }
            match self
                .executor
                .cancel(borrower, "position no longer liquidatable")
                .await
            {
                Ok(_) => {}
                Err(ExecError::Journal(e)) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(borrower = %borrower, error = %e, "cancelling failed")
                }
            }
        }
        Ok(())
    }

    /// Plans every liquidatable position of `market` (at its block) not already in flight with
    /// `planner`, and sends the profitable plans; or, with `hold`, keeps them there unsigned (plans
    /// made on the pending block, sent when it arrives). Returns the account's pending transaction
    /// count as read for the plans, if it was.
    async fn pursue(
        &mut self,
        watcher: &Watcher<AaveV3>,
        liquidatable: &[Address],
        market: Arc<AaveV3>,
        planner: Arc<Planner>,
        arrived: Instant,
        mut hold: Option<&mut Vec<crate::planner::Batch>>,
    ) -> Result<Option<u64>, KeeperError> {
        let block = market.block.map_or(0, |b| b.number);
        // One read of the journal for the block, not one per candidate.
        let in_flight = self.executor.in_flight()?;
        let mut targets = Vec::new();
        for &user in liquidatable {
            // No separate on-chain health read first (the watcher's check is off for the keeper): the
            // simulation of the liquidation is the chain's word, and the Pool reverts a healthy one.
            self.pursuits.entry(user).or_insert(Pursuit {
                crossed_block: block,
                refusal: None,
                sent_from: None,
            });
            if in_flight.contains(&user) {
                continue;
            }
            if let Some(position) = watcher.position(user) {
                targets.push((user, position));
            }
        }
        // Plans only read: make them all at once, largest debt first, and send each as soon as it is
        // ready (sends go one at a time: one nonce sequence).
        targets.sort_by_key(|(_, position)| std::cmp::Reverse(position.debt_base));
        tracing::debug!(
            targets = targets.len(),
            since_block_ms = arrived.elapsed().as_secs_f64() * 1e3,
            "planning"
        );
        // Before sizing, side by side: every target's pools in one batched read (each plan would
        // otherwise read its pairs' own; the pools the book follows from their events, all of them
        // once read ahead, are not read at all), and the account's pending transaction count (the
        // node is idle now; by the first send it is busy simulating, and without it each round reads
        // it). Then ours sent in earlier blocks and still pending, mined ahead of anything planned
        // now, are counted into those pools (the pending block has them already).
        let mut chain_nonce = None;
        if !targets.is_empty()
            && let Some(at) = market.block
        {
            let (_, nonce) = tokio::join!(
                planner.read_venues(&market, targets.iter().map(|(_, p)| *p), at),
                self.executor.chain_nonce()
            );
            chain_nonce = nonce.ok();
            tracing::debug!(
                since_block_ms = arrived.elapsed().as_secs_f64() * 1e3,
                "venues and nonce read"
            );
            if !at.pending {
                planner
                    .carry_sales(&self.executor.sales_in_flight()?, at)
                    .await;
            }
        }
        // Each plan is sized in a task of its own, `SIZED_AT_ONCE` at a time, taking their turns from a
        // fair semaphore (about the order spawned: largest debt first); a plan that waits for a pool read
        // the batch read above missed holds its turn meanwhile (rare: that read has every target's pairs).
        // Kept to size a position again when this block's earlier sales move its pool.
        let positions: HashMap<Address, crate::store::StoredPosition> = targets
            .iter()
            .map(|(user, position)| (*user, (*position).clone()))
            .collect();
        let turns = Arc::new(tokio::sync::Semaphore::new(SIZED_AT_ONCE));
        let mut sizing = tokio::task::JoinSet::new();
        for (user, _) in &targets {
            self.size_in_background(
                &mut sizing,
                &turns,
                &planner,
                &market,
                *user,
                &positions[user],
            );
        }
        // Sized plans become transactions of up to `max_batch`, each simulated in a task of its own,
        // at most `simulations_in_flight` at a time: the node runs as many side by side as it has
        // cores, and more would only share them, so that all came back late instead of the first ones
        // early. Each simulated transaction is journaled and sent in the next round of sends; a round
        // runs in a task of its own (the wait for the disk, then the node), while planning goes on,
        // and the transactions ready meanwhile go in the round after it, with one wait for the disk.
        // (A dry run's fork mines each transaction as it is sent: one liquidation at a time there.)
        let (max_batch, simulation_slots) = if self.dry_run.is_some() {
            (1, 1)
        } else {
            (
                self.executor.max_batch(),
                self.planner.simulations_in_flight(),
            )
        };
        let mut sized: HashMap<Address, crate::planner::Plan> = HashMap::new();
        let mut waiting: Vec<crate::planner::Plan> = Vec::new();
        // Transactions built again after the pool check left a liquidation out: simulated first.
        let mut rebuilt: std::collections::VecDeque<Vec<crate::planner::Plan>> = Default::default();
        // Simulated and claimed, for the next round of sends.
        let mut ready: Vec<crate::planner::Batch> = Vec::new();
        // Times each liquidation was sized again in this block after its pool moved.
        let mut resized_times: HashMap<Address, usize> = HashMap::new();
        let mut finalising = tokio::task::JoinSet::new();
        let mut sending: Option<tokio::task::JoinHandle<SendRound>> = None;
        // Held plans wait for their block anyway: full transactions from the first.
        let mut first = hold.is_none();
        loop {
            // The first plan sized goes at once, alone (the node is idle); after it a transaction
            // starts when it is full or nothing more is being sized. Smaller ones would go sooner,
            // but each costs the cold storage of a first liquidation again, in gas and in the node's
            // time.
            while finalising.len() < simulation_slots
                && (self.dry_run.is_none() || (sending.is_none() && ready.is_empty()))
            {
                let group = if let Some(group) = rebuilt.pop_front() {
                    group
                } else if !waiting.is_empty()
                    && (waiting.len() >= max_batch || sizing.is_empty() || first)
                {
                    first = false;
                    waiting.drain(..waiting.len().min(max_batch)).collect()
                } else {
                    break;
                };
                self.finalise_in_background(&mut finalising, group, &planner, &market);
            }
            if let Some(held) = hold.as_deref_mut() {
                held.append(&mut ready);
            } else if sending.is_none() && !ready.is_empty() {
                let batches = std::mem::take(&mut ready);
                sending = self.start_sending(batches, arrived, chain_nonce).await?;
            }
            tokio::select! {
                Some(joined) = sizing.join_next(), if !sizing.is_empty() => match joined {
                    Ok((user, Ok(plan))) => {
                        sized.insert(user, plan.clone());
                        waiting.push(plan);
                    }
                    Ok((user, Err(e))) => self.not_planned(user, e),
                    Err(_) => tracing::error!("a planning task panicked"),
                },
                Some(joined) = finalising.join_next(), if !finalising.is_empty() => {
                    let Ok(results) = joined else {
                        tracing::error!("a simulation task panicked");
                        continue;
                    };
                    let (claimed, rebuild, moved) = self.claim(&planner, results, &sized);
                    ready.extend(claimed);
                    rebuilt.extend(rebuild);
                    // A liquidation left out is sized again on the pools as the block's sends so far
                    // leave them (another venue, or a smaller repay), a few times at most; then it
                    // waits for the next block.
                    for user in moved {
                        let times = resized_times.entry(user).or_default();
                        *times += 1;
                        if *times > CLAIM_ROUNDS {
                            self.refused(user, &Refusal::PoolMoved(sized[&user].swap_pool));
                        } else if let Some(position) = positions.get(&user) {
                            self.size_in_background(&mut sizing, &turns, &planner, &market, user, position);
                        }
                    }
                }
                round = async { sending.as_mut().expect("a round is being sent").await }, if sending.is_some() => {
                    sending = None;
                    match round {
                        Ok(round) => self.finish_sending(round, arrived).await?,
                        Err(_) => tracing::error!("a sending task panicked; what it journaled is re-sent by the next poll"),
                    }
                }
                else => break,
            }
        }
        Ok(chain_nonce)
    }

    /// Sizes `user`'s liquidation in a task of its own, when `turns` allows.
    fn size_in_background(
        &self,
        tasks: &mut tokio::task::JoinSet<(Address, Result<crate::planner::Plan, PlanError>)>,
        turns: &Arc<tokio::sync::Semaphore>,
        planner: &Arc<Planner>,
        market: &Arc<AaveV3>,
        user: Address,
        position: &crate::store::StoredPosition,
    ) {
        let (planner, market, turns) = (Arc::clone(planner), Arc::clone(market), Arc::clone(turns));
        let position = position.clone();
        tasks.spawn(async move {
            let _turn = turns.acquire_owned().await;
            (user, planner.size(&market, user, &position).await)
        });
    }

    /// Simulated transactions whose sales still pay on the pools as this block's earlier sends leave
    /// them, claimed for those sends. The simulation ran on the chain's state, which has none of this
    /// block's earlier sends, and each liquidation's minimum profit is known only after it: the sales
    /// are checked now. A transaction with a sale that no longer pays is built again without it, from
    /// the sized plans. Returns the transactions to send, the groups to build again, and the
    /// liquidations left out because their pool moved; other refusals are recorded.
    fn claim(
        &mut self,
        planner: &Planner,
        results: Vec<crate::planner::BatchResult>,
        sized: &HashMap<Address, crate::planner::Plan>,
    ) -> (
        Vec<crate::planner::Batch>,
        Vec<Vec<crate::planner::Plan>>,
        Vec<Address>,
    ) {
        let (mut ready, mut rebuild, mut moved) = (Vec::new(), Vec::new(), Vec::new());
        for result in results {
            match result {
                Ok(batch) => {
                    let fits = planner.claim_sales(&batch.plans);
                    if fits.iter().all(|f| *f) {
                        ready.push(batch);
                        continue;
                    }
                    let mut survivors = Vec::new();
                    for (plan, fits) in batch.plans.iter().zip(fits) {
                        if fits {
                            survivors.push(sized[&plan.borrower].clone());
                        } else {
                            moved.push(plan.borrower);
                        }
                    }
                    if !survivors.is_empty() {
                        rebuild.push(survivors);
                    }
                }
                Err((user, PlanError::Refused(Refusal::PoolMoved(_)))) => moved.push(user),
                Err((user, e)) => self.not_planned(user, e),
            }
        }
        (ready, rebuild, moved)
    }

    /// A plan that was refused (logged once per kind) or failed on the chain (tried next block).
    fn not_planned(&mut self, user: Address, error: PlanError) {
        match error {
            PlanError::Refused(refusal) => self.refused(user, &refusal),
            PlanError::Chain(e) => {
                tracing::warn!(borrower = %user, error = %e, "planning failed; retrying next block");
            }
        }
    }

    /// Simulates `group` as one transaction (or each of its plans alone when it does not simulate) in
    /// a task of its own.
    fn finalise_in_background(
        &self,
        tasks: &mut tokio::task::JoinSet<Vec<crate::planner::BatchResult>>,
        group: Vec<crate::planner::Plan>,
        planner: &Arc<Planner>,
        market: &Arc<AaveV3>,
    ) {
        let (planner, market) = (Arc::clone(planner), Arc::clone(market));
        tasks.spawn(async move { planner.finalise_all(group, &market).await });
    }

    /// Signs and journals simulated transactions (the nonces are given here, in order), and sends them
    /// from a task of its own: it waits for the journal to be on disk, then for the node. `None` when
    /// nothing was signed.
    async fn start_sending(
        &mut self,
        batches: Vec<crate::planner::Batch>,
        arrived: Instant,
        chain_nonce: Option<u64>,
    ) -> Result<Option<tokio::task::JoinHandle<SendRound>>, KeeperError> {
        for _ in batches.iter().flat_map(|b| &b.plans) {
            m::stage(Stage::Planned, arrived);
        }
        let ready = Instant::now();
        let prepared = match self
            .executor
            .sign_all(&batches, self.liquidator, chain_nonce)
            .await
        {
            Ok(prepared) => prepared,
            Err(ExecError::Journal(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(transactions = batches.len(), error = %e, "preparing the liquidations failed; retrying next block");
                return Ok(None);
            }
        };
        let mut entries = Vec::new();
        let mut signed = Vec::new();
        for (batch, result) in batches.into_iter().zip(prepared) {
            match result {
                Ok(batch_entries) => {
                    for (plan, entry) in batch.plans.into_iter().zip(batch_entries) {
                        m::stage(Stage::Signed, arrived);
                        metrics::counter!(m::LIQUIDATIONS, "outcome" => "attempted").increment(1);
                        signed.push((plan, entry.nonce, entry.attempts[0].hash));
                        entries.push(entry);
                    }
                }
                Err(ExecError::Journal(e)) => return Err(e.into()),
                Err(e) => {
                    let borrowers: Vec<Address> = batch.plans.iter().map(|p| p.borrower).collect();
                    tracing::warn!(?borrowers, error = %e, "signing the liquidations failed")
                }
            }
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let sender = self.executor.sender();
        let signed_at = Instant::now();
        Ok(Some(tokio::spawn(async move {
            let results = sender.flush_and_send(entries).await;
            SendRound {
                signed,
                results,
                ready,
                signed_at,
            }
        })))
    }

    /// Records a round of sends: each liquidation's time from the block's arrival, and what it sells
    /// into its pool until it is mined. Only the journal failing is an error.
    async fn finish_sending(
        &mut self,
        round: SendRound,
        arrived: Instant,
    ) -> Result<(), KeeperError> {
        let SendRound {
            signed,
            results,
            ready,
            signed_at,
        } = round;
        let results = results?;
        // When they were ready (sized, simulated and claimed) since the block arrived, then how long
        // signing and journaling took, and the wait for the disk and the node.
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::debug!(
            liquidations = results.len(),
            ready_ms = ms(ready - arrived),
            sign_ms = ms(signed_at - ready),
            flush_and_send_ms = ms(signed_at.elapsed()),
            "transactions sent"
        );
        for ((plan, nonce, hash), result) in signed.into_iter().zip(results) {
            let borrower = plan.borrower;
            match result {
                Ok((_, sent_at)) => {
                    let took = sent_at.duration_since(arrived);
                    m::stage_took(Stage::Sent, took);
                    self.send_latencies.push(took);
                }
                Err(ExecError::Journal(e)) => return Err(e.into()),
                // Journaled as prepared: the next block's poll sends exactly this transaction again
                // if it still runs then, and cancels it at its nonce otherwise.
                Err(e) => {
                    tracing::warn!(%borrower, error = %e, "sending failed; it is journaled and will be re-sent or cancelled")
                }
            }
            tracing::info!(
                %borrower,
                nonce,
                %hash,
                collateral = %plan.collateral,
                debt = %plan.debt,
                repay = %plan.amounts.debt_repaid,
                expected_profit_usd = plan.net_profit_base as f64 / 1e8,
                planned_block = plan.block,
                "liquidation sent"
            );
            if let Some(p) = self.pursuits.get_mut(&borrower) {
                p.sent_from = Some(arrived);
                p.refusal = None;
            }
        }
        if self.dry_run.is_some() {
            self.await_fork_receipt().await?;
        }
        Ok(())
    }

    /// On a dry-run fork every transaction is mined at once: read its outcome before the fork moves on.
    async fn await_fork_receipt(&mut self) -> Result<(), KeeperError> {
        for _ in 0..30 {
            match self.executor.poll().await {
                Ok(finished) if !finished.is_empty() => {
                    for entry in &finished {
                        if let TxState::Included { profit, .. } = &entry.state {
                            tracing::info!(
                                borrower = %entry.borrower,
                                liquidator_profit = %profit.unwrap_or_default(),
                                expected_profit_usd = entry.expected_profit_base as f64 / 1e8,
                                "dry run: liquidated on the fork"
                            );
                        }
                    }
                    self.outcomes.extend(finished.into_iter().map(|e| Outcome {
                        dry_run: true,
                        ..Outcome::from_entry(&e, None, None)
                    }));
                    return Ok(());
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(ExecError::Journal(e)) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "dry run: reading the fork's receipt failed");
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn refused(&mut self, user: Address, refusal: &Refusal) {
        let reason = refusal.to_string();
        let kind = match refusal {
            Refusal::Healthy(_) => "healthy",
            Refusal::NoVenue => "no_venue",
            Refusal::Unprofitable { .. } => "unprofitable",
            Refusal::Reverted(_) => "reverted_in_simulation",
            Refusal::PoolMoved(_) => "pool_moved",
            Refusal::Closed(_) => "closed",
        };
        metrics::counter!(m::REFUSALS, "reason" => kind).increment(1);
        // Logged once per kind of refusal: the figures in it move every block.
        if let Some(p) = self.pursuits.get_mut(&user) {
            if p.refusal.as_deref() == Some(kind) {
                return;
            }
            p.refusal = Some(kind.to_owned());
        }
        tracing::info!(borrower = %user, %reason, "not liquidating");
    }

    /// Turns final journal entries into outcomes and metrics.
    fn record_final(&mut self, watcher: &Watcher<AaveV3>, finished: Vec<JournalEntry>) {
        let market = watcher.protocol();
        let native_price = market.reserve_of(self.native_asset).map(|r| r.price);
        for entry in finished {
            let debt = market.reserve_of(entry.pair.1);
            let pursuit = self.pursuits.get(&entry.borrower);
            let mut outcome = Outcome::from_entry(
                &entry,
                pursuit.map(|p| p.crossed_block),
                debt.map(|r| (r.price, r.config.decimals)),
            );
            if let Some(native) = native_price {
                outcome.fee_paid_base = base_value(outcome.fee_paid_wei, native, 18)
                    .0
                    .saturating_to::<i128>();
            }
            let label = outcome.kind.label();
            metrics::counter!(m::LIQUIDATIONS, "outcome" => label).increment(1);
            if outcome.kind == OutcomeKind::Won {
                if let Some(since) = pursuit.and_then(|p| p.sent_from) {
                    m::stage(Stage::Included, since);
                }
                metrics::gauge!(m::REALISED_PROFIT)
                    .increment(outcome.net_profit_base() as f64 / 1e8);
            }
            tracing::info!(
                borrower = %entry.borrower,
                outcome = label,
                block = outcome.included_block,
                blocks_from_crossing = outcome.blocks_from_crossing(),
                profit_usd = outcome.net_profit_base() as f64 / 1e8,
                "liquidation final"
            );
            self.outcomes.push(outcome);
        }
    }

    /// Everyone's liquidations: the market's intensity, and those we had planned but lost.
    fn record_market_liquidations(
        &mut self,
        watcher: &Watcher<AaveV3>,
        liquidations: &[MarketLiquidation],
        block: u64,
    ) {
        let market = watcher.protocol();
        for l in liquidations {
            metrics::counter!(m::MARKET_LIQUIDATIONS).increment(1);
            if let Some(r) = market.reserve_of(l.debt) {
                let usd = base_value(l.debt_repaid, r.price, r.config.decimals);
                metrics::gauge!(m::MARKET_LIQUIDATED_DEBT).increment(usd.to_usd_f64());
            }
            if l.liquidator == self.liquidator {
                continue;
            }
            let Some(pursuit) = self.pursuits.get(&l.user) else {
                continue;
            };
            // They were in block `l.block`; we would have been at the earliest in the next one.
            let ours = self
                .outcomes
                .iter()
                .rev()
                .find(|o| o.borrower == l.user && o.kind == OutcomeKind::Won)
                .and_then(|o| o.included_block);
            let ahead = ours.map_or(block + 1, |b| b.max(l.block)) - l.block;
            metrics::counter!(m::LIQUIDATIONS, "outcome" => "lost").increment(1);
            metrics::histogram!(m::LOST_BY_BLOCKS).record(ahead as f64);
            tracing::warn!(
                borrower = %l.user,
                winner = %l.liquidator,
                blocks_ahead = ahead,
                crossed_block = pursuit.crossed_block,
                "lost a liquidation to another keeper"
            );
            self.outcomes
                .push(Outcome::lost(l, pursuit.crossed_block, ahead));
        }
    }
}

impl OnBlock<AaveV3> for Keeper {
    type Error = KeeperError;

    fn on_block(
        &mut self,
        watcher: &Watcher<AaveV3>,
        report: SyncReport,
    ) -> impl Future<Output = Result<(), KeeperError>> + Send {
        self.handle_block(watcher, report)
    }

    fn on_head(
        &mut self,
        head: &crate::watcher::Head,
        received: Instant,
    ) -> impl Future<Output = Result<(), KeeperError>> + Send {
        self.liveness.head(head.block.number);
        self.send_ahead(*head, received)
    }

    fn pending_watch(&self) -> Vec<Address> {
        self.pending_watch.clone()
    }

    fn on_pending(
        &mut self,
        watcher: &Watcher<AaveV3>,
        tx: alloy::primitives::TxHash,
    ) -> impl Future<Output = Result<(), KeeperError>> + Send {
        self.plan_ahead(watcher, tx)
    }
}

/// Times a liquidation left out of its transaction by the pool check is sized again in one block;
/// after that it waits for the next block.
const CLAIM_ROUNDS: usize = 3;

/// Positions sized at once. Sizing is 30–40 µs of CPU a position, on pools read before it starts; on
/// every core a cascade's positions are all sized before the first simulation comes back, so each is
/// sized on the block's pools and the pool check after its simulation counts the block's earlier
/// sends. (One at a time left the node a core, and its first transaction went out sooner; but in one
/// of three runs a transaction was mined and reverted, with its plans sized late in the cascade: see
/// docs/performance.md.)
const SIZED_AT_ONCE: usize = 8;

/// Health-factor bands for the at-risk debt gauge, upper bounds in thousandths.
const BANDS: [(u64, &str); 5] = [
    (1_000, "below_1"),
    (1_050, "1_to_1.05"),
    (1_100, "1.05_to_1.1"),
    (1_250, "1.1_to_1.25"),
    (u64::MAX, "above_1.25"),
];

/// Positions tracked and debt by health band.
fn record_positions(watcher: &Watcher<AaveV3>) {
    metrics::gauge!(m::POSITIONS).set(watcher.len() as f64);
    let mut debt = [U256::ZERO; BANDS.len()];
    for (_, _, health) in watcher.positions() {
        let band = BANDS
            .iter()
            .position(|(upper, _)| {
                *upper == u64::MAX || health.health_factor < HealthFactor::from_milli(*upper).0
            })
            .unwrap_or(BANDS.len() - 1);
        debt[band] += health.debt_base;
    }
    for ((_, label), total) in BANDS.iter().zip(debt) {
        metrics::gauge!(m::AT_RISK_DEBT, "band" => *label)
            .set(crate::units::BaseAmount(total).to_usd_f64());
    }
}
