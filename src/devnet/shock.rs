//! Moving an oracle price on a devnet, as a feed update would.
//!
//! The devnet's price sources are Aave's `MockAggregator`s, which hold their answer in storage slot 0
//! and have no setter: a shock writes the new answer there, so the AaveOracle (and anything watching
//! blocks) sees the new price at once. An asset routed through the AaveOracle's fallback instead
//! ([`route_through_fallback`]: its source cleared) is priced by Aave's settable `PriceOracle`, and its
//! shocks are transactions: they wait in the mempool for their block, as a feed's update does on a live
//! chain, where a keeper watching the mempool can see them coming.

use crate::{
    chain::{
        ChainError, Rpc,
        bindings::{AaveOracle, MockAggregator, PriceOracle},
        view,
    },
    config::DevnetAsset,
    units::BaseAmount,
};
use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, U256},
    providers::{Provider, ext::AnvilApi},
    rpc::types::TransactionRequest,
    sol_types::SolCall,
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
    let change = set_price(rpc, asset, bps).await?;
    rpc.evm_mine(None)
        .await
        .map_err(|e| ChainError::rpc("mine the price update", e))?;
    Ok(change)
}

/// Writes the feed's new answer into its storage; it is in the next block mined.
async fn set_price(
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
    Ok(PriceChange {
        old: BaseAmount(old),
        new: BaseAmount(new),
    })
}

/// A market-wide shock: the feed moves and, in the same block, arbitrage brings every Uniswap pool and
/// pair holding the asset to the new oracle price, as searchers do on a live chain. Without that the
/// pools would still pay the old price for seized collateral and every liquidation would look far more
/// profitable than it is; in separate blocks, a keeper would plan against pools about to move.
pub async fn shock_market(
    rpc: &Rpc,
    devnet: &crate::config::DevnetConfig,
    asset: &DevnetAsset,
    bps: PriceMoveBps,
) -> eyre::Result<PriceChange> {
    shock_market_landing(rpc, devnet, asset, bps, Landing::MineNow).await
}

/// Which block a shock lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// A block mined for it at once (`evm_mine`).
    MineNow,
    /// The next block the chain mines on its own (interval mining): the shock arrives on the chain's
    /// clock, a whole block time before the block after it, as an oracle update does on a live chain.
    NextBlock,
}

/// [`shock_market`], landing where `landing` says.
pub async fn shock_market_landing(
    rpc: &Rpc,
    devnet: &crate::config::DevnetConfig,
    asset: &DevnetAsset,
    bps: PriceMoveBps,
    landing: Landing,
) -> eyre::Result<PriceChange> {
    let mut txs = Vec::new();
    let change = match fallback_source(rpc, devnet, asset).await? {
        None => set_price(rpc, asset, bps).await?,
        Some(fallback) => {
            let old = view(
                rpc,
                fallback,
                PriceOracle::getAssetPriceCall {
                    asset: asset.address,
                },
                "read the fallback oracle's price",
            )
            .await?;
            let new = moved(old, bps);
            let update = PriceOracle::setAssetPriceCall {
                asset: asset.address,
                price: new,
            };
            // First of the admin's transactions, so first in its block: the arbitrage is priced on it.
            txs.push((
                TransactionRequest::default()
                    .from(devnet.admin)
                    .to(fallback)
                    .with_input(update.abi_encode())
                    .with_gas_limit(100_000),
                "update the price",
            ));
            PriceChange {
                old: BaseAmount(old),
                new: BaseAmount(new),
            }
        }
    };
    for pool in devnet
        .pools
        .iter()
        .filter(|p| p.token0 == asset.address || p.token1 == asset.address)
    {
        txs.extend(alignment(rpc, devnet, pool, asset, change.new.0).await?);
    }
    // Sent without waiting, then mined together: the price move and the arbitrage land in one block
    // (with automine each is mined as it arrives, after the price write).
    // Fees that get the arbitrage into the very next block whatever else waits: after a price move the
    // pool holds a backlog of liquidations, blocks fill, and the base fee climbs 12.5% a block; the
    // usual twice-the-base-fee cap and a small tip left the arbitrage waiting behind them.
    let base_fee = rpc
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .map_err(|e| ChainError::rpc("latest block", e))?
        .and_then(|b| b.header.base_fee_per_gas)
        .map_or(1_000_000_000, u128::from);
    const ARBITRAGE_TIP_WEI: u128 = 50_000_000_000;
    let mut hashes = Vec::new();
    for (tx, context) in txs {
        let tx = tx
            .max_fee_per_gas(base_fee * 8 + ARBITRAGE_TIP_WEI)
            .max_priority_fee_per_gas(ARBITRAGE_TIP_WEI);
        let pending = rpc
            .send_transaction(tx)
            .await
            .map_err(|e| ChainError::rpc(context, e))?;
        hashes.push((*pending.tx_hash(), context));
    }
    if landing == Landing::MineNow {
        rpc.evm_mine(None)
            .await
            .map_err(|e| ChainError::rpc("mine the price update", e))?;
    }
    for (hash, context) in hashes {
        let receipt =
            crate::chain::wait_for_receipt(rpc, hash, context, std::time::Duration::from_secs(30))
                .await?;
        if !receipt.status() {
            // Someone (a keeper selling seized collateral) moved the pool between reading it and
            // the swap, past the price limit: that pool stays a little off until the next shock.
            tracing::warn!(%hash, context, "an arbitrage transaction reverted; the pool is left where the market put it");
        }
    }
    Ok(change)
}

/// The fallback oracle pricing `asset`, when its source is cleared; `None` while its feed prices it.
async fn fallback_source(
    rpc: &Rpc,
    devnet: &crate::config::DevnetConfig,
    asset: &DevnetAsset,
) -> Result<Option<Address>, ChainError> {
    let source = view(
        rpc,
        devnet.oracle,
        AaveOracle::getSourceOfAssetCall {
            asset: asset.address,
        },
        "the asset's price source",
    )
    .await?;
    if !source.is_zero() {
        return Ok(None);
    }
    let fallback = fallback_oracle(rpc, devnet).await?;
    Ok((!fallback.is_zero()).then_some(fallback))
}

async fn fallback_oracle(
    rpc: &Rpc,
    devnet: &crate::config::DevnetConfig,
) -> Result<Address, ChainError> {
    view(
        rpc,
        devnet.oracle,
        AaveOracle::getFallbackOracleCall {},
        "the fallback oracle",
    )
    .await
}

/// Routes `asset`'s price through the AaveOracle's fallback at its current price: the fallback takes
/// the price its feed gives now, then the asset's source is cleared (two mined transactions, the
/// price unchanged). From here its shocks are `setAssetPrice` transactions.
pub async fn route_through_fallback(
    rpc: &Rpc,
    devnet: &crate::config::DevnetConfig,
    asset: &DevnetAsset,
) -> eyre::Result<()> {
    if fallback_source(rpc, devnet, asset).await?.is_some() {
        return Ok(());
    }
    let fallback = fallback_oracle(rpc, devnet).await?;
    if fallback.is_zero() {
        eyre::bail!(
            "the devnet's AaveOracle has no fallback oracle (a devnet deployed by an older cascade): deploy it again"
        );
    }
    let price = view(
        rpc,
        devnet.oracle,
        AaveOracle::getAssetPriceCall {
            asset: asset.address,
        },
        "oracle price",
    )
    .await?;
    crate::chain::send_call(
        rpc,
        devnet.admin,
        fallback,
        PriceOracle::setAssetPriceCall {
            asset: asset.address,
            price,
        },
        "set the fallback oracle's price",
    )
    .await?;
    crate::chain::send_call(
        rpc,
        devnet.admin,
        devnet.oracle,
        AaveOracle::setAssetSourcesCall {
            assets: vec![asset.address],
            sources: vec![Address::ZERO],
        },
        "clear the asset's price source",
    )
    .await?;
    Ok(())
}

/// The transactions that swap `pool` to the oracle's relative price of its two tokens, with `moved`
/// priced at `new_price` (the feed's new answer, not yet mined). Gas limits are set: the transactions
/// are sent together, before any of them is mined, so none can be estimated on the state it will meet.
async fn alignment(
    rpc: &Rpc,
    devnet: &crate::config::DevnetConfig,
    pool: &crate::config::DevnetPool,
    moved: &DevnetAsset,
    new_price: U256,
) -> eyre::Result<Vec<(TransactionRequest, &'static str)>> {
    use crate::{
        chain::bindings::{MintableERC20, SwapRouter, UniswapV3Pool},
        devnet::uniswap::sqrt_price_x96,
        planner::venues::uniswap_v2::UniswapV2Pair,
    };
    use alloy::primitives::aliases::U160;

    let price = |asset| {
        view(
            rpc,
            devnet.oracle,
            AaveOracle::getAssetPriceCall { asset },
            "oracle price",
        )
    };
    let decimals = |asset| {
        devnet
            .assets
            .iter()
            .find(|a| a.address == asset)
            .map_or(18, |a| a.decimals)
    };
    let price_of = async |asset| -> Result<U256, ChainError> {
        if asset == moved.address {
            Ok(new_price)
        } else {
            price(asset).await
        }
    };
    let (p0, p1) = (price_of(pool.token0).await?, price_of(pool.token1).await?);
    let admin = devnet.admin;
    let call = |to: Address, data: Vec<u8>, gas: u64| {
        TransactionRequest::default()
            .from(admin)
            .to(to)
            .with_input(data)
            .with_gas_limit(gas)
    };
    let (d0, d1) = (decimals(pool.token0), decimals(pool.token1));
    let ten = |d: u8| U256::from(10u64).pow(U256::from(d));

    if !pool.v2 {
        let slot0 = view(rpc, pool.address, UniswapV3Pool::slot0Call {}, "slot0").await?;
        let current = U256::from(slot0.sqrtPriceX96);
        let target = sqrt_price_x96(p0, d0, p1, d1);
        if target == current {
            return Ok(Vec::new());
        }
        let (token_in, token_out) = if target < current {
            (pool.token0, pool.token1)
        } else {
            (pool.token1, pool.token0)
        };
        let plenty = U256::from(10u64).pow(U256::from(30));
        let mint = MintableERC20::mintCall {
            account: admin,
            value: plenty,
        };
        let approve = MintableERC20::approveCall {
            spender: devnet.router,
            amount: U256::MAX,
        };
        let swap = SwapRouter::exactInputSingleCall {
            params: SwapRouter::ExactInputSingleParams {
                tokenIn: token_in,
                tokenOut: token_out,
                fee: pool.fee.try_into()?,
                recipient: admin,
                deadline: U256::MAX,
                amountIn: plenty,
                amountOutMinimum: U256::ZERO,
                sqrtPriceLimitX96: U160::from(target),
            },
        };
        return Ok(vec![
            (
                call(token_in, mint.abi_encode(), 200_000),
                "mint for arbitrage",
            ),
            (
                call(token_in, approve.abi_encode(), 100_000),
                "approve router",
            ),
            (
                call(devnet.router, swap.abi_encode(), 2_000_000),
                "arbitrage swap",
            ),
        ]);
    }

    // V2: sell into the pair until reserve1 / reserve0 matches the oracle's price of token0 in token1
    // (num / den in raw units), found by bisection on the amount in.
    let r = view(
        rpc,
        pool.address,
        UniswapV2Pair::getReservesCall {},
        "getReserves",
    )
    .await?;
    let pair = crate::planner::venues::uniswap_v2::PairState {
        address: pool.address,
        token0: pool.token0,
        token1: pool.token1,
        reserve0: U256::from(r.reserve0),
        reserve1: U256::from(r.reserve1),
    };
    let Some((token_in, lo, out)) = pair.arbitrage_to(p0 * ten(d1), p1 * ten(d0)) else {
        return Ok(Vec::new());
    };
    let token0_overpriced = token_in == pool.token0;
    let mint = MintableERC20::mintCall {
        account: pool.address,
        value: lo,
    };
    let (out0, out1) = if token0_overpriced {
        (U256::ZERO, out)
    } else {
        (out, U256::ZERO)
    };
    let swap = UniswapV2Pair::swapCall {
        amount0Out: out0,
        amount1Out: out1,
        to: admin,
        data: Default::default(),
    };
    Ok(vec![
        (
            call(token_in, mint.abi_encode(), 200_000),
            "arbitrage into the pair",
        ),
        (
            call(pool.address, swap.abi_encode(), 300_000),
            "V2 arbitrage swap",
        ),
    ])
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
