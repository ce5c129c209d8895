//! Units that must not be mixed: basis points, WAD-scaled health factors, and amounts in the
//! protocol's base currency (USD with 8 decimals on every Aave V3 market).
//!
//! All of them are integers; the `f64` conversions exist only for display and metrics.

use alloy::primitives::U256;
use std::fmt;

/// 1e18.
pub const WAD: U256 = U256::from_limbs([1_000_000_000_000_000_000, 0, 0, 0]);
/// 1e27.
pub const RAY: U256 = U256::from_limbs([0x9fd0803ce8000000, 0x33b2e3c, 0, 0]);

/// Basis points: 10_000 = 100%.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Bps(pub u32);

impl Bps {
    /// 100%.
    pub const ONE: Self = Self(10_000);

    /// `amount × self / 10_000`, rounded down.
    pub fn apply(self, amount: U256) -> U256 {
        amount * U256::from(self.0) / U256::from(10_000u32)
    }
}

impl fmt::Display for Bps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}%", self.0 / 100, self.0 % 100)
    }
}

/// An Aave health factor: WAD-scaled, `U256::MAX` when the account has no debt.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct HealthFactor(pub U256);

impl HealthFactor {
    /// The liquidation threshold, 1.0.
    pub const ONE: Self = Self(WAD);
    /// No debt.
    pub const INFINITE: Self = Self(U256::MAX);

    /// From a value in thousandths, e.g. `from_milli(1_020)` = 1.02.
    pub fn from_milli(milli: u64) -> Self {
        Self(U256::from(milli) * WAD / U256::from(1_000u64))
    }

    /// Below 1: the position can be liquidated.
    pub fn is_liquidatable(self) -> bool {
        self < Self::ONE
    }

    /// For display only.
    pub fn to_f64(self) -> f64 {
        if self == Self::INFINITE {
            return f64::INFINITY;
        }
        u256_to_f64(self.0) / 1e18
    }
}

impl fmt::Display for HealthFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::INFINITE {
            return f.write_str("∞");
        }
        let hundred_thousandths = self.0 / U256::from(10_000_000_000_000u64);
        let whole = hundred_thousandths / U256::from(100_000u64);
        let frac = hundred_thousandths % U256::from(100_000u64);
        write!(f, "{whole}.{frac:05}")
    }
}

/// An amount in the protocol's base currency: USD with 8 decimals on Aave V3 (`BASE_CURRENCY_UNIT`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct BaseAmount(pub U256);

impl BaseAmount {
    /// 1 USD in base units.
    pub const UNIT: U256 = U256::from_limbs([100_000_000, 0, 0, 0]);

    /// Whole dollars.
    pub fn from_usd(usd: u64) -> Self {
        Self(U256::from(usd) * Self::UNIT)
    }

    /// The value of `amount` raw token units at `price` (base units per whole token), rounded down.
    pub fn of_tokens(amount: U256, price: BaseAmount, decimals: u8) -> Self {
        Self(amount * price.0 / U256::from(10u64).pow(U256::from(decimals)))
    }

    /// How many raw token units are worth `self` at `price`, rounded down.
    pub fn to_tokens(self, price: BaseAmount, decimals: u8) -> U256 {
        if price.0.is_zero() {
            return U256::ZERO;
        }
        self.0 * U256::from(10u64).pow(U256::from(decimals)) / price.0
    }

    /// For display only.
    pub fn to_usd_f64(self) -> f64 {
        u256_to_f64(self.0) / 1e8
    }
}

impl fmt::Display for BaseAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cents = self.0 / U256::from(1_000_000u64);
        write!(
            f,
            "${}.{:02}",
            cents / U256::from(100u64),
            cents % U256::from(100u64)
        )
    }
}

/// A lossy conversion for display and metrics.
pub fn u256_to_f64(value: U256) -> f64 {
    value.to_string().parse().unwrap_or(f64::MAX)
}

/// `amount` raw units of a token with `decimals`, for display: `1234.5678`.
pub fn format_token(amount: U256, decimals: u8) -> String {
    alloy::primitives::utils::format_units(amount, decimals).unwrap_or_else(|_| amount.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants() {
        assert_eq!(WAD, U256::from(10u64).pow(U256::from(18)));
        assert_eq!(RAY, U256::from(10u64).pow(U256::from(27)));
    }

    #[test]
    fn health_factor_display_and_threshold() {
        let hf = HealthFactor::from_milli(1_020);
        assert_eq!(hf.to_string(), "1.02000");
        assert!(!hf.is_liquidatable());
        assert!(HealthFactor::from_milli(999).is_liquidatable());
        assert_eq!(HealthFactor::INFINITE.to_string(), "∞");
    }

    #[test]
    fn base_amounts_round_trip_tokens() {
        let price = BaseAmount::from_usd(2_000);
        let one_eth = U256::from(10u64).pow(U256::from(18));
        assert_eq!(BaseAmount::of_tokens(one_eth, price, 18), price);
        assert_eq!(
            BaseAmount::from_usd(4_000).to_tokens(price, 18),
            one_eth * U256::from(2)
        );
        assert_eq!(BaseAmount::from_usd(1_234).to_string(), "$1234.00");
        assert_eq!(Bps(10_500).to_string(), "105.00%");
    }
}
