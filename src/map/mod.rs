//! The cascade map: how far a price fall spreads. At each step of a fall of some assets, round by
//! round: the positions below 1 at those prices (the watcher's own health math), the liquidations
//! keepers would make of them (the planner's sizing: best pair, repay, venue, by the market's
//! release), their collateral sold in order into the venues they pick (the exact Uniswap V3 / V2
//! simulation, on a copy of the pools, so later sales see the prices earlier ones left), then the
//! oracle following its deepest pool by `pass_through` × its move, and the next round at the new
//! prices, until no one new falls or `max_rounds`. Nothing is sent; it reads one block.
//!
//! What public tools show is round 0 alone (positions re-priced at a lower price, summed); this adds
//! what the pools can absorb and what the forced sales do to the price. Simplifications, each a
//! choice a reader can change here: the fall first moves the fallen assets' pools to the new price
//! (the market moved, arbitrage follows, as the devnet's shocks do); within a round each position is
//! liquidated again while it stays below 1 and a liquidation of it pays (keepers do so block after
//! block at about the same prices); later rounds do not arbitrage the pools the sales moved.

mod output;
mod read;
mod step;

pub use output::{Observed, chart_svg, positions_csv, prediction_table, steps_csv, table};
pub use read::snapshot;
pub use step::{MapSale, simulate, simulate_step};

use crate::{
    planner::{SizingCosts, venues::Venue},
    protocol::aave_v3::AaveV3,
    store::StoredPosition,
};
use alloy::primitives::map::{AddressHashMap, HashMap};
use alloy::primitives::{Address, U256};
use serde::Serialize;
use std::collections::BTreeMap;

/// What to map.
#[derive(Debug, Clone)]
pub struct MapParams {
    /// The assets that fall together.
    pub assets: Vec<Address>,
    /// The deepest fall, bps (a positive number: 5,000 is −50%).
    pub to_bps: u32,
    /// The step, bps.
    pub step_bps: u32,
    /// How far the oracle follows its deepest pool, bps of that pool's move (10,000: fully; 0: not
    /// at all, and the map is round 0).
    pub pass_through_bps: u32,
    /// Rounds at most per step.
    pub max_rounds: u32,
}

/// The state a map starts from: one block's market, positions and venues.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The market at the block.
    pub market: AaveV3,
    /// Every position with debt.
    pub positions: Vec<(Address, StoredPosition)>,
    /// Every venue of every pair the positions can be liquidated on, by address.
    pub venues: AddressHashMap<Venue>,
    /// Venue addresses by (collateral, debt) pair, either order.
    pub venues_by_pair: HashMap<(Address, Address), Vec<Address>>,
    /// What gas costs a liquidation.
    pub costs: SizingCosts,
    /// Each position's health factor at the block, as a floor for the steps to lower (see
    /// `step::floor_of`), computed once for every step.
    health_floors: std::sync::OnceLock<Vec<Option<U256>>>,
}

impl Snapshot {
    /// The snapshot of `market`'s `positions` with their `venues` (by address, and by pair in
    /// either order) and gas at `costs`.
    pub fn new(
        market: AaveV3,
        positions: Vec<(Address, StoredPosition)>,
        venues: AddressHashMap<Venue>,
        venues_by_pair: HashMap<(Address, Address), Vec<Address>>,
        costs: SizingCosts,
    ) -> Self {
        Self {
            market,
            positions,
            venues,
            venues_by_pair,
            costs,
            health_floors: std::sync::OnceLock::new(),
        }
    }

    fn health_floors(&self) -> &[Option<U256>] {
        self.health_floors.get_or_init(|| {
            self.positions
                .iter()
                .map(|(_, p)| step::floor_of(&self.market.account_data(p)))
                .collect()
        })
    }

    /// The venues of the pair `a`–`b`.
    pub fn pair_venues(&self, a: Address, b: Address) -> &[Address] {
        self.venues_by_pair
            .get(&crate::planner::venues::book::pair_key(a, b))
            .map_or(&[], Vec::as_slice)
    }
}

/// A pool's part in a step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolFlow {
    /// The pool or pair.
    pub address: Address,
    /// Its token0.
    pub token0: Address,
    /// Its token1.
    pub token1: Address,
    /// token1 per token0 (whole tokens) once the fall moved it, before any forced sale.
    pub price_before: f64,
    /// The same after every round's sales.
    pub price_after: f64,
    /// √P (Q64.96) after the sales for a V3 pool; for a V2 pair, reserve0 and reserve1 after them:
    /// the exact state, to compare with a chain.
    pub state_after: Vec<U256>,
    /// Collateral sold into it, by token (raw units).
    pub sold: BTreeMap<Address, U256>,
    /// The same in USD at the step's prices.
    pub sold_usd: f64,
}

/// One step of the fall.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepResult {
    /// The fall, percent (−20 for a 20% fall).
    pub drop_pct: f64,
    /// Debt, at the step's prices, of the positions below 1 before any liquidation.
    pub round0_debt_usd: f64,
    /// Debt, at the step's prices, of every position that fell in any round.
    pub cascade_debt_usd: f64,
    /// Rounds in which positions fell.
    pub rounds: u32,
    /// cascade ÷ round 0 (`None` when nothing fell in round 0).
    pub amplification: Option<f64>,
    /// Collateral seized (the liquidators' and the protocol's), USD at the step's prices.
    pub collateral_seized_usd: f64,
    /// Collateral sold, USD at the step's prices.
    pub collateral_sold_usd: f64,
    /// Collateral sold by asset, raw units.
    pub sold_by_asset: BTreeMap<Address, U256>,
    /// Debt repaid, USD at the step's prices.
    pub debt_repaid_usd: f64,
    /// What the liquidators keep: the bonus less slippage and gas, USD.
    pub keeper_profit_usd: f64,
    /// Debt of positions left below 1 that no venue pays to liquidate.
    pub stuck_debt_usd: f64,
    /// Debt left without collateral behind it: deficits burnt, and positions whose collateral is
    /// worth less than their debt when the rounds end.
    pub bad_debt_usd: f64,
    /// Liquidations made.
    pub liquidations: usize,
    /// Each oracle price after the last round, for the fallen assets (base units).
    pub final_prices: BTreeMap<Address, U256>,
    /// The pools sold into.
    pub pools: Vec<PoolFlow>,
    /// Every position that fell: (borrower, round, debt and collateral in USD at the step's prices).
    pub fallen: Vec<FallenPosition>,
}

/// A position that fell at a step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FallenPosition {
    /// The borrower.
    pub borrower: Address,
    /// The round it fell in (0: at the step's prices alone; later: induced by the sales).
    pub round: u32,
    /// Its debt at the step's prices, before any liquidation (the market's base currency units, as
    /// `getUserAccountData` gives it).
    pub debt_base: U256,
    /// Its collateral the same way.
    pub collateral_base: U256,
    /// Its debt, USD at the step's prices.
    pub debt_usd: f64,
    /// Its collateral, USD at the step's prices.
    pub collateral_usd: f64,
}

/// A whole map.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CascadeMap {
    /// The block it was read at.
    pub block: u64,
    /// The fallen assets, by symbol where known.
    pub assets: Vec<String>,
    /// The oracle's pass-through.
    pub pass_through: f64,
    /// Each step, from the smallest fall.
    pub steps: Vec<StepResult>,
}

/// Maps `snapshot` as `params` says: every step, on as many threads as the machine has cores (steps
/// are independent: each starts from the block's state).
pub fn compute(snapshot: &Snapshot, params: &MapParams, symbols: &[String]) -> CascadeMap {
    let step = params.step_bps.max(1);
    let drops: Vec<u32> = (0..)
        .map(|k| k * step)
        .take_while(|d| *d <= params.to_bps)
        .collect();
    compute_at(snapshot, params, &drops, symbols)
}

/// [`compute`] at the falls `drops` (bps, in the order given) instead of `params`' steps.
pub fn compute_at(
    snapshot: &Snapshot,
    params: &MapParams,
    drops: &[u32],
    symbols: &[String],
) -> CascadeMap {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, drops.len().max(1));
    // Deeper falls liquidate more and cost more: each thread takes the deepest step left, so none
    // is left alone with the heaviest ones at the end.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<StepResult>> = vec![None; drops.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let taken = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(i) = drops.len().checked_sub(taken + 1) else {
                            break;
                        };
                        out.push((i, simulate_step(snapshot, params, drops[i])));
                    }
                    out
                })
            })
            .collect();
        for handle in handles {
            let out = handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (i, r) in out {
                results[i] = Some(r);
            }
        }
    });
    CascadeMap {
        block: snapshot.market.block.map_or(0, |b| b.number),
        assets: symbols.to_vec(),
        pass_through: f64::from(params.pass_through_bps) / 10_000.0,
        steps: results.into_iter().flatten().collect(),
    }
}

/// The reserve the positions hold the most collateral of (in value) among those not priced like a
/// dollar stablecoin (within 5% of $1).
pub fn largest_volatile_collateral(
    market: &AaveV3,
    positions: &[(Address, StoredPosition)],
) -> Option<Address> {
    let dollar = U256::from(100_000_000u64);
    let stable = |price: U256| price.abs_diff(dollar) * U256::from(20u8) <= dollar;
    let mut totals: std::collections::BTreeMap<u16, U256> = Default::default();
    for (_, p) in positions {
        for h in p.holdings.iter().filter(|h| h.collateral_enabled) {
            if let Some(r) = market.reserves.get(&h.reserve_id)
                && !stable(r.price)
            {
                let value = market.collateral_balance(h) * r.price
                    / crate::protocol::aave_v3::math::pow10(r.config.decimals);
                *totals.entry(h.reserve_id).or_default() += value;
            }
        }
    }
    totals
        .into_iter()
        .max_by_key(|(_, v)| *v)
        .and_then(|(id, _)| market.reserves.get(&id).map(|r| r.asset))
}

/// The falls the daemon publishes the map's headline at, bps.
pub const HEADLINE_DROPS_BPS: [u32; 3] = [500, 1_000, 2_000];

/// The map's headline for the daemon's gauges: the steps of a fall of `asset` at each of
/// [`HEADLINE_DROPS_BPS`], the oracle following the pools fully.
pub fn headline(snapshot: &Snapshot, asset: Address) -> Vec<StepResult> {
    let params = MapParams {
        assets: vec![asset],
        to_bps: HEADLINE_DROPS_BPS[HEADLINE_DROPS_BPS.len() - 1],
        step_bps: HEADLINE_DROPS_BPS[0],
        pass_through_bps: 10_000,
        max_rounds: 20,
    };
    HEADLINE_DROPS_BPS
        .iter()
        .map(|&drop| simulate_step(snapshot, &params, drop))
        .collect()
}
