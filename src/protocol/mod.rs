//! Lending protocols behind one trait, so the watcher does not know which market it watches.
//!
//! Aave V3 (and its forks) is implemented; Morpho Blue and Compound V3 fit beside it: each says which
//! logs matter and whom they touch, how to read market-wide state once per block, how to read a user,
//! and how to compute that user's health from what was read.

pub mod aave_v3;

use crate::{
    chain::{ChainError, Rpc},
    store::StoredPosition,
};
use alloy::{
    primitives::{Address, B256, U256},
    rpc::types::Log,
};
use std::future::Future;

/// A block the watcher is processing: reads are pinned to its hash (EIP-1898), so a reorg cannot mix
/// state from two chains into one computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Number.
    pub number: u64,
    /// Hash.
    pub hash: B256,
    /// Timestamp (interest accrues to it).
    pub timestamp: u64,
    /// Its base fee and gas, from its header, when the header was read: the next block's base fee
    /// follows from them (EIP-1559) without asking the node again.
    pub gas: Option<BlockGas>,
    /// The node's pending block (the next block as its mempool would make it), not a mined one: reads
    /// are made at `pending`, and `hash` is only the name the node gives it.
    pub pending: bool,
}

impl BlockRef {
    /// The block a header describes.
    pub fn of_header(header: &alloy::rpc::types::Header) -> Self {
        Self {
            number: header.number,
            hash: header.hash,
            timestamp: header.timestamp,
            gas: BlockGas::of(&header.inner),
            pending: false,
        }
    }

    /// Where its state is read: at its hash, or at `pending`.
    pub fn id(&self) -> alloy::eips::BlockId {
        if self.pending {
            alloy::eips::BlockId::pending()
        } else {
            alloy::eips::BlockId::hash(self.hash)
        }
    }
}

/// A block's gas figures, as its header gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockGas {
    /// Base fee per gas (wei).
    pub base_fee_per_gas: u64,
    /// Gas used.
    pub gas_used: u64,
    /// Gas limit.
    pub gas_limit: u64,
}

impl BlockGas {
    /// From a header: `None` before London (no base fee).
    pub fn of(header: &impl alloy::consensus::BlockHeader) -> Option<Self> {
        Some(Self {
            base_fee_per_gas: header.base_fee_per_gas()?,
            gas_used: header.gas_used(),
            gas_limit: header.gas_limit(),
        })
    }

    /// The base fee of the block after this one (EIP-1559).
    pub fn next_base_fee(&self) -> u128 {
        crate::planner::fees::eip1559::next_base_fee(
            u128::from(self.base_fee_per_gas),
            self.gas_used,
            self.gas_limit,
        )
    }
}

/// What changed market-wide at a block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarketChange {
    /// Reserves (by id) whose price, configuration or eMode changed: their holders are re-priced.
    pub reserves: Vec<u16>,
    /// Reserves (by id) whose borrow rate rose: their holders' [`Health::recheck_at`] assumed a lower
    /// rate, and they are re-priced.
    pub rates_rose: Vec<u16>,
    /// Everything changed (first read, a new reserve, a new oracle): re-price everyone.
    pub all: bool,
}

impl MarketChange {
    /// Adds what `later` changed: the two reads' changes together, as one read would have seen them.
    pub fn merge(&mut self, later: MarketChange) {
        for (ours, theirs) in [
            (&mut self.reserves, later.reserves),
            (&mut self.rates_rose, later.rates_rose),
        ] {
            ours.extend(theirs);
            ours.sort_unstable();
            ours.dedup();
        }
        self.all |= later.all;
    }
}

/// Health figures of one position, in the protocol's base currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health {
    /// Collateral value.
    pub collateral_base: U256,
    /// Debt value.
    pub debt_base: U256,
    /// Health factor (WAD; `U256::MAX` with no debt).
    pub health_factor: U256,
    /// The first block timestamp at which interest alone, at the borrow rates of the block these
    /// figures are from, could bring the position below 1. Until then only a price, a reserve's
    /// parameters, a higher borrow rate or the position's own events can, and each of those has the
    /// watcher re-price it; 0 for a position below 1 already (re-priced every block), `u64::MAX` for
    /// one that owes nothing.
    pub recheck_at: u64,
}

/// A liquidation on the market, by anyone: what the keeper measures itself against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarketLiquidation {
    /// The borrower liquidated.
    pub user: Address,
    /// Who liquidated (the address that called the Pool: a contract like ours, or an account).
    pub liquidator: Address,
    /// Collateral seized.
    pub collateral: Address,
    /// Debt repaid.
    pub debt: Address,
    /// Debt repaid (debt asset units).
    pub debt_repaid: U256,
    /// Collateral seized (collateral asset units).
    pub collateral_seized: U256,
    /// The block it was in.
    pub block: u64,
    /// The transaction.
    pub tx: Option<B256>,
}

/// A lending protocol as the watcher sees it.
pub trait LendingProtocol: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// The addresses and event topics whose logs discover and update borrowers.
    fn log_filter(&self) -> (Vec<Address>, Vec<B256>);

    /// The users a log touches (appended to `out`).
    fn touched_users(&self, log: &Log, out: &mut Vec<Address>);

    /// The liquidation a log records, if it is one.
    fn liquidation(&self, log: &Log) -> Option<MarketLiquidation>;

    /// Reads market-wide state (reserves, indexes, prices) at `block`, in one batched call, and says
    /// what changed since the last read. All or nothing: a read that fails leaves the state as it was,
    /// so what changed is reported by the next read that succeeds.
    fn refresh_market(
        &mut self,
        rpc: &Rpc,
        block: BlockRef,
    ) -> impl Future<Output = Result<MarketChange, ChainError>> + Send;

    /// Reads `users`' positions at `block`; `None` for a user with nothing supplied or borrowed.
    fn load_users(
        &self,
        rpc: &Rpc,
        users: &[Address],
        block: BlockRef,
    ) -> impl Future<Output = Result<Vec<Option<StoredPosition>>, ChainError>> + Send;

    /// Health of a stored position at the market state last refreshed.
    fn health(&self, position: &StoredPosition) -> Health;

    /// Whether a change to any of `reserves` (ids: a price, a configuration) changes this position's
    /// health.
    fn moved_by(&self, position: &StoredPosition, reserves: &[u16]) -> bool;

    /// The chain's own health factor for `users` at `block` (WAD), to verify before acting.
    fn onchain_health(
        &self,
        rpc: &Rpc,
        users: &[Address],
        block: BlockRef,
    ) -> impl Future<Output = Result<Vec<Option<U256>>, ChainError>> + Send;
}
