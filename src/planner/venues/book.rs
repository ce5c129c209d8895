//! The venues the planner sells on, kept current across blocks at the cost of one batched read.
//!
//! A pool's identity never changes and its initialized ticks change only when liquidity is added or
//! removed, so reading a pair's venues from nothing every block (the factory, each pool's tokens, fee
//! and spacing, hundreds of bitmap words, every initialized tick: dozens of round trips for a 0.05%
//! pool) spends the first tens of milliseconds after a price move on what was already known. The book
//! instead keeps:
//!
//! - which pools and pairs exist for a token pair, found once (asked again after
//!   [`REDISCOVER_AFTER_BLOCKS`], for pools created since);
//! - each V3 pool's ticks, read again only after a `Mint` or `Burn` in the pool, when the price
//!   drifted towards the edge of the words read, after a reorg, or once they are
//!   [`TICKS_MAX_AGE_BLOCKS`] old;
//!
//! and per block reads only what swaps move: `slot0` and `liquidity` of each V3 pool and the reserves of
//! each V2 pair, in one `aggregate3`, side by side with one `eth_getLogs` for `Mint`/`Burn` since the
//! ticks were read. Concurrent plans at the same block share that read.

use super::{
    Venue,
    uniswap_v2::{PairState, UniswapV2Factory, UniswapV2Pair},
    uniswap_v3::{self, PoolKey, PoolState, TickMap},
};
use crate::{
    chain::{ChainError, Rpc, bindings::UniswapV3Factory, multicall},
    protocol::BlockRef,
};
use alloy::{
    eips::BlockId,
    primitives::{Address, U256, aliases::U24},
    providers::Provider,
    rpc::types::Filter,
    sol,
    sol_types::{SolCall, SolEvent},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::sync::OnceCell;

sol! {
    /// `UniswapV3Pool`'s liquidity events: the only ones that change its ticks.
    event Mint(address sender, address indexed owner, int24 indexed tickLower, int24 indexed tickUpper, uint128 amount, uint256 amount0, uint256 amount1);
    /// See [`Mint`].
    event Burn(address indexed owner, int24 indexed tickLower, int24 indexed tickUpper, uint128 amount, uint256 amount0, uint256 amount1);
}

/// Pairs with no pool on some venue are asked about again after this many blocks (pools are created
/// rarely; about a day of 12-second blocks).
pub const REDISCOVER_AFTER_BLOCKS: u64 = 7_200;
/// Ticks are read again after this many blocks however quiet the pool: a bound on what a missed event
/// (a reorg the keeper did not see) can cost.
pub const TICKS_MAX_AGE_BLOCKS: u64 = 300;

/// Where the book finds pools.
#[derive(Debug, Clone)]
pub struct BookSettings {
    /// Multicall3.
    pub multicall: Address,
    /// Uniswap V3 factory.
    pub v3_factory: Address,
    /// V3 fee tiers to look at, in hundredths of a bip.
    pub fee_tiers: Vec<u32>,
    /// Uniswap V2 factory, where V2 pairs are a venue too.
    pub v2_factory: Option<Address>,
}

/// A venue's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    V3(PoolKey),
    V2 {
        address: Address,
        token0: Address,
        token1: Address,
    },
}

/// The venues of a token pair, as found at a block.
#[derive(Debug, Clone)]
struct Discovered {
    block: u64,
    venues: Vec<Known>,
}

/// A pool's ticks and the block they were read at.
#[derive(Debug, Clone)]
struct Ticks {
    block: u64,
    map: Arc<TickMap>,
}

type PairKey = (Address, Address);
type Shared<T> = Arc<OnceCell<T>>;
type AtBlock = HashMap<PairKey, Shared<Vec<Venue>>>;

/// See the module docs.
pub struct VenueBook {
    rpc: Rpc,
    settings: BookSettings,
    discovered: Mutex<HashMap<PairKey, Shared<Discovered>>>,
    ticks: Mutex<HashMap<Address, Ticks>>,
    /// Venues at one block (its number), by pair: plans made at the same block share one read.
    at_block: Mutex<(u64, AtBlock)>,
    /// The venues our liquidations sent at one block (its number) sell on, as those sales will leave
    /// them: one account's transactions are mined in nonce order, so a later liquidation of the same
    /// block sells into the pool after the earlier ones.
    pending: Mutex<(u64, HashMap<Address, Venue>)>,
}

/// A sale checked against the venue as this block's earlier sales leave it.
#[derive(Debug, Clone)]
pub enum SaleCheck {
    /// The book does not hold the venue at that block: nothing known to compare with.
    Unknown,
    /// What it returns, and the venue after it.
    Fills(U256, Venue),
    /// The venue can no longer take all of it.
    CannotFill,
}

impl SaleCheck {
    /// Selling `amount` of `token_in` on `venue` as it stands.
    pub fn on(venue: &Venue, token_in: Address, amount: U256) -> Self {
        match venue.after_sale(token_in, amount) {
            Some((out, after)) => Self::Fills(out, after),
            None => Self::CannotFill,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A token pair in one order whichever side is which, to count it once.
pub(crate) fn pair_key(a: Address, b: Address) -> PairKey {
    (a.min(b), a.max(b))
}

fn call_failed(what: String, e: multicall::CallFailure) -> ChainError {
    ChainError::rpc(
        what,
        alloy::transports::RpcError::LocalUsageError(Box::new(e)),
    )
}

impl VenueBook {
    /// An empty book.
    pub fn new(rpc: Rpc, settings: BookSettings) -> Self {
        Self {
            rpc,
            settings,
            discovered: Mutex::default(),
            ticks: Mutex::default(),
            at_block: Mutex::new((u64::MAX, HashMap::new())),
            pending: Mutex::new((u64::MAX, HashMap::new())),
        }
    }

    /// Selling `amount` of `token_in` on `venue` at block `block`, after this block's sales already
    /// recorded.
    pub fn check_sale(
        &self,
        block: u64,
        venue: Address,
        token_in: Address,
        amount: U256,
    ) -> SaleCheck {
        let current = {
            let pending = lock(&self.pending);
            (pending.0 == block)
                .then(|| pending.1.get(&venue).cloned())
                .flatten()
        };
        let current = current.or_else(|| {
            let at = lock(&self.at_block);
            (at.0 == block)
                .then(|| {
                    at.1.values()
                        .filter_map(|cell| cell.get())
                        .flat_map(|venues| venues.iter())
                        .find(|v| v.address() == venue)
                        .cloned()
                })
                .flatten()
        });
        current.map_or(SaleCheck::Unknown, |v| SaleCheck::on(&v, token_in, amount))
    }

    /// Records a sale sent at block `block`: the venue as it leaves it.
    pub fn record_sale(&self, block: u64, after: Venue) {
        let mut pending = lock(&self.pending);
        if pending.0 != block {
            *pending = (block, HashMap::new());
        }
        pending.1.insert(after.address(), after);
    }

    /// `venues` as the sales counted at `block` leave them.
    pub fn after_sales(&self, block: u64, venues: Vec<Venue>) -> Vec<Venue> {
        let pending = lock(&self.pending);
        if pending.0 != block {
            return venues;
        }
        venues
            .into_iter()
            .map(|v| pending.1.get(&v.address()).cloned().unwrap_or(v))
            .collect()
    }

    /// Forgets every pool's ticks and this block's state: after a reorg, a `Mint` or `Burn` the book
    /// saw may be gone, and a block number may now name another block.
    pub fn forget_block_state(&self) {
        lock(&self.ticks).clear();
        *lock(&self.at_block) = (u64::MAX, HashMap::new());
        *lock(&self.pending) = (u64::MAX, HashMap::new());
    }

    /// The venues between `a` and `b` at `block`, read once per block however many plans ask.
    pub async fn venues(
        &self,
        a: Address,
        b: Address,
        block: BlockRef,
    ) -> Result<Vec<Venue>, ChainError> {
        let key = pair_key(a, b);
        let cell = self.cells_at(block, [key]).remove(0);
        let mut venues = cell
            .get_or_try_init(|| self.read(key, block))
            .await?
            .clone();
        // Plans made after some of this block's liquidations were sent price against the pools as
        // those leave them.
        let pending = lock(&self.pending);
        if pending.0 == block.number {
            for v in &mut venues {
                if let Some(after) = pending.1.get(&v.address()) {
                    *v = after.clone();
                }
            }
        }
        Ok(venues)
    }

    /// Whether the book knows the pair's venues and holds ticks for its pools that stay good for a
    /// while after block `block`.
    pub fn is_warm(&self, a: Address, b: Address, block: u64) -> bool {
        let known = lock(&self.discovered)
            .get(&pair_key(a, b))
            .and_then(|c| c.get())
            .map(|d| d.venues.clone());
        let Some(known) = known else {
            return false;
        };
        let ticks = lock(&self.ticks);
        known.iter().all(|k| match k {
            Known::V3(pool) => ticks
                .get(&pool.address)
                .is_some_and(|t| block.saturating_sub(t.block) < TICKS_MAX_AGE_BLOCKS / 2),
            Known::V2 { .. } => true,
        })
    }

    /// The venues between `a` and `b` at the latest block, read from nothing (for one-off plans).
    pub async fn venues_latest(&self, a: Address, b: Address) -> Result<Vec<Venue>, ChainError> {
        let found = self.discover(pair_key(a, b), BlockId::latest()).await?;
        let mut out = Vec::new();
        for known in found {
            out.push(match known {
                Known::V3(key) => Venue::V3(
                    uniswap_v3::load_pool(
                        &self.rpc,
                        self.settings.multicall,
                        key.address,
                        BlockId::latest(),
                    )
                    .await?,
                ),
                Known::V2 { address, .. } => Venue::V2(
                    super::uniswap_v2::load_pair(&self.rpc, address, BlockId::latest()).await?,
                ),
            });
        }
        Ok(out)
    }

    async fn read(&self, key: PairKey, block: BlockRef) -> Result<Vec<Venue>, ChainError> {
        Ok(self
            .read_many(&[key], block)
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// Each pair's cell for its venues at `block`, read once however many plans ask (the cells of an
    /// earlier block are dropped).
    fn cells_at(
        &self,
        block: BlockRef,
        keys: impl IntoIterator<Item = PairKey>,
    ) -> Vec<Shared<Vec<Venue>>> {
        let mut at = lock(&self.at_block);
        if at.0 != block.number {
            *at = (block.number, HashMap::new());
        }
        keys.into_iter()
            .map(|k| at.1.entry(k).or_default().clone())
            .collect()
    }

    /// Reads, in one batch, the venues at `block` of every pair in `pairs` the book has not read at
    /// that block yet: the pairs of a block's plans, read before they are sized, so that a cascade's
    /// first block costs one `aggregate3` and one `eth_getLogs` for all its pools instead of a pair
    /// of requests per token pair, racing each other while the node is needed for simulations.
    pub async fn read_pairs(
        &self,
        pairs: &[(Address, Address)],
        block: BlockRef,
    ) -> Result<(), ChainError> {
        let mut keys: Vec<PairKey> = pairs.iter().map(|&(a, b)| pair_key(a, b)).collect();
        keys.sort_unstable();
        keys.dedup();
        let cells: Vec<(PairKey, Shared<Vec<Venue>>)> = keys
            .iter()
            .copied()
            .zip(self.cells_at(block, keys.iter().copied()))
            .filter(|(_, cell)| !cell.initialized())
            .collect();
        if cells.is_empty() {
            return Ok(());
        }
        let keys: Vec<PairKey> = cells.iter().map(|(k, _)| *k).collect();
        let read = self.read_many(&keys, block).await?;
        for ((_, cell), venues) in cells.into_iter().zip(read) {
            // A plan that asked meanwhile read it itself: the same state.
            let _ = cell.set(venues);
        }
        Ok(())
    }

    /// The venues of each of `keys` at `block`, in order: one `aggregate3` for every pool's price and
    /// liquidity and every pair's reserves, side by side with one `eth_getLogs` for the liquidity
    /// events since their ticks were read.
    async fn read_many(
        &self,
        keys: &[PairKey],
        block: BlockRef,
    ) -> Result<Vec<Vec<Venue>>, ChainError> {
        let known: Vec<Vec<Known>> =
            futures::future::try_join_all(keys.iter().map(|&key| self.known(key, block))).await?;
        let all: Vec<Known> = known.iter().flatten().copied().collect();
        if all.is_empty() {
            return Ok(vec![Vec::new(); keys.len()]);
        }
        let at = BlockId::hash(block.hash);
        // Prices and reserves, and the liquidity events since the ticks were read, side by side.
        let mut calls = Vec::new();
        for k in &all {
            match k {
                Known::V3(pool) => calls.extend(uniswap_v3::state_calls(pool.address)),
                Known::V2 { address, .. } => {
                    calls.push((*address, UniswapV2Pair::getReservesCall {}.abi_encode()))
                }
            }
        }
        let state = multicall::aggregate3_raw(
            &self.rpc,
            self.settings.multicall,
            calls,
            at,
            multicall::BATCH,
        );
        let (state, touched) = tokio::try_join!(state, self.liquidity_events(&all, block))?;

        let mut venues = Vec::with_capacity(all.len());
        let mut results = state.as_slice();
        for k in all {
            match k {
                Known::V3(pool) => {
                    let (mine, rest) = results.split_at(2);
                    results = rest;
                    let slot = uniswap_v3::decode_state(pool.address, mine)?;
                    let ticks = self
                        .ticks_for(&pool, slot.1, block, touched.contains(&pool.address))
                        .await?;
                    venues.push(Venue::V3(PoolState::new(&pool, slot, ticks)));
                }
                Known::V2 {
                    address,
                    token0,
                    token1,
                } => {
                    let (mine, rest) = results.split_at(1);
                    results = rest;
                    let r = multicall::decode::<UniswapV2Pair::getReservesCall>(&mine[0])
                        .map_err(|e| call_failed(format!("getReserves of pair {address}"), e))?;
                    venues.push(Venue::V2(PairState {
                        address,
                        token0,
                        token1,
                        reserve0: U256::from(r.reserve0),
                        reserve1: U256::from(r.reserve1),
                    }));
                }
            }
        }
        let mut venues = venues.into_iter();
        Ok(known
            .iter()
            .map(|k| venues.by_ref().take(k.len()).collect())
            .collect())
    }

    /// The V3 pools among `known` with ticks in the book that emitted `Mint` or `Burn` after their
    /// ticks were read, up to `block`. No request when no pool has ticks older than `block`.
    async fn liquidity_events(
        &self,
        known: &[Known],
        block: BlockRef,
    ) -> Result<Vec<Address>, ChainError> {
        let since: Vec<(Address, u64)> = {
            let ticks = lock(&self.ticks);
            known
                .iter()
                .filter_map(|k| match k {
                    Known::V3(pool) => ticks
                        .get(&pool.address)
                        .filter(|t| t.block < block.number)
                        .map(|t| (pool.address, t.block)),
                    Known::V2 { .. } => None,
                })
                .collect()
        };
        let Some(from) = since.iter().map(|(_, b)| b + 1).min() else {
            return Ok(Vec::new());
        };
        let filter = Filter::new()
            .address(since.iter().map(|(a, _)| *a).collect::<Vec<_>>())
            .event_signature(vec![Mint::SIGNATURE_HASH, Burn::SIGNATURE_HASH])
            .from_block(from)
            .to_block(block.number);
        let logs = self
            .rpc
            .get_logs(&filter)
            .await
            .map_err(|e| ChainError::rpc("eth_getLogs (pool Mint/Burn)", e))?;
        Ok(since
            .into_iter()
            .filter(|(pool, read_at)| {
                logs.iter()
                    .any(|l| l.address() == *pool && l.block_number.is_none_or(|n| n > *read_at))
            })
            .map(|(pool, _)| pool)
            .collect())
    }

    /// The pool's ticks: the book's, unless they may have changed or no longer cover the price.
    async fn ticks_for(
        &self,
        pool: &PoolKey,
        tick: i32,
        block: BlockRef,
        touched: bool,
    ) -> Result<Arc<TickMap>, ChainError> {
        let kept = lock(&self.ticks).get(&pool.address).cloned();
        if let Some(t) = kept
            && !touched
            && block.number.saturating_sub(t.block) < TICKS_MAX_AGE_BLOCKS
            && t.block <= block.number
            && t.map.covers(tick, pool.tick_spacing)
        {
            return Ok(t.map);
        }
        let map = Arc::new(
            uniswap_v3::read_ticks(
                &self.rpc,
                self.settings.multicall,
                pool,
                tick,
                BlockId::hash(block.hash),
            )
            .await?,
        );
        lock(&self.ticks).insert(
            pool.address,
            Ticks {
                block: block.number,
                map: Arc::clone(&map),
            },
        );
        Ok(map)
    }

    /// The pair's venues, found once and asked again now and then.
    async fn known(&self, key: PairKey, block: BlockRef) -> Result<Vec<Known>, ChainError> {
        let cell = {
            let mut found = lock(&self.discovered);
            let stale = found
                .get(&key)
                .and_then(|c| c.get())
                .is_some_and(|d| block.number.saturating_sub(d.block) >= REDISCOVER_AFTER_BLOCKS);
            if stale {
                found.remove(&key);
            }
            found.entry(key).or_default().clone()
        };
        let d = cell
            .get_or_try_init(|| async {
                Ok::<_, ChainError>(Discovered {
                    block: block.number,
                    venues: self.discover(key, BlockId::hash(block.hash)).await?,
                })
            })
            .await?;
        Ok(d.venues.clone())
    }

    /// Asks the factories which pools exist for the pair, then reads each one's identity: two batched
    /// reads.
    async fn discover(&self, (a, b): PairKey, at: BlockId) -> Result<Vec<Known>, ChainError> {
        let s = &self.settings;
        let mut calls = Vec::new();
        if let Some(factory) = s.v2_factory {
            calls.push((
                factory,
                UniswapV2Factory::getPairCall {
                    tokenA: a,
                    tokenB: b,
                }
                .abi_encode(),
            ));
        }
        let tiers: Vec<u32> = s
            .fee_tiers
            .iter()
            .copied()
            .filter(|&f| U24::try_from(f).is_ok())
            .collect();
        for &fee in &tiers {
            calls.push((
                s.v3_factory,
                UniswapV3Factory::getPoolCall {
                    tokenA: a,
                    tokenB: b,
                    fee: U24::from(fee),
                }
                .abi_encode(),
            ));
        }
        let found =
            multicall::aggregate3_raw(&self.rpc, s.multicall, calls, at, multicall::BATCH).await?;
        let mut found = found.iter();
        let v2 = match s.v2_factory {
            Some(_) => {
                let pair = multicall::decode::<UniswapV2Factory::getPairCall>(
                    found.next().expect("one result per call"),
                )
                .map_err(|e| call_failed("UniswapV2Factory.getPair".into(), e))?;
                (!pair.is_zero()).then_some(pair)
            }
            None => None,
        };
        let mut v3 = Vec::new();
        for r in found {
            let pool = multicall::decode::<UniswapV3Factory::getPoolCall>(r)
                .map_err(|e| call_failed("UniswapV3Factory.getPool".into(), e))?;
            if !pool.is_zero() {
                v3.push(pool);
            }
        }

        // Identities: tokens of the V2 pair; tokens, fee and spacing of each V3 pool.
        let mut calls = Vec::new();
        if let Some(pair) = v2 {
            calls.push((pair, UniswapV2Pair::token0Call {}.abi_encode()));
            calls.push((pair, UniswapV2Pair::token1Call {}.abi_encode()));
        }
        for &pool in &v3 {
            calls.extend(uniswap_v3::key_calls(pool));
        }
        let r =
            multicall::aggregate3_raw(&self.rpc, s.multicall, calls, at, multicall::BATCH).await?;
        let mut out = Vec::new();
        let mut rest = r.as_slice();
        if let Some(pair) = v2 {
            let (mine, tail) = rest.split_at(2);
            rest = tail;
            let token = |i: usize| {
                multicall::decode::<UniswapV2Pair::token0Call>(&mine[i])
                    .map_err(|e| call_failed(format!("tokens of pair {pair}"), e))
            };
            out.push(Known::V2 {
                address: pair,
                token0: token(0)?,
                token1: token(1)?,
            });
        }
        for pool in v3 {
            let (mine, tail) = rest.split_at(4);
            rest = tail;
            out.push(Known::V3(uniswap_v3::decode_key(pool, mine)?));
        }
        Ok(out)
    }
}
