//! How much of a position may be liquidated and what the liquidator receives, by the rules of the Aave
//! release in front of us (`LiquidationLogic.sol` of V3.0 to V3.7: close factor, bonus, protocol fee,
//! the dust rule and deficits, each with its release's rounding), and the repay amount that
//! maximises net profit once the sale of the collateral and the costs are counted.

use super::venues::{Rate, Sale};
use crate::protocol::aave_v3::{
    math::{
        self, mul_div_ceil, percent_div, percent_div_ceil, percent_div_floor, percent_mul,
        percent_mul_ceil, percent_mul_floor, ray_div_ceil,
    },
    release::Release,
};
use alloy::primitives::U256;

/// HF above which the close factor is 50% (0.95, WAD).
pub const CLOSE_FACTOR_HF_THRESHOLD: U256 = U256::from_limbs([950_000_000_000_000_000, 0, 0, 0]);
/// V3.3: both sides must be worth at least this (base units) for the 50% limit to apply.
pub const MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD: U256 = U256::from_limbs([200_000_000_000, 0, 0, 0]);
/// V3.3: a partial liquidation may not leave less than this (base units) of debt or collateral.
pub const MIN_LEFTOVER_BASE: U256 = U256::from_limbs([100_000_000_000, 0, 0, 0]);

/// One side of a liquidation: a reserve of the borrower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// The borrower's balance in this reserve (current, with interest, rounded as the release's
    /// tokens round it), raw token units.
    pub balance: U256,
    /// Oracle price (base units).
    pub price: U256,
    /// Token decimals.
    pub decimals: u8,
}

impl Side {
    fn unit(&self) -> U256 {
        math::pow10(self.decimals)
    }

    /// Value in base currency, rounded down.
    fn value(&self, amount: U256) -> U256 {
        amount * self.price / self.unit()
    }
}

/// What V3.7 tells a deficit from: the collateral's scaled balance and supply index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScaledCollateral {
    /// The borrower's scaled aToken balance.
    pub scaled: U256,
    /// The collateral reserve's normalized income at the time planned for.
    pub index: U256,
}

/// Everything the protocol looks at to size one liquidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiquidationCase {
    /// The release whose rules apply.
    pub release: Release,
    /// The borrower's health factor (WAD).
    pub health_factor: U256,
    /// The borrower's total debt across reserves (base units).
    pub total_debt_base: U256,
    /// The borrower's total collateral across reserves (base units).
    pub total_collateral_base: U256,
    /// The collateral reserve being seized.
    pub collateral: Side,
    /// Its scaled balance and index (for V3.7's deficit test).
    pub scaled_collateral: ScaledCollateral,
    /// V3.1+: the most of the collateral the reserve can pay out (its virtual balance); `None` for no
    /// limit.
    pub collateral_available: Option<U256>,
    /// The debt reserve being repaid.
    pub debt: Side,
    /// Liquidation bonus of the collateral (bps, including 100%; the eMode bonus where it applies).
    pub bonus_bps: u64,
    /// Protocol's share of the bonus (bps).
    pub protocol_fee_bps: u64,
}

/// What a `liquidationCall` with a given `debtToCover` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LiquidationAmounts {
    /// The `debtToCover` to send: the request, capped at the most the protocol repays. When the
    /// collateral runs out first it is more than is repaid, and must be: sent as the repay instead,
    /// rounded down, it would buy a hair less than all the collateral (leaving dust, which V3.3
    /// refuses, and seizing less than planned). When the whole debt is repaid it is more than the
    /// debt, by [`full_close_headroom`]: the debt grows until the block the liquidation lands in,
    /// and the Pool takes it all, as it is then.
    pub debt_to_cover: U256,
    /// Debt repaid (raw debt-token units).
    pub debt_repaid: U256,
    /// Collateral the liquidator receives (after the protocol fee).
    pub collateral_to_liquidator: U256,
    /// Collateral to the treasury.
    pub protocol_fee: U256,
    /// The repay was cut because the collateral ran out.
    pub collateral_bound: bool,
    /// V3.3+: the liquidation leaves the borrower without collateral and the rest of its debt is
    /// written off as a deficit.
    pub creates_deficit: bool,
}

/// Why a liquidation would revert or is not worth sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizingError {
    /// HF ≥ 1.
    #[error("health factor is not below 1")]
    Healthy,
    /// No debt in the reserve, or no collateral.
    #[error("nothing to liquidate in this pair")]
    Empty,
    /// V3.3+ `MustNotLeaveDust`: the leftover debt or collateral would be under $1,000.
    #[error("would leave less than $1,000 of debt or collateral (MustNotLeaveDust)")]
    LeavesDust,
    /// V3.1+: the collateral reserve's virtual balance cannot pay out this much.
    #[error("the collateral reserve cannot pay out this much (virtual balance)")]
    ReserveShort,
}

/// The bonus a liquidation of this collateral pays (bps, including 100%): the eMode category's when
/// the borrower is in one whose collateral includes this reserve, the reserve's own otherwise.
pub fn liquidation_bonus(
    reserve_bonus_bps: u64,
    reserve_id: u16,
    user_emode: Option<&crate::protocol::aave_v3::math::EModeCategory>,
) -> u64 {
    match user_emode {
        Some(e) if e.has_collateral(reserve_id) => e.liquidation_bonus,
        _ => reserve_bonus_bps,
    }
}

/// The most debt a `liquidationCall` will repay in this pair.
pub fn max_repay(case: &LiquidationCase) -> U256 {
    if !case.release.total_debt_close_factor() {
        let factor = if case.health_factor > CLOSE_FACTOR_HF_THRESHOLD {
            5_000
        } else {
            10_000
        };
        return percent_mul(case.debt.balance, factor);
    }
    let collateral_value = case.collateral.value(case.collateral.balance);
    let debt_value =
        case.release
            .debt_value(case.debt.balance, case.debt.price, case.debt.decimals);
    if collateral_value >= MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD
        && debt_value >= MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD
        && case.health_factor > CLOSE_FACTOR_HF_THRESHOLD
    {
        let half_total = percent_mul(case.total_debt_base, 5_000);
        if debt_value > half_total {
            return half_total * case.debt.unit() / case.debt.price;
        }
    }
    case.debt.balance
}

/// How much more than the debt a liquidation that repays all of it asks to cover: the interest of
/// the blocks until it lands (and those a fee bump waits), which the plan's own figure lacks. The
/// Pool repays the debt as it is then and no more, so the excess is never paid; a request short of
/// the debt would leave a few wei, which V3.3+ refuses as dust. A tenth of a percent is hours of
/// interest at 300% a year.
pub fn full_close_headroom(debt: U256) -> U256 {
    debt / U256::from(1_000u64) + U256::from(1u8)
}

/// What a liquidation repaying `debt_to_cover` (already capped by the close factor) seizes: the
/// liquidator's collateral, the debt actually repaid (less when the collateral runs out), and the
/// protocol's fee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seizure {
    /// Collateral to the liquidator.
    pub collateral_to_liquidator: U256,
    /// Debt repaid.
    pub debt_repaid: U256,
    /// Collateral to the treasury.
    pub protocol_fee: U256,
    /// The collateral ran out first: all of it is seized.
    pub collateral_bound: bool,
}

/// `LiquidationLogic._calculateAvailableCollateralToLiquidate` of `release`: the collateral worth the
/// repay plus the bonus (all of it, and the repay it pays for, when that is more than the borrower
/// has), less the protocol's share of the bonus. Half-up rounding until V3.4; V3.5 rounds the repay
/// of a collateral-bound liquidation up; V3.7 rounds the seized collateral and the bonus part down
/// and the fee up.
pub fn seizure(
    release: Release,
    collateral: &Side,
    debt: &Side,
    debt_to_cover: U256,
    bonus_bps: u64,
    protocol_fee_bps: u64,
) -> Seizure {
    let newest = release.protocol_favouring_bonus();
    let (c, d) = (collateral, debt);
    let base_collateral = d.price * debt_to_cover * c.unit() / (c.price * d.unit());
    let max_collateral = if newest {
        percent_mul_floor(base_collateral, bonus_bps)
    } else {
        percent_mul(base_collateral, bonus_bps)
    };
    let collateral_bound = max_collateral > c.balance;
    let (collateral_total, debt_repaid) = if collateral_bound {
        let worth = c.price * c.balance * d.unit() / (d.price * c.unit());
        let needed = if release.rounds_against_user() {
            percent_div_ceil(worth, bonus_bps)
        } else {
            percent_div(worth, bonus_bps)
        };
        (c.balance, needed)
    } else {
        (max_collateral, debt_to_cover)
    };
    let protocol_fee = if protocol_fee_bps == 0 {
        U256::ZERO
    } else if newest {
        let bonus_part = collateral_total - percent_div_floor(collateral_total, bonus_bps);
        percent_mul_ceil(bonus_part, protocol_fee_bps)
    } else {
        let bonus_part = collateral_total - percent_div(collateral_total, bonus_bps);
        percent_mul(bonus_part, protocol_fee_bps)
    };
    Seizure {
        collateral_to_liquidator: collateral_total - protocol_fee,
        debt_repaid,
        protocol_fee,
        collateral_bound,
    }
}

/// What `liquidationCall(…, debtToCover = requested, receiveAToken = false)` pays out.
pub fn liquidation_amounts(
    case: &LiquidationCase,
    requested: U256,
) -> Result<LiquidationAmounts, SizingError> {
    if case.health_factor >= crate::units::WAD {
        return Err(SizingError::Healthy);
    }
    if case.debt.balance.is_zero() || case.collateral.balance.is_zero() || requested.is_zero() {
        return Err(SizingError::Empty);
    }
    let release = case.release;
    let max = max_repay(case);
    let mut debt_to_cover = requested.min(max);
    let (c, d) = (&case.collateral, &case.debt);
    let Seizure {
        collateral_to_liquidator,
        debt_repaid,
        protocol_fee,
        collateral_bound,
    } = seizure(
        release,
        c,
        d,
        debt_to_cover,
        case.bonus_bps,
        case.protocol_fee_bps,
    );
    let collateral_total = collateral_to_liquidator + protocol_fee;
    if case
        .collateral_available
        .is_some_and(|available| collateral_to_liquidator > available)
    {
        return Err(SizingError::ReserveShort);
    }
    let mut creates_deficit = false;
    if release.total_debt_close_factor() {
        let debt_left = d.balance - debt_repaid.min(d.balance);
        let collateral_left = c.balance - collateral_total;
        if debt_left > U256::ZERO && collateral_left > U256::ZERO {
            let debt_left_value = if release.rounds_against_user() {
                mul_div_ceil(debt_left, d.price, d.unit())
            } else {
                d.value(debt_left)
            };
            if debt_left_value < MIN_LEFTOVER_BASE || c.value(collateral_left) < MIN_LEFTOVER_BASE {
                return Err(SizingError::LeavesDust);
            }
        }
        creates_deficit = if release.protocol_favouring_bonus() {
            // V3.7: the scaled collateral the burn and the fee transfer consume (each rounded up),
            // at most the balance, valued at the index.
            let ScaledCollateral { scaled, index } = case.scaled_collateral;
            let consumed = (ray_div_ceil(collateral_to_liquidator, index)
                + ray_div_ceil(protocol_fee, index))
            .min(scaled);
            c.value(math::ray_mul_floor(consumed, index)) == case.total_collateral_base
        } else {
            c.value(collateral_total) == case.total_collateral_base
        };
    }
    // Repaying the whole debt: ask for more than it, so the Pool takes it as it will be then.
    if !collateral_bound && debt_repaid == d.balance && max == d.balance {
        debt_to_cover = d.balance + full_close_headroom(d.balance);
    }
    Ok(LiquidationAmounts {
        debt_to_cover,
        debt_repaid,
        collateral_to_liquidator,
        protocol_fee,
        collateral_bound,
        creates_deficit,
    })
}

/// The repay (between nothing and [`max_repay`]) that maximises `profit(amounts)`, which prices the
/// collateral's sale and the costs; `None` when no valid repay is profitable.
///
/// Profit is the sale's output less the repay and costs: linear gain against a convex price impact, so
/// concave in the repay. A coarse scan over 1/32 steps finds the best region (skipping sizes the
/// protocol would refuse, such as V3.3 dust), then a ternary search refines it.
pub fn best_repay<E>(
    case: &LiquidationCase,
    mut profit: impl FnMut(&LiquidationAmounts) -> Result<Option<i128>, E>,
) -> Result<Option<(LiquidationAmounts, i128)>, E> {
    let max = max_repay(case);
    if max.is_zero() {
        return Ok(None);
    }
    let mut evaluate = |repay: U256| -> Result<Option<(LiquidationAmounts, i128)>, E> {
        match liquidation_amounts(case, repay) {
            Ok(a) => Ok(profit(&a)?.map(|p| (a, p))),
            Err(_) => Ok(None),
        }
    };
    const STEPS: u64 = 32;
    let at = |k: u64| max * U256::from(k) / U256::from(STEPS);
    let mut best: Option<(LiquidationAmounts, i128, u64)> = None;
    for k in 1..=STEPS {
        if let Some((a, p)) = evaluate(at(k))?
            && best.as_ref().is_none_or(|(_, bp, _)| p > *bp)
        {
            best = Some((a, p, k));
        }
    }
    let Some((mut best_amounts, mut best_profit, k)) = best else {
        return Ok(None);
    };
    // Refine between the neighbours of the best grid point, to 0.01% of the largest repay: finer than
    // that moves the profit by less than the next block's interest, and each step costs every venue a
    // swap simulation.
    let (mut lo, mut hi) = (at(k.saturating_sub(1)), at((k + 1).min(STEPS)));
    let precision = (max / U256::from(10_000u64)).max(U256::from(2u8));
    for _ in 0..40 {
        if hi <= lo + precision {
            break;
        }
        let third = (hi - lo) / U256::from(3u8);
        let (m1, m2) = (lo + third, hi - third);
        let p1 = evaluate(m1)?;
        let p2 = evaluate(m2)?;
        for (a, p) in [&p1, &p2].into_iter().flatten() {
            if *p > best_profit {
                best_profit = *p;
                best_amounts = *a;
            }
        }
        match (p1.map(|x| x.1), p2.map(|x| x.1)) {
            (Some(a), Some(b)) if a < b => lo = m1,
            (Some(_), Some(_)) => hi = m2,
            (None, Some(_)) => lo = m1,
            _ => hi = m2,
        }
    }
    Ok((best_profit > 0).then_some((best_amounts, best_profit)))
}

/// The best liquidation selling on one venue: the repay that makes the most of sale − repay − `costs`,
/// with what its collateral sells for and that net (debt units); `None` when nothing is profitable.
///
/// The protocol pays collateral in proportion to the repay (its price and bonus), so every unit of
/// collateral costs the same repay, the largest liquidation's ratio. A sale returns less per unit the
/// more it sells, so the best sale stops where one more unit returns less than that: the largest
/// repay when the venue still pays more at its end, otherwise the sale down to that price, which a
/// Uniswap pool gives in one simulated swap (its price limit) and a V2 pair in closed form. One or two
/// swap simulations per venue instead of a search. `largest` is [`largest_allowed`] of `case`
/// (computed once for every venue); where it could not be had otherwise than by a search (a reserve
/// short of collateral), [`best_repay`] searches the sizes the protocol allows.
pub fn best_on_venue(
    case: &LiquidationCase,
    largest: &Result<LiquidationAmounts, SizingError>,
    venue: &impl Sale,
    costs: U256,
) -> Option<(LiquidationAmounts, U256, i128)> {
    let net = |out: U256, a: &LiquidationAmounts| signed(out) - signed(a.debt_repaid + costs);
    let search = || {
        let (amounts, net) = best_repay(case, |a| {
            Ok::<_, ()>(
                venue
                    .sell(a.collateral_to_liquidator)
                    .map(|out| net(out, a)),
            )
        })
        .ok()??;
        Some((amounts, venue.sell(amounts.collateral_to_liquidator)?, net))
    };
    let largest = match largest {
        Ok(amounts) => *amounts,
        Err(SizingError::LeavesDust) => return None,
        Err(_) => return search(),
    };
    let floor = Rate {
        out: largest.debt_repaid,
        paid: largest.collateral_to_liquidator,
    };
    let (sold, out) = venue.sell_down_to(largest.collateral_to_liquidator, floor)?;
    let (amounts, out) = if sold == largest.collateral_to_liquidator {
        (largest, out)
    } else if sold.is_zero() {
        return None;
    } else {
        let repay = largest.debt_repaid * sold / largest.collateral_to_liquidator;
        match liquidation_amounts(case, repay) {
            Ok(amounts) => (amounts, venue.sell(amounts.collateral_to_liquidator)?),
            // The best sale would leave dust: profit rises all the way to it, so the best size the
            // rule allows is the largest partial one that leaves $1,000 on both sides, or the
            // liquidation that takes everything.
            Err(SizingError::LeavesDust) => {
                let partial = dust_bounded_repay(case, repay)
                    .and_then(|r| liquidation_amounts(case, r).ok())
                    .and_then(|a| Some((a, venue.sell(a.collateral_to_liquidator)?)));
                let whole = venue
                    .sell(largest.collateral_to_liquidator)
                    .map(|out| (largest, out));
                [partial, whole]
                    .into_iter()
                    .flatten()
                    .max_by_key(|(a, out)| net(*out, a))?
            }
            // Nothing left to repay at this rate: the venue pays less than the bonus buys at any size.
            Err(SizingError::Empty) => return None,
            Err(_) => return search(),
        }
    };
    let net = net(out, &amounts);
    (net > 0).then_some((amounts, out, net))
}

/// The largest liquidation the rules allow: the close factor's, or when that would leave dust, the
/// largest that leaves none (every smaller repay leaves more of both sides, so the sizes the rule
/// allows are the ones up to it); `LeavesDust` when every size would.
pub fn largest_allowed(case: &LiquidationCase) -> Result<LiquidationAmounts, SizingError> {
    let max = max_repay(case);
    match liquidation_amounts(case, max) {
        Err(SizingError::LeavesDust) => dust_bounded_repay(case, max)
            .ok_or(SizingError::LeavesDust)
            .and_then(|repay| liquidation_amounts(case, repay)),
        other => other,
    }
}

/// The largest repay, at most `repay`, that leaves at least [`MIN_LEFTOVER_BASE`] of the debt and
/// of the collateral (V3.3's dust rule), in closed form and checked against the rule; `None` when
/// no such repay exists.
pub fn dust_bounded_repay(case: &LiquidationCase, repay: U256) -> Option<U256> {
    let (c, d) = (&case.collateral, &case.debt);
    if c.price.is_zero() || d.price.is_zero() || case.bonus_bps == 0 {
        return None;
    }
    let debt_floor = (MIN_LEFTOVER_BASE * d.unit()).div_ceil(d.price);
    let collateral_floor = (MIN_LEFTOVER_BASE * c.unit()).div_ceil(c.price);
    let by_debt = d.balance.checked_sub(debt_floor)?;
    let by_collateral =
        c.balance.checked_sub(collateral_floor)? * c.price * d.unit() * U256::from(10_000u32)
            / (d.price * c.unit() * U256::from(case.bonus_bps));
    let mut bound = repay.min(by_debt).min(by_collateral);
    // The closed form ignores rounding: step down a hair until the rule agrees.
    for _ in 0..4 {
        if bound.is_zero() {
            return None;
        }
        match liquidation_amounts(case, bound) {
            Ok(_) => return Some(bound),
            Err(SizingError::LeavesDust) => {
                bound = bound.saturating_sub(bound / U256::from(10_000u32) + U256::from(1u8))
            }
            Err(_) => return None,
        }
    }
    None
}

/// An amount as a signed figure, to subtract costs from (saturating at `i128::MAX`).
pub(crate) fn signed(x: U256) -> i128 {
    i128::try_from(x).unwrap_or(i128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::WAD;

    fn wad_milli(m: u64) -> U256 {
        U256::from(m) * WAD / U256::from(1000u64)
    }
    fn tokens(n: u64, decimals: u8) -> U256 {
        U256::from(n) * U256::from(10u64).pow(U256::from(decimals))
    }
    fn usd(n: u64) -> U256 {
        U256::from(n) * U256::from(100_000_000u64)
    }

    /// The devnet-notes worked example: 10 WETH at 1,800, 15,000 USDC debt, HF 0.99, bonus 5%, fee 10%.
    fn weth_usdc(release: Release) -> LiquidationCase {
        LiquidationCase {
            release,
            health_factor: wad_milli(990),
            total_debt_base: usd(15_000),
            total_collateral_base: usd(18_000),
            collateral: Side {
                balance: tokens(10, 18),
                price: usd(1_800),
                decimals: 18,
            },
            scaled_collateral: ScaledCollateral {
                scaled: tokens(10, 18),
                index: crate::units::RAY,
            },
            collateral_available: None,
            debt: Side {
                balance: tokens(15_000, 6),
                price: usd(1),
                decimals: 6,
            },
            bonus_bps: 10_500,
            protocol_fee_bps: 1_000,
        }
    }

    #[test]
    fn v3_0_half_above_095() {
        let case = weth_usdc(Release::V3_0);
        assert_eq!(max_repay(&case), tokens(7_500, 6));
        let a = liquidation_amounts(&case, U256::MAX).unwrap();
        assert_eq!(a.debt_repaid, tokens(7_500, 6));
        // 7,500 / 1,800 × 1.05 = 4.375 WETH seized, less a wei: the base amount is rounded down before
        // the bonus is applied. The bonus part is 0.208333… WETH, 10% of it to the treasury.
        let seized = U256::from(4_374_999_999_999_999_999u64);
        let bonus_part = seized - percent_div(seized, 10_500);
        assert_eq!(a.protocol_fee, percent_mul(bonus_part, 1_000));
        assert_eq!(a.collateral_to_liquidator + a.protocol_fee, seized);
        assert_eq!(a.protocol_fee, U256::from(20_833_333_333_333_333u64));
        assert!(!a.collateral_bound && !a.creates_deficit);
    }

    #[test]
    fn v3_0_all_below_095() {
        let case = LiquidationCase {
            health_factor: wad_milli(940),
            ..weth_usdc(Release::V3_0)
        };
        assert_eq!(max_repay(&case), tokens(15_000, 6));
        // 15,000 USDC would need 8.75 WETH: within the 10 WETH, so the whole debt goes.
        let a = liquidation_amounts(&case, U256::MAX).unwrap();
        assert_eq!(a.debt_repaid, tokens(15_000, 6));
        assert!(!a.collateral_bound);
    }

    #[test]
    fn collateral_bound_scales_the_repay_down() {
        // Only 5 WETH of collateral: at most 5 × 1,800 / 1.05 = 8,571.43 USDC can be repaid.
        let mut case = LiquidationCase {
            health_factor: wad_milli(600),
            ..weth_usdc(Release::V3_0)
        };
        case.collateral.balance = tokens(5, 18);
        let a = liquidation_amounts(&case, U256::MAX).unwrap();
        assert!(a.collateral_bound);
        assert_eq!(a.collateral_to_liquidator + a.protocol_fee, tokens(5, 18));
        assert_eq!(a.debt_repaid, U256::from(8_571_428_571u64));
        // The request sent is the capped one, not the repay: asking for the repay (rounded down)
        // would come back debt-bound, a hair short of all the collateral.
        assert_eq!(a.debt_to_cover, max_repay(&case));
        let asked_for_repay = liquidation_amounts(&case, a.debt_repaid).unwrap();
        assert!(!asked_for_repay.collateral_bound);
        assert!(asked_for_repay.collateral_to_liquidator < a.collateral_to_liquidator);
    }

    #[test]
    fn v3_3_full_by_default_half_of_total_for_large_healthy_ish_positions() {
        // HF 0.99 > 0.95, both sides ≥ $2,000, and this reserve's debt is all of the total: 50% of total.
        let case = weth_usdc(Release::V3_3);
        assert_eq!(max_repay(&case), tokens(7_500, 6));
        // Below 0.95: 100%.
        let deep = LiquidationCase {
            health_factor: wad_milli(940),
            ..case
        };
        assert_eq!(max_repay(&deep), tokens(15_000, 6));
        // A small position (under $2,000 of debt): 100% even above 0.95.
        let mut small = weth_usdc(Release::V3_3);
        small.debt.balance = tokens(1_500, 6);
        small.total_debt_base = usd(1_500);
        assert_eq!(max_repay(&small), tokens(1_500, 6));
        // The 50% is of the total debt: with $40,000 total debt, this $15,000 reserve is under half of it
        // and can be repaid in full.
        let mut spread = weth_usdc(Release::V3_3);
        spread.total_debt_base = usd(40_000);
        assert_eq!(max_repay(&spread), tokens(15_000, 6));
    }

    #[test]
    fn v3_3_dust_rule() {
        let case = LiquidationCase {
            health_factor: wad_milli(940),
            ..weth_usdc(Release::V3_3)
        };
        // Repaying 14,500 leaves $500 of debt while collateral remains: reverts with MustNotLeaveDust.
        assert_eq!(
            liquidation_amounts(&case, tokens(14_500, 6)),
            Err(SizingError::LeavesDust)
        );
        // Repaying 13,000 leaves $2,000 of debt and 10 − 7.58 WETH: fine.
        assert!(liquidation_amounts(&case, tokens(13_000, 6)).is_ok());
        // V3.0 has no such rule.
        let v30 = LiquidationCase {
            release: Release::V3_0,
            ..case
        };
        assert!(liquidation_amounts(&v30, tokens(14_500, 6)).is_ok());
    }

    #[test]
    fn v3_3_deficit_when_the_only_collateral_is_gone() {
        let mut case = LiquidationCase {
            health_factor: wad_milli(500),
            ..weth_usdc(Release::V3_3)
        };
        case.collateral.balance = tokens(5, 18);
        case.total_collateral_base = usd(9_000);
        let a = liquidation_amounts(&case, U256::MAX).unwrap();
        assert!(a.collateral_bound && a.creates_deficit);
        // With other collateral elsewhere, no deficit.
        case.total_collateral_base = usd(20_000);
        assert!(
            !liquidation_amounts(&case, U256::MAX)
                .unwrap()
                .creates_deficit
        );
    }

    /// A stablecoin eMode (LT 97%, bonus 1%): 10,000 DAI of collateral against 9,800 USDC of debt,
    /// HF 0.99. The borrower is in the category and DAI belongs to it, so the 1% bonus applies, not
    /// DAI's own 5%.
    #[test]
    fn emode_sizing_uses_the_category_bonus() {
        use crate::protocol::aave_v3::math::EModeCategory;
        // Reserve 1 (DAI) is among the category's collateral.
        let stables = EModeCategory {
            id: 1,
            ltv: 9_500,
            liquidation_threshold: 9_700,
            liquidation_bonus: 10_100,
            collateral_bitmap: 0b10,
            price: U256::ZERO,
        };
        assert_eq!(liquidation_bonus(10_500, 1, Some(&stables)), 10_100);
        // Not in the category's collateral, or the borrower not in eMode: the reserve's own bonus.
        assert_eq!(liquidation_bonus(10_500, 2, Some(&stables)), 10_500);
        assert_eq!(liquidation_bonus(10_500, 1, None), 10_500);

        let case = LiquidationCase {
            release: Release::V3_0,
            health_factor: wad_milli(990),
            total_debt_base: usd(9_800),
            total_collateral_base: usd(10_000),
            collateral: Side {
                balance: tokens(10_000, 18),
                price: usd(1),
                decimals: 18,
            },
            scaled_collateral: ScaledCollateral {
                scaled: tokens(10_000, 18),
                index: crate::units::RAY,
            },
            collateral_available: None,
            debt: Side {
                balance: tokens(9_800, 6),
                price: usd(1),
                decimals: 6,
            },
            bonus_bps: liquidation_bonus(10_500, 1, Some(&stables)),
            protocol_fee_bps: 1_000,
        };
        // Close factor 50%: 4,900 USDC repaid for 4,900 × 1.01 = 4,949 DAI, of which the 49 DAI bonus
        // pays 10% (4.9 DAI) to the treasury.
        let a = liquidation_amounts(&case, U256::MAX).unwrap();
        assert_eq!(a.debt_repaid, tokens(4_900, 6));
        assert_eq!(
            a.collateral_to_liquidator + a.protocol_fee,
            tokens(4_949, 18)
        );
        assert_eq!(a.protocol_fee, tokens(49, 17));
        // Outside eMode the same repay would seize 5,145 DAI.
        let plain = LiquidationCase {
            bonus_bps: 10_500,
            ..case
        };
        let b = liquidation_amounts(&plain, U256::MAX).unwrap();
        assert_eq!(
            b.collateral_to_liquidator + b.protocol_fee,
            tokens(5_145, 18)
        );
    }

    /// `_calculateAvailableCollateralToLiquidate` as the contracts compute it: every row's figures
    /// (collateral to the liquidator, debt repaid, protocol fee) were returned by the function of
    /// V3.4 (V3.3 alike), V3.5 (V3.6 alike) and V3.7, compiled from `aave-v3-origin` at those tags and
    /// called on anvil. The inputs: collateral price and decimals, debt price and decimals, debt to
    /// cover, collateral balance, bonus, protocol fee.
    #[test]
    fn seizure_equals_each_release_s_contract() {
        type Row = (
            u64,
            u8,
            u64,
            u8,
            &'static str,
            &'static str,
            u64,
            u64,
            [&'static str; 3],
            [&'static str; 3],
            [&'static str; 3],
        );
        let rows: [Row; 12] = [
            (
                200000000000,
                18,
                100000000,
                6,
                "7500000000",
                "10000000000000000000",
                10500,
                1000,
                ["3918750000000000000", "7500000000", "18750000000000000"],
                ["3918750000000000000", "7500000000", "18750000000000000"],
                ["3918750000000000000", "7500000000", "18750000000000000"],
            ),
            (
                179912345678,
                18,
                99980000,
                6,
                "12345678901",
                "10000000000000000000",
                10500,
                1000,
                ["7169410279236863543", "12345678901", "34303398465248151"],
                ["7169410279236863543", "12345678901", "34303398465248151"],
                ["7169410279236863543", "12345678901", "34303398465248151"],
            ),
            (
                6000000000000,
                8,
                200000000000,
                18,
                "3000000000000012345",
                "10000000",
                11000,
                1500,
                ["9863636", "2727272727272727273", "136364"],
                ["9863636", "2727272727272727273", "136364"],
                ["9863636", "2727272727272727273", "136364"],
            ),
            (
                179912345678,
                18,
                99980000,
                6,
                "1000000000000",
                "5000000000000000007",
                10500,
                1000,
                ["4976190476190476197", "8568968350", "23809523809523810"],
                ["4976190476190476197", "8568968350", "23809523809523810"],
                ["4976190476190476197", "8568968350", "23809523809523810"],
            ),
            (
                50000000,
                18,
                100000000,
                6,
                "333333333",
                "1000000000000000000001",
                11000,
                2000,
                ["719999999280000000000", "333333333", "13333333320000000000"],
                ["719999999280000000000", "333333333", "13333333320000000000"],
                ["719999999280000000000", "333333333", "13333333320000000000"],
            ),
            (
                200000000000,
                18,
                100000000,
                6,
                "9300000001",
                "5000000000000000000",
                10200,
                1000,
                ["4733700000509000000", "9300000001", "9300000001000000"],
                ["4733700000509000000", "9300000001", "9300000001000000"],
                ["4733700000509000000", "9300000001", "9300000001000000"],
            ),
            (
                4230843813327,
                6,
                466224197902,
                6,
                "8365346218",
                "9548838649",
                11334,
                3000,
                ["1007912573", "8365346218", "36891713"],
                ["1007912573", "8365346218", "36891713"],
                ["1007912571", "8365346218", "36891714"],
            ),
            (
                873583090772,
                6,
                610086427120,
                6,
                "77815325121",
                "5538929718",
                10345,
                3000,
                ["5483513650", "7666695516", "55416068"],
                ["5483513650", "7666695516", "55416068"],
                ["5483513649", "7666695516", "55416069"],
            ),
            (
                9853980896376,
                18,
                112446363595,
                18,
                "9494762578936874990378",
                "3553660735405458486121",
                10812,
                0,
                ["117145024045059328503", "9494762578936874990378", "0"],
                ["117145024045059328503", "9494762578936874990378", "0"],
                ["117145024045059328502", "9494762578936874990378", "0"],
            ),
            (
                4957521747717,
                6,
                460188176014,
                18,
                "98978174530841835855995",
                "6727484337",
                10307,
                3000,
                ["6667369725", "70315260736893956052305", "60114612"],
                ["6667369725", "70315260736893956052306", "60114612"],
                ["6667369724", "70315260736893956052306", "60114613"],
            ),
            (
                3350342843240,
                6,
                231863381837,
                8,
                "1799817107550",
                "697186885",
                10746,
                3000,
                ["682667024", "937474487584", "14519861"],
                ["682667024", "937474487585", "14519861"],
                ["682667023", "937474487585", "14519862"],
            ),
            (
                739924724688,
                6,
                496102854034,
                18,
                "91597410135135042282298",
                "4567234389",
                10716,
                3000,
                ["4475685122", "6356768698111267025947", "91549267"],
                ["4475685122", "6356768698111267025948", "91549267"],
                ["4475685121", "6356768698111267025948", "91549268"],
            ),
        ];
        let u = |s: &str| s.parse::<U256>().unwrap();
        for (cp, cd, dp, dd, cover, balance, bonus, fee, v34, v35, v37) in rows {
            let collateral = Side {
                balance: u(balance),
                price: U256::from(cp),
                decimals: cd,
            };
            let debt = Side {
                balance: U256::MAX,
                price: U256::from(dp),
                decimals: dd,
            };
            for (releases, expected) in [
                ([Release::V3_3, Release::V3_4], v34),
                ([Release::V3_5, Release::V3_6], v35),
                ([Release::V3_7, Release::V3_7], v37),
            ] {
                for release in releases {
                    let got = seizure(release, &collateral, &debt, u(cover), bonus, fee);
                    assert_eq!(
                        [
                            got.collateral_to_liquidator,
                            got.debt_repaid,
                            got.protocol_fee
                        ],
                        expected.map(u),
                        "{release}: {cover} of debt against {balance}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_full_close_asks_for_more_than_the_debt_it_sees() {
        // V3.3+ below HF 0.95: the whole debt; the request carries the interest until it lands.
        for release in [Release::V3_3, Release::V3_6, Release::V3_7] {
            let case = LiquidationCase {
                health_factor: wad_milli(940),
                ..weth_usdc(release)
            };
            let a = liquidation_amounts(&case, U256::MAX).unwrap();
            assert_eq!(a.debt_repaid, tokens(15_000, 6), "{release}");
            assert_eq!(
                a.debt_to_cover,
                tokens(15_000, 6) + full_close_headroom(tokens(15_000, 6))
            );
            assert!(a.debt_to_cover > a.debt_repaid);
            // Asking for it again gives the same liquidation.
            assert_eq!(liquidation_amounts(&case, a.debt_to_cover), Ok(a));
        }
        // A partial liquidation asks for exactly what it repays.
        let partial = liquidation_amounts(&weth_usdc(Release::V3_6), U256::MAX).unwrap();
        assert_eq!(partial.debt_to_cover, partial.debt_repaid);
        assert_eq!(partial.debt_repaid, tokens(7_500, 6));
    }

    #[test]
    fn a_reserve_short_of_underlying_caps_the_seizure() {
        let mut case = LiquidationCase {
            health_factor: wad_milli(940),
            ..weth_usdc(Release::V3_6)
        };
        // 15,000 USDC seizes 8.75 WETH less the fee; the reserve holds 3.
        case.collateral_available = Some(tokens(3, 18));
        assert_eq!(
            liquidation_amounts(&case, U256::MAX),
            Err(SizingError::ReserveShort)
        );
        let small = liquidation_amounts(&case, tokens(2_000, 6)).unwrap();
        assert!(small.collateral_to_liquidator <= tokens(3, 18));
    }

    /// V3.5 values leftover debt rounded up: 999.99999 USDC at $1.00000001 is worth
    /// $999.99999999999990, 1000e8 base units rounded up, one less rounded down.
    #[test]
    fn the_dust_rule_rounds_leftover_debt_as_the_release_does() {
        let case = |release| LiquidationCase {
            health_factor: wad_milli(900),
            total_debt_base: usd(3_000),
            total_collateral_base: usd(20_000),
            collateral: Side {
                balance: tokens(10, 18),
                price: usd(2_000),
                decimals: 18,
            },
            debt: Side {
                balance: tokens(3_000, 6),
                price: U256::from(100_000_001u64),
                decimals: 6,
            },
            ..weth_usdc(release)
        };
        let repay = tokens(3_000, 6) - U256::from(999_999_990u64);
        assert_eq!(
            liquidation_amounts(&case(Release::V3_4), repay),
            Err(SizingError::LeavesDust)
        );
        assert!(liquidation_amounts(&case(Release::V3_5), repay).is_ok());
    }

    /// V3.3–3.6 call it a deficit when the collateral taken is worth all the borrower's collateral;
    /// V3.7 when the scaled collateral consumed (each part rounded up) is worth all of it.
    #[test]
    fn deficits_by_release() {
        let ray = crate::units::RAY;
        // All 5 WETH of a position with no other collateral, at HF 0.5: collateral-bound.
        let mut case = LiquidationCase {
            health_factor: wad_milli(500),
            total_collateral_base: usd(9_000),
            ..weth_usdc(Release::V3_6)
        };
        case.collateral.balance = tokens(5, 18);
        case.collateral.price = usd(1_800);
        case.scaled_collateral = ScaledCollateral {
            scaled: tokens(5, 18),
            index: ray,
        };
        for release in [Release::V3_3, Release::V3_6, Release::V3_7] {
            let a = liquidation_amounts(&LiquidationCase { release, ..case }, U256::MAX).unwrap();
            assert!(a.collateral_bound && a.creates_deficit, "{release}");
        }
        // Before V3.3 there are no deficits.
        let a = liquidation_amounts(
            &LiquidationCase {
                release: Release::V3_2,
                ..case
            },
            U256::MAX,
        )
        .unwrap();
        assert!(!a.creates_deficit);
        // Other collateral elsewhere: none.
        let elsewhere = LiquidationCase {
            total_collateral_base: usd(20_000),
            ..case
        };
        for release in [Release::V3_6, Release::V3_7] {
            let a = liquidation_amounts(
                &LiquidationCase {
                    release,
                    ..elsewhere
                },
                U256::MAX,
            )
            .unwrap();
            assert!(!a.creates_deficit, "{release}");
        }
        // The scaled balance at an index of 1.5 is 3.333… WETH: seizing all of the (floored)
        // 5 WETH less one wei of balance, V3.7's ceilings consume every scaled unit, a deficit, as
        // the older test (value taken equal to the total) also finds.
        let scaled = tokens(5, 18) * U256::from(2u8) / U256::from(3u8) + U256::from(1u8);
        let index = ray * U256::from(3u8) / U256::from(2u8);
        let balance = crate::protocol::aave_v3::math::ray_mul_floor(scaled, index);
        let mut odd = case;
        odd.collateral.balance = balance;
        odd.total_collateral_base = odd.collateral.value(balance);
        odd.scaled_collateral = ScaledCollateral { scaled, index };
        for release in [Release::V3_6, Release::V3_7] {
            let a = liquidation_amounts(&LiquidationCase { release, ..odd }, U256::MAX).unwrap();
            assert!(a.creates_deficit, "{release}");
        }
    }

    #[test]
    fn healthy_positions_are_refused() {
        let case = LiquidationCase {
            health_factor: WAD,
            ..weth_usdc(Release::V3_0)
        };
        assert_eq!(
            liquidation_amounts(&case, U256::MAX),
            Err(SizingError::Healthy)
        );
    }

    #[test]
    fn best_repay_stops_where_price_impact_eats_the_bonus() {
        // The collateral sells at the oracle price less an impact growing with size: output =
        // value·(1 − k·value). With a 5% bonus, profit peaks before the close-factor maximum.
        let case = LiquidationCase {
            health_factor: wad_milli(940),
            ..weth_usdc(Release::V3_0)
        };
        let usdc_out = |weth: U256| -> i128 {
            let value = weth * U256::from(1_800_000_000u64) / WAD; // USDC raw units
            let v = value.to::<u128>() as i128;
            v - v * v / 200_000_000_000 // impact: 1% per $2,000
        };
        let (amounts, profit) = best_repay(&case, |a| {
            Ok::<_, ()>(Some(
                usdc_out(a.collateral_to_liquidator) - a.debt_repaid.to::<u128>() as i128,
            ))
        })
        .unwrap()
        .unwrap();
        assert!(profit > 0);
        assert!(
            amounts.debt_repaid < max_repay(&case),
            "impact should stop short of the maximum"
        );
        // No other repay does better (checked on a fine grid).
        for k in 1..=200u64 {
            let repay = max_repay(&case) * U256::from(k) / U256::from(200u64);
            let a = liquidation_amounts(&case, repay).unwrap();
            let p = usdc_out(a.collateral_to_liquidator) - a.debt_repaid.to::<u128>() as i128;
            assert!(p <= profit + 2, "repay {repay} gives {p} > {profit}");
        }
        // Nothing profitable: None.
        assert!(
            best_repay(&case, |_| Ok::<_, ()>(Some(-1)))
                .unwrap()
                .is_none()
        );
    }

    /// Selling token0 of a test pool or pair.
    fn sale_of(venue: &Venue) -> VenueSale<'_> {
        VenueSale {
            venue,
            token_in: Address::repeat_byte(1),
        }
    }

    /// 1,000 of an 18-decimal token at $1 against 900 of another, HF 0.9: the close factor is 100%,
    /// and both sides trade at price 1 on the test venues.
    fn dollar_pair(release: Release) -> LiquidationCase {
        LiquidationCase {
            release,
            health_factor: wad_milli(900),
            total_debt_base: usd(900),
            total_collateral_base: usd(1_000),
            collateral: Side {
                balance: tokens(1_000, 18),
                price: usd(1),
                decimals: 18,
            },
            scaled_collateral: ScaledCollateral {
                scaled: tokens(1_000, 18),
                index: crate::units::RAY,
            },
            collateral_available: None,
            debt: Side {
                balance: tokens(900, 18),
                price: usd(1),
                decimals: 18,
            },
            bonus_bps: 10_500,
            protocol_fee_bps: 1_000,
        }
    }

    fn venues() -> Vec<(&'static str, Venue)> {
        use crate::planner::venues::{uniswap_v2::PairState, uniswap_v3::flat_pool};
        let pair = |depth: u64| PairState {
            address: Address::ZERO,
            token0: Address::repeat_byte(1),
            token1: Address::repeat_byte(2),
            reserve0: tokens(depth, 18),
            reserve1: tokens(depth, 18),
        };
        vec![
            ("a thin pool", Venue::V3(flat_pool(10u128.pow(22)))),
            ("a deep pool", Venue::V3(flat_pool(10u128.pow(26)))),
            ("a thin pair", Venue::V2(pair(5_000))),
            ("a deep pair", Venue::V2(pair(10_000_000))),
        ]
    }

    use crate::planner::venues::{Venue, VenueSale};
    use alloy::primitives::Address;

    #[test]
    fn the_best_repay_on_a_venue_is_where_its_price_meets_the_protocols() {
        let case = dollar_pair(Release::V3_0);
        let costs = tokens(1, 18) / U256::from(10u8);
        let largest = liquidation_amounts(&case, max_repay(&case)).unwrap();
        for (name, venue) in venues() {
            let venue = sale_of(&venue);
            let (amounts, out, net) =
                best_on_venue(&case, &largest_allowed(&case), &venue, costs).expect(name);
            assert_eq!(
                Some(out),
                venue.sell(amounts.collateral_to_liquidator),
                "{name}"
            );
            assert_eq!(
                net,
                signed(out) - signed(amounts.debt_repaid + costs),
                "{name}"
            );
            // Thin venues stop inside, deep ones take the largest repay.
            if name.starts_with("a deep") {
                assert_eq!(amounts, largest, "{name}");
            } else {
                assert!(amounts.debt_repaid < largest.debt_repaid, "{name}");
            }
            // No repay on a fine grid does better, and the search agrees.
            for k in 1..=500u64 {
                let a = liquidation_amounts(
                    &case,
                    max_repay(&case) * U256::from(k) / U256::from(500u64),
                )
                .unwrap();
                if let Some(o) = venue.sell(a.collateral_to_liquidator) {
                    let p = signed(o) - signed(a.debt_repaid + costs);
                    assert!(
                        p <= net + 1_000,
                        "{name}: repay {} gives {p} > {net}",
                        a.debt_repaid
                    );
                }
            }
            let (_, searched) = best_repay(&case, |a| {
                Ok::<_, ()>(
                    venue
                        .sell(a.collateral_to_liquidator)
                        .map(|o| signed(o) - signed(a.debt_repaid + costs)),
                )
            })
            .unwrap()
            .unwrap();
            assert!(
                searched <= net + 1_000,
                "{name}: the search found {searched} > {net}"
            );
        }
        // Costs above what any size makes: nothing.
        let (_, venue) = venues().remove(0);
        assert!(
            best_on_venue(
                &case,
                &largest_allowed(&case),
                &sale_of(&venue),
                tokens(100, 18)
            )
            .is_none()
        );
    }

    #[test]
    fn a_best_size_the_dust_rule_refuses_is_searched_for_among_the_sizes_it_allows() {
        // V3.3, $1,500 of collateral against $1,400 of debt, HF below 0.95 (100% close factor): on
        // a pool three times the thin one's depth the best sale stops at a repay that would leave under
        // $1,000 of debt and of collateral.
        let case = LiquidationCase {
            health_factor: wad_milli(900),
            total_debt_base: usd(1_400),
            total_collateral_base: usd(1_500),
            collateral: Side {
                balance: tokens(1_500, 18),
                ..dollar_pair(Release::V3_3).collateral
            },
            debt: Side {
                balance: tokens(1_400, 18),
                ..dollar_pair(Release::V3_3).debt
            },
            ..dollar_pair(Release::V3_3)
        };
        let pool = Venue::V3(crate::planner::venues::uniswap_v3::flat_pool(
            3 * 10u128.pow(22),
        ));
        let venue = sale_of(&pool);
        let largest = liquidation_amounts(&case, max_repay(&case)).unwrap();
        let floor = Rate {
            out: largest.debt_repaid,
            paid: largest.collateral_to_liquidator,
        };
        let (sold, _) = venue
            .sell_down_to(largest.collateral_to_liquidator, floor)
            .unwrap();
        let unconstrained = largest.debt_repaid * sold / largest.collateral_to_liquidator;
        assert_eq!(
            liquidation_amounts(&case, unconstrained),
            Err(SizingError::LeavesDust),
            "the case is meant to hit the dust rule"
        );
        let costs = U256::ZERO;
        let (amounts, _, net) =
            best_on_venue(&case, &largest_allowed(&case), &venue, costs).expect("a valid size");
        assert!(net > 0);
        assert_eq!(
            liquidation_amounts(&case, amounts.debt_to_cover),
            Ok(amounts),
            "the protocol takes it"
        );
        for k in 1..=500u64 {
            if let Ok(a) =
                liquidation_amounts(&case, max_repay(&case) * U256::from(k) / U256::from(500u64))
                && let Some(o) = venue.sell(a.collateral_to_liquidator)
            {
                let p = signed(o) - signed(a.debt_repaid + costs);
                assert!(
                    p <= net + 1_000_000,
                    "repay {} gives {p} > {net}",
                    a.debt_repaid
                );
            }
        }
    }
}
