//! Which Aave V3 release a market runs, told from what its Pool answers, and the rules each release
//! changed for a keeper: interest, rounding, eMode membership, the collateral that counts, the close
//! factor, the dust rule and deficits, the rounding of the bonus and the protocol fee.
//!
//! Releases are told apart by a getter each one added (called through Multicall3 with failures
//! allowed: a Pool has no fallback, so a getter it lacks reverts), never by `POOL_REVISION`, which
//! forks number as they like. V3.5 added no getter to the Pool; its aTokens gained a five-argument
//! `burn`, which refuses a caller other than the Pool with `CallerMustBePool()` where an older aToken
//! has no such function and reverts with nothing. `shared/reference/aave-versions.md` lists every
//! change with its source.

use alloy::primitives::U256;
use std::fmt;

/// An Aave V3 release. Later releases keep every rule of earlier ones unless a method here says
/// otherwise, so rules are asked as "at least this release".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Release {
    /// V3.0 (`@aave/core-v3` 1.19.x): close factor per reserve, eMode from the reserve's category bits,
    /// eMode price sources, stable debt.
    V3_0,
    /// V3.1: liquidation grace periods, virtual balances.
    V3_1,
    /// V3.2: stable debt gone, eMode membership from the category's collateral bitmap, no eMode
    /// price source.
    V3_2,
    /// V3.3: close factor on the total debt, the $1,000 dust rule, deficits.
    V3_3,
    /// V3.4: compounded interest by a Taylor expansion, custom errors, no self-liquidation.
    V3_4,
    /// V3.5: balances and debt in base currency rounded against the user, the health factor from the
    /// weighted sum.
    V3_5,
    /// V3.6: collateral with a reserve threshold of 0 counts and can be seized.
    V3_6,
    /// V3.7: the bonus and the protocol fee rounded for the protocol, deficits told from scaled
    /// balances, no L2 sequencer sentinel.
    V3_7,
}

/// All releases, oldest first.
pub const RELEASES: [Release; 8] = [
    Release::V3_0,
    Release::V3_1,
    Release::V3_2,
    Release::V3_3,
    Release::V3_4,
    Release::V3_5,
    Release::V3_6,
    Release::V3_7,
];

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let minor = RELEASES.iter().position(|r| r == self).unwrap_or(0);
        write!(f, "V3.{minor}")
    }
}

impl std::str::FromStr for Release {
    type Err = String;

    /// `3.6`, `v3.6` or `V3_6`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.trim().trim_start_matches(['v', 'V']).replace('_', ".");
        RELEASES
            .iter()
            .find(|r| r.to_string()[1..] == digits)
            .copied()
            .ok_or_else(|| format!("unknown Aave release {s:?}: expected 3.0 to 3.7"))
    }
}

/// How debt compounds between index updates (`MathUtils.calculateCompoundedInterest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compounding {
    /// V3.0–3.3: the three-term binomial expansion with per-second powers.
    Binomial,
    /// V3.4+: `x = rate·Δt / year`, `1 + x + x·(x/2 + x·x/6)`.
    Taylor,
}

impl Release {
    /// The compounding formula.
    pub fn compounding(self) -> Compounding {
        if self >= Self::V3_4 {
            Compounding::Taylor
        } else {
            Compounding::Binomial
        }
    }

    /// Balances rounded against the user (`TokenMath`): aToken balances down, debt up, debt in base
    /// currency up, and the health factor as `wadDiv(Σ value·threshold, debt) / 10_000`. Before
    /// V3.5 both balances round half up and the health factor goes through the average threshold.
    pub fn rounds_against_user(self) -> bool {
        self >= Self::V3_5
    }

    /// eMode membership is the category's collateral bitmap (before V3.2: the reserve's own category
    /// in bits 168-175 of its configuration, and a category may have its own price source).
    pub fn emode_bitmaps(self) -> bool {
        self >= Self::V3_2
    }

    /// Stable-rate debt exists (V3.0–3.1).
    pub fn stable_debt(self) -> bool {
        self < Self::V3_2
    }

    /// Collateral whose reserve threshold is 0 still counts (at its eMode threshold, or 0) and can
    /// be seized. Before V3.6 it is skipped, and a liquidation of it reverts.
    pub fn zero_threshold_collateral(self) -> bool {
        self >= Self::V3_6
    }

    /// V3.3's close factor (50% of the *total* debt only above HF 0.95 with both sides worth $2,000),
    /// the dust rule and deficits.
    pub fn total_debt_close_factor(self) -> bool {
        self >= Self::V3_3
    }

    /// V3.7's rounding of the liquidation: seized collateral and the bonus part rounded down, the
    /// protocol fee up, and a deficit told from the scaled collateral consumed.
    pub fn protocol_favouring_bonus(self) -> bool {
        self >= Self::V3_7
    }

    /// Reserves can be in a liquidation grace period (V3.1+).
    pub fn grace_periods(self) -> bool {
        self >= Self::V3_1
    }

    /// A liquidation paying out the underlying takes it from the reserve's virtual balance, and
    /// reverts when that is short (V3.1+).
    pub fn virtual_balances(self) -> bool {
        self >= Self::V3_1
    }

    /// An L2 market's PriceOracleSentinel can hold back liquidations above HF 0.95 (until V3.7).
    pub fn sentinel(self) -> bool {
        self < Self::V3_7
    }

    /// Reverts carry custom errors (V3.4+) rather than numeric strings.
    pub fn custom_errors(self) -> bool {
        self >= Self::V3_4
    }

    /// The release whose marker is the newest of those a market answered (`answered[i]` for the
    /// marker of `RELEASES[i + 1]`, see [`MARKERS`]).
    pub fn from_markers(answered: &[bool]) -> Self {
        answered
            .iter()
            .zip(&RELEASES[1..])
            .rfind(|(yes, _)| **yes)
            .map(|(_, r)| *r)
            .unwrap_or(Self::V3_0)
    }

    /// `scaled` aTokens as a balance at supply index `income` (`AToken.balanceOf`).
    #[inline]
    pub fn a_token_balance(self, scaled: U256, income: U256) -> U256 {
        if self.rounds_against_user() {
            super::math::ray_mul_floor(scaled, income)
        } else {
            super::math::ray_mul(scaled, income)
        }
    }

    /// `scaled` variable debt as a balance at borrow index `debt_index` (`VariableDebtToken.balanceOf`).
    #[inline]
    pub fn debt_balance(self, scaled: U256, debt_index: U256) -> U256 {
        if self.rounds_against_user() {
            super::math::ray_mul_ceil(scaled, debt_index)
        } else {
            super::math::ray_mul(scaled, debt_index)
        }
    }

    /// A debt `amount` in base currency at `price` per unit of a `decimals` token.
    #[inline]
    pub fn debt_value(self, amount: U256, price: U256, decimals: u8) -> U256 {
        if self.rounds_against_user() {
            super::math::div_pow10_ceil(amount * price, decimals)
        } else {
            super::math::div_pow10(amount * price, decimals)
        }
    }
}

/// What marks each release after V3.0, in order: the call, to the Pool or (V3.5) to an aToken, that
/// only a market of that release or later answers without reverting (V3.5: reverting with data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `getLiquidationGracePeriod(address)`: V3.1.
    GracePeriod,
    /// `getEModeCategoryCollateralBitmap(uint8)`: V3.2.
    EModeBitmap,
    /// `getReserveDeficit(address)`: V3.3.
    ReserveDeficit,
    /// `RESERVE_INTEREST_RATE_STRATEGY()`: V3.4.
    RateStrategyImmutable,
    /// The aToken's `burn(address,address,uint256,uint256,uint256)`, refused with data: V3.5.
    ScaledBurn,
    /// `getEModeCategoryLtvzeroBitmap(uint8)`: V3.6.
    LtvzeroBitmap,
    /// `getIsEModeCategoryIsolated(uint8)`: V3.7.
    IsolatedEMode,
}

/// The markers of V3.1 to V3.7, in order.
pub const MARKERS: [Marker; 7] = [
    Marker::GracePeriod,
    Marker::EModeBitmap,
    Marker::ReserveDeficit,
    Marker::RateStrategyImmutable,
    Marker::ScaledBurn,
    Marker::LtvzeroBitmap,
    Marker::IsolatedEMode,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_print_and_parse() {
        assert_eq!(Release::V3_6.to_string(), "V3.6");
        assert_eq!("3.6".parse::<Release>(), Ok(Release::V3_6));
        assert_eq!("v3.0".parse::<Release>(), Ok(Release::V3_0));
        assert_eq!("V3_7".parse::<Release>(), Ok(Release::V3_7));
        assert!("3.8".parse::<Release>().is_err());
        assert!(Release::V3_0 < Release::V3_7);
    }

    #[test]
    fn the_newest_marker_answered_names_the_release() {
        assert_eq!(Release::from_markers(&[false; 7]), Release::V3_0);
        assert_eq!(Release::from_markers(&[true; 7]), Release::V3_7);
        assert_eq!(
            Release::from_markers(&[true, true, true, true, true, true, false]),
            Release::V3_6
        );
        assert_eq!(
            Release::from_markers(&[true, true, true, true, false, false, false]),
            Release::V3_4
        );
        // A fork that kept an older getter away but has a newer one: the newer rules.
        assert_eq!(
            Release::from_markers(&[false, true, true, false, false, false, false]),
            Release::V3_3
        );
    }

    #[test]
    fn rules_follow_the_release() {
        use Release::*;
        assert_eq!(V3_3.compounding(), Compounding::Binomial);
        assert_eq!(V3_4.compounding(), Compounding::Taylor);
        assert!(!V3_4.rounds_against_user() && V3_5.rounds_against_user());
        assert!(!V3_1.emode_bitmaps() && V3_2.emode_bitmaps());
        assert!(V3_1.stable_debt() && !V3_2.stable_debt());
        assert!(!V3_5.zero_threshold_collateral() && V3_6.zero_threshold_collateral());
        assert!(!V3_2.total_debt_close_factor() && V3_3.total_debt_close_factor());
        assert!(!V3_6.protocol_favouring_bonus() && V3_7.protocol_favouring_bonus());
        assert!(V3_6.sentinel() && !V3_7.sentinel());
        assert!(!V3_0.grace_periods() && V3_1.grace_periods());
    }

    #[test]
    fn balances_round_by_release() {
        let ray = crate::units::RAY;
        // 3 scaled units at an index of 1.5: 4.5.
        let (scaled, index) = (U256::from(3u8), ray * U256::from(3u8) / U256::from(2u8));
        assert_eq!(
            Release::V3_4.a_token_balance(scaled, index),
            U256::from(5u8)
        );
        assert_eq!(
            Release::V3_5.a_token_balance(scaled, index),
            U256::from(4u8)
        );
        assert_eq!(Release::V3_4.debt_balance(scaled, index), U256::from(5u8));
        assert_eq!(Release::V3_5.debt_balance(scaled, index), U256::from(5u8));
        // 1.4 rounds half up to 1 before V3.5, up to 2 from it.
        let index = ray * U256::from(7u8) / U256::from(15u8);
        assert_eq!(Release::V3_4.debt_balance(scaled, index), U256::from(1u8));
        assert_eq!(Release::V3_5.debt_balance(scaled, index), U256::from(2u8));
        // Debt of 1 wei of an 18-decimal token at $2,000: 0.0000002 base units, 0 or 1.
        let price = U256::from(2_000u64) * U256::from(100_000_000u64);
        assert_eq!(
            Release::V3_4.debt_value(U256::from(1u8), price, 18),
            U256::ZERO
        );
        assert_eq!(
            Release::V3_5.debt_value(U256::from(1u8), price, 18),
            U256::from(1u8)
        );
        assert_eq!(
            Release::V3_5.debt_value(U256::from(10u64).pow(U256::from(18u8)), price, 18),
            price
        );
    }
}
