//! What the devnet market looks like: its assets, their prices and risk parameters, and the Uniswap
//! pools that give each pair its liquidity. Values follow Aave's mainnet listings where one exists.

use crate::units::{BaseAmount, Bps};
use alloy::primitives::U256;

/// How a reserve's interest rate moves with utilisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateCurve {
    /// Volatile assets: kink at 45%, steep above it.
    Volatile,
    /// Stablecoins: kink at 90%.
    Stable,
}

/// One asset of the devnet market.
#[derive(Debug, Clone, Copy)]
pub struct AssetSpec {
    /// Token symbol.
    pub symbol: &'static str,
    /// Token name.
    pub name: &'static str,
    /// Token decimals.
    pub decimals: u8,
    /// Oracle price in base units (USD, 8 decimals).
    pub price_base: u64,
    /// Loan-to-value once the market is open.
    pub ltv: Bps,
    /// Liquidation threshold.
    pub liquidation_threshold: Bps,
    /// Liquidation bonus, including the 100%.
    pub liquidation_bonus: Bps,
    /// Share of interest to the treasury.
    pub reserve_factor: Bps,
    /// Share of the liquidation bonus to the treasury.
    pub liquidation_protocol_fee: Bps,
    /// Interest-rate curve.
    pub curve: RateCurve,
}

impl AssetSpec {
    /// The oracle price as a base amount.
    pub fn price(&self) -> BaseAmount {
        BaseAmount(U256::from(self.price_base))
    }
}

/// Whole dollars in base units (8 decimals).
pub const fn usd(dollars: u64) -> u64 {
    dollars * 100_000_000
}

/// The devnet's assets, in the order they are listed on Aave.
pub const ASSETS: [AssetSpec; 4] = [
    AssetSpec {
        symbol: "WETH",
        name: "Wrapped Ether",
        decimals: 18,
        price_base: usd(2_000),
        ltv: Bps(8000),
        liquidation_threshold: Bps(8250),
        liquidation_bonus: Bps(10500),
        reserve_factor: Bps(1500),
        liquidation_protocol_fee: Bps(1000),
        curve: RateCurve::Volatile,
    },
    AssetSpec {
        symbol: "USDC",
        name: "USD Coin",
        decimals: 6,
        price_base: usd(1),
        ltv: Bps(8000),
        liquidation_threshold: Bps(8500),
        liquidation_bonus: Bps(10500),
        reserve_factor: Bps(1000),
        liquidation_protocol_fee: Bps(1000),
        curve: RateCurve::Stable,
    },
    AssetSpec {
        symbol: "WBTC",
        name: "Wrapped BTC",
        decimals: 8,
        price_base: usd(60_000),
        ltv: Bps(7000),
        liquidation_threshold: Bps(7500),
        liquidation_bonus: Bps(11000),
        reserve_factor: Bps(2000),
        liquidation_protocol_fee: Bps(1000),
        curve: RateCurve::Volatile,
    },
    AssetSpec {
        symbol: "ALT",
        name: "Volatile Altcoin",
        decimals: 18,
        price_base: usd(1) / 2,
        ltv: Bps(5000),
        liquidation_threshold: Bps(6500),
        liquidation_bonus: Bps(11000),
        reserve_factor: Bps(2000),
        liquidation_protocol_fee: Bps(1000),
        curve: RateCurve::Volatile,
    },
];

/// An eMode category of the devnet's V3.6 market (V3.2+ eModes: the collateral that takes its
/// threshold and bonus, and the assets its users may borrow, are separate sets).
#[derive(Debug, Clone, Copy)]
pub struct EModeSpec {
    /// Category id.
    pub id: u8,
    /// Label.
    pub label: &'static str,
    /// LTV inside the category.
    pub ltv: Bps,
    /// Liquidation threshold inside the category.
    pub liquidation_threshold: Bps,
    /// Liquidation bonus inside the category, including the 100%.
    pub liquidation_bonus: Bps,
    /// Indexes into [`ASSETS`] of the collateral that takes the category's threshold and bonus.
    pub collateral: &'static [usize],
    /// Indexes into [`ASSETS`] of the assets its users may borrow.
    pub borrowable: &'static [usize],
}

/// WETH and WBTC against USDC at 93% (102% bonus), as markets list their majors against stablecoins:
/// the threshold and bonus differ from the reserves' own, so a keeper that misreads membership
/// misprices every borrower in it.
pub const EMODE: EModeSpec = EModeSpec {
    id: 1,
    label: "majors against stables",
    ltv: Bps(9000),
    liquidation_threshold: Bps(9300),
    liquidation_bonus: Bps(10200),
    collateral: &[WETH, WBTC],
    borrowable: &[USDC],
};

/// Index of an asset in [`ASSETS`] by symbol.
pub fn asset_index(symbol: &str) -> Option<usize> {
    ASSETS
        .iter()
        .position(|a| a.symbol.eq_ignore_ascii_case(symbol))
}

/// A Uniswap V3 pool the devnet creates, and the liquidity it puts in it.
#[derive(Debug, Clone, Copy)]
pub struct PoolSpec {
    /// Index into [`ASSETS`].
    pub asset_a: usize,
    /// Index into [`ASSETS`].
    pub asset_b: usize,
    /// Fee tier in hundredths of a bip.
    pub fee: u32,
    /// Positions as (half-width of the price range in bps, USD value at the oracle price); a
    /// half-width of 0 means the full tick range.
    pub positions: &'static [(u32, u64)],
}

const WETH: usize = 0;
const USDC: usize = 1;
const WBTC: usize = 2;
const ALT: usize = 3;

/// Deep WETH/USDC, thinner WBTC, thin ALT: every pair has a direct pool so any seized collateral
/// can be sold for any debt asset.
pub const POOLS: [PoolSpec; 6] = [
    PoolSpec {
        asset_a: WETH,
        asset_b: USDC,
        fee: 500,
        positions: &[
            (500, 20_000_000),
            (2000, 20_000_000),
            (5000, 10_000_000),
            (0, 5_000_000),
        ],
    },
    PoolSpec {
        asset_a: WETH,
        asset_b: USDC,
        fee: 3000,
        positions: &[(1000, 4_000_000), (4000, 2_000_000), (0, 1_000_000)],
    },
    PoolSpec {
        asset_a: WBTC,
        asset_b: USDC,
        fee: 3000,
        positions: &[(1000, 3_000_000), (3000, 2_000_000), (0, 500_000)],
    },
    PoolSpec {
        asset_a: WBTC,
        asset_b: WETH,
        fee: 3000,
        positions: &[(1000, 2_000_000), (3000, 1_000_000), (0, 500_000)],
    },
    PoolSpec {
        asset_a: ALT,
        asset_b: USDC,
        fee: 10000,
        positions: &[(2000, 150_000), (6000, 100_000), (0, 50_000)],
    },
    PoolSpec {
        asset_a: ALT,
        asset_b: WETH,
        fee: 10000,
        // No full-range position: a large enough sale runs out of liquidity and fills only in part.
        positions: &[(2000, 100_000), (5000, 50_000)],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn risk_parameters_pass_the_configurator_checks() {
        let e = EMODE;
        assert!(e.ltv <= e.liquidation_threshold && e.liquidation_bonus > Bps::ONE);
        assert!(
            u64::from(e.liquidation_threshold.0) * u64::from(e.liquidation_bonus.0) <= 100_000_000
        );
        for a in ASSETS {
            assert!(a.ltv <= a.liquidation_threshold, "{}", a.symbol);
            assert!(a.liquidation_bonus > Bps::ONE, "{}", a.symbol);
            // PoolConfigurator: threshold × bonus ≤ 100%.
            assert!(
                u64::from(a.liquidation_threshold.0) * u64::from(a.liquidation_bonus.0)
                    <= 100_000_000,
                "{}",
                a.symbol
            );
        }
    }
}
