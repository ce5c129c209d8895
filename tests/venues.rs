//! Off-chain swap simulation against the devnet's real Uniswap V3 pools equals QuoterV2, to the wei:
//! small swaps, swaps that cross several initialized ticks, and swaps larger than the pool can fill.

use alloy::{
    eips::BlockId,
    primitives::{U256, aliases::U160},
};
use cascade::{
    chain::{self, bindings::QuoterV2},
    devnet::{Devnet, DevnetOptions},
    planner::venues::uniswap_v3::{load_pool, price_impact_bps},
};

fn units(n: u128, decimals: u8) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(decimals))
}

#[tokio::test]
async fn simulated_swaps_equal_quoter_v2() {
    let net = Devnet::start(&DevnetOptions {
        borrowers: 0,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("devnet did not start: {e:#}"));
    let d = &net.deployment;
    let sym = |s: &str| d.asset(s).unwrap().address;
    let cases = [
        ("WETH/USDC 0.05%", "WETH", units(1, 18)),
        ("WETH/USDC 0.05%", "WETH", units(20_000, 18)),
        ("WETH/USDC 0.05%", "USDC", units(50_000_000, 6)),
        ("WETH/USDC 0.3%", "WETH", units(3_000, 18)),
        ("WBTC/USDC 0.3%", "WBTC", units(40, 8)),
        ("WBTC/WETH 0.3%", "WETH", units(700, 18)),
        ("ALT/USDC 1%", "ALT", units(100_000, 18)),
        ("ALT/USDC 1%", "ALT", units(10_000_000_000, 18)),
        ("ALT/USDC 1%", "USDC", units(1_000_000_000_000, 6)),
        ("ALT/WETH 1%", "WETH", units(1_000_000, 18)),
    ];
    let mut crossed_several = false;
    let mut partial = false;
    for (label, token_in, amount) in cases {
        let deployed = d
            .uniswap
            .pools
            .iter()
            .find(|p| p.label == label)
            .unwrap_or_else(|| panic!("pool {label}"));
        let pool = load_pool(&net.rpc, d.multicall, deployed.address, BlockId::latest())
            .await
            .expect("load pool");
        let token_in = sym(token_in);
        let token_out = if token_in == pool.token0 {
            pool.token1
        } else {
            pool.token0
        };
        let ours = pool.swap_exact_in(token_in, amount).expect("simulate");
        let quote = chain::view(
            &net.rpc,
            d.uniswap.quoter,
            QuoterV2::quoteExactInputSingleCall {
                params: QuoterV2::QuoteExactInputSingleParams {
                    tokenIn: token_in,
                    tokenOut: token_out,
                    amountIn: amount,
                    fee: pool.fee.try_into().unwrap(),
                    sqrtPriceLimitX96: U160::ZERO,
                },
            },
            "QuoterV2",
        )
        .await
        .expect("quote");
        eprintln!(
            "{label} in {amount}: out {} (quoter {}), {} ticks crossed, impact {} bps, filled {}",
            ours.amount_out,
            quote.amountOut,
            ours.ticks_crossed,
            price_impact_bps(&pool, token_in, &ours),
            ours.amount_in == amount
        );
        assert_eq!(ours.amount_out, quote.amountOut, "{label}: amount out");
        assert_eq!(
            ours.sqrt_price_after,
            U256::from(quote.sqrtPriceX96After),
            "{label}: price after"
        );
        assert_eq!(
            ours.ticks_crossed, quote.initializedTicksCrossed,
            "{label}: ticks crossed"
        );
        crossed_several |= ours.ticks_crossed >= 2;
        partial |= ours.amount_in < amount;
    }
    assert!(
        crossed_several,
        "some swap should cross several initialized ticks"
    );
    assert!(partial, "some swap should be larger than the pool can fill");
}
