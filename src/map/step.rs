//! One step of the map: the fall, the pools following it, then rounds of liquidations, forced
//! sales and the oracle following the pools.

use super::{FallenPosition, MapParams, PoolFlow, Snapshot, StepResult};
use crate::{
    planner::{self, PairCase, VenueSaleSize, liquidation_case, liquidation_pairs, venues::Venue},
    protocol::aave_v3::{AaveV3, Reserve, math},
    store::StoredPosition,
    units::{RAY, WAD},
};
use alloy::primitives::map::{AddressHashMap, AddressHashSet};
use alloy::primitives::{Address, U256};
use std::collections::BTreeMap;

/// Liquidations of one position within a round at most: keepers liquidate it again while it stays
/// below 1 and pays, block after block at about the same prices.
const LIQUIDATIONS_PER_ROUND: usize = 8;

/// A health factor floor this far above 1 (WAD; 1.001) leaves room for the protocol's rounding,
/// which moves a figure by a few base units, on every position worth [`FLOOR_MIN_DEBT_BASE`].
const CLEAR_OF_ONE: U256 = U256::from_limbs([1_001_000_000_000_000_000, 0, 0, 0]);
/// Positions owing less than this ($1, base units) are always valued exactly.
const FLOOR_MIN_DEBT_BASE: u64 = 100_000_000;

/// The floor [`Step::health_floor`] starts from after an exact valuation.
pub(super) fn floor_of(account: &math::AccountData) -> Option<U256> {
    (account.total_debt_base >= U256::from(FLOOR_MIN_DEBT_BASE)).then_some(account.health_factor)
}

/// The largest fall and the largest rise of the prices a move changed (WAD ratios).
struct PriceMoves {
    fall: U256,
    rise: U256,
}

impl Default for PriceMoves {
    fn default() -> Self {
        Self {
            fall: WAD,
            rise: WAD,
        }
    }
}

impl PriceMoves {
    fn add(&mut self, before: U256, after: U256) {
        if !before.is_zero() {
            self.fall = self.fall.min(after * WAD / before);
            self.rise = self.rise.max((after * WAD).div_ceil(before));
        }
    }

    /// A health factor floor after the move: collateral is worth at least `fall` of what it was
    /// and debt at most `rise` of it, so the health factor is at least floor × fall ÷ rise.
    fn lower(&self, floor: U256) -> U256 {
        floor * self.fall / self.rise
    }
}

/// A forced sale the map made, in order: what a chain replaying the step would swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSale {
    /// The round.
    pub round: u32,
    /// The venue sold into.
    pub venue: Address,
    /// The collateral sold.
    pub token_in: Address,
    /// How much (raw units).
    pub amount: U256,
}

/// The step of a `drop_bps` fall of `params.assets`, from `snapshot`.
pub fn simulate_step(snapshot: &Snapshot, params: &MapParams, drop_bps: u32) -> StepResult {
    simulate(snapshot, params, drop_bps).0
}

/// [`simulate_step`], with the sales it made in order.
pub fn simulate(
    snapshot: &Snapshot,
    params: &MapParams,
    drop_bps: u32,
) -> (StepResult, Vec<MapSale>) {
    let mut sim = Step::new(snapshot, params, drop_bps);
    sim.run();
    sim.finish()
}

struct Step<'s> {
    snapshot: &'s Snapshot,
    params: &'s MapParams,
    drop_bps: u32,
    market: AaveV3,
    /// The prices of every reserve once the fall moved them: what the step values everything at.
    step_prices: AddressHashMap<U256>,
    venues: AddressHashMap<Venue>,
    /// The venues once the fall moved them, before any forced sale.
    moved: AddressHashMap<Venue>,
    /// Positions a liquidation changed, by index into the snapshot's.
    changed: Vec<Option<StoredPosition>>,
    /// Positions below 1 that nothing paid to liquidate: the pools only get worse for them as the
    /// step goes on, so they are not sized again.
    stuck: Vec<bool>,
    /// The market at the step's prices, before any round moved them.
    step_market: AaveV3,
    /// (debt, collateral) of each position at the step's prices, before any liquidation: for every
    /// position valued in round 0, and for the others when they fall.
    at_step_prices: Vec<Option<(U256, U256)>>,
    /// A floor under each position's health factor at the current prices (WAD): its last exact
    /// figure, lowered by every price move since. A position whose floor is clear of 1 cannot have
    /// fallen and is not valued again; `None` when only the exact figure will do.
    health_floor: Vec<Option<U256>>,
    /// The round each position fell in.
    fallen: Vec<Option<u32>>,
    rounds: u32,
    round0_debt: U256,
    sales: Vec<MapSale>,
    sold_by_venue: AddressHashMap<BTreeMap<Address, U256>>,
    seized_usd: U256,
    sold_usd: U256,
    repaid_usd: U256,
    profit_usd: i128,
    deficit_usd: U256,
    liquidations: usize,
}

impl<'s> Step<'s> {
    fn new(snapshot: &'s Snapshot, params: &'s MapParams, drop_bps: u32) -> Self {
        let mut market = snapshot.market.clone();
        let fall = U256::from(10_000u32.saturating_sub(drop_bps));
        let mut moves = PriceMoves::default();
        for asset in &params.assets {
            if let Some(r) = market.reserve_of(*asset) {
                let (id, price) = (r.id, r.price);
                let moved = price * fall / U256::from(10_000u32);
                market.set_price(id, moved);
                moves.add(price, moved);
            }
        }
        // Every position's floor at the block's prices, lowered by the fall.
        let health_floor = snapshot
            .health_floors()
            .iter()
            .map(|f| f.map(|f| moves.lower(f)))
            .collect();
        let step_prices = market
            .reserves
            .values()
            .map(|r| (r.asset, r.price))
            .collect();
        let mut venues = snapshot.venues.clone();
        let fallen: AddressHashSet = params.assets.iter().copied().collect();
        for venue in venues.values_mut() {
            let (t0, t1) = venue.tokens();
            if (fallen.contains(&t0) || fallen.contains(&t1))
                && let Some(aligned) = align(venue, &market)
            {
                *venue = aligned;
            }
        }
        Self {
            snapshot,
            params,
            drop_bps,
            moved: venues.clone(),
            venues,
            step_prices,
            step_market: market.clone(),
            market,
            changed: vec![None; snapshot.positions.len()],
            stuck: vec![false; snapshot.positions.len()],
            at_step_prices: vec![None; snapshot.positions.len()],
            health_floor,
            fallen: vec![None; snapshot.positions.len()],
            rounds: 0,
            round0_debt: U256::ZERO,
            sales: Vec::new(),
            sold_by_venue: AddressHashMap::default(),
            seized_usd: U256::ZERO,
            sold_usd: U256::ZERO,
            repaid_usd: U256::ZERO,
            profit_usd: 0,
            deficit_usd: U256::ZERO,
            liquidations: 0,
        }
    }

    /// (debt, collateral) of fallen position `i` at the step's prices.
    fn step_value(&self, i: usize) -> (U256, U256) {
        self.at_step_prices[i].unwrap_or_default()
    }

    /// Whether position `i`'s health factor is surely at least 1 without valuing it again.
    fn clear_of_one(&self, i: usize) -> bool {
        self.health_floor[i].is_some_and(|floor| floor >= CLEAR_OF_ONE)
    }

    fn position(&self, i: usize) -> &StoredPosition {
        self.changed[i]
            .as_ref()
            .unwrap_or(&self.snapshot.positions[i].1)
    }

    /// Value in base units of `amount` of `asset` at the step's prices.
    fn usd(&self, asset: Address, amount: U256) -> U256 {
        let decimals = self
            .market
            .reserve_of(asset)
            .map_or(18, |r| r.config.decimals);
        amount * self.step_prices.get(&asset).copied().unwrap_or_default() / math::pow10(decimals)
    }

    fn run(&mut self) {
        let deepest = deepest_venues(&self.venues, &self.market);
        for round in 0..self.params.max_rounds.max(1) {
            // Everyone at this round's prices; who is below 1.
            let mut below: Vec<(usize, math::AccountData)> = Vec::new();
            for i in 0..self.snapshot.positions.len() {
                // Clear of 1, or fallen already with nothing paying to liquidate it: nothing for
                // this round to find.
                if self.clear_of_one(i) || self.stuck[i] {
                    continue;
                }
                let account = self.market.account_data(self.position(i));
                if round == 0 {
                    self.at_step_prices[i] =
                        Some((account.total_debt_base, account.total_collateral_base));
                }
                self.health_floor[i] = floor_of(&account);
                if account.health_factor < WAD && !account.total_debt_base.is_zero() {
                    below.push((i, account));
                }
            }
            let mut new = 0;
            for &(i, _) in &below {
                if self.fallen[i].is_none() {
                    self.fallen[i] = Some(round);
                    new += 1;
                    if self.at_step_prices[i].is_none() {
                        // Not liquidated before it fell: as the snapshot holds it.
                        let account = self.step_market.account_data(self.position(i));
                        self.at_step_prices[i] =
                            Some((account.total_debt_base, account.total_collateral_base));
                    }
                }
            }
            if round == 0 {
                self.round0_debt = below
                    .iter()
                    .map(|(i, _)| self.step_value(*i).0)
                    .fold(U256::ZERO, |a, b| a + b);
            }
            if new == 0 {
                break;
            }
            self.rounds += 1;
            // Largest debt first, as keepers pursue them.
            below.sort_by_key(|(_, account)| std::cmp::Reverse(account.total_debt_base));
            let start: AddressHashMap<Venue> = deepest
                .values()
                .filter_map(|v| self.venues.get(v).map(|s| (*v, s.clone())))
                .collect();
            let sold_before = self.sales.len();
            for (i, account) in below {
                self.liquidate(i, round, account);
            }
            if self.params.pass_through_bps == 0 || self.sales.len() == sold_before {
                break;
            }
            // The oracle follows each sold asset's deepest pool.
            let sold: AddressHashSet = self.sales[sold_before..]
                .iter()
                .map(|s| s.token_in)
                .collect();
            // The largest fall and rise of a price this round, to lower every floor by.
            let mut moves = PriceMoves::default();
            for asset in sold {
                let Some(pool) = deepest.get(&asset) else {
                    continue;
                };
                let (Some(before), Some(after)) = (start.get(pool), self.venues.get(pool)) else {
                    continue;
                };
                let Some(ratio) = price_ratio(before, after, asset) else {
                    continue;
                };
                if let Some(r) = self.market.reserve_of(asset) {
                    let (id, price) = (r.id, r.price);
                    let moved = follow(price, ratio, self.params.pass_through_bps);
                    self.market.set_price(id, moved);
                    moves.add(price, moved);
                }
            }
            for floor in self.health_floor.iter_mut().flatten() {
                *floor = moves.lower(*floor);
            }
        }
    }

    /// Liquidates position `i` while it is below 1 and a liquidation of it pays; `account` is its
    /// valuation at this round's prices, as the round's scan found it.
    fn liquidate(&mut self, i: usize, round: u32, mut account: math::AccountData) {
        if self.stuck[i] {
            return;
        }
        for attempt in 0..LIQUIDATIONS_PER_ROUND {
            let position = self.position(i).clone();
            // The scan valued it at these prices; after a liquidation of it, it is valued again.
            if attempt > 0 {
                account = self.market.account_data(&position);
            }
            if account.health_factor >= WAD {
                return;
            }
            let Some((sale, venue, pair)) = self.best(&position, &account) else {
                self.stuck[i] = true;
                return;
            };
            self.apply(i, &position, round, sale, venue, pair);
        }
    }

    /// The most profitable liquidation of `position` on the venues as they stand: every pair, the
    /// one that could net most first, until no other could beat what was found.
    fn best(
        &self,
        position: &StoredPosition,
        account: &math::AccountData,
    ) -> Option<(VenueSaleSize, Address, (u16, u16))> {
        let mut pairs = Vec::new();
        for (c, cr, d, dr) in liquidation_pairs(&self.market, position) {
            if !cr.liquidation_open(self.now() + 1) || !dr.liquidation_open(self.now() + 1) {
                continue;
            }
            let Some(case) = liquidation_case(&self.market, position, account, c, cr, d, dr) else {
                continue;
            };
            let case = PairCase::new(case);
            let venues: Vec<&Venue> = self
                .snapshot
                .pair_venues(cr.asset, dr.asset)
                .iter()
                .filter_map(|a| self.venues.get(a))
                .collect();
            // A pair that could not net anything even at the venues' prices less their fees, with
            // no impact, is not sized.
            let bound = planner::pair_bound(&case, cr, dr, &venues);
            if bound > 0 {
                pairs.push((bound, case, cr, dr, venues));
            }
        }
        pairs.sort_by_key(|p| std::cmp::Reverse(p.0));
        let mut best: Option<(VenueSaleSize, Address, (u16, u16), i128)> = None;
        for (bound, case, cr, dr, venues) in pairs {
            if best.as_ref().is_some_and(|b| bound <= b.3) {
                break;
            }
            let Ok((sale, venue)) =
                planner::best_sale(&case, cr, dr, &venues, &self.snapshot.costs)
            else {
                continue;
            };
            let net_usd = sale.net_debt * planner::sizing::signed(dr.price)
                / planner::sizing::signed(math::pow10(dr.config.decimals));
            if best.as_ref().is_none_or(|b| net_usd > b.3) {
                best = Some((sale, venue.address(), (cr.id, dr.id), net_usd));
            }
        }
        best.map(|(sale, venue, pair, _)| (sale, venue, pair))
    }

    fn now(&self) -> u64 {
        self.market.block.map(|b| b.timestamp).unwrap_or_default()
    }

    /// Records liquidation `sale` of position `i` (pair of reserve ids), selling on `venue`.
    fn apply(
        &mut self,
        i: usize,
        position: &StoredPosition,
        round: u32,
        sale: VenueSaleSize,
        venue: Address,
        (collateral_id, debt_id): (u16, u16),
    ) {
        let (Some(cr), Some(dr)) = (
            self.market.reserves.get(&collateral_id).cloned(),
            self.market.reserves.get(&debt_id).cloned(),
        ) else {
            return;
        };
        let a = sale.amounts;
        let sold = a.collateral_to_liquidator;
        if let Some(v) = self.venues.get(&venue)
            && let Some((_, after)) = v.after_sale(cr.asset, sold)
        {
            self.venues.insert(venue, after);
        }
        self.sales.push(MapSale {
            round,
            venue,
            token_in: cr.asset,
            amount: sold,
        });
        *self
            .sold_by_venue
            .entry(venue)
            .or_default()
            .entry(cr.asset)
            .or_default() += sold;
        self.liquidations += 1;
        self.seized_usd += self.usd(cr.asset, sold + a.protocol_fee);
        self.sold_usd += self.usd(cr.asset, sold);
        self.repaid_usd += self.usd(dr.asset, a.debt_repaid);
        self.profit_usd += sale.net_debt * planner::sizing::signed(dr.price)
            / planner::sizing::signed(math::pow10(dr.config.decimals));
        let next = self.after_liquidation(position, &cr, &dr, &a);
        self.changed[i] = Some(next);
        self.health_floor[i] = None;
    }

    /// `position` after a liquidation: the collateral taken and the debt repaid, in scaled units as
    /// the Pool burns them (a deficit clears every debt).
    fn after_liquidation(
        &mut self,
        position: &StoredPosition,
        cr: &Reserve,
        dr: &Reserve,
        a: &crate::planner::sizing::LiquidationAmounts,
    ) -> StoredPosition {
        let now = self.now();
        let income = cr.indexes.normalized_income(now);
        let debt_index = dr
            .indexes
            .normalized_debt(self.market.release.compounding(), now);
        let mut next = position.clone();
        if a.creates_deficit {
            // The rest of every debt is burnt: the protocol's loss.
            let account = self.market.account_data(position);
            let repaid = self.usd(dr.asset, a.debt_repaid);
            self.deficit_usd += account.total_debt_base.saturating_sub(repaid);
        }
        // A repay asked with headroom and not cut by the collateral clears the pair's debt.
        let full_close = !a.collateral_bound && a.debt_to_cover > a.debt_repaid;
        for h in &mut next.holdings {
            if h.reserve_id == cr.id {
                let taken = (a.collateral_to_liquidator + a.protocol_fee) * RAY;
                h.scaled_a_token = h.scaled_a_token.saturating_sub(taken.div_ceil(income));
                if h.scaled_a_token.is_zero() || a.creates_deficit {
                    h.scaled_a_token = U256::ZERO;
                    h.collateral_enabled = false;
                }
            }
            if a.creates_deficit || (full_close && h.reserve_id == dr.id) {
                h.scaled_variable_debt = U256::ZERO;
                h.stable_principal = U256::ZERO;
                h.borrowing = false;
            } else if h.reserve_id == dr.id {
                let burnt = a.debt_repaid * RAY / debt_index;
                h.scaled_variable_debt = h.scaled_variable_debt.saturating_sub(burnt);
                h.borrowing = !h.scaled_variable_debt.is_zero() || !h.stable_principal.is_zero();
            }
        }
        next
    }

    fn finish(self) -> (StepResult, Vec<MapSale>) {
        // Who is still below 1 with nothing paying to liquidate them, and who owes more than they hold.
        let (mut stuck, mut short) = (U256::ZERO, U256::ZERO);
        for i in 0..self.snapshot.positions.len() {
            // Clear of 1, a position's collateral covers its debt (thresholds are at most 100%).
            if self.clear_of_one(i) {
                continue;
            }
            let position = self.position(i);
            let account = self.market.account_data(position);
            if account.total_debt_base.is_zero() {
                continue;
            }
            if account.total_collateral_base < account.total_debt_base {
                short += account.total_debt_base - account.total_collateral_base;
            }
            if account.health_factor < WAD && self.stuck[i] {
                stuck += account.total_debt_base;
            }
        }
        let fallen = || {
            self.fallen
                .iter()
                .enumerate()
                .filter_map(|(i, round)| Some((i, (*round)?)))
        };
        let cascade_debt = fallen()
            .map(|(i, _)| self.step_value(i).0)
            .fold(U256::ZERO, |a, b| a + b);
        let usd = |x: U256| crate::units::u256_to_f64(x) / 1e8;
        let mut pools: Vec<PoolFlow> = self
            .sold_by_venue
            .iter()
            .filter_map(|(address, sold)| {
                let before = self.moved.get(address)?;
                let after = self.venues.get(address)?;
                let (token0, token1) = after.tokens();
                let decimals = |t| self.market.reserve_of(t).map_or(18, |r| r.config.decimals);
                Some(PoolFlow {
                    address: *address,
                    token0,
                    token1,
                    price_before: spot_price(before, decimals(token0), decimals(token1)),
                    price_after: spot_price(after, decimals(token0), decimals(token1)),
                    state_after: after.state(),
                    sold: sold.clone(),
                    sold_usd: usd(sold
                        .iter()
                        .map(|(t, a)| self.usd(*t, *a))
                        .fold(U256::ZERO, |x, y| x + y)),
                })
            })
            .collect();
        pools.sort_by_key(|p| p.address);
        let mut sold_by_asset: BTreeMap<Address, U256> = BTreeMap::new();
        for s in &self.sales {
            *sold_by_asset.entry(s.token_in).or_default() += s.amount;
        }
        let final_prices = self
            .params
            .assets
            .iter()
            .filter_map(|a| self.market.reserve_of(*a).map(|r| (*a, r.price)))
            .collect();
        let fallen = fallen()
            .map(|(i, round)| FallenPosition {
                borrower: self.snapshot.positions[i].0,
                round,
                debt_base: self.step_value(i).0,
                collateral_base: self.step_value(i).1,
                debt_usd: usd(self.step_value(i).0),
                collateral_usd: usd(self.step_value(i).1),
            })
            .collect();
        let result = StepResult {
            // `+ 0.0` makes the first step 0, not −0.
            drop_pct: -f64::from(self.drop_bps) / 100.0 + 0.0,
            round0_debt_usd: usd(self.round0_debt),
            cascade_debt_usd: usd(cascade_debt),
            rounds: self.rounds,
            amplification: (!self.round0_debt.is_zero()).then(|| {
                crate::units::u256_to_f64(cascade_debt)
                    / crate::units::u256_to_f64(self.round0_debt)
            }),
            collateral_seized_usd: usd(self.seized_usd),
            collateral_sold_usd: usd(self.sold_usd),
            sold_by_asset,
            debt_repaid_usd: usd(self.repaid_usd),
            keeper_profit_usd: self.profit_usd as f64 / 1e8,
            stuck_debt_usd: usd(stuck),
            bad_debt_usd: usd(self.deficit_usd + short),
            liquidations: self.liquidations,
            final_prices,
            pools,
            fallen,
        };
        (result, self.sales)
    }
}

/// `venue` moved to the oracle's relative price of its two tokens on `market`, as arbitrage moves
/// it (the devnet's shocks do the same): `None` when a token has no price.
fn align(venue: &Venue, market: &AaveV3) -> Option<Venue> {
    let (t0, t1) = venue.tokens();
    let (r0, r1) = (market.reserve_of(t0)?, market.reserve_of(t1)?);
    venue.aligned_to(r0.price, r0.config.decimals, r1.price, r1.config.decimals)
}

/// The venue each asset's oracle follows: the one holding most of it (in value) at its price.
fn deepest_venues(venues: &AddressHashMap<Venue>, market: &AaveV3) -> AddressHashMap<Address> {
    let mut best: AddressHashMap<(U256, Address)> = AddressHashMap::default();
    for (address, venue) in venues {
        let (t0, t1) = venue.tokens();
        let (a0, a1) = venue.holdings();
        for (token, amount) in [(t0, a0), (t1, a1)] {
            let Some(r) = market.reserve_of(token) else {
                continue;
            };
            let value = amount * r.price / math::pow10(r.config.decimals);
            let entry = best.entry(token).or_insert((U256::ZERO, *address));
            if value > entry.0 || (value == entry.0 && *address < entry.1) {
                *entry = (value, *address);
            }
        }
    }
    best.into_iter().map(|(t, (_, a))| (t, a)).collect()
}

/// How `asset`'s price in `before` moved to `after` (the same venue), WAD: 0.9e18 for a 10% fall.
fn price_ratio(before: &Venue, after: &Venue, asset: Address) -> Option<U256> {
    let (t0, _) = before.tokens();
    let (p_before, p_after) = (before.price_of_token0()?, after.price_of_token0()?);
    if p_before.is_zero() || p_after.is_zero() {
        return None;
    }
    // Prices of token0 in token1 (WAD-scaled): invert for token1.
    Some(if asset == t0 {
        p_after * WAD / p_before
    } else {
        p_before * WAD / p_after
    })
}

/// `price` moved by `pass_through_bps` of a move `ratio` (WAD).
fn follow(price: U256, ratio: U256, pass_through_bps: u32) -> U256 {
    let pt = U256::from(pass_through_bps);
    let scale = WAD * U256::from(10_000u32);
    if ratio <= WAD {
        let cut = price * (WAD - ratio) * pt / scale;
        price.saturating_sub(cut)
    } else {
        price + price * (ratio - WAD) * pt / scale
    }
}

/// token1 per token0 in whole tokens, for display.
fn spot_price(venue: &Venue, decimals0: u8, decimals1: u8) -> f64 {
    let raw = venue
        .price_of_token0()
        .map_or(0.0, |p| crate::units::u256_to_f64(p) / 1e18);
    raw * 10f64.powi(i32::from(decimals0) - i32::from(decimals1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oracle_follows_by_the_pass_through() {
        let price = U256::from(2_000u64) * U256::from(100_000_000u64);
        let ten_down = WAD * U256::from(9u8) / U256::from(10u8);
        assert_eq!(
            follow(price, ten_down, 10_000),
            price * U256::from(9u8) / U256::from(10u8)
        );
        assert_eq!(follow(price, ten_down, 0), price);
        assert_eq!(
            follow(price, ten_down, 5_000),
            price * U256::from(95u8) / U256::from(100u8)
        );
        let up = WAD * U256::from(11u8) / U256::from(10u8);
        assert_eq!(
            follow(price, up, 10_000),
            price * U256::from(11u8) / U256::from(10u8)
        );
    }
}
