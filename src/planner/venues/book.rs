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
//! - what swaps move (`slot0` and `liquidity` of each V3 pool, the reserves of each V2 pair), read once
//!   in one `aggregate3` (side by side with one `eth_getLogs` for `Mint`/`Burn` since the ticks were
//!   read) and from then on **followed** block by block from the venue's own events: `Swap` carries a
//!   pool's price, tick and in-range liquidity after it, `Sync` a pair's reserves, and a `Mint` or
//!   `Burn` around the price moves the liquidity by its amount. The events come in the watcher's
//!   `eth_getLogs` of each block ([`crate::watcher::tap`]), so the block of a price move reads no
//!   venue the book follows: its plans are sized as soon as the watcher is done. A venue whose events
//!   for a block the book did not get (a gap, a reorg) is read again when a plan needs it.
//!
//! Concurrent plans at the same block share one read.

use super::{
    Venue,
    uniswap_v2::{PairState, UniswapV2Factory, UniswapV2Pair, UniswapV2Pair::Sync},
    uniswap_v3::{self, PoolKey, PoolState, TickMap},
};
use crate::{
    chain::{
        ChainError, Rpc,
        bindings::{UniswapV3Factory, UniswapV3Pool::Swap},
        multicall,
    },
    protocol::BlockRef,
    watcher::tap::{LogTap, TappedLogs},
};
use alloy::{
    eips::BlockId,
    primitives::{Address, U256, aliases::U24},
    providers::Provider,
    rpc::types::{Filter, Log},
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

/// What swaps move in a venue: a V3 pool's price, tick and in-range liquidity, a V2 pair's reserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moving {
    V3 {
        sqrt_price: U256,
        tick: i32,
        liquidity: u128,
    },
    V2 {
        reserve0: U256,
        reserve1: U256,
    },
}

/// A venue's [`Moving`] state as of a block, followed from its events since it was read.
#[derive(Debug, Clone, Copy)]
struct Followed {
    block: u64,
    state: Moving,
}

/// A V3 `Mint` or `Burn`: the position's tick range, its liquidity, and whether it was added.
fn position_change(log: &Log) -> Option<(std::ops::Range<i32>, u128, bool)> {
    if log.topic0() == Some(&Mint::SIGNATURE_HASH) {
        let m = Mint::decode_log_data(log.data()).ok()?;
        Some((m.tickLower.as_i32()..m.tickUpper.as_i32(), m.amount, true))
    } else {
        let b = Burn::decode_log_data(log.data()).ok()?;
        Some((b.tickLower.as_i32()..b.tickUpper.as_i32(), b.amount, false))
    }
}

impl Followed {
    /// Applies one of the venue's logs. `false` when the log does not decode or would take the
    /// in-range liquidity below zero or past `u128`: the state is no longer known.
    fn apply(&mut self, log: &Log, ticks_changed: &mut bool) -> bool {
        let Some(topic) = log.topic0() else {
            return true;
        };
        match (&mut self.state, *topic) {
            (
                Moving::V3 {
                    sqrt_price,
                    tick,
                    liquidity,
                },
                Swap::SIGNATURE_HASH,
            ) => match Swap::decode_log_data(log.data()) {
                Ok(swap) => {
                    *sqrt_price = U256::from(swap.sqrtPriceX96);
                    *tick = swap.tick.as_i32();
                    *liquidity = swap.liquidity;
                    true
                }
                Err(_) => false,
            },
            (
                Moving::V3 {
                    tick, liquidity, ..
                },
                Mint::SIGNATURE_HASH | Burn::SIGNATURE_HASH,
            ) => {
                *ticks_changed = true;
                let Some((range, amount, added)) = position_change(log) else {
                    return false;
                };
                // Liquidity added or removed around the price is in range at once
                // (`UniswapV3Pool._modifyPosition`); elsewhere it only changes the ticks.
                if !range.contains(tick) {
                    return true;
                }
                let after = if added {
                    liquidity.checked_add(amount)
                } else {
                    liquidity.checked_sub(amount)
                };
                if let Some(after) = after {
                    *liquidity = after;
                }
                after.is_some()
            }
            (Moving::V2 { reserve0, reserve1 }, Sync::SIGNATURE_HASH) => {
                match Sync::decode_log_data(log.data()) {
                    Ok(sync) => {
                        *reserve0 = U256::from(sync.reserve0);
                        *reserve1 = U256::from(sync.reserve1);
                        true
                    }
                    Err(_) => false,
                }
            }
            // Collect, Flash, the V2 pair's own Swap/Mint/Burn (its Sync follows each): no change.
            _ => true,
        }
    }
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

impl Known {
    fn address(&self) -> Address {
        match self {
            Self::V3(pool) => pool.address,
            Self::V2 { address, .. } => *address,
        }
    }
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
    /// Each venue read, kept current block by block from its events (see [`Self::follow_block`]):
    /// a venue followed to a block is not read at it.
    followed: Mutex<HashMap<Address, Followed>>,
    /// Where the watcher learns which venues' events to fetch with each block's.
    tap: LogTap,
    /// Counts [`Self::forget_block_state`]s: a read that started before one (on a chain since
    /// reorganised) is not followed.
    epoch: std::sync::atomic::AtomicU64,
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
            followed: Mutex::default(),
            tap: LogTap::new(vec![
                Swap::SIGNATURE_HASH,
                Sync::SIGNATURE_HASH,
                Mint::SIGNATURE_HASH,
                Burn::SIGNATURE_HASH,
            ]),
            epoch: Default::default(),
        }
    }

    /// A book for plans made on the pending block: the venues this one found and the ticks it holds,
    /// and nothing of any block's state, which is read at `pending` (the pending block's own `Mint`s
    /// and `Burn`s are not seen: the simulation there is what counts). Nothing in it is followed.
    pub fn copy_for_pending(&self) -> Self {
        let copy = Self::new(self.rpc.clone(), self.settings.clone());
        *lock(&copy.discovered) = lock(&self.discovered)
            .iter()
            .filter_map(|(key, cell)| {
                let found = cell.get()?;
                let venues = Discovered {
                    block: found.block,
                    venues: found.venues.clone(),
                };
                Some((*key, Arc::new(OnceCell::new_with(Some(venues)))))
            })
            .collect();
        *lock(&copy.ticks) = lock(&self.ticks).clone();
        copy
    }

    /// The tap to hand the watcher ([`crate::watcher::Watcher::tap_logs`]): the book sets its
    /// addresses, the venues it follows, and takes each block's logs in [`Self::follow_block`].
    pub fn log_tap(&self) -> LogTap {
        self.tap.clone()
    }

    /// Carries every venue followed to the block before `block` through `block`'s events (`tapped`:
    /// the watcher's logs of the venues it asked for). A venue that was not asked for, or whose state
    /// is older, or whose events do not apply, is forgotten: it is read again when a plan needs it.
    /// A `Mint` or `Burn` also drops the pool's ticks.
    pub fn follow_block(&self, block: u64, tapped: &TappedLogs) {
        let mut ticks_changed = Vec::new();
        let mut followed = lock(&self.followed);
        followed.retain(|address, f| {
            if f.block >= block {
                return true;
            }
            if f.block + 1 != block || tapped.addresses.binary_search(address).is_err() {
                return false;
            }
            let mut changed = false;
            for log in tapped.logs.iter().filter(|l| l.address() == *address) {
                if !f.apply(log, &mut changed) {
                    return false;
                }
            }
            if changed {
                ticks_changed.push(*address);
            }
            f.block = block;
            true
        });
        self.publish(&followed);
        drop(followed);
        let mut ticks = lock(&self.ticks);
        for pool in ticks_changed {
            ticks.remove(&pool);
        }
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Venues read at `block` by a read started in `epoch`, followed from it on unless one is
    /// followed to a later block already.
    fn follow_from(
        &self,
        epoch: u64,
        block: u64,
        states: impl IntoIterator<Item = (Address, Moving)>,
    ) {
        let mut followed = lock(&self.followed);
        if self.epoch() != epoch {
            return;
        }
        for (address, state) in states {
            if followed.get(&address).is_none_or(|f| f.block < block) {
                followed.insert(address, Followed { block, state });
            }
        }
        self.publish(&followed);
    }

    fn publish(&self, followed: &HashMap<Address, Followed>) {
        self.tap.set_addresses(followed.keys().copied().collect());
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
        let mut followed = lock(&self.followed);
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        followed.clear();
        self.tap.set_addresses(Vec::new());
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

    /// The venues of each of `keys` at `block`, in order. Those followed to `block` from their
    /// events cost nothing; the others are read: one `aggregate3` for every pool's price and
    /// liquidity and every pair's reserves, side by side with one `eth_getLogs` for the liquidity
    /// events since their ticks were read. Each read is followed from then on.
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
        let epoch = self.epoch();
        let mut states: HashMap<Address, Moving> = {
            let followed = lock(&self.followed);
            all.iter()
                .filter_map(|k| {
                    let address = k.address();
                    let f = followed.get(&address).filter(|f| f.block == block.number)?;
                    Some((address, f.state))
                })
                .collect()
        };
        let unread: Vec<Known> = all
            .iter()
            .filter(|k| !states.contains_key(&k.address()))
            .copied()
            .collect();
        // Prices and reserves of the venues not followed, and the liquidity events since their
        // ticks were read, side by side. (A followed pool's `Mint` or `Burn` dropped its ticks.)
        let touched = if unread.is_empty() {
            Vec::new()
        } else {
            let read = self.read_moving(&unread, block);
            let (read, touched) = tokio::try_join!(read, self.liquidity_events(&unread, block))?;
            self.follow_from(epoch, block.number, read.iter().copied());
            states.extend(read);
            touched
        };

        let mut venues = Vec::with_capacity(all.len());
        for k in all {
            let state = states[&k.address()];
            venues.push(match (k, state) {
                (
                    Known::V3(pool),
                    Moving::V3 {
                        sqrt_price,
                        tick,
                        liquidity,
                    },
                ) => {
                    let ticks = self
                        .ticks_for(&pool, tick, block, touched.contains(&pool.address))
                        .await?;
                    Venue::V3(PoolState::new(&pool, (sqrt_price, tick, liquidity), ticks))
                }
                (
                    Known::V2 {
                        address,
                        token0,
                        token1,
                    },
                    Moving::V2 { reserve0, reserve1 },
                ) => Venue::V2(PairState {
                    address,
                    token0,
                    token1,
                    reserve0,
                    reserve1,
                }),
                _ => unreachable!("a venue's state is of its own kind"),
            });
        }
        let mut venues = venues.into_iter();
        Ok(known
            .iter()
            .map(|k| venues.by_ref().take(k.len()).collect())
            .collect())
    }

    /// Each venue's [`Moving`] state at `block`, in one `aggregate3`.
    async fn read_moving(
        &self,
        venues: &[Known],
        block: BlockRef,
    ) -> Result<Vec<(Address, Moving)>, ChainError> {
        let mut calls = Vec::new();
        for k in venues {
            match k {
                Known::V3(pool) => calls.extend(uniswap_v3::state_calls(pool.address)),
                Known::V2 { address, .. } => {
                    calls.push((*address, UniswapV2Pair::getReservesCall {}.abi_encode()))
                }
            }
        }
        let results = multicall::aggregate3_raw(
            &self.rpc,
            self.settings.multicall,
            calls,
            block.id(),
            multicall::BATCH,
        )
        .await?;
        let mut results = results.as_slice();
        let mut out = Vec::with_capacity(venues.len());
        for k in venues {
            match k {
                Known::V3(pool) => {
                    let (mine, rest) = results.split_at(2);
                    results = rest;
                    let (sqrt_price, tick, liquidity) =
                        uniswap_v3::decode_state(pool.address, mine)?;
                    out.push((
                        pool.address,
                        Moving::V3 {
                            sqrt_price,
                            tick,
                            liquidity,
                        },
                    ));
                }
                Known::V2 { address, .. } => {
                    let (mine, rest) = results.split_at(1);
                    results = rest;
                    let r = multicall::decode::<UniswapV2Pair::getReservesCall>(&mine[0])
                        .map_err(|e| call_failed(format!("getReserves of pair {address}"), e))?;
                    out.push((
                        *address,
                        Moving::V2 {
                            reserve0: U256::from(r.reserve0),
                            reserve1: U256::from(r.reserve1),
                        },
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The V3 pools among `known` with ticks in the book that emitted `Mint` or `Burn` after their
    /// ticks were read, up to `block`. No request when no pool has ticks older than `block`.
    async fn liquidity_events(
        &self,
        known: &[Known],
        block: BlockRef,
    ) -> Result<Vec<Address>, ChainError> {
        // The pending block's logs cannot be asked for: up to the block before it.
        let to = block.number - u64::from(block.pending);
        let since: Vec<(Address, u64)> = {
            let ticks = lock(&self.ticks);
            known
                .iter()
                .filter_map(|k| match k {
                    Known::V3(pool) => ticks
                        .get(&pool.address)
                        .filter(|t| t.block < to)
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
            .to_block(to);
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
            uniswap_v3::read_ticks(&self.rpc, self.settings.multicall, pool, tick, block.id())
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
                    venues: self.discover(key, block.id()).await?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::aliases::{I24, U160};

    const POOL: Address = Address::repeat_byte(0x11);
    const PAIR: Address = Address::repeat_byte(0x22);

    fn log(address: Address, event: &impl SolEvent) -> Log {
        Log {
            inner: alloy::primitives::Log {
                address,
                data: event.encode_log_data(),
            },
            ..Default::default()
        }
    }

    fn swap(sqrt_price: u64, liquidity: u128, tick: i32) -> Swap {
        Swap {
            sender: Address::ZERO,
            recipient: Address::ZERO,
            amount0: Default::default(),
            amount1: Default::default(),
            sqrtPriceX96: U160::from(sqrt_price),
            liquidity,
            tick: I24::try_from(tick).unwrap(),
        }
    }

    fn mint(lower: i32, upper: i32, amount: u128) -> Mint {
        Mint {
            sender: Address::ZERO,
            owner: Address::ZERO,
            tickLower: I24::try_from(lower).unwrap(),
            tickUpper: I24::try_from(upper).unwrap(),
            amount,
            amount0: U256::ZERO,
            amount1: U256::ZERO,
        }
    }

    fn burn(lower: i32, upper: i32, amount: u128) -> Burn {
        Burn {
            owner: Address::ZERO,
            tickLower: I24::try_from(lower).unwrap(),
            tickUpper: I24::try_from(upper).unwrap(),
            amount,
            amount0: U256::ZERO,
            amount1: U256::ZERO,
        }
    }

    fn pool_at(block: u64) -> Followed {
        Followed {
            block,
            state: Moving::V3 {
                sqrt_price: U256::from(1_000u64),
                tick: 100,
                liquidity: 5_000,
            },
        }
    }

    fn book() -> VenueBook {
        VenueBook::new(
            crate::chain::connect_http("http://127.0.0.1:9").unwrap(),
            BookSettings {
                multicall: Address::ZERO,
                v3_factory: Address::ZERO,
                fee_tiers: vec![500],
                v2_factory: None,
            },
        )
    }

    #[test]
    fn a_swap_sets_the_pools_price_tick_and_liquidity_and_keeps_its_ticks() {
        let mut f = pool_at(7);
        let mut ticks_changed = false;
        assert!(f.apply(&log(POOL, &swap(2_000, 4_000, 90)), &mut ticks_changed));
        assert_eq!(
            f.state,
            Moving::V3 {
                sqrt_price: U256::from(2_000u64),
                tick: 90,
                liquidity: 4_000
            }
        );
        assert!(!ticks_changed);
    }

    #[test]
    fn liquidity_added_or_removed_around_the_price_moves_the_in_range_liquidity_only() {
        let liquidity = |f: &Followed| match f.state {
            Moving::V3 { liquidity, .. } => liquidity,
            Moving::V2 { .. } => unreachable!(),
        };
        let mut f = pool_at(7);
        let mut ticks_changed = false;
        // Around tick 100 (the upper tick is outside the range: [lower, upper)).
        assert!(f.apply(&log(POOL, &mint(60, 120, 300)), &mut ticks_changed));
        assert_eq!(liquidity(&f), 5_300);
        assert!(ticks_changed, "a Mint changes the ticks");
        assert!(f.apply(&log(POOL, &mint(0, 100, 300)), &mut ticks_changed));
        assert_eq!(liquidity(&f), 5_300, "the range ends below the price");
        assert!(f.apply(&log(POOL, &burn(100, 160, 1_000)), &mut ticks_changed));
        assert_eq!(liquidity(&f), 4_300);
        assert!(
            !f.apply(&log(POOL, &burn(0, 200, 10_000)), &mut ticks_changed),
            "more burnt than is in range: the state is not known"
        );
    }

    #[test]
    fn a_sync_sets_the_pairs_reserves() {
        let mut f = Followed {
            block: 3,
            state: Moving::V2 {
                reserve0: U256::from(1u8),
                reserve1: U256::from(2u8),
            },
        };
        let sync = Sync {
            reserve0: alloy::primitives::aliases::U112::from(10u8),
            reserve1: alloy::primitives::aliases::U112::from(20u8),
        };
        assert!(f.apply(&log(PAIR, &sync), &mut false));
        assert_eq!(
            f.state,
            Moving::V2 {
                reserve0: U256::from(10u8),
                reserve1: U256::from(20u8)
            }
        );
    }

    #[test]
    fn a_venue_is_followed_only_through_consecutive_blocks_it_was_asked_for() {
        let book = book();
        book.follow_from(0, 7, [(POOL, pool_at(7).state)]);
        book.follow_from(
            0,
            7,
            [(
                PAIR,
                Moving::V2 {
                    reserve0: U256::from(1u8),
                    reserve1: U256::from(1u8),
                },
            )],
        );
        let mut tapped_addresses = book.tap.filter().unwrap().0;
        assert_eq!(tapped_addresses, {
            let mut both = vec![POOL, PAIR];
            both.sort();
            both
        });
        // Block 8's logs were fetched for both; the pool swapped.
        book.follow_block(
            8,
            &TappedLogs {
                addresses: tapped_addresses.clone(),
                logs: vec![log(POOL, &swap(3_000, 5_000, 110))],
            },
        );
        let state = |a: Address| lock(&book.followed).get(&a).map(|f| (f.block, f.state));
        assert_eq!(state(POOL).unwrap().0, 8);
        assert_eq!(
            state(PAIR).unwrap().0,
            8,
            "no event: the same reserves at block 8"
        );
        // Block 9's were fetched for the pool only: the pair is forgotten, and no longer asked for.
        tapped_addresses.retain(|a| *a == POOL);
        book.follow_block(
            9,
            &TappedLogs {
                addresses: tapped_addresses,
                logs: Vec::new(),
            },
        );
        assert!(state(PAIR).is_none());
        assert_eq!(book.tap.filter().unwrap().0, vec![POOL]);
        // Block 11 after a gap: the pool's events of block 10 are missing.
        book.follow_block(
            11,
            &TappedLogs {
                addresses: vec![POOL],
                logs: Vec::new(),
            },
        );
        assert!(state(POOL).is_none());
        assert!(book.tap.filter().is_none());
        // A read at an older block does not replace a newer state.
        book.follow_from(0, 12, [(POOL, pool_at(12).state)]);
        book.follow_from(
            0,
            11,
            [(
                POOL,
                Moving::V3 {
                    sqrt_price: U256::ZERO,
                    tick: 0,
                    liquidity: 0,
                },
            )],
        );
        assert_eq!(state(POOL), Some((12, pool_at(12).state)));
        // A read that started before a reorg was handled is not followed.
        book.forget_block_state();
        book.follow_from(0, 13, [(POOL, pool_at(13).state)]);
        assert!(state(POOL).is_none());
    }
}
