//! Deploys the real Uniswap V3 (factory, position manager, router, QuoterV2) from
//! `@uniswap/v3-core` / `-periphery` artifacts, creates a pool per pair at the oracle price, and adds
//! concentrated liquidity over several ranges.

use super::{
    Deployer,
    aave::DeployedAsset,
    market::{ASSETS, POOLS},
};
use crate::chain::bindings::{
    MintableERC20, NonfungiblePositionManager, QuoterV2, SwapRouter, UniswapV3Factory,
    UniswapV3Pool,
};
use alloy::primitives::{Address, U256, aliases::I24, aliases::U160};
use serde::{Deserialize, Serialize};

/// Lowest tick Uniswap V3 allows.
pub const MIN_TICK: i32 = -887_272;
/// Highest tick Uniswap V3 allows.
pub const MAX_TICK: i32 = 887_272;

/// Addresses of the Uniswap V3 deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UniswapDeployment {
    /// UniswapV3Factory.
    pub factory: Address,
    /// NonfungiblePositionManager.
    pub position_manager: Address,
    /// SwapRouter.
    pub router: Address,
    /// QuoterV2.
    pub quoter: Address,
    /// The pools created.
    pub pools: Vec<DeployedPool>,
    /// Uniswap V2 factory.
    pub v2_factory: Address,
    /// Uniswap V2 pairs created (fee 3000 = V2's 0.3%).
    pub v2_pairs: Vec<DeployedPool>,
}

/// A pool and its pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedPool {
    /// The pool.
    pub address: Address,
    /// The lower-addressed token.
    pub token0: Address,
    /// The other token.
    pub token1: Address,
    /// Fee tier, hundredths of a bip.
    pub fee: u32,
    /// "WETH/USDC" in the market's order, for display.
    pub label: String,
}

pub use crate::planner::venues::uniswap_v3::sqrt_price_x96;

/// The tick at a sqrtPriceX96 (rounded down). Floating point is fine here: it only places the
/// devnet's liquidity ranges, which are then snapped to the tick spacing.
pub fn tick_at(sqrt_price_x96: U256) -> i32 {
    let sqrt = crate::units::u256_to_f64(sqrt_price_x96) / 2f64.powi(96);
    (2.0 * sqrt.ln() / 1.0001f64.ln()).floor() as i32
}

/// The tick range for ± `half_width_bps` around `tick`, snapped outward to `spacing`; 0 = full range.
pub fn range_around(tick: i32, half_width_bps: u32, spacing: i32) -> (i32, i32) {
    let (lo, hi) = if half_width_bps == 0 {
        (MIN_TICK, MAX_TICK)
    } else {
        let w = f64::from(half_width_bps) / 10_000.0;
        let down = ((1.0 - w).max(1e-9)).ln() / 1.0001f64.ln();
        let up = (1.0 + w).ln() / 1.0001f64.ln();
        (tick + down.floor() as i32, tick + up.ceil() as i32)
    };
    let lo = (lo.max(MIN_TICK) as f64 / f64::from(spacing)).ceil() as i32 * spacing;
    let hi = (hi.min(MAX_TICK) as f64 / f64::from(spacing)).floor() as i32 * spacing;
    (lo, hi)
}

fn tick_spacing(fee: u32) -> i32 {
    match fee {
        100 => 1,
        500 => 10,
        3000 => 60,
        _ => 200,
    }
}

const CORE: &str = "@uniswap/v3-core/artifacts/contracts";
const PERIPHERY: &str = "@uniswap/v3-periphery/artifacts/contracts";

/// Deploys Uniswap V3 and the pools of [`POOLS`], with liquidity from the deploying account.
pub async fn deploy(d: &mut Deployer, assets: &[DeployedAsset]) -> eyre::Result<UniswapDeployment> {
    // An ERC-20 WETH stands in for WETH9: nothing on the devnet wraps ETH.
    let weth = assets[0].address;
    let factory = d
        .deploy(
            "UniswapV3Factory",
            &format!("{CORE}/UniswapV3Factory.sol/UniswapV3Factory.json"),
            Vec::new(),
        )
        .await?;
    let position_manager = d
        .deploy_with(
            "NonfungiblePositionManager",
            &format!("{PERIPHERY}/NonfungiblePositionManager.sol/NonfungiblePositionManager.json"),
            NonfungiblePositionManager::constructorCall {
                factory,
                weth9: weth,
                tokenDescriptor: Address::ZERO,
            },
        )
        .await?;
    let router = d
        .deploy_with(
            "SwapRouter",
            &format!("{PERIPHERY}/SwapRouter.sol/SwapRouter.json"),
            SwapRouter::constructorCall {
                factory,
                weth9: weth,
            },
        )
        .await?;
    let quoter = d
        .deploy_with(
            "QuoterV2",
            &format!("{PERIPHERY}/lens/QuoterV2.sol/QuoterV2.json"),
            QuoterV2::constructorCall {
                factory,
                weth9: weth,
            },
        )
        .await?;

    for asset in assets {
        d.send(
            asset.address,
            MintableERC20::approveCall {
                spender: position_manager,
                amount: U256::MAX,
            },
            "approve position manager",
        )
        .await?;
    }

    let mut pools = Vec::new();
    for spec in &POOLS {
        let (a, b) = (&assets[spec.asset_a], &assets[spec.asset_b]);
        let (sa, sb) = (&ASSETS[spec.asset_a], &ASSETS[spec.asset_b]);
        let ((t0, p0, d0), (t1, p1, d1)) = if a.address < b.address {
            (
                (a.address, sa.price(), sa.decimals),
                (b.address, sb.price(), sb.decimals),
            )
        } else {
            (
                (b.address, sb.price(), sb.decimals),
                (a.address, sa.price(), sa.decimals),
            )
        };
        let label = format!(
            "{}/{} {}%",
            sa.symbol,
            sb.symbol,
            f64::from(spec.fee) / 10_000.0
        );
        d.send(
            factory,
            UniswapV3Factory::createPoolCall {
                tokenA: t0,
                tokenB: t1,
                fee: spec.fee.try_into()?,
            },
            &format!("createPool {label}"),
        )
        .await?;
        let pool = crate::chain::view(
            &d.rpc,
            factory,
            UniswapV3Factory::getPoolCall {
                tokenA: t0,
                tokenB: t1,
                fee: spec.fee.try_into()?,
            },
            "getPool",
        )
        .await?;
        let sqrt_price = sqrt_price_x96(p0.0, d0, p1.0, d1);
        d.send(
            pool,
            UniswapV3Pool::initializeCall {
                sqrtPriceX96: U160::from(sqrt_price),
            },
            "initialize pool",
        )
        .await?;
        let tick = tick_at(sqrt_price);
        for &(half_width_bps, usd) in spec.positions {
            let (lower, upper) = range_around(tick, half_width_bps, tick_spacing(spec.fee));
            // Half the position's value on each side; the position manager takes what the range needs.
            let half = crate::units::BaseAmount::from_usd(usd / 2);
            let amount0 = half.to_tokens(p0, d0);
            let amount1 = half.to_tokens(p1, d1);
            for (token, amount) in [(t0, amount0), (t1, amount1)] {
                d.send(
                    token,
                    MintableERC20::mintCall {
                        account: d.from,
                        value: amount,
                    },
                    "mint LP tokens",
                )
                .await?;
            }
            d.send(
                position_manager,
                NonfungiblePositionManager::mintCall {
                    params: NonfungiblePositionManager::MintParams {
                        token0: t0,
                        token1: t1,
                        fee: spec.fee.try_into()?,
                        tickLower: I24::try_from(lower)?,
                        tickUpper: I24::try_from(upper)?,
                        amount0Desired: amount0,
                        amount1Desired: amount1,
                        amount0Min: U256::ZERO,
                        amount1Min: U256::ZERO,
                        recipient: d.from,
                        deadline: U256::MAX,
                    },
                },
                &format!("add liquidity to {label}"),
            )
            .await?;
        }
        d.deployed.push((format!("Uniswap V3 pool {label}"), pool));
        pools.push(DeployedPool {
            address: pool,
            token0: t0,
            token1: t1,
            fee: spec.fee,
            label,
        });
    }

    let (v2_factory, v2_pairs) = deploy_v2(d, assets).await?;
    Ok(UniswapDeployment {
        factory,
        position_manager,
        router,
        quoter,
        pools,
        v2_factory,
        v2_pairs,
    })
}

/// Uniswap V2 pairs and their value at the oracle price, in USD: a second venue beside V3.
const V2_PAIRS: [(usize, usize, u64); 2] = [(0, 1, 2_000_000), (3, 1, 400_000)];

/// Deploys the Uniswap V2 factory from `@uniswap/v2-core` and the pairs of [`V2_PAIRS`] with liquidity.
async fn deploy_v2(
    d: &mut Deployer,
    assets: &[DeployedAsset],
) -> eyre::Result<(Address, Vec<DeployedPool>)> {
    use crate::planner::venues::uniswap_v2::{UniswapV2Factory, UniswapV2Pair};
    let factory = d
        .deploy_with(
            "UniswapV2Factory",
            "@uniswap/v2-core/build/UniswapV2Factory.json",
            UniswapV2Factory::constructorCall {
                feeToSetter: d.from,
            },
        )
        .await?;
    let mut pairs = Vec::new();
    for (a, b, usd) in V2_PAIRS {
        let (ta, tb) = (assets[a].address, assets[b].address);
        d.send(
            factory,
            UniswapV2Factory::createPairCall {
                tokenA: ta,
                tokenB: tb,
            },
            "createPair",
        )
        .await?;
        let pair = crate::chain::view(
            &d.rpc,
            factory,
            UniswapV2Factory::getPairCall {
                tokenA: ta,
                tokenB: tb,
            },
            "getPair",
        )
        .await?;
        let half = crate::units::BaseAmount::from_usd(usd / 2);
        for (i, token) in [(a, ta), (b, tb)] {
            let amount = half.to_tokens(ASSETS[i].price(), ASSETS[i].decimals);
            d.send(
                token,
                MintableERC20::mintCall {
                    account: pair,
                    value: amount,
                },
                "fund V2 pair",
            )
            .await?;
        }
        d.send(
            pair,
            UniswapV2Pair::mintCall { to: d.from },
            "mint V2 liquidity",
        )
        .await?;
        let (t0, t1) = if ta < tb { (ta, tb) } else { (tb, ta) };
        let label = format!("{}/{} v2", ASSETS[a].symbol, ASSETS[b].symbol);
        d.deployed.push((format!("Uniswap V2 pair {label}"), pair));
        pairs.push(DeployedPool {
            address: pair,
            token0: t0,
            token1: t1,
            fee: 3000,
            label,
        });
    }
    Ok((factory, pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqrt_price_of_weth_at_2000_usdc() {
        // WETH (18 decimals) as token0 at 2000 USDC (6 decimals), from shared/reference/devnet-notes.md.
        let p = sqrt_price_x96(
            U256::from(crate::devnet::market::usd(2_000)),
            18,
            U256::from(crate::devnet::market::usd(1)),
            6,
        );
        assert_eq!(p, U256::from(3_543_191_142_285_914_205_922_034u128));
        assert_eq!(tick_at(p), -200_312);
    }

    #[test]
    fn inverse_pair_does_not_overflow() {
        // USDC as token0: 1e26·2^192 needs more than 256 bits before the square root.
        let p = sqrt_price_x96(
            U256::from(crate::devnet::market::usd(1)),
            6,
            U256::from(crate::devnet::market::usd(2_000)),
            18,
        );
        assert_eq!(tick_at(p), 200_311);
    }

    #[test]
    fn ranges_snap_to_spacing() {
        let (lo, hi) = range_around(-200_312, 500, 10);
        assert_eq!((lo % 10, hi % 10), (0, 0));
        assert!(lo < -200_312 && hi > -200_312);
        assert_eq!(range_around(0, 0, 60), (-887_220, 887_220));
    }
}
