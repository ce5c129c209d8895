//! Moving an oracle price on a devnet, as a feed update would.
//!
//! The devnet's price sources are Aave's `MockAggregator`s, which hold their answer in storage slot 0
//! and have no setter. A shock writes the new answer there and mines a block, so the AaveOracle (and
//! anything watching blocks) sees the new price at once.

use crate::{
    chain::{ChainError, Rpc, bindings::MockAggregator, view},
    config::DevnetAsset,
    units::BaseAmount,
};
use alloy::{
    primitives::{B256, U256},
    providers::ext::AnvilApi,
};

/// A price move in basis points of the current price: `-2000` is a 20% drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceMoveBps(pub i64);

impl std::str::FromStr for PriceMoveBps {
    type Err = String;

    /// Parses a percentage with up to two decimals: `-20`, `-12.5`, `+5`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a percentage like -20 or -12.5");
        let (neg, digits) = match s.trim().strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.trim().trim_start_matches('+')),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && frac.is_empty() || frac.len() > 2 {
            return Err(bad());
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<2}").parse().map_err(|_| bad())?
        };
        let bps = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(bad)?;
        let bps = if neg { -bps } else { bps };
        if bps <= -10_000 {
            return Err(format!("{s}% would take the price to zero or below"));
        }
        Ok(Self(bps))
    }
}

/// A price before and after a shock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceChange {
    /// Before.
    pub old: BaseAmount,
    /// After.
    pub new: BaseAmount,
}

/// `price` moved by `bps`, rounded down.
pub fn moved(price: U256, bps: PriceMoveBps) -> U256 {
    let factor = U256::from((10_000 + bps.0) as u64);
    price * factor / U256::from(10_000u64)
}

/// Moves `asset`'s feed by `bps` and mines a block.
pub async fn shock(
    rpc: &Rpc,
    asset: &DevnetAsset,
    bps: PriceMoveBps,
) -> Result<PriceChange, ChainError> {
    let old = view(
        rpc,
        asset.feed,
        MockAggregator::latestAnswerCall {},
        "read the feed",
    )
    .await?;
    let old = old.into_raw();
    let new = moved(old, bps);
    rpc.anvil_set_storage_at(asset.feed, U256::ZERO, B256::from(new))
        .await
        .map_err(|e| ChainError::rpc("write the feed's answer (is this an anvil devnet?)", e))?;
    rpc.evm_mine(None)
        .await
        .map_err(|e| ChainError::rpc("mine the price update", e))?;
    Ok(PriceChange {
        old: BaseAmount(old),
        new: BaseAmount(new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_percentages() {
        assert_eq!("-20".parse::<PriceMoveBps>(), Ok(PriceMoveBps(-2000)));
        assert_eq!("-12.5".parse::<PriceMoveBps>(), Ok(PriceMoveBps(-1250)));
        assert_eq!("+5".parse::<PriceMoveBps>(), Ok(PriceMoveBps(500)));
        assert_eq!("0.25".parse::<PriceMoveBps>(), Ok(PriceMoveBps(25)));
        assert!("-100".parse::<PriceMoveBps>().is_err());
        assert!("abc".parse::<PriceMoveBps>().is_err());
        assert!("1.234".parse::<PriceMoveBps>().is_err());
    }

    #[test]
    fn moves_prices() {
        let p = U256::from(crate::devnet::market::usd(2_000));
        assert_eq!(
            moved(p, PriceMoveBps(-2000)),
            U256::from(crate::devnet::market::usd(1_600))
        );
        assert_eq!(
            moved(p, PriceMoveBps(1000)),
            U256::from(crate::devnet::market::usd(2_200))
        );
    }
}
