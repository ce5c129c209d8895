//! The cascade map against the chain it predicts: round 0 at −20% WETH is what the Pool says after
//! WETH really falls 20%, position by position and to the wei; the forced sales, swapped on the
//! devnet in the map's order, leave every pool exactly where the map says; the oracle's pass-through
//! decides whether the fall spreads past round 0.

mod common;

use alloy::{
    eips::{BlockId, BlockNumberOrTag},
    primitives::{Address, U256, aliases::U160},
    providers::{Provider, ext::AnvilApi},
    sol_types::SolCall,
};
use cascade::{
    chain::{
        bindings::{MintableERC20, SwapRouter, UniswapV3Pool},
        metered::RpcMeter,
    },
    devnet::{
        Devnet, report,
        shock::{self, PriceMoveBps},
    },
    map::{self, MapParams, Snapshot},
    planner::{
        SizingCosts,
        venues::{
            Venue,
            book::{BookSettings, VenueBook},
            uniswap_v2::{UniswapV2Pair, amount_out},
        },
    },
    store::Store,
};
use common::{asset, devnet, send, watcher};
use std::collections::BTreeSet;

/// The map's view of the devnet's market at its latest block.
async fn snapshot_now(net: &Devnet, store: &Store) -> Snapshot {
    let d = &net.deployment;
    let mut w = watcher(net, store, &RpcMeter::default()).await;
    w.sync().await.unwrap();
    let market = w.protocol().clone();
    let positions: Vec<_> = w.positions().map(|(u, p, _)| (u, p.clone())).collect();
    let book = VenueBook::new(
        net.rpc.clone(),
        BookSettings {
            multicall: d.multicall,
            v3_factory: d.uniswap.factory,
            fee_tiers: vec![500, 3000, 10000],
            v2_factory: Some(d.uniswap.v2_factory),
        },
    );
    let weth = market.reserve_of(d.asset("WETH").unwrap().address).unwrap();
    let costs = SizingCosts {
        gas_price_wei: 2_000_000_000,
        native_price: weth.price,
    };
    let block = market.block.unwrap();
    map::snapshot(&market, positions, &book, block, costs)
        .await
        .unwrap()
}

fn params(asset: Address, to_bps: u32, step_bps: u32, pass_through_bps: u32) -> MapParams {
    MapParams {
        assets: vec![asset],
        to_bps,
        step_bps,
        pass_through_bps,
        max_rounds: 20,
    }
}

/// Swaps `amount` of `token_in` into `venue` on the devnet, as a keeper selling seized collateral
/// would (V3 through the router with no price limit; V2 by paying the pair and taking the most it
/// gives, checked against one wei more).
async fn swap_on_chain(net: &Devnet, venue: &Venue, token_in: Address, amount: U256) {
    let d = &net.deployment;
    let admin = d.admin;
    let (t0, t1) = venue.tokens();
    let token_out = if token_in == t0 { t1 } else { t0 };
    match venue {
        Venue::V3(pool) => {
            let mint = MintableERC20::mintCall {
                account: admin,
                value: amount,
            };
            send(net, admin, token_in, mint.abi_encode()).await.unwrap();
            let approve = MintableERC20::approveCall {
                spender: d.uniswap.router,
                amount: U256::MAX,
            };
            send(net, admin, token_in, approve.abi_encode())
                .await
                .unwrap();
            let swap = SwapRouter::exactInputSingleCall {
                params: SwapRouter::ExactInputSingleParams {
                    tokenIn: token_in,
                    tokenOut: token_out,
                    fee: pool.fee.try_into().unwrap(),
                    recipient: admin,
                    deadline: U256::MAX,
                    amountIn: amount,
                    amountOutMinimum: U256::ZERO,
                    sqrtPriceLimitX96: U160::ZERO,
                },
            };
            let receipt = send(net, admin, d.uniswap.router, swap.abi_encode())
                .await
                .unwrap();
            assert!(receipt.status(), "the router's swap reverted");
        }
        Venue::V2(pair) => {
            let contract = UniswapV2Pair::new(pair.address, &net.rpc);
            let r = contract.getReserves().call().await.unwrap();
            let (r0, r1) = (U256::from(r.reserve0), U256::from(r.reserve1));
            let out = if token_in == t0 {
                amount_out(amount, r0, r1)
            } else {
                amount_out(amount, r1, r0)
            };
            let mint = MintableERC20::mintCall {
                account: pair.address,
                value: amount,
            };
            send(net, admin, token_in, mint.abi_encode()).await.unwrap();
            let outs = |out: U256| {
                if token_in == t0 {
                    (U256::ZERO, out)
                } else {
                    (out, U256::ZERO)
                }
            };
            // One wei more breaks the pair's invariant: `out` is the most the sale buys.
            let (more0, more1) = outs(out + U256::ONE);
            let greedy = contract
                .swap(more0, more1, admin, Default::default())
                .from(admin)
                .call()
                .await;
            assert!(greedy.is_err(), "the pair gave one wei more than {out}");
            let (amount0_out, amount1_out) = outs(out);
            let swap = UniswapV2Pair::swapCall {
                amount0Out: amount0_out,
                amount1Out: amount1_out,
                to: admin,
                data: Default::default(),
            };
            let receipt = send(net, admin, pair.address, swap.abi_encode())
                .await
                .unwrap();
            assert!(receipt.status(), "the pair's swap reverted");
        }
    }
}

/// The pool's state as `PoolFlow::state_after` gives it: √P for a V3 pool, the reserves of a pair.
async fn state_on_chain(net: &Devnet, venue: &Venue) -> Vec<U256> {
    match venue {
        Venue::V3(pool) => {
            let slot0 = UniswapV3Pool::new(pool.address, &net.rpc)
                .slot0()
                .call()
                .await
                .unwrap();
            vec![U256::from(slot0.sqrtPriceX96)]
        }
        Venue::V2(pair) => {
            let r = UniswapV2Pair::new(pair.address, &net.rpc)
                .getReserves()
                .call()
                .await
                .unwrap();
            vec![U256::from(r.reserve0), U256::from(r.reserve1)]
        }
    }
}

#[tokio::test]
async fn the_map_is_what_the_chain_does() {
    let net = devnet(150).await;
    let d = net.deployment.clone();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let snap = snapshot_now(&net, &store).await;
    let before = snap.market.block.unwrap();
    let weth = d.asset("WETH").unwrap().address;
    let alt = d.asset("ALT").unwrap().address;

    // With the oracle deaf to the pools, the cascade is round 0 at every step.
    let deaf = map::compute(&snap, &params(weth, 5000, 500, 0), &[]);
    assert_eq!(deaf.steps.len(), 11);
    assert!(deaf.steps.iter().any(|s| s.round0_debt_usd > 0.0));
    for s in &deaf.steps {
        assert!(s.rounds <= 1, "{} rounds at {}%", s.rounds, s.drop_pct);
        assert_eq!(s.cascade_debt_usd, s.round0_debt_usd, "at {}%", s.drop_pct);
        assert!(s.fallen.iter().all(|p| p.round == 0));
    }

    // On the thin ALT pools an oracle that follows them spreads the fall: positions round 0 does
    // not see fall in later rounds, at the same step.
    let deaf = map::compute(&snap, &params(alt, 3000, 500, 0), &[]);
    let following = map::compute(&snap, &params(alt, 3000, 500, 10_000), &[]);
    let amplified: Vec<_> = following
        .steps
        .iter()
        .zip(&deaf.steps)
        .filter(|(f, _)| f.rounds > 1 && f.cascade_debt_usd > f.round0_debt_usd)
        .collect();
    assert!(
        !amplified.is_empty(),
        "no step of an ALT fall spreads: {following:?}"
    );
    for (f, d) in &amplified {
        assert_eq!(f.round0_debt_usd, d.round0_debt_usd, "round 0 is the same");
        assert_eq!(d.cascade_debt_usd, d.round0_debt_usd);
        let induced: BTreeSet<Address> = f
            .fallen
            .iter()
            .filter(|p| p.round > 0)
            .map(|p| p.borrower)
            .collect();
        let seen: BTreeSet<Address> = d.fallen.iter().map(|p| p.borrower).collect();
        assert!(!induced.is_empty() && induced.is_disjoint(&seen));
    }
    eprintln!(
        "ALT falling, oracle following its pools: {} of {} steps spread past round 0 (at {}%: round 0 ${:.0}, cascade ${:.0})",
        amplified.len(),
        following.steps.len(),
        amplified[0].0.drop_pct,
        amplified[0].0.round0_debt_usd,
        amplified[0].0.cascade_debt_usd
    );

    // The map at −20% WETH, read before the fall, the oracle following the pools fully.
    let (step, sales) = map::simulate(&snap, &params(weth, 2000, 2000, 10_000), 2000);
    assert!(step.rounds >= 1 && !sales.is_empty());

    // WETH really falls 20% (the oracle, and the pools arbitraged to it) in one block at the
    // snapshot's timestamp: no interest accrues between what the map read and what the Pool says.
    net.rpc.anvil_set_auto_mine(false).await.unwrap();
    net.rpc
        .anvil_set_next_block_timestamp(before.timestamp)
        .await
        .unwrap();
    let config = d.config(&net.rpc_url, None, dir.path().join("unused"));
    shock::shock_market(
        &net.rpc,
        config.devnet.as_ref().unwrap(),
        &asset(&net, "WETH"),
        PriceMoveBps(-2000),
    )
    .await
    .unwrap();
    net.rpc.anvil_set_auto_mine(true).await.unwrap();
    let fell = net
        .rpc
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header;
    assert_eq!(fell.number, before.number + 1, "the fall is one block");
    assert_eq!(fell.timestamp, before.timestamp);

    // Round 0 is the Pool's set below 1, each with the Pool's debt and collateral to the wei.
    let users: Vec<Address> = snap.positions.iter().map(|(u, _)| *u).collect();
    let chain = report::account_health(
        &net.rpc,
        d.multicall,
        d.aave.pool,
        &users,
        BlockId::number(fell.number),
    )
    .await
    .unwrap();
    let below: Vec<_> = chain
        .iter()
        .filter(|a| a.health_factor.is_liquidatable())
        .collect();
    let round0: Vec<_> = step.fallen.iter().filter(|p| p.round == 0).collect();
    assert!(!below.is_empty());
    assert_eq!(
        round0.iter().map(|p| p.borrower).collect::<BTreeSet<_>>(),
        below.iter().map(|a| a.borrower).collect::<BTreeSet<_>>(),
        "round 0 at −20% is the Pool's set below 1"
    );
    for p in &round0 {
        let a = below.iter().find(|a| a.borrower == p.borrower).unwrap();
        assert_eq!(p.debt_base, a.debt.0, "debt of {}", p.borrower);
        assert_eq!(
            p.collateral_base, a.collateral.0,
            "collateral of {}",
            p.borrower
        );
    }

    // The forced sales, swapped in the map's order, leave every pool where the map says.
    for sale in &sales {
        swap_on_chain(&net, &snap.venues[&sale.venue], sale.token_in, sale.amount).await;
    }
    assert!(!step.pools.is_empty());
    for pool in &step.pools {
        assert_eq!(
            state_on_chain(&net, &snap.venues[&pool.address]).await,
            pool.state_after,
            "pool {} after the forced sales",
            pool.address
        );
    }
    eprintln!(
        "WETH −20%: {} positions below 1, equal to the Pool's; {} forced sales into {} pools over {} rounds, every pool's state equal to the chain's",
        round0.len(),
        sales.len(),
        step.pools.len(),
        step.rounds
    );
}
