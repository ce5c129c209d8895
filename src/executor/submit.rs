//! Sending liquidations: nonces, signing, the write-ahead journal, fee bumps of stuck transactions
//! (capped so fees never exceed the plan's profit), receipts, and reconciliation after a restart.

use super::journal::{Attempt, Journal, JournalEntry, JournalError, TxState};
use crate::{
    chain::{ChainError, Rpc, bindings::Liquidator},
    planner::Plan,
};
use alloy::{
    consensus::{SignableTransaction, TxEip1559, TxEnvelope},
    eips::Encodable2718,
    network::TxSignerSync,
    primitives::{Address, Bytes, TxKind, U256},
    providers::Provider,
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
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            bump_after: Duration::from_secs(24),
            bump_bps: 1_250,
            route: Route::Public,
        }
    }
}

/// Receipt reads in flight at once while polling.
const CONCURRENT_RECEIPT_READS: usize = 16;

/// Sends liquidations from one account.
pub struct Executor {
    rpc: Rpc,
    signer: PrivateKeySigner,
    chain_id: u64,
    journal: Journal,
    next_nonce: Option<u64>,
    opts: ExecutorOptions,
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
    ) -> Result<Self, ExecError> {
        let chain_id = rpc
            .get_chain_id()
            .await
            .map_err(|e| ChainError::rpc("eth_chainId", e))?;
        Ok(Self {
            rpc,
            signer,
            chain_id,
            journal,
            next_nonce: None,
            opts,
        })
    }

    /// The sending account.
    pub fn address(&self) -> Address {
        self.signer.address()
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
    /// signed, and what the journal holds open (`open`), whichever is highest. A transaction sent from
    /// this account by someone else moves the chain's count, so the next read picks it up.
    async fn nonce(&mut self, open: &[JournalEntry], chain: Option<u64>) -> Result<u64, ExecError> {
        let chain = match chain {
            Some(count) => count,
            None => self.chain_nonce().await?,
        };
        let journaled = open.iter().map(|e| e.nonce + 1).max().unwrap_or(0);
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

    async fn broadcast(&self, attempt: &Attempt) -> Result<(), ExecError> {
        if let Route::Relay { url, auth } = &self.opts.route {
            let next = self
                .rpc
                .get_block_number()
                .await
                .map_err(|e| ChainError::rpc("eth_blockNumber", e))?
                + 1;
            super::bundle::send_bundle(url, auth, std::slice::from_ref(&attempt.raw), next).await?;
            return Ok(());
        }
        match self.rpc.send_raw_transaction(&attempt.raw).await {
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
        let plan = Plan {
            fee_cap_wei,
            ..plan.clone()
        };
        self.prepare_all(std::slice::from_ref(&plan), liquidator, None)
            .await?
            .pop()
            .expect("one result per plan")
    }

    /// Signs every plan's transaction (consecutive nonces, each capped at its plan's `fee_cap_wei`)
    /// and writes them all to the journal with one wait for the disk: the liquidations of a price move
    /// go out together, and each waiting on its own disk flush would hold back the next. One result
    /// per plan; a borrower with a liquidation in flight gets [`ExecError::InFlight`].
    ///
    /// `chain_nonce` is the account's [`Self::chain_nonce`] when the caller read it already (the keeper
    /// reads it once per block, before the node gets busy); an external transaction from the account
    /// after that read can then share a nonce with ours, and [`Self::poll`] finds that nonce used and
    /// the entry dropped. The keeper's account should be its own.
    pub async fn prepare_all(
        &mut self,
        plans: &[Plan],
        liquidator: Address,
        chain_nonce: Option<u64>,
    ) -> Result<Vec<Result<JournalEntry, ExecError>>, ExecError> {
        // One read of the journal: who is in flight, and the nonces it holds.
        let open = self.journal.open()?;
        let in_flight: std::collections::HashSet<Address> =
            open.iter().map(|e| e.borrower).collect();
        let mut out = Vec::with_capacity(plans.len());
        let mut next: Option<u64> = None;
        for plan in plans {
            if in_flight.contains(&plan.borrower) {
                out.push(Err(ExecError::InFlight(plan.borrower)));
                continue;
            }
            // The plan's base fee is the next block's, from the header it was planned on.
            let base_fee = plan.base_fee_wei.max(1);
            let priority = plan.gas_price_wei.saturating_sub(base_fee).max(1);
            // Room for two base-fee rises of 12.5% before the transaction stops being includable.
            let max_fee = base_fee * 2 + priority;
            // One look at the chain's count per batch; the rest follow on.
            let nonce = match next {
                Some(n) => n,
                None => self.nonce(&open, chain_nonce).await?,
            };
            let attempt = match self.sign(
                nonce,
                plan.gas_limit,
                liquidator,
                plan.calldata.clone(),
                max_fee,
                priority,
                false,
            ) {
                Ok(attempt) => attempt,
                Err(e) => {
                    // The nonce stays free for the next plan.
                    next = Some(nonce);
                    out.push(Err(e));
                    continue;
                }
            };
            next = Some(nonce + 1);
            let entry = JournalEntry {
                borrower: plan.borrower,
                pair: (plan.collateral, plan.debt),
                nonce,
                attempts: vec![attempt],
                state: TxState::Prepared,
                fee_cap_wei: plan.fee_cap_wei,
                gas_limit: plan.gas_limit,
                planned_block: plan.block,
                expected_profit_base: plan.net_profit_base,
                debt_repaid: plan.amounts.debt_repaid,
            };
            self.journal.note(&entry)?;
            out.push(Ok(entry));
        }
        if let Some(n) = next {
            self.next_nonce = Some(n);
        }
        // On disk before anything is sent.
        self.journal.flush()?;
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

    /// Sends prepared entries' transactions side by side (nonce order does not matter to a node: a
    /// later nonce waits in its queue for the earlier one) and records each that went out. One result
    /// per entry, in order, with when its send returned.
    pub async fn send_all(
        &mut self,
        entries: Vec<JournalEntry>,
    ) -> Vec<Result<(JournalEntry, std::time::Instant), ExecError>> {
        let sends = entries.iter().map(|entry| async {
            let attempt = entry.attempts.last().expect("an entry has an attempt");
            self.broadcast(attempt)
                .await
                .map(|()| std::time::Instant::now())
        });
        let results = futures::future::join_all(sends).await;
        entries
            .into_iter()
            .zip(results)
            .map(|(mut entry, sent)| {
                let at = sent?;
                entry.state = TxState::Sent;
                self.journal.note(&entry)?;
                tracing::debug!(borrower = %entry.borrower, nonce = entry.nonce, "transaction sent");
                Ok((entry, at))
            })
            .collect()
    }

    /// Checks every open liquidation: records receipts, replaces stuck transactions with higher fees
    /// (never past the fee cap), and marks as dropped those whose nonce went to another transaction.
    /// Returns the entries that became final.
    pub async fn poll(&mut self) -> Result<Vec<JournalEntry>, ExecError> {
        use futures::{StreamExt, TryStreamExt};
        let open = self.journal.open()?;
        if open.is_empty() {
            return Ok(Vec::new());
        }
        // Every open entry's receipts, a few at a time, and the account's mined nonce once: after a
        // price move dozens are open, and one after the other they would hold up the next block.
        let reads: Vec<_> = open.iter().map(|entry| self.outcome(entry)).collect();
        let outcomes = futures::stream::iter(reads)
            .buffered(CONCURRENT_RECEIPT_READS)
            .try_collect::<Vec<_>>();
        let mined_nonce = async {
            self.rpc
                .get_transaction_count(self.address())
                .latest()
                .await
                .map_err(|e| ExecError::from(ChainError::rpc("eth_getTransactionCount", e)))
        };
        let (outcomes, mined_nonce) = tokio::try_join!(outcomes, mined_nonce)?;
        let mut finished = Vec::new();
        for (mut entry, state) in open.into_iter().zip(outcomes) {
            // Final states need not wait for the disk one by one: lost in a crash, the entry is open
            // again and the next poll finds the same receipt. One flush at the end.
            if let Some(state) = state {
                entry.state = state;
                self.journal.note(&entry)?;
                finished.push(entry);
                continue;
            }
            if mined_nonce > entry.nonce {
                // The nonce is used. Ours, unless no attempt has a receipt; nodes can index a block's
                // receipts a moment after its state, so look again before calling it dropped.
                let mut state = None;
                for _ in 0..5 {
                    state = self.outcome(&entry).await?;
                    if state.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                entry.state = state.unwrap_or_else(|| TxState::Dropped {
                    reason: format!("nonce {} was used by another transaction", entry.nonce),
                });
                self.journal.note(&entry)?;
                finished.push(entry);
                continue;
            }
            let last = entry
                .attempts
                .last()
                .cloned()
                .expect("an entry has an attempt");
            if entry.state == TxState::Prepared {
                // Journaled but perhaps never sent (a crash in between): send exactly that transaction.
                self.broadcast(&last).await?;
                entry.state = TxState::Sent;
                self.journal.put(&entry)?;
                continue;
            }
            if now_ms().saturating_sub(last.signed_at_ms) < self.opts.bump_after.as_millis() as u64
            {
                if matches!(self.opts.route, Route::Relay { .. }) {
                    // A bundle is for one block: offer it again for the next.
                    self.broadcast(&last).await?;
                }
                continue;
            }
            let (max_fee, priority) = self.bumped(&last);
            let gas_limit = if last.cancel {
                CANCEL_GAS
            } else {
                entry.gas_limit
            };
            // A cancellation costs 21,000 gas, far less than the liquidation it replaces would have.
            if !last.cancel && U256::from(max_fee) * U256::from(gas_limit) > entry.fee_cap_wei {
                tracing::warn!(borrower = %entry.borrower, max_fee, "not bumping: fees would exceed the liquidation's profit");
                continue;
            }
            let Some(tx) = decode_envelope(&last.raw) else {
                continue;
            };
            use alloy::consensus::Transaction;
            let attempt = self.sign(
                entry.nonce,
                gas_limit,
                tx.to().unwrap_or_default(),
                tx.input().clone(),
                max_fee,
                priority,
                last.cancel,
            )?;
            entry.attempts.push(attempt.clone());
            self.journal.put(&entry)?;
            self.broadcast(&attempt).await?;
            tracing::info!(borrower = %entry.borrower, nonce = entry.nonce, hash = %attempt.hash, max_fee, cancel = last.cancel, "replaced a stuck transaction with higher fees");
        }
        self.journal.flush()?;
        Ok(finished)
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
    /// liquidation mined now would only revert and burn its gas. Returns whether one was sent.
    pub async fn cancel(&mut self, borrower: Address, reason: &str) -> Result<bool, ExecError> {
        let Some(mut entry) = self.journal.open_for(borrower)? else {
            return Ok(false);
        };
        let Some(last) = entry.attempts.last().cloned() else {
            return Ok(false);
        };
        if last.cancel {
            return Ok(false);
        }
        let (max_fee, priority) = self.bumped(&last);
        let attempt = self.sign(
            entry.nonce,
            CANCEL_GAS,
            self.address(),
            Bytes::new(),
            max_fee,
            priority,
            true,
        )?;
        entry.attempts.push(attempt.clone());
        entry.state = TxState::Sent;
        self.journal.put(&entry)?;
        self.broadcast(&attempt).await?;
        tracing::info!(%borrower, nonce = entry.nonce, hash = %attempt.hash, reason, "cancelled a pending liquidation");
        Ok(true)
    }

    /// After a restart: brings every open entry up to date (rebroadcasting, never re-signing a new
    /// liquidation) and returns those that became final.
    pub async fn reconcile(&mut self) -> Result<Vec<JournalEntry>, ExecError> {
        for mut entry in self.journal.open()? {
            if self.outcome(&entry).await?.is_none()
                && let Some(last) = entry.attempts.last().cloned()
            {
                self.broadcast(&last).await?;
                entry.state = TxState::Sent;
                self.journal.put(&entry)?;
            }
        }
        self.poll().await
    }

    /// The receipt of any attempt, as a final state.
    async fn outcome(&self, entry: &JournalEntry) -> Result<Option<TxState>, ExecError> {
        for attempt in entry.attempts.iter().rev() {
            let receipt = self
                .rpc
                .get_transaction_receipt(attempt.hash)
                .await
                .map_err(|e| ChainError::rpc("eth_getTransactionReceipt", e))?;
            if let Some(r) = receipt {
                let fee_paid_wei = U256::from(r.gas_used) * U256::from(r.effective_gas_price);
                if attempt.cancel {
                    return Ok(Some(TxState::Cancelled {
                        hash: attempt.hash,
                        block: r.block_number.unwrap_or_default(),
                        fee_paid_wei,
                    }));
                }
                let profit = r
                    .inner
                    .logs()
                    .iter()
                    .find_map(|l| Liquidator::Liquidated::decode_log_data(l.data()).ok())
                    .map(|e| e.profit);
                return Ok(Some(TxState::Included {
                    hash: attempt.hash,
                    block: r.block_number.unwrap_or_default(),
                    success: r.status(),
                    profit,
                    fee_paid_wei,
                }));
            }
        }
        Ok(None)
    }
}

fn decode_envelope(raw: &[u8]) -> Option<TxEnvelope> {
    use alloy::eips::Decodable2718;
    TxEnvelope::decode_2718(&mut &raw[..]).ok()
}
