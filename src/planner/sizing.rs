//! How much of a position may be liquidated and what the liquidator receives, by the rules of the Aave
//! version in front of us (`LiquidationLogic.sol` of V3.0 to V3.2, and of V3.3 and later), and the repay
//! amount that maximises net profit once the sale of the collateral and the costs are counted.

use super::venues::Rate;
use crate::protocol::aave_v3::math::{percent_div, percent_mul};
use alloy::primitives::U256;

/// Which liquidation rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Rules {
    /// V3.0 to V3.2: 50% of the reserve's debt while HF > 0.95, 100% below; no dust rule.
    V3_0,
    /// V3.3 and later: 100% by default; 50% of the *total* debt only when HF > 0.95 and both the
    /// reserve's collateral and debt are worth at least $2,000; leftovers under $1,000 revert; a
    /// position left without collateral has its remaining debt burned as a deficit.
    V3_3,
}

/// HF above which the close factor is 50% (0.95, WAD).
pub const CLOSE_FACTOR_HF_THRESHOLD: U256 = U256::from_limbs([950_000_000_000_000_000, 0, 0, 0]);
/// V3.3: both sides must be worth at least this (base units) for the 50% limit to apply.
pub const MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD: U256 = U256::from_limbs([200_000_000_000, 0, 0, 0]);
/// V3.3: a partial liquidation may not leave less than this (base units) of debt or collateral.
pub const MIN_LEFTOVER_BASE: U256 = U256::from_limbs([100_000_000_000, 0, 0, 0]);

/// One side of a liquidation: a reserve of the borrower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    /// The borrower's balance in this reserve (current, with interest), raw token units.
    pub balance: U256,
    /// Oracle price (base units).
    pub price: U256,
    /// Token decimals.
    pub decimals: u8,
}

impl Side {
    fn unit(&self) -> U256 {
        U256::from(10u64).pow(U256::from(self.decimals))
    }

    fn value(&self, amount: U256) -> U256 {
        amount * self.price / self.unit()
    }
}

/// Everything the protocol looks at to size one liquidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiquidationCase {
    /// The rules.
    pub rules: Rules,
    /// The borrower's health factor (WAD).
    pub health_factor: U256,
    /// The borrower's total debt across reserves (base units).
    pub total_debt_base: U256,
    /// The borrower's total collateral across reserves (base units).
    pub total_collateral_base: U256,
    /// The collateral reserve being seized.
    pub collateral: Side,
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
    /// refuses, and seizing less than planned).
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
}

/// The bonus a liquidation of this collateral pays (bps, including 100%): the eMode category's when
/// the borrower is in an eMode and the collateral belongs to that category (Aave V3.0–3.1: the
/// reserve's configured category), the reserve's own otherwise.
pub fn liquidation_bonus(
    reserve_bonus_bps: u64,
    reserve_category: u8,
    user_emode: Option<&crate::protocol::aave_v3::math::EModeCategory>,
) -> u64 {
    match user_emode {
        Some(e) if e.id != 0 && e.id == reserve_category => e.liquidation_bonus,
        _ => reserve_bonus_bps,
    }
}

/// The most debt a `liquidationCall` will repay in this pair.
pub fn max_repay(case: &LiquidationCase) -> U256 {
    match case.rules {
        Rules::V3_0 => {
            let factor = if case.health_factor > CLOSE_FACTOR_HF_THRESHOLD {
                5_000
            } else {
                10_000
            };
            percent_mul(case.debt.balance, factor)
        }
        Rules::V3_3 => {
            let collateral_value = case.collateral.value(case.collateral.balance);
            let debt_value = case.debt.value(case.debt.balance);
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
    let debt_to_cover = requested.min(max_repay(case));
    let (c, d) = (&case.collateral, &case.debt);
    let base_collateral = d.price * debt_to_cover * c.unit() / (c.price * d.unit());
    let max_collateral = percent_mul(base_collateral, case.bonus_bps);
    let (collateral_total, debt_repaid, collateral_bound) = if max_collateral > c.balance {
        let needed = percent_div(
            c.price * c.balance * d.unit() / (d.price * c.unit()),
            case.bonus_bps,
        );
        (c.balance, needed, true)
    } else {
        (max_collateral, debt_to_cover, false)
    };
    let protocol_fee = if case.protocol_fee_bps == 0 {
        U256::ZERO
    } else {
        let bonus_part = collateral_total - percent_div(collateral_total, case.bonus_bps);
        percent_mul(bonus_part, case.protocol_fee_bps)
    };
    let mut creates_deficit = false;
    if case.rules == Rules::V3_3 {
        let debt_left = d.balance - debt_repaid.min(d.balance);
        let collateral_left = c.balance - collateral_total;
        let leaves_both = debt_left > U256::ZERO && collateral_left > U256::ZERO;
        if leaves_both
            && (d.value(debt_left) < MIN_LEFTOVER_BASE
                || c.value(collateral_left) < MIN_LEFTOVER_BASE)
        {
            return Err(SizingError::LeavesDust);
        }
        // All of this collateral gone and it was the borrower's only collateral: the rest is burned.
        let this_collateral_value = c.value(c.balance);
        creates_deficit =
            collateral_left.is_zero() && this_collateral_value >= case.total_collateral_base;
    }
    Ok(LiquidationAmounts {
        debt_to_cover,
        debt_repaid,
        collateral_to_liquidator: collateral_total - protocol_fee,
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

/// A place to sell the seized collateral, as sizing sees it (a Uniswap pool or pair, for one token).
pub trait Sale {
    /// What selling exactly `amount` returns; `None` when it cannot take all of it.
    fn sell(&self, amount: U256) -> Option<U256>;
    /// Sells at most `max_in` while one more unit sold still returns at least `floor`:
    /// (sold, returned).
    fn sell_down_to(&self, max_in: U256, floor: Rate) -> Option<(U256, U256)>;
}

/// The best liquidation selling on one venue: the repay that makes the most of sale − repay − `costs`,
/// with what its collateral sells for and that net (debt units); `None` when nothing is profitable.
///
/// The protocol pays collateral in proportion to the repay (its price and bonus), so every unit of
/// collateral costs the same repay, the largest liquidation's ratio. A sale returns less per unit the
/// more it sells, so the best sale stops where one more unit returns less than that: the largest
/// repay when the venue still pays more at its end, otherwise the sale down to that price, which a
/// Uniswap pool gives in one simulated swap (its price limit) and a V2 pair in closed form. One or two
/// swap simulations per venue instead of a search. A size the protocol would refuse (V3.3's dust rule)
/// sends it to [`best_repay`]'s search over the sizes it allows.
pub fn best_on_venue(
    case: &LiquidationCase,
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
    let Ok(largest) = liquidation_amounts(case, max_repay(case)) else {
        return search();
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
            Err(_) => return search(),
        }
    };
    let net = net(out, &amounts);
    (net > 0).then_some((amounts, out, net))
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
    fn weth_usdc(rules: Rules) -> LiquidationCase {
        LiquidationCase {
            rules,
            health_factor: wad_milli(990),
            total_debt_base: usd(15_000),
            total_collateral_base: usd(18_000),
            collateral: Side {
                balance: tokens(10, 18),
                price: usd(1_800),
                decimals: 18,
            },
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
        let case = weth_usdc(Rules::V3_0);
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
            ..weth_usdc(Rules::V3_0)
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
            ..weth_usdc(Rules::V3_0)
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
        let case = weth_usdc(Rules::V3_3);
        assert_eq!(max_repay(&case), tokens(7_500, 6));
        // Below 0.95: 100%.
        let deep = LiquidationCase {
            health_factor: wad_milli(940),
            ..case
        };
        assert_eq!(max_repay(&deep), tokens(15_000, 6));
        // A small position (under $2,000 of debt): 100% even above 0.95.
        let mut small = weth_usdc(Rules::V3_3);
        small.debt.balance = tokens(1_500, 6);
        small.total_debt_base = usd(1_500);
        assert_eq!(max_repay(&small), tokens(1_500, 6));
        // The 50% is of the total debt: with $40,000 total debt, this $15,000 reserve is under half of it
        // and can be repaid in full.
        let mut spread = weth_usdc(Rules::V3_3);
        spread.total_debt_base = usd(40_000);
        assert_eq!(max_repay(&spread), tokens(15_000, 6));
    }

    #[test]
    fn v3_3_dust_rule() {
        let case = LiquidationCase {
            health_factor: wad_milli(940),
            ..weth_usdc(Rules::V3_3)
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
            rules: Rules::V3_0,
            ..case
        };
        assert!(liquidation_amounts(&v30, tokens(14_500, 6)).is_ok());
    }

    #[test]
    fn v3_3_deficit_when_the_only_collateral_is_gone() {
        let mut case = LiquidationCase {
            health_factor: wad_milli(500),
            ..weth_usdc(Rules::V3_3)
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
        let stables = EModeCategory {
            id: 1,
            ltv: 9_500,
            liquidation_threshold: 9_700,
            liquidation_bonus: 10_100,
            price: U256::ZERO,
        };
        assert_eq!(liquidation_bonus(10_500, 1, Some(&stables)), 10_100);
        // Not in the category's collateral, or the borrower not in eMode: the reserve's own bonus.
        assert_eq!(liquidation_bonus(10_500, 2, Some(&stables)), 10_500);
        assert_eq!(liquidation_bonus(10_500, 1, None), 10_500);

        let case = LiquidationCase {
            rules: Rules::V3_0,
            health_factor: wad_milli(990),
            total_debt_base: usd(9_800),
            total_collateral_base: usd(10_000),
            collateral: Side {
                balance: tokens(10_000, 18),
                price: usd(1),
                decimals: 18,
            },
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

    #[test]
    fn healthy_positions_are_refused() {
        let case = LiquidationCase {
            health_factor: WAD,
            ..weth_usdc(Rules::V3_0)
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
            ..weth_usdc(Rules::V3_0)
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
    fn dollar_pair(rules: Rules) -> LiquidationCase {
        LiquidationCase {
            rules,
            health_factor: wad_milli(900),
            total_debt_base: usd(900),
            total_collateral_base: usd(1_000),
            collateral: Side {
                balance: tokens(1_000, 18),
                price: usd(1),
                decimals: 18,
            },
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
        let case = dollar_pair(Rules::V3_0);
        let costs = tokens(1, 18) / U256::from(10u8);
        let largest = liquidation_amounts(&case, max_repay(&case)).unwrap();
        for (name, venue) in venues() {
            let venue = sale_of(&venue);
            let (amounts, out, net) = best_on_venue(&case, &venue, costs).expect(name);
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
        assert!(best_on_venue(&case, &sale_of(&venue), tokens(100, 18)).is_none());
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
                ..dollar_pair(Rules::V3_3).collateral
            },
            debt: Side {
                balance: tokens(1_400, 18),
                ..dollar_pair(Rules::V3_3).debt
            },
            ..dollar_pair(Rules::V3_3)
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
        let (amounts, _, net) = best_on_venue(&case, &venue, costs).expect("a valid size");
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
