//! The devnet against the real Aave V3 and Uniswap V3 contracts: what was seeded is what the Pool
//! reports, a price shock makes positions liquidatable, a liquidation moves exactly what the protocol's
//! formula says, and a swap returns what QuoterV2 quoted.
//!
//! These tests need the pinned toolchain (`make toolchain`); without it they fail and say so.

use alloy::{
    eips::BlockId,
    network::TransactionBuilder,
    primitives::{Address, U256, aliases::U160},
    rpc::types::TransactionRequest,
    sol_types::{SolCall, SolEvent},
};
use cascade::{
    chain::{self, bindings::*},
    devnet::{
        Devnet, DevnetOptions,
        aave::DevnetAave,
        market::{ASSETS, EMODE},
        report,
        seed::{self, plan},
        shock::{self, PriceMoveBps},
    },
    units::{BaseAmount, HealthFactor},
};

async fn devnet(borrowers: u64, aave: DevnetAave) -> Devnet {
    Devnet::start(&DevnetOptions {
        borrowers,
        aave,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("devnet did not start: {e:#}"))
}

fn sum(values: impl Iterator<Item = BaseAmount>) -> U256 {
    values.fold(U256::ZERO, |acc, v| acc + v.0)
}

/// |a - b| ≤ b × tolerance_bps / 10_000
fn close(a: U256, b: U256, tolerance_bps: u64) -> bool {
    let diff = if a > b { a - b } else { b - a };
    diff * U256::from(10_000u64) <= b * U256::from(tolerance_bps)
}

async fn send_from<C: SolCall>(
    net: &Devnet,
    from: Address,
    to: Address,
    call: C,
) -> alloy::rpc::types::TransactionReceipt {
    use alloy::providers::ext::AnvilApi;
    net.rpc
        .anvil_set_balance(from, U256::from(10u64).pow(U256::from(20)))
        .await
        .expect("fund test account");
    let tx = TransactionRequest::default()
        .from(from)
        .to(to)
        .with_input(call.abi_encode());
    chain::send_unlocked(&net.rpc, tx, "test transaction")
        .await
        .expect("transaction")
}

#[tokio::test]
async fn seeded_borrowers_match_their_plans() {
    let net = devnet(12, DevnetAave::V3_6).await;
    let d = &net.deployment;
    assert_eq!(d.borrowers.len(), 12);
    let health = report::account_health(
        &net.rpc,
        d.multicall,
        d.aave.pool,
        &d.borrowers,
        BlockId::latest(),
    )
    .await
    .expect("getUserAccountData through aggregate3");
    assert_eq!(health.len(), 12);
    for (i, account) in health.iter().enumerate() {
        let p = plan(i as u64, 12, Some(&EMODE));
        assert_eq!(account.borrower, seed::borrower_address(i as u64));
        // Token amounts are rounded down from USD values: collateral matches to a millionth.
        let collateral = sum(p.collateral.iter().map(|c| c.1));
        assert!(
            close(account.collateral.0, collateral, 1),
            "borrower {i}: collateral {} vs plan {collateral}",
            account.collateral.0
        );
        // Debt accrues a few seconds of interest.
        let debt = sum(p.debt.iter().map(|c| c.1));
        assert!(
            close(account.debt.0, debt, 1),
            "borrower {i}: debt {} vs plan {debt}",
            account.debt.0
        );
        let target = HealthFactor::from_milli(p.target_hf_milli);
        assert!(
            close(account.health_factor.0, target.0, 5),
            "borrower {i}: hf {} vs {target}",
            account.health_factor
        );
    }
    let lowest = health.iter().map(|a| a.health_factor).min().unwrap();
    assert!(
        lowest < HealthFactor::from_milli(1_030) && !lowest.is_liquidatable(),
        "{lowest}"
    );
}

/// Aave's PercentageMath: half-up rounding.
fn percent_mul(x: U256, bps: u64) -> U256 {
    (x * U256::from(bps) + U256::from(5_000u64)) / U256::from(10_000u64)
}
fn percent_div(x: U256, bps: u64) -> U256 {
    (x * U256::from(10_000u64) + U256::from(bps / 2)) / U256::from(bps)
}

#[tokio::test]
async fn shock_then_liquidation_moves_what_the_formula_says() {
    // V3.0's close factor and rounding, as `@aave/core-v3` ships them.
    let net = devnet(20, DevnetAave::V3_0).await;
    let d = &net.deployment;
    let weth = d.asset("WETH").unwrap().clone();

    // The riskiest borrower with WETH as its main collateral.
    let (index, p) = (0..20)
        .map(|i| (i, plan(i, 20, None)))
        .find(|(_, p)| ASSETS[p.collateral[0].0].symbol == "WETH")
        .expect("a WETH borrower");
    let borrower = seed::borrower_address(index);
    let debt_asset = d.assets[p.debt[0].0].clone();
    let debt_spec = ASSETS[p.debt[0].0];

    let devnet_weth = weth.devnet_asset();
    shock::shock(&net.rpc, &devnet_weth, PriceMoveBps(-3000))
        .await
        .expect("shock");
    let account = chain::view(
        &net.rpc,
        d.aave.pool,
        Pool::getUserAccountDataCall { user: borrower },
        "account",
    )
    .await
    .unwrap();
    let hf = HealthFactor(account.healthFactor);
    assert!(
        hf.is_liquidatable(),
        "borrower {index} (planned hf {}) at {hf} after a 30% WETH drop",
        p.target_hf_milli
    );

    // A liquidator with the debt asset.
    let liquidator = Address::from_slice(&alloy::primitives::keccak256("test liquidator")[12..]);
    let big = U256::from(10u64).pow(U256::from(30));
    send_from(
        &net,
        liquidator,
        debt_asset.address,
        MintableERC20::mintCall {
            account: liquidator,
            value: big,
        },
    )
    .await;
    send_from(
        &net,
        liquidator,
        debt_asset.address,
        MintableERC20::approveCall {
            spender: d.aave.pool,
            amount: U256::MAX,
        },
    )
    .await;

    let oracle = d.aave.oracle;
    let price = |a: Address| {
        chain::view(
            &net.rpc,
            oracle,
            AaveOracle::getAssetPriceCall { asset: a },
            "price",
        )
    };
    let (weth_price, debt_price) = (
        price(weth.address).await.unwrap(),
        price(debt_asset.address).await.unwrap(),
    );
    let balance = |token: Address, who: Address| {
        chain::view(
            &net.rpc,
            token,
            MintableERC20::balanceOfCall { account: who },
            "balance",
        )
    };

    // 1. An explicit amount well under the close factor: the collateral paid is exact.
    let debt_before = balance(debt_asset.variable_debt_token, borrower)
        .await
        .unwrap();
    let debt_to_cover = debt_before / U256::from(10u8);
    let treasury_before = balance(weth.a_token, d.aave.treasury).await.unwrap();
    let receipt = send_from(
        &net,
        liquidator,
        d.aave.pool,
        Pool::liquidationCallCall {
            collateralAsset: weth.address,
            debtAsset: debt_asset.address,
            user: borrower,
            debtToCover: debt_to_cover,
            receiveAToken: false,
        },
    )
    .await;

    let unit = |dec: u8| U256::from(10u64).pow(U256::from(dec));
    let weth_spec = ASSETS[0];
    let base_collateral =
        debt_price * debt_to_cover * unit(18) / (weth_price * unit(debt_spec.decimals));
    let bonus = u64::from(weth_spec.liquidation_bonus.0);
    let seized = percent_mul(base_collateral, bonus);
    let bonus_part = seized - percent_div(seized, bonus);
    let protocol_fee = percent_mul(bonus_part, u64::from(weth_spec.liquidation_protocol_fee.0));

    let event = receipt
        .inner
        .logs()
        .iter()
        .find_map(|l| Pool::LiquidationCall::decode_log_data(l.data()).ok())
        .expect("LiquidationCall event");
    assert_eq!(event.debtToCover, debt_to_cover);
    assert_eq!(event.liquidatedCollateralAmount, seized - protocol_fee);
    assert_eq!(
        balance(weth.address, liquidator).await.unwrap(),
        seized - protocol_fee
    );
    assert_eq!(
        balance(debt_asset.address, liquidator).await.unwrap(),
        big - debt_to_cover
    );
    let treasury_gain = balance(weth.a_token, d.aave.treasury).await.unwrap() - treasury_before;
    assert!(
        treasury_gain.abs_diff(protocol_fee) <= U256::from(1u8),
        "treasury got {treasury_gain}, fee {protocol_fee}"
    );

    // 2. "As much as allowed": V3.0 caps the repay at 50% of the reserve's debt while HF ≥ 0.95 and
    // 100% below; when the borrower's collateral cannot pay for that plus the bonus, all of it is
    // seized and the repay is scaled down to match.
    let hf_now = HealthFactor(
        chain::view(
            &net.rpc,
            d.aave.pool,
            Pool::getUserAccountDataCall { user: borrower },
            "account",
        )
        .await
        .unwrap()
        .healthFactor,
    );
    let collateral_before = balance(weth.a_token, borrower).await.unwrap();
    let receipt = send_from(
        &net,
        liquidator,
        d.aave.pool,
        Pool::liquidationCallCall {
            collateralAsset: weth.address,
            debtAsset: debt_asset.address,
            user: borrower,
            debtToCover: U256::MAX,
            receiveAToken: false,
        },
    )
    .await;
    let event = receipt
        .inner
        .logs()
        .iter()
        .find_map(|l| Pool::LiquidationCall::decode_log_data(l.data()).ok())
        .unwrap();
    let debt_after = balance(debt_asset.variable_debt_token, borrower)
        .await
        .unwrap();
    let debt_at_liquidation = debt_after + event.debtToCover;
    let close_factor = if hf_now < HealthFactor::from_milli(950) {
        10_000
    } else {
        5_000
    };
    let max_debt = percent_mul(debt_at_liquidation, close_factor);
    let seize_for_max = percent_mul(
        debt_price * max_debt * unit(18) / (weth_price * unit(debt_spec.decimals)),
        bonus,
    );
    if seize_for_max <= collateral_before {
        // The close factor binds (±2 wei: debt balances are scaled by the borrow index).
        assert!(
            event.debtToCover.abs_diff(max_debt) <= U256::from(2u8),
            "covered {} of {debt_at_liquidation} (hf {hf_now})",
            event.debtToCover
        );
    } else {
        // The collateral binds: all of it is gone (but scaled-balance dust) and the repay matches it.
        assert!(balance(weth.a_token, borrower).await.unwrap() <= U256::from(1u8));
        let repay_for_all = percent_div(
            weth_price * collateral_before * unit(debt_spec.decimals) / (debt_price * unit(18)),
            bonus,
        );
        assert!(
            close(event.debtToCover, repay_for_all, 1),
            "covered {} for all collateral, formula {repay_for_all}",
            event.debtToCover
        );
    }
}

#[tokio::test]
async fn swap_returns_what_quoter_v2_quoted() {
    let net = devnet(0, DevnetAave::V3_6).await;
    let d = &net.deployment;
    let (weth, usdc) = (
        d.asset("WETH").unwrap().address,
        d.asset("USDC").unwrap().address,
    );
    let trader = Address::from_slice(&alloy::primitives::keccak256("test trader")[12..]);
    // $40M: more than the ±5% range holds, so the swap crosses initialized ticks.
    let amount_in = U256::from(20_000u64) * U256::from(10u64).pow(U256::from(18));
    send_from(
        &net,
        trader,
        weth,
        MintableERC20::mintCall {
            account: trader,
            value: amount_in,
        },
    )
    .await;
    send_from(
        &net,
        trader,
        weth,
        MintableERC20::approveCall {
            spender: d.uniswap.router,
            amount: U256::MAX,
        },
    )
    .await;

    let quote = chain::view(
        &net.rpc,
        d.uniswap.quoter,
        QuoterV2::quoteExactInputSingleCall {
            params: QuoterV2::QuoteExactInputSingleParams {
                tokenIn: weth,
                tokenOut: usdc,
                amountIn: amount_in,
                fee: 500u32.try_into().unwrap(),
                sqrtPriceLimitX96: U160::ZERO,
            },
        },
        "quote",
    )
    .await
    .expect("QuoterV2 quote");
    assert!(
        quote.initializedTicksCrossed >= 1,
        "the swap should cross initialized ticks"
    );

    send_from(
        &net,
        trader,
        d.uniswap.router,
        SwapRouter::exactInputSingleCall {
            params: SwapRouter::ExactInputSingleParams {
                tokenIn: weth,
                tokenOut: usdc,
                fee: 500u32.try_into().unwrap(),
                recipient: trader,
                deadline: U256::MAX,
                amountIn: amount_in,
                amountOutMinimum: U256::ZERO,
                sqrtPriceLimitX96: U160::ZERO,
            },
        },
    )
    .await;
    let received = chain::view(
        &net.rpc,
        usdc,
        MintableERC20::balanceOfCall { account: trader },
        "balance",
    )
    .await
    .unwrap();
    assert_eq!(received, quote.amountOut);
    // 20,000 WETH at ~2,000 USDC less fee and impact.
    let usd = received / U256::from(1_000_000u64);
    assert!(
        usd > U256::from(25_000_000u64) && usd < U256::from(40_000_000u64),
        "{usd} USDC"
    );
}

#[tokio::test]
async fn a_market_shock_brings_the_pools_to_the_new_price() {
    use cascade::{devnet::uniswap::sqrt_price_x96, planner::venues::uniswap_v2::UniswapV2Pair};
    let net = devnet(0, DevnetAave::V3_6).await;
    let d = &net.deployment;
    let config = d
        .config(&net.rpc_url, None, std::path::PathBuf::new())
        .devnet
        .unwrap();
    let weth = config
        .assets
        .iter()
        .find(|a| a.symbol == "WETH")
        .unwrap()
        .clone();
    let change = shock::shock_market(&net.rpc, &config, &weth, PriceMoveBps(-2000))
        .await
        .expect("shock");
    assert_eq!(
        change.new.0 * U256::from(5u8),
        change.old.0 * U256::from(4u8)
    );
    let price = |a: Address| {
        chain::view(
            &net.rpc,
            d.aave.oracle,
            AaveOracle::getAssetPriceCall { asset: a },
            "price",
        )
    };
    let decimals = |a: Address| d.assets.iter().find(|x| x.address == a).unwrap().decimals;
    for pool in config
        .pools
        .iter()
        .filter(|p| p.token0 == weth.address || p.token1 == weth.address)
    {
        let (p0, p1) = (
            price(pool.token0).await.unwrap(),
            price(pool.token1).await.unwrap(),
        );
        if pool.v2 {
            let r = chain::view(
                &net.rpc,
                pool.address,
                UniswapV2Pair::getReservesCall {},
                "reserves",
            )
            .await
            .unwrap();
            // reserve1/reserve0 in raw units vs the oracle's p0/p1 in raw units, within 0.1%.
            let lhs = U256::from(r.reserve1)
                * p1
                * U256::from(10u64).pow(U256::from(decimals(pool.token0)));
            let rhs = U256::from(r.reserve0)
                * p0
                * U256::from(10u64).pow(U256::from(decimals(pool.token1)));
            assert!(
                close(lhs, rhs, 10),
                "V2 pair {} off the oracle price",
                pool.address
            );
        } else {
            let slot0 = chain::view(&net.rpc, pool.address, UniswapV3Pool::slot0Call {}, "slot0")
                .await
                .unwrap();
            let target = sqrt_price_x96(p0, decimals(pool.token0), p1, decimals(pool.token1));
            assert!(
                close(U256::from(slot0.sqrtPriceX96), target, 1),
                "V3 pool {} at {} not {target}",
                pool.address,
                slot0.sqrtPriceX96
            );
        }
    }
}
