//! Sending liquidations: nonces, signing, the write-ahead journal, fee bumps of stuck transactions
//! (capped so fees never exceed the plan's profit), receipts, and reconciliation after a restart.
//!
//! A transaction can carry several liquidations (a [`Batch`]): each has its own journal entry, and
//! the entries of one transaction share its nonce and attempts. Everything done to a transaction —
//! sending, bumping, cancelling, reading its receipt — is done once per nonce and written to all of
//! its entries.

use super::journal::{Attempt, Journal, JournalEntry, JournalError, TxState};
use crate::{
    chain::{ChainError, Rpc, bindings::Liquidator, trouble::Trouble},
    planner::{Batch, Plan},
};
use alloy::{
    consensus::{SignableTransaction, TxEip1559, TxEnvelope},
    eips::Encodable2718,
    network::TxSignerSync,
    primitives::{Address, Bytes, TxKind, U256},
    providers::Provider,
    rpc::types::TransactionRequest,
    signers::local::PrivateKeySigner,
    sol_types::SolEvent,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Gas of a cancellation (a plain transfer).
const CANCEL_GAS: u64 = 21_000;

/// Errors of the executor.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Talking to the chain failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A liquidation of this borrower is already in flight.
    #[error("a liquidation of {0} is already in flight")]
    InFlight(Address),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
    /// The relay refused or could not be reached.
    #[error(transparent)]
    Bundle(#[from] super::bundle::BundleError),
    /// Sending the transaction failed (said of each liquidation it carries).
    #[error("sending transaction {hash}: {reason}")]
    Send {
        /// The transaction.
        hash: alloy::primitives::B256,
        /// What the node or relay said.
        reason: String,
    },
    /// The journal lost a transaction's signed bytes (a crash while it was being finished).
    #[error(
        "the journal has no signed bytes for transaction {0}; it was being recorded as final, and the next poll settles it from its receipt"
    )]
    Unsigned(alloy::primitives::B256),
}

/// Where transactions go.
#[derive(Clone, Default)]
pub enum Route {
    /// `eth_sendRawTransaction` to the RPC: the public mempool.
    #[default]
    Public,
    /// `eth_sendBundle` to a relay or builder, for the next block, re-sent each block until mined.
    Relay {
        /// The relay's URL.
        url: String,
        /// The key that signs `X-Flashbots-Signature` (a reputation key, not the sending key).
        auth: PrivateKeySigner,
    },
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Public => f.write_str("Public"),
            Self::Relay { url, auth } => f
                .debug_struct("Relay")
                .field("url", &crate::chain::redact_url(url))
                .field("auth", &auth.address())
                .finish(),
        }
    }
}

/// Tuning.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Replace a transaction not mined after this long.
    pub bump_after: Duration,
    /// Each replacement raises both fees by this much (bps); nodes require at least 10%.
    pub bump_bps: u64,
    /// Public mempool or a relay.
    pub route: Route,
    /// The most liquidations one transaction carries (1: each its own).
    pub max_batch: usize,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            bump_after: Duration::from_secs(24),
            bump_bps: 1_250,
            route: Route::Public,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

pub use crate::config::DEFAULT_MAX_BATCH;

/// Receipt reads in flight at once while polling.
const CONCURRENT_RECEIPT_READS: usize = 16;

/// One entry's send: the entry as recorded sent, and when its transaction's send returned.
pub type Sent = Result<(JournalEntry, std::time::Instant), ExecError>;

/// Sends liquidations from one account.
pub struct Executor {
    rpc: Rpc,
    signer: PrivateKeySigner,
    chain_id: u64,
    journal: Journal,
    next_nonce: Option<u64>,
    /// The account's transaction count at the block last planned on ([`Self::note_mined`]): open
    /// entries below it were mined there (or their nonce went to another transaction), and only their
    /// outcomes are left to read.
    mined_count: u64,
    opts: ExecutorOptions,
    sender: Sender,
}

/// What puts signed transactions on the wire: the node (or a relay), and the journal that records
/// that they went. Cheap to clone, so that a round of sends can wait for the disk and the node in a
/// task of its own while the keeper goes on planning; the nonces were given when the round was
/// signed ([`Executor::sign_all`]).
#[derive(Clone)]
pub struct Sender {
    rpc: Rpc,
    journal: Journal,
    route: Route,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Executor {
    /// An executor for `signer`'s account on the chain behind `rpc`.
    pub async fn new(
        rpc: Rpc,
        signer: PrivateKeySigner,
        journal: Journal,
        opts: ExecutorOptions,
    ) -> Result<Self, ChainError> {
        let chain_id = rpc
            .get_chain_id()
            .await
            .map_err(|e| ChainError::rpc("eth_chainId", e))?;
        let sender = Sender {
            rpc: rpc.clone(),
            journal: journal.clone(),
            route: opts.route.clone(),
        };
        Ok(Self {
            rpc,
            signer,
            chain_id,
            journal,
            next_nonce: None,
            mined_count: 0,
            opts,
            sender,
        })
    }

    /// What sends this executor's signed transactions, to send a round from a task of its own.
    pub fn sender(&self) -> Sender {
        self.sender.clone()
    }

    /// The most liquidations one transaction carries.
    pub fn max_batch(&self) -> usize {
        self.opts.max_batch.max(1)
    }

    /// The sending account.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The chain id transactions are signed for.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Forgets the nonce counted locally, so the next one comes from the chain and the journal (after
    /// a dry-run fork was reset to upstream, where none of our transactions exist).
    pub fn resync_nonce(&mut self) {
        self.next_nonce = None;
    }

    /// Reads the account's transaction count at `block`, the block about to be planned on: open
    /// liquidations below it are in that block's state already, so their borrowers can be planned
    /// again and their sales are no longer counted into pools ([`Self::in_flight`],
    /// [`Self::sales_in_flight`]), before their receipts are read ([`Self::poll`]). Planning waits
    /// for one request instead of every open transaction's receipt. Returns the count.
    pub async fn note_mined(&mut self, block: u64) -> Result<u64, ExecError> {
        let count = self
            .rpc
            .get_transaction_count(self.address())
            .number(block)
            .await
            .map_err(|e| ChainError::rpc("eth_getTransactionCount", e))?;
        // Set, not raised: a reorg can take a transaction of ours out of the chain again.
        self.mined_count = count;
        Ok(count)
    }

    /// The borrowers with a liquidation in flight: open in the journal and not mined at the block
    /// last noted ([`Self::note_mined`]). A borrower is planned again only when this no longer holds
    /// it.
    pub fn in_flight(&self) -> Result<std::collections::HashSet<Address>, JournalError> {
        Ok(self.in_flight_among(&self.journal.open_keys()?))
    }

    /// [`Self::in_flight`] from the journal's open keys (nonce, borrower), read already.
    fn in_flight_among(&self, open: &[(u64, Address)]) -> std::collections::HashSet<Address> {
        open.iter()
            .filter(|(nonce, _)| *nonce >= self.mined_count)
            .map(|(_, borrower)| *borrower)
            .collect()
    }

    /// What our liquidations in flight (not mined at the block last noted, not being cancelled) sell
    /// into their pools, in nonce order: the order they will be mined in, ahead of anything planned
    /// now. From the journal, so after a restart the previous run's are counted too.
    pub fn sales_in_flight(&self) -> Result<Vec<crate::planner::SaleInFlight>, JournalError> {
        Ok(self
            .journal
            .open()?
            .into_iter()
            .filter(|e| e.nonce >= self.mined_count)
            .filter(|e| !e.attempts.last().is_some_and(|a| a.cancel))
            .filter_map(|e| e.sale)
            .collect())
    }

    /// The account's transaction count including the node's pending pool: where a nonce of ours can
    /// start if another sender (an operator's wallet) used the account.
    pub async fn chain_nonce(&self) -> Result<u64, ExecError> {
        Ok(self
            .rpc
            .get_transaction_count(self.address())
            .pending()
            .await
            .map_err(|e| ChainError::rpc("eth_getTransactionCount", e))?)
    }

    /// The next nonce: past the chain's count (`chain`, read now when not given), what this process
    /// signed, and the journal's open nonces (`journaled`: one past the highest), whichever is
    /// highest. A transaction sent from this account by someone else moves the chain's count, so the
    /// next read picks it up.
    async fn nonce(&mut self, journaled: u64, chain: Option<u64>) -> Result<u64, ExecError> {
        let chain = match chain {
            Some(count) => count,
            None => self.chain_nonce().await?,
        };
        let nonce = chain.max(self.next_nonce.unwrap_or(0)).max(journaled);
        self.next_nonce = Some(nonce + 1);
        Ok(nonce)
    }

    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        nonce: u64,
        gas_limit: u64,
        to: Address,
        data: Bytes,
        max_fee: u128,
        priority: u128,
        cancel: bool,
    ) -> Result<Attempt, ExecError> {
        let mut tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            to: TxKind::Call(to),
            value: U256::ZERO,
            access_list: Default::default(),
            input: data,
        };
        let signature = self
            .signer
            .sign_transaction_sync(&mut tx)
            .map_err(|e| ExecError::Sign(e.to_string()))?;
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        Ok(Attempt {
            hash: *envelope.tx_hash(),
            raw: envelope.encoded_2718().into(),
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            signed_at_ms: now_ms(),
            cancel,
        })
    }

    /// Journals, then sends, the plan's transaction to `liquidator`. `fee_cap_wei` is the most its fees
    /// may ever reach, bumps included.
    pub async fn submit(
        &mut self,
        plan: &Plan,
        liquidator: Address,
        fee_cap_wei: U256,
    ) -> Result<JournalEntry, ExecError> {
        let entry = self.prepare(plan, liquidator, fee_cap_wei).await?;
        self.send_prepared(entry).await
    }

    /// Signs the plan's transaction and writes it to the journal (on disk) without sending it.
    pub async fn prepare(
        &mut self,
        plan: &Plan,
        liquidator: Address,
        fee_cap_wei: U256,
    ) -> Result<JournalEntry, ExecError> {
        let batch = Batch {
            fee_cap_wei,
            ..Batch::single(plan.clone())
        };
        self.prepare_all(std::slice::from_ref(&batch), liquidator, None)
            .await?
            .pop()
            .expect("one result per batch")
            .map(|mut entries| entries.pop().expect("one entry per plan"))
    }

    /// Signs every batch's transaction (consecutive nonces, each capped at its batch's `fee_cap_wei`)
    /// and writes an entry for each of its plans to the journal, then waits once for the disk for all
    /// of them: [`Self::sign_all`], then the flush.
    pub async fn prepare_all(
        &mut self,
        batches: &[Batch],
        liquidator: Address,
        chain_nonce: Option<u64>,
    ) -> Result<Vec<Result<Vec<JournalEntry>, ExecError>>, ExecError> {
        let out = self.sign_all(batches, liquidator, chain_nonce).await?;
        self.journal.flush_async().await?;
        Ok(out)
    }

    /// Signs every batch's transaction (consecutive nonces, each capped at its batch's `fee_cap_wei`)
    /// and writes an entry for each of its plans to the journal, without waiting for the disk: the
    /// caller flushes once for a round of them before any is sent ([`Sender::flush_and_send`]); the
    /// liquidations of a price move go out together, and each waiting on its own flush would hold back
    /// the next. One result per batch (its entries, in plan order); a batch with a borrower
    /// whose liquidation is in flight ([`Self::in_flight`]) gets [`ExecError::InFlight`].
    ///
    /// `chain_nonce` is the account's [`Self::chain_nonce`] when the caller read it already (the keeper
    /// reads it once per block, before the node gets busy); an external transaction from the account
    /// after that read can then share a nonce with ours, and [`Self::poll`] finds that nonce used and
    /// the entry dropped. The keeper's account should be its own.
    pub async fn sign_all(
        &mut self,
        batches: &[Batch],
        liquidator: Address,
        chain_nonce: Option<u64>,
    ) -> Result<Vec<Result<Vec<JournalEntry>, ExecError>>, ExecError> {
        let started = std::time::Instant::now();
        // One read of the journal's keys: who is in flight, and the nonces it holds.
        let open = self.journal.open_keys()?;
        let in_flight = self.in_flight_among(&open);
        let journaled = open.iter().map(|(nonce, _)| nonce + 1).max().unwrap_or(0);
        let mut out = Vec::with_capacity(batches.len());
        let mut next: Option<u64> = None;
        for batch in batches {
            if let Some(busy) = batch.plans.iter().find(|p| in_flight.contains(&p.borrower)) {
                out.push(Err(ExecError::InFlight(busy.borrower)));
                continue;
            }
            // The plans' base fee is the next block's, from the header they were planned on.
            let first = &batch.plans[0];
            let base_fee = first.base_fee_wei.max(1);
            let priority = first.gas_price_wei.saturating_sub(base_fee).max(1);
            // Room for two base-fee rises of 12.5% before the transaction stops being includable.
            let max_fee = base_fee * 2 + priority;
            // One look at the chain's count per call; the rest follow on.
            let nonce = match next {
                Some(n) => n,
                None => self.nonce(journaled, chain_nonce).await?,
            };
            let attempt = match self.sign(
                nonce,
                batch.gas_limit,
                liquidator,
                batch.calldata.clone(),
                max_fee,
                priority,
                false,
            ) {
                Ok(attempt) => attempt,
                Err(e) => {
                    // The nonce stays free for the next batch.
                    next = Some(nonce);
                    out.push(Err(e));
                    continue;
                }
            };
            next = Some(nonce + 1);
            let mut entries = Vec::with_capacity(batch.plans.len());
            for plan in &batch.plans {
                let entry = JournalEntry {
                    borrower: plan.borrower,
                    pair: (plan.collateral, plan.debt),
                    nonce,
                    attempts: vec![attempt.clone()],
                    state: TxState::Prepared,
                    fee_cap_wei: batch.fee_cap_wei,
                    gas_limit: batch.gas_limit,
                    planned_block: plan.block,
                    expected_profit_base: plan.net_profit_base,
                    debt_repaid: plan.amounts.debt_repaid,
                    sale: Some(plan.sale()),
                };
                self.journal.note(&entry)?;
                entries.push(entry);
            }
            out.push(Ok(entries));
        }
        if let Some(n) = next {
            self.next_nonce = Some(n);
        }
        tracing::trace!(
            transactions = batches.len(),
            sign_and_write_ms = started.elapsed().as_secs_f64() * 1e3,
            "signed and journaled"
        );
        Ok(out)
    }

    /// Sends a prepared entry's transaction and records that it was sent.
    pub async fn send_prepared(&mut self, entry: JournalEntry) -> Result<JournalEntry, ExecError> {
        self.send_all(vec![entry])
            .await
            .pop()
            .expect("one result per entry")
            .map(|(entry, _)| entry)
    }

    /// Sends prepared entries' transactions side by side ([`Sender::send_all`]).
    pub async fn send_all(&mut self, entries: Vec<JournalEntry>) -> Vec<Sent> {
        self.sender.send_all(entries).await
    }

    /// Checks every open liquidation: records receipts, replaces stuck transactions with higher fees
    /// (never past the fee cap), and marks as dropped those whose nonce went to another transaction.
    /// Returns the entries that became final.
    pub async fn poll(&mut self) -> Result<Vec<JournalEntry>, ExecError> {
        use futures::{StreamExt, TryStreamExt};
        let open = by_transaction(self.journal.open()?);
        if open.is_empty() {
            return Ok(Vec::new());
        }
        // The account's mined nonce and the head first, then the receipts of the transactions below
        // that nonce, a few at a time (after a price move dozens are open): one at or above it is not
        // mined, and the transactions of this block's sends are not asked about.
        let mined_nonce = async {
            self.rpc
                .get_transaction_count(self.address())
                .latest()
                .await
                .map_err(|e| ExecError::from(ChainError::rpc("eth_getTransactionCount", e)))
        };
        let head = async {
            self.rpc
                .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
                .await
                .map_err(|e| ExecError::from(ChainError::rpc("the head block", e)))
        };
        let started = std::time::Instant::now();
        let (mined_nonce, head) = tokio::try_join!(mined_nonce, head)?;
        let this = &*self;
        let reads: Vec<_> = open
            .iter()
            .map(|tx| async move {
                if tx[0].nonce < mined_nonce {
                    this.outcome(tx).await
                } else {
                    Ok(None)
                }
            })
            .collect();
        let outcomes: Vec<_> = futures::stream::iter(reads)
            .buffered(CONCURRENT_RECEIPT_READS)
            .try_collect()
            .await?;
        let read_ms = started.elapsed().as_secs_f64() * 1e3;
        let head_number = head.as_ref().map(|b| b.header.number);
        // The next of ours in nonce order, sent before the head block and not in it although the block
        // had room for its gas limit, was skipped: not seen by the block's builder, or held back by a
        // node's pool (anvil does, now and then). It and those queued behind it are replaced now rather
        // than after `bump_after`. (A relay's bundles are offered again each block anyway.)
        let head = head.map(|b| b.header);
        let next_in_head = head.as_ref().and_then(|head| {
            let next = open.iter().find(|tx| tx[0].nonce == mined_nonce)?;
            let last = next[0].attempts.last()?;
            let sent_before = last.signed_at_ms < head.timestamp.saturating_mul(1_000);
            let limit = if last.cancel {
                CANCEL_GAS
            } else {
                next[0].gas_limit
            };
            let had_room = head.gas_limit.saturating_sub(head.gas_used) >= limit;
            (matches!(self.opts.route, Route::Public) && sent_before).then_some(had_room)
        });
        let skipped_from = head
            .as_ref()
            .filter(|_| next_in_head == Some(true))
            .map(|head| (mined_nonce, head.timestamp.saturating_mul(1_000)));
        // A block too full for our next leaves it and those behind it queued, but a node may have
        // forgotten the ones behind: anvil drops those it tried in the same block after the one that
        // did not fit (their nonces ahead of the account's), a node's pool evicts under pressure, a
        // restarted node loses its pool. Asked about the one after next: if the node no longer knows it,
        // it and those behind are sent again now, as they were signed, to follow the next into the
        // coming block rather than a block after it.
        let forgotten_from = match (next_in_head, head.as_ref()) {
            (Some(false), Some(head)) => self.forgotten_after(&open, mined_nonce, head).await,
            _ => None,
        };
        let mut finished = Vec::new();
        for (mut tx, states) in open.into_iter().zip(outcomes) {
            let nonce = tx[0].nonce;
            // Final states need not wait for the disk one by one: lost in a crash, the entry is open
            // again and the next poll finds the same receipt. One flush at the end.
            if let Some(states) = states {
                finished.extend(self.finish(tx, states)?);
                continue;
            }
            if mined_nonce > nonce {
                // The nonce is used. Ours, unless no attempt has a receipt; nodes can index a block's
                // receipts a moment after its state, so look again before calling it dropped.
                let mut states = None;
                for _ in 0..5 {
                    states = self.outcome(&tx).await?;
                    if states.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let states = states.unwrap_or_else(|| {
                    let reason = format!("nonce {nonce} was used by another transaction");
                    vec![TxState::Dropped { reason }; tx.len()]
                });
                finished.extend(self.finish(tx, states)?);
                continue;
            }
            let last = tx[0]
                .attempts
                .last()
                .cloned()
                .expect("an entry has an attempt");
            // A plan made before the latest block may no longer hold (the pools moved, the position
            // was repaid): before it is sent again or bumped, it runs again on the latest state, and
            // one that would revert gives its nonce to a cancellation instead, so nothing queues
            // behind a nonce never sent.
            let stale = !last.cancel && head_number.is_some_and(|h| tx[0].planned_block < h);
            if forgotten_from.is_some_and(|from| nonce >= from) {
                // Sent as it would have been mined had the node kept it: not simulated again first
                // (that would hold up this block's planning, a simulation per transaction).
                self.sender.broadcast(&last).await?;
                if tx[0].state == TxState::Prepared {
                    self.record(&mut tx, None, TxState::Sent)?;
                }
                tracing::info!(borrower = %tx[0].borrower, nonce, "the node forgot it behind a full block: sent again");
                continue;
            }
            if tx[0].state == TxState::Prepared {
                // Journaled but perhaps never sent (a failed send, or a crash in between).
                if stale && !self.still_runs(&last).await? {
                    self.cancel_transaction(
                        &mut tx,
                        "its plan no longer holds on the latest state",
                    )
                    .await?;
                    continue;
                }
                self.sender.broadcast(&last).await?;
                self.record(&mut tx, None, TxState::Sent)?;
                continue;
            }
            let skipped = skipped_from
                .is_some_and(|(from, head_ms)| nonce >= from && last.signed_at_ms < head_ms);
            if skipped {
                tracing::info!(borrower = %tx[0].borrower, nonce, "not mined in a block that had room for it: replacing it now");
            } else if now_ms().saturating_sub(last.signed_at_ms)
                < self.opts.bump_after.as_millis() as u64
            {
                if matches!(self.opts.route, Route::Relay { .. }) {
                    // A bundle is for one block: offer it again for the next.
                    self.sender.broadcast(&last).await?;
                }
                continue;
            }
            if stale && !self.still_runs(&last).await? {
                self.cancel_transaction(&mut tx, "its plan no longer holds on the latest state")
                    .await?;
                continue;
            }
            let (max_fee, priority) = self.bumped(&last);
            // Every entry of a transaction holds its gas limit and fee cap.
            let gas_limit = if last.cancel {
                CANCEL_GAS
            } else {
                tx[0].gas_limit
            };
            // A cancellation costs 21,000 gas, far less than the liquidation it replaces would have.
            if !last.cancel && U256::from(max_fee) * U256::from(gas_limit) > tx[0].fee_cap_wei {
                tracing::warn!(borrower = %tx[0].borrower, liquidations = tx.len(), max_fee, "not bumping: fees would exceed the liquidations' profit");
                continue;
            }
            let Some(envelope) = self
                .journal
                .signed(&last)?
                .and_then(|raw| decode_envelope(&raw))
            else {
                continue;
            };
            use alloy::consensus::Transaction;
            let attempt = self.sign(
                nonce,
                gas_limit,
                envelope.to().unwrap_or_default(),
                envelope.input().clone(),
                max_fee,
                priority,
                last.cancel,
            )?;
            let state = tx[0].state.clone();
            self.record(&mut tx, Some(&attempt), state)?;
            self.sender.broadcast(&attempt).await?;
            tracing::info!(borrower = %tx[0].borrower, liquidations = tx.len(), nonce, hash = %attempt.hash, max_fee, cancel = last.cancel, "replaced a stuck transaction with higher fees");
        }
        let settled_ms = started.elapsed().as_secs_f64() * 1e3;
        self.journal.flush()?;
        tracing::debug!(
            read_ms,
            settled_ms,
            flushed_ms = started.elapsed().as_secs_f64() * 1e3,
            finished = finished.len(),
            "polled"
        );
        Ok(finished)
    }

    /// The nonce from which the node has forgotten our open transactions, if it has: asks about the one
    /// after `next` (the account's next nonce, left out of the full block `head`), sent before that
    /// block. It is the first anvil drops, and with it forgotten none behind it can be mined until it
    /// is sent again: all from it are (a node that still has one answers "already known").
    async fn forgotten_after(
        &self,
        open: &[Vec<JournalEntry>],
        next: u64,
        head: &alloy::rpc::types::Header,
    ) -> Option<u64> {
        let last = open
            .iter()
            .find(|tx| tx[0].nonce == next + 1)
            .and_then(|tx| tx[0].attempts.last())
            .filter(|a| a.signed_at_ms < head.timestamp.saturating_mul(1_000))?;
        // A node that will not say (the method refused, a failing endpoint) is taken to have it: the
        // transaction is then replaced as before, once a block with room passes it by.
        match self.rpc.get_transaction_by_hash(last.hash).await {
            Ok(known) => known.is_none().then_some(next + 1),
            Err(e) => {
                tracing::debug!(error = %e, "could not ask the node for a queued transaction");
                None
            }
        }
    }

    /// Gives each entry of a mined (or dropped) transaction its final state, and notes it.
    fn finish(
        &self,
        tx: Vec<JournalEntry>,
        states: Vec<TxState>,
    ) -> Result<Vec<JournalEntry>, ExecError> {
        let attempts = tx.first().map(|e| e.attempts.clone()).unwrap_or_default();
        let finished = tx
            .into_iter()
            .zip(states)
            .map(|(mut entry, state)| {
                entry.state = state;
                self.journal.note(&entry)?;
                Ok(entry)
            })
            .collect::<Result<Vec<_>, ExecError>>()?;
        self.journal.forget_signed(&attempts)?;
        Ok(finished)
    }

    /// Writes a new attempt (when given) and a state to every entry of one transaction, on disk
    /// before anything is sent.
    fn record(
        &self,
        tx: &mut [JournalEntry],
        attempt: Option<&Attempt>,
        state: TxState,
    ) -> Result<(), ExecError> {
        for entry in tx.iter_mut() {
            if let Some(attempt) = attempt {
                entry.attempts.push(attempt.clone());
            }
            entry.state = state.clone();
            self.journal.note(entry)?;
        }
        self.journal.flush()?;
        Ok(())
    }

    /// Both fees of `last` raised by the bump (at least the 10% nodes require for a replacement).
    fn bumped(&self, last: &Attempt) -> (u128, u128) {
        let bump = |x: u128| x + x * u128::from(self.opts.bump_bps.max(1_000)) / 10_000 + 1;
        (
            bump(last.max_fee_per_gas),
            bump(last.max_priority_fee_per_gas),
        )
    }

    /// Replaces the open liquidation of `borrower` with a 0-value transfer to ourselves at the same
    /// nonce and higher fees: the position is gone (repaid, or liquidated by someone else), and a
    /// liquidation mined now would only revert and burn its gas. A transaction carrying others'
    /// liquidations too is cancelled with them (all or none would succeed); they are planned again.
    /// Returns whether one was sent.
    pub async fn cancel(&mut self, borrower: Address, reason: &str) -> Result<bool, ExecError> {
        let Some(entry) = self.journal.open_for(borrower)? else {
            return Ok(false);
        };
        let mut tx: Vec<JournalEntry> = self
            .journal
            .open()?
            .into_iter()
            .filter(|e| e.nonce == entry.nonce)
            .collect();
        self.cancel_transaction(&mut tx, reason).await
    }

    /// Replaces the open transaction `tx` (its entries) with a cancellation at its nonce; `false`
    /// when it is one already.
    async fn cancel_transaction(
        &mut self,
        tx: &mut [JournalEntry],
        reason: &str,
    ) -> Result<bool, ExecError> {
        let Some(last) = tx.first().and_then(|e| e.attempts.last()).cloned() else {
            return Ok(false);
        };
        if last.cancel {
            return Ok(false);
        }
        let nonce = tx[0].nonce;
        let (max_fee, priority) = self.bumped(&last);
        let attempt = self.sign(
            nonce,
            CANCEL_GAS,
            self.address(),
            Bytes::new(),
            max_fee,
            priority,
            true,
        )?;
        self.record(tx, Some(&attempt), TxState::Sent)?;
        self.sender.broadcast(&attempt).await?;
        tracing::info!(borrower = %tx[0].borrower, liquidations = tx.len(), nonce, hash = %attempt.hash, reason, "cancelled a pending liquidation");
        Ok(true)
    }

    /// Whether the transaction of `attempt` still runs on the latest state, from our account: `false`
    /// when it reverts there; an error when the node could not say.
    async fn still_runs(&self, attempt: &Attempt) -> Result<bool, ExecError> {
        use alloy::consensus::Transaction;
        let Some(envelope) = self
            .journal
            .signed(attempt)?
            .and_then(|raw| decode_envelope(&raw))
        else {
            return Ok(true);
        };
        let call = TransactionRequest::default()
            .from(self.address())
            .to(envelope.to().unwrap_or_default())
            .input(envelope.input().clone().into())
            .gas_limit(envelope.gas_limit());
        match self.rpc.call(call).await {
            Ok(_) => Ok(true),
            Err(e) if Trouble::of(&e) == Trouble::Revert => {
                tracing::debug!(hash = %attempt.hash, reason = %crate::planner::decode_revert(&e), "a liquidation in flight no longer runs");
                Ok(false)
            }
            Err(e) => Err(ChainError::rpc("simulating a liquidation in flight again", e).into()),
        }
    }

    /// After a restart: brings every open entry up to date (rebroadcasting exactly what was signed,
    /// never re-signing a new liquidation; cancelling at its nonce one that no longer runs) and
    /// returns those that became final.
    pub async fn reconcile(&mut self) -> Result<Vec<JournalEntry>, ExecError> {
        let head = self
            .rpc
            .get_block_number()
            .await
            .map_err(|e| ChainError::rpc("eth_blockNumber", e))?;
        for mut tx in by_transaction(self.journal.open()?) {
            if self.outcome(&tx).await?.is_some() {
                continue;
            }
            let Some(last) = tx[0].attempts.last().cloned() else {
                continue;
            };
            // Planned before the restart on a chain that has moved since: sent again only if it
            // still runs, its nonce cancelled otherwise (a restart must not mine a revert).
            if !last.cancel && tx[0].planned_block < head && !self.still_runs(&last).await? {
                self.cancel_transaction(&mut tx, "planned before the restart, it no longer holds")
                    .await?;
                continue;
            }
            self.sender.broadcast(&last).await?;
            self.record(&mut tx, None, TxState::Sent)?;
        }
        self.poll().await
    }

    /// The receipt of any attempt of one transaction, as each of its entries' final state: the
    /// profit from the `Liquidated` event of its borrower, and its share of the fee paid.
    async fn outcome(&self, tx: &[JournalEntry]) -> Result<Option<Vec<TxState>>, ExecError> {
        for attempt in tx[0].attempts.iter().rev() {
            let receipt = self
                .rpc
                .get_transaction_receipt(attempt.hash)
                .await
                .map_err(|e| ChainError::rpc("eth_getTransactionReceipt", e))?;
            let Some(r) = receipt else {
                continue;
            };
            let block = r.block_number.unwrap_or_default();
            if !r.status() && !attempt.cancel {
                let reason = revert_reason(&self.rpc, attempt.hash).await;
                tracing::warn!(
                    hash = %attempt.hash,
                    block,
                    liquidations = tx.len(),
                    reason = reason.as_deref().unwrap_or("unknown (the node does not trace transactions)"),
                    "a liquidation transaction was mined and reverted"
                );
            }
            let fees = split(
                U256::from(r.gas_used) * U256::from(r.effective_gas_price),
                tx.len(),
            );
            if attempt.cancel {
                return Ok(Some(
                    fees.map(|fee_paid_wei| TxState::Cancelled {
                        hash: attempt.hash,
                        block,
                        fee_paid_wei,
                    })
                    .collect(),
                ));
            }
            let events: Vec<Liquidator::Liquidated> = r
                .inner
                .logs()
                .iter()
                .filter_map(|l| Liquidator::Liquidated::decode_log_data(l.data()).ok())
                .collect();
            return Ok(Some(
                tx.iter()
                    .zip(fees)
                    .map(|(entry, fee_paid_wei)| TxState::Included {
                        hash: attempt.hash,
                        block,
                        success: r.status(),
                        profit: events
                            .iter()
                            .find(|e| e.borrower == entry.borrower)
                            .map(|e| e.profit),
                        fee_paid_wei,
                    })
                    .collect(),
            ));
        }
        Ok(None)
    }
}

impl Sender {
    /// Puts one signed transaction on the wire: to the mempool, or as a bundle for the next block to
    /// the relay. One the node has already, or whose nonce is used, is not an error.
    async fn broadcast(&self, attempt: &Attempt) -> Result<(), ExecError> {
        let raw = self
            .journal
            .signed(attempt)?
            .ok_or(ExecError::Unsigned(attempt.hash))?;
        if let Route::Relay { url, auth } = &self.route {
            let next = self
                .rpc
                .get_block_number()
                .await
                .map_err(|e| ChainError::rpc("eth_blockNumber", e))?
                + 1;
            super::bundle::send_bundle(url, auth, std::slice::from_ref(&raw), next).await?;
            return Ok(());
        }
        match self.rpc.send_raw_transaction(&raw).await {
            Ok(_) => Ok(()),
            // Sent before (a rebroadcast after a restart), or the nonce is already used (ours mined, or
            // another transaction's): nothing to send; `poll` tells which from the receipts.
            Err(e)
                if ["already", "nonce too low"]
                    .iter()
                    .any(|m| e.to_string().to_lowercase().contains(m)) =>
            {
                Ok(())
            }
            Err(e) => {
                Err(ChainError::rpc(format!("eth_sendRawTransaction {}", attempt.hash), e).into())
            }
        }
    }

    /// Sends prepared entries' transactions side by side (nonce order does not matter to a node: a
    /// later nonce waits in its queue for the earlier one), each transaction once however many
    /// entries share it, and records each that went out. One result per entry, in order, with when
    /// its transaction's send returned.
    pub async fn send_all(&self, entries: Vec<JournalEntry>) -> Vec<Sent> {
        let mut transactions: Vec<&Attempt> = entries
            .iter()
            .map(|e| e.attempts.last().expect("an entry has an attempt"))
            .collect();
        let mut seen = std::collections::HashSet::new();
        transactions.retain(|a| seen.insert(a.hash));
        let sends = transactions.iter().map(|attempt| async {
            let sent = self.broadcast(attempt).await;
            (
                attempt.hash,
                sent.map(|()| std::time::Instant::now())
                    .map_err(|e| e.to_string()),
            )
        });
        let results: std::collections::HashMap<_, _> =
            futures::future::join_all(sends).await.into_iter().collect();
        entries
            .into_iter()
            .map(|mut entry| {
                let hash = entry.attempts.last().expect("an entry has an attempt").hash;
                let at = results[&hash].clone().map_err(|reason| ExecError::Send {
                    hash,
                    reason,
                })?;
                entry.state = TxState::Sent;
                self.journal.note(&entry)?;
                tracing::debug!(borrower = %entry.borrower, nonce = entry.nonce, "transaction sent");
                Ok((entry, at))
            })
            .collect()
    }

    /// Waits until everything journaled is on disk (on sled's threads, not the caller's), then sends
    /// `entries` ([`Self::send_all`]): they were written when they were signed, and nothing goes out
    /// before it is on disk. `Err` only when the journal fails.
    pub async fn flush_and_send(
        &self,
        entries: Vec<JournalEntry>,
    ) -> Result<Vec<Sent>, JournalError> {
        let started = std::time::Instant::now();
        self.journal.flush_async().await?;
        tracing::trace!(
            transactions = entries.len(),
            flush_ms = started.elapsed().as_secs_f64() * 1e3,
            "journal on disk"
        );
        Ok(self.send_all(entries).await)
    }
}

/// Why a mined transaction reverted, from the node's call tracer (`debug_traceTransaction`, which
/// anvil, geth and reth answer, and many hosted endpoints do not): what its call returned, decoded,
/// or the tracer's error. `None` when the node does not say.
async fn revert_reason(rpc: &Rpc, hash: alloy::primitives::TxHash) -> Option<String> {
    let tracer =
        serde_json::json!({ "tracer": "callTracer", "tracerConfig": { "onlyTopCall": true } });
    let trace: serde_json::Value = rpc
        .raw_request("debug_traceTransaction".into(), (hash, tracer))
        .await
        .ok()?;
    reason_from_call_trace(&trace)
}

/// A call tracer's top call: its revert data decoded where there is any, else its error.
fn reason_from_call_trace(trace: &serde_json::Value) -> Option<String> {
    trace
        .get("output")
        .and_then(|o| o.as_str())
        .and_then(|hex| alloy::hex::decode(hex).ok())
        .and_then(|data| crate::planner::decode_revert_data(&data))
        .or_else(|| {
            trace
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_owned)
        })
}

/// Open entries grouped by the transaction they share (their nonce), in nonce order.
fn by_transaction(entries: Vec<JournalEntry>) -> Vec<Vec<JournalEntry>> {
    let mut groups: std::collections::BTreeMap<u64, Vec<JournalEntry>> = Default::default();
    for entry in entries {
        groups.entry(entry.nonce).or_default().push(entry);
    }
    groups.into_values().collect()
}

/// `total` in `parts` shares that add up to it exactly (the first takes the remainder).
fn split(total: U256, parts: usize) -> impl Iterator<Item = U256> {
    let parts = U256::from(parts.max(1));
    let (share, remainder) = (total / parts, total % parts);
    (0..parts.to::<usize>()).map(move |i| if i == 0 { share + remainder } else { share })
}

fn decode_envelope(raw: &[u8]) -> Option<TxEnvelope> {
    use alloy::eips::Decodable2718;
    TxEnvelope::decode_2718(&mut &raw[..]).ok()
}

#[cfg(test)]
mod tests {
    use super::reason_from_call_trace;
    use crate::chain::bindings::Liquidator;
    use alloy::{primitives::U256, sol_types::SolError};

    #[test]
    fn a_mined_reverts_reason_is_read_from_the_call_tracer() {
        let data = Liquidator::InsufficientProfit {
            profit: U256::from(5u8),
            minProfit: U256::from(9u8),
        }
        .abi_encode();
        let trace = serde_json::json!({
            "error": "execution reverted",
            "output": alloy::hex::encode_prefixed(data),
        });
        let reason = reason_from_call_trace(&trace).expect("a reason");
        assert!(reason.contains("InsufficientProfit"), "{reason}");
        let bare = serde_json::json!({ "error": "out of gas", "output": "0x" });
        assert_eq!(reason_from_call_trace(&bare).as_deref(), Some("out of gas"));
        assert_eq!(reason_from_call_trace(&serde_json::json!({})), None);
    }
}
