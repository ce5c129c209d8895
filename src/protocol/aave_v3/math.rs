//! Aave V3's fixed-point math and health computation, reproduced from the protocol's own libraries
//! (`WadRayMath`, `PercentageMath`, `MathUtils`, `ReserveLogic`, `GenericLogic` in `@aave/core-v3`
//! 1.19.3), so a health factor computed here equals `getUserAccountData` at the same block.

use crate::units::{RAY, WAD};
use alloy::primitives::U256;

/// Seconds in Aave's year (365 days).
pub const SECONDS_PER_YEAR: u64 = 365 * 24 * 3600;

const HALF_RAY: U256 = U256::from_limbs([0x4fe8401e74000000, 0x19d971e, 0, 0]);
const PERCENTAGE_FACTOR: u64 = 10_000;

/// `a·b / RAY`, rounded half up. Re-pricing every position after a price move is mostly this.
pub fn ray_mul(a: U256, b: U256) -> U256 {
    div_pow10(a * b + HALF_RAY, 27)
}

/// `a·RAY / b`, rounded half up.
pub fn ray_div(a: U256, b: U256) -> U256 {
    div_by(a * RAY + (b >> 1), b)
}

/// `a·WAD / b`, rounded half up.
pub fn wad_div(a: U256, b: U256) -> U256 {
    div_by(a * WAD + (b >> 1), b)
}

/// `value·bps / 10_000`, rounded half up.
pub fn percent_mul(value: U256, bps: u64) -> U256 {
    div_pow10(
        value * U256::from(bps) + U256::from(PERCENTAGE_FACTOR / 2),
        4,
    )
}

/// `value·10_000 / bps`, rounded half up.
pub fn percent_div(value: U256, bps: u64) -> U256 {
    div_by(
        value * U256::from(PERCENTAGE_FACTOR) + U256::from(bps / 2),
        U256::from(bps),
    )
}

/// ⌊x / d⌋. The divisors of health math (a position's debt and collateral in base currency, a
/// token's unit, 10,000) fit in one 64-bit limb: then short division, one hardware divide per limb
/// of `x`, several times faster than ruint's general long division, which stays for wider ones.
/// (A divide by multiplication with a prepared reciprocal, Möller and Granlund's, measured slower on
/// this machine's EPYC: its 128-by-64 divide is quick, the reciprocal's chain of multiplies is not.)
pub fn div_by(x: U256, d: U256) -> U256 {
    match u64::try_from(d) {
        Ok(d) if d != 0 => div_limb(x, d),
        _ => x / d,
    }
}

/// ⌊x / 10^k⌋: 10^k = 2^k·5^k and ⌊⌊x / 2^k⌋ / 5^k⌋ = ⌊x / 10^k⌋, so a shift and a short division
/// by 5^k, which fits in a limb up to k = 27 (a ray, and every token unit in practice).
pub fn div_pow10(x: U256, k: u8) -> U256 {
    match POW5.get(usize::from(k)) {
        Some(&five_k) => div_limb(x >> usize::from(k), five_k),
        None => x / U256::from(10u64).pow(U256::from(k)),
    }
}

/// 5^0 ..= 5^27, the powers of five below 2^64.
const POW5: [u64; 28] = {
    let mut p = [1u64; 28];
    let mut k = 1;
    while k < p.len() {
        p[k] = p[k - 1] * 5;
        k += 1;
    }
    p
};

/// ⌊x / d⌋ for a one-limb `d`: schoolbook short division, top limb first; limbs below `d` at the top
/// are carried without a divide.
fn div_limb(x: U256, d: u64) -> U256 {
    let mut limbs = x.into_limbs();
    let mut rem = 0u64;
    for limb in limbs.iter_mut().rev() {
        if rem == 0 && *limb < d {
            (rem, *limb) = (*limb, 0);
            continue;
        }
        (*limb, rem) = div_2by1(rem, *limb, d);
    }
    U256::from_limbs(limbs)
}

/// `(hi·2^64 + lo) / d` and its remainder, for `hi < d` (the quotient then fits in a limb), which
/// [`div_limb`] holds by construction: its carried remainder is below `d`. On x86-64 one `div`
/// instruction; Rust's u128 division is a call to compiler-builtins' `__udivti3`, which must handle
/// any divisor, and dropping it cut `account_data` over 10,000 positions from 2.34 to 1.78 ms (a
/// throwaway probe of the devnet's positions). No debug assertion here: in the dev profile's
/// build it cost all of that again.
#[inline(always)]
fn div_2by1(hi: u64, lo: u64, d: u64) -> (u64, u64) {
    #[cfg(target_arch = "x86_64")]
    {
        let (quotient, remainder);
        // SAFETY: `div` divides rdx:rax by its operand and faults only on a zero divisor or a
        // quotient beyond 64 bits, which `hi < d` rules out; it reads and writes registers only.
        unsafe {
            std::arch::asm!(
                "div {d}",
                d = in(reg) d,
                inout("rax") lo => quotient,
                inout("rdx") hi => remainder,
                options(pure, nomem, nostack),
            );
        }
        (quotient, remainder)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let n = (u128::from(hi) << 64) | u128::from(lo);
        ((n / u128::from(d)) as u64, (n % u128::from(d)) as u64)
    }
}

/// `RAY + rate·Δt / year`: supply interest accrues linearly between updates.
pub fn linear_interest(rate: U256, last_update: u64, now: u64) -> U256 {
    RAY + rate * U256::from(now.saturating_sub(last_update)) / U256::from(SECONDS_PER_YEAR)
}

/// The three-term binomial approximation of `(1 + rate/year)^Δt` that Aave compounds debt with.
pub fn compounded_interest(rate: U256, last_update: u64, now: u64) -> U256 {
    let exp = now.saturating_sub(last_update);
    if exp == 0 {
        return RAY;
    }
    let year = U256::from(SECONDS_PER_YEAR);
    let exp_u = U256::from(exp);
    let exp_minus_one = U256::from(exp - 1);
    let exp_minus_two = U256::from(exp.saturating_sub(2));
    let base_power_two = ray_mul(rate, rate) / (year * year);
    let base_power_three = ray_mul(base_power_two, rate) / year;
    let second = exp_u * exp_minus_one * base_power_two / U256::from(2u8);
    let third = exp_u * exp_minus_one * exp_minus_two * base_power_three / U256::from(6u8);
    RAY + rate * exp_u / year + second + third
}

/// What health needs of one reserve: its indexes and rates as of its last update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ReserveIndexes {
    /// Supply index (ray).
    pub liquidity_index: U256,
    /// Supply rate (ray per year).
    pub liquidity_rate: U256,
    /// Variable borrow index (ray).
    pub variable_borrow_index: U256,
    /// Variable borrow rate (ray per year).
    pub variable_borrow_rate: U256,
    /// When the indexes were last written.
    pub last_update_timestamp: u64,
}

impl ReserveIndexes {
    /// `getNormalizedIncome` at `now`.
    pub fn normalized_income(&self, now: u64) -> U256 {
        if self.last_update_timestamp == now {
            return self.liquidity_index;
        }
        ray_mul(
            linear_interest(self.liquidity_rate, self.last_update_timestamp, now),
            self.liquidity_index,
        )
    }

    /// `getNormalizedDebt` at `now`.
    pub fn normalized_debt(&self, now: u64) -> U256 {
        if self.last_update_timestamp == now {
            return self.variable_borrow_index;
        }
        ray_mul(
            compounded_interest(self.variable_borrow_rate, self.last_update_timestamp, now),
            self.variable_borrow_index,
        )
    }
}

/// The fields of a reserve's configuration bitmap the keeper uses (V3.0 to V3.7 share this layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ReserveConfig {
    /// Loan to value, bps.
    pub ltv: u64,
    /// Liquidation threshold, bps.
    pub liquidation_threshold: u64,
    /// Liquidation bonus, bps including the 100%.
    pub liquidation_bonus: u64,
    /// Token decimals.
    pub decimals: u8,
    /// Active.
    pub active: bool,
    /// Frozen (no new supply or borrow; liquidations still work).
    pub frozen: bool,
    /// Stable-rate borrowing enabled (V3.0 to V3.1).
    pub stable_borrowing: bool,
    /// Paused (nothing works, liquidations included).
    pub paused: bool,
    /// Share of the bonus to the treasury, bps.
    pub liquidation_protocol_fee: u64,
    /// eMode category, 0 for none.
    pub emode_category: u8,
}

impl ReserveConfig {
    /// Decodes `ReserveConfigurationMap.data`.
    pub fn decode(data: U256) -> Self {
        let bits = |from: usize, width: usize| -> u64 {
            let mask = (U256::from(1u8) << width) - U256::from(1u8);
            ((data >> from) & mask).to::<u64>()
        };
        Self {
            ltv: bits(0, 16),
            liquidation_threshold: bits(16, 16),
            liquidation_bonus: bits(32, 16),
            decimals: bits(48, 8) as u8,
            active: bits(56, 1) == 1,
            frozen: bits(57, 1) == 1,
            stable_borrowing: bits(59, 1) == 1,
            paused: bits(60, 1) == 1,
            liquidation_protocol_fee: bits(152, 16),
            emode_category: bits(168, 8) as u8,
        }
    }
}

/// A user's holding in one reserve, as stored: balances are scaled (divided by the index at the time),
/// so they stay valid as interest accrues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct UserReserve {
    /// Index of the reserve in the Pool's list (its `id`).
    pub reserve_id: u16,
    /// aToken `scaledBalanceOf`.
    pub scaled_a_token: U256,
    /// Variable debt token `scaledBalanceOf`.
    pub scaled_variable_debt: U256,
    /// Stable debt principal (V3.0 to V3.1; zero elsewhere).
    pub stable_principal: U256,
    /// The user's stable rate (ray).
    pub stable_rate: U256,
    /// When the stable debt last accrued.
    pub stable_last_update: u64,
    /// Enabled as collateral by the user.
    pub collateral_enabled: bool,
    /// Borrowing from this reserve.
    pub borrowing: bool,
}

/// One reserve as health needs it at a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveView<'a> {
    /// Configuration.
    pub config: &'a ReserveConfig,
    /// `getNormalizedIncome` at the block.
    pub income: U256,
    /// `getNormalizedDebt` at the block.
    pub debt_index: U256,
    /// Oracle price (base currency units).
    pub price: U256,
}

impl<'a> ReserveView<'a> {
    /// The view at `now`, computing the normalized indexes (callers pricing many positions compute
    /// them once per block instead).
    pub fn at(config: &'a ReserveConfig, indexes: &ReserveIndexes, price: U256, now: u64) -> Self {
        Self {
            config,
            income: indexes.normalized_income(now),
            debt_index: indexes.normalized_debt(now),
            price,
        }
    }
}

/// An eMode category as it applies to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct EModeCategory {
    /// Category id.
    pub id: u8,
    /// LTV inside the category, bps.
    pub ltv: u64,
    /// Liquidation threshold inside the category, bps.
    pub liquidation_threshold: u64,
    /// Liquidation bonus inside the category, bps.
    pub liquidation_bonus: u64,
    /// The category's own price, when it has a price source (0 otherwise).
    pub price: U256,
}

/// `getUserAccountData`'s figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountData {
    /// Collateral in base currency.
    pub total_collateral_base: U256,
    /// Debt in base currency.
    pub total_debt_base: U256,
    /// Weighted liquidation threshold, bps.
    pub avg_liquidation_threshold: U256,
    /// Health factor (WAD; `U256::MAX` with no debt).
    pub health_factor: U256,
}

/// `GenericLogic.calculateUserAccountData` at timestamp `now`: `reserve(id)` gives each reserve's view.
pub fn account_data<'a>(
    holdings: &[UserReserve],
    emode: Option<&EModeCategory>,
    now: u64,
    reserve: impl Fn(u16) -> Option<ReserveView<'a>>,
) -> AccountData {
    let mut collateral = U256::ZERO;
    let mut debt = U256::ZERO;
    let mut weighted_lt = U256::ZERO;
    for h in holdings
        .iter()
        .filter(|h| h.collateral_enabled || h.borrowing)
    {
        let Some(r) = reserve(h.reserve_id) else {
            continue;
        };
        let in_emode = emode.filter(|e| e.id != 0 && e.id == r.config.emode_category);
        let price = match in_emode {
            Some(e) if !e.price.is_zero() => e.price,
            _ => r.price,
        };
        if r.config.liquidation_threshold != 0 && h.collateral_enabled {
            let balance = ray_mul(h.scaled_a_token, r.income);
            let value = div_pow10(balance * price, r.config.decimals);
            collateral += value;
            let lt = in_emode.map_or(r.config.liquidation_threshold, |e| e.liquidation_threshold);
            weighted_lt += value * U256::from(lt);
        }
        if h.borrowing {
            let mut owed = U256::ZERO;
            if !h.scaled_variable_debt.is_zero() {
                owed = ray_mul(h.scaled_variable_debt, r.debt_index);
            }
            if !h.stable_principal.is_zero() {
                owed += ray_mul(
                    h.stable_principal,
                    compounded_interest(h.stable_rate, h.stable_last_update, now),
                );
            }
            debt += div_pow10(price * owed, r.config.decimals);
        }
    }
    let avg_lt = if collateral.is_zero() {
        U256::ZERO
    } else {
        div_by(weighted_lt, collateral)
    };
    let health_factor = if debt.is_zero() {
        U256::MAX
    } else {
        wad_div(percent_mul(collateral, avg_lt.to::<u64>()), debt)
    };
    AccountData {
        total_collateral_base: collateral,
        total_debt_base: debt,
        avg_liquidation_threshold: avg_lt,
        health_factor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift: reproducible operands of every width.
    fn numbers() -> impl FnMut() -> u64 {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn short_division_equals_long_division() {
        let mut next = numbers();
        for i in 0..20_000 {
            // Numerators of one to four limbs; divisors of one limb, small and large, and wider.
            let limbs = 1 + i % 4;
            let mut x = [0u64; 4];
            x[..limbs].iter_mut().for_each(|l| *l = next());
            let x = U256::from_limbs(x);
            let d = match i % 5 {
                0 => U256::from(next() % 10_000 + 1),
                1 => U256::from(next() | 1),
                2 => U256::from(u64::MAX),
                3 => U256::from_limbs([next(), next() >> 3, 0, 0]),
                _ => U256::from(1u8),
            };
            assert_eq!(div_by(x, d), x / d, "{x} / {d}");
            let k = (i % 40) as u8;
            let ten_k = U256::from(10u64).pow(U256::from(k));
            assert_eq!(div_pow10(x, k), x / ten_k, "{x} / 10^{k}");
        }
        for d in [1u64, 2, 3, 10_000, 1 << 63, (1 << 63) + 1, u64::MAX] {
            let d = U256::from(d);
            assert_eq!(div_by(U256::MAX, d), U256::MAX / d, "MAX / {d}");
            assert_eq!(div_by(d - U256::from(1u8), d), U256::ZERO);
        }
        assert_eq!(div_pow10(U256::ZERO, 27), U256::ZERO);
    }

    #[test]
    fn ray_mul_is_the_division_by_ray() {
        let mut next = numbers();
        for _ in 0..10_000 {
            let a = U256::from_limbs([next(), next(), next() >> 40, 0]);
            let b = U256::from_limbs([next(), next() >> 20, 0, 0]);
            assert_eq!(ray_mul(a, b), (a * b + HALF_RAY) / RAY, "{a} × {b}");
        }
        assert_eq!(ray_mul(RAY, RAY), RAY);
        assert_eq!(ray_mul(U256::ZERO, RAY), U256::ZERO);
    }

    fn ray(x: u64) -> U256 {
        U256::from(x) * RAY
    }

    #[test]
    fn half_ray() {
        assert_eq!(HALF_RAY * U256::from(2u8), RAY);
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(percent_mul(U256::from(15u8), 5_000), U256::from(8u8)); // 7.5 → 8
        assert_eq!(percent_div(U256::from(7u8), 20_000), U256::from(4u8)); // 3.5 → 4
        assert_eq!(
            ray_mul(ray(3), RAY / U256::from(2u8)),
            U256::from(3u8) * RAY / U256::from(2u8)
        );
        assert_eq!(
            ray_div(ray(1), ray(3)),
            (RAY + U256::from(1u8)) / U256::from(3u8)
        );
        assert_eq!(
            wad_div(U256::from(2u8), U256::from(3u8)),
            U256::from(666_666_666_666_666_667u64)
        );
    }

    #[test]
    fn interest_over_a_year() {
        // 10% for a year: linear gives exactly 1.1. The 3-term expansion of e^0.1 is 1.1051667, but
        // Aave truncates the per-second powers (the cubic term's to 31 ray units instead of 31.9), so
        // the contract returns 1.1051620: close to, and below, the exact series.
        let rate = RAY / U256::from(10u8);
        assert_eq!(linear_interest(rate, 0, SECONDS_PER_YEAR), RAY + rate);
        let compounded = compounded_interest(rate, 0, SECONDS_PER_YEAR);
        let expected_min = RAY + U256::from(105_162_000u64) * (RAY / U256::from(1_000_000_000u64));
        let expected_max = RAY + U256::from(105_163_000u64) * (RAY / U256::from(1_000_000_000u64));
        assert!(
            compounded > expected_min && compounded < expected_max,
            "{compounded}"
        );
        assert_eq!(compounded_interest(rate, 5, 5), RAY);
    }

    #[test]
    fn decodes_configuration() {
        // LTV 8000, LT 8250, bonus 10500, 18 decimals, active, borrowing, flash loans, fee 1000, eMode 1.
        let data = U256::from(8000u64)
            | U256::from(8250u64) << 16
            | U256::from(10500u64) << 32
            | U256::from(18u64) << 48
            | U256::from(1u64) << 56
            | U256::from(1u64) << 58
            | U256::from(1u64) << 63
            | U256::from(1000u64) << 152
            | U256::from(1u64) << 168;
        let c = ReserveConfig::decode(data);
        assert_eq!(
            (
                c.ltv,
                c.liquidation_threshold,
                c.liquidation_bonus,
                c.decimals
            ),
            (8000, 8250, 10500, 18)
        );
        assert!(c.active && !c.frozen && !c.paused && !c.stable_borrowing);
        assert_eq!((c.liquidation_protocol_fee, c.emode_category), (1000, 1));
    }

    /// The worked example in shared/reference/devnet-notes.md: 10 WETH at 2000, 15,000 USDC debt → HF 1.1;
    /// WETH at 1800 → 0.99.
    #[test]
    fn health_factor_worked_example() {
        let weth = ReserveConfig {
            liquidation_threshold: 8250,
            decimals: 18,
            ..Default::default()
        };
        let usdc = ReserveConfig {
            liquidation_threshold: 8500,
            decimals: 6,
            ..Default::default()
        };
        let idx = ReserveIndexes {
            liquidity_index: RAY,
            variable_borrow_index: RAY,
            ..Default::default()
        };
        let holdings = [
            UserReserve {
                reserve_id: 0,
                scaled_a_token: U256::from(10u64) * WAD,
                collateral_enabled: true,
                ..Default::default()
            },
            UserReserve {
                reserve_id: 1,
                scaled_variable_debt: U256::from(15_000_000_000u64),
                borrowing: true,
                ..Default::default()
            },
        ];
        let at = |weth_price: u64| {
            account_data(&holdings, None, 0, |id| {
                Some(match id {
                    0 => ReserveView::at(
                        &weth,
                        &idx,
                        U256::from(weth_price) * U256::from(100_000_000u64),
                        0,
                    ),
                    _ => ReserveView::at(&usdc, &idx, U256::from(100_000_000u64), 0),
                })
            })
        };
        assert_eq!(
            at(2000).health_factor,
            U256::from(1_100_000_000_000_000_000u64)
        );
        assert_eq!(
            at(1800).health_factor,
            U256::from(990_000_000_000_000_000u64)
        );

        // In an eMode category with a 95% threshold, the same position is healthier.
        let weth_emode = ReserveConfig {
            emode_category: 1,
            ..weth
        };
        let emode = EModeCategory {
            id: 1,
            liquidation_threshold: 9500,
            ..Default::default()
        };
        let hf = account_data(&holdings, Some(&emode), 0, |id| {
            Some(match id {
                0 => ReserveView::at(
                    &weth_emode,
                    &idx,
                    U256::from(1800u64) * U256::from(100_000_000u64),
                    0,
                ),
                _ => ReserveView::at(&usdc, &idx, U256::from(100_000_000u64), 0),
            })
        })
        .health_factor;
        assert_eq!(hf, U256::from(1_140_000_000_000_000_000u64));
    }
}
