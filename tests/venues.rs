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

#[tokio::test]
async fn v2_amount_out_is_exactly_what_the_pair_pays() {
    use alloy::{
        network::TransactionBuilder, providers::ext::AnvilApi, rpc::types::TransactionRequest,
        sol_types::SolCall,
    };
    use cascade::{
        chain::bindings::MintableERC20,
        planner::venues::uniswap_v2::{UniswapV2Pair, load_pair},
    };

    let net = Devnet::start(&DevnetOptions {
        borrowers: 0,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("devnet did not start: {e:#}"));
    let d = &net.deployment;
    let trader = alloy::primitives::Address::repeat_byte(0x77);
    net.rpc
        .anvil_set_balance(trader, units(1, 18))
        .await
        .unwrap();
    for deployed in &d.uniswap.v2_pairs {
        for (token_in, amount) in [(deployed.token0, 7u128), (deployed.token1, 3u128)] {
            let pair = load_pair(&net.rpc, deployed.address, BlockId::latest())
                .await
                .unwrap();
            // A sale a few percent of the reserve deep.
            let reserve_in = if token_in == pair.token0 {
                pair.reserve0
            } else {
                pair.reserve1
            };
            let amount_in = reserve_in * U256::from(amount) / U256::from(100u8);
            let out = pair.swap_exact_in(token_in, amount_in).unwrap();
            let rpc = &net.rpc;
            let send = |to, data: Vec<u8>| {
                let tx = TransactionRequest::default()
                    .from(trader)
                    .to(to)
                    .with_input(data)
                    .with_gas_limit(300_000);
                async move { chain::send_unlocked(rpc, tx, "v2 test").await }
            };
            send(
                token_in,
                MintableERC20::mintCall {
                    account: deployed.address,
                    value: amount_in,
                }
                .abi_encode(),
            )
            .await
            .unwrap();
            let outs = |x: U256| {
                if token_in == pair.token0 {
                    (U256::ZERO, x)
                } else {
                    (x, U256::ZERO)
                }
            };
            // One wei more than computed breaks the constant product; exactly the computed amount does not.
            let (m0, m1) = outs(out + U256::from(1u8));
            let too_much = UniswapV2Pair::swapCall {
                amount0Out: m0,
                amount1Out: m1,
                to: trader,
                data: Default::default(),
            };
            assert!(
                send(deployed.address, too_much.abi_encode()).await.is_err(),
                "{}: out + 1 must fail",
                deployed.label
            );
            let (a0, a1) = outs(out);
            let exact = UniswapV2Pair::swapCall {
                amount0Out: a0,
                amount1Out: a1,
                to: trader,
                data: Default::default(),
            };
            send(deployed.address, exact.abi_encode())
                .await
                .unwrap_or_else(|e| {
                    panic!("{}: computed amount must succeed: {e}", deployed.label)
                });
            eprintln!("{}: {amount_in} in → {out} out, exact", deployed.label);
        }
    }
}

/// The planner keeps pool state across blocks, following each pool from its events in the watcher's
/// logs of every block. After arbitrage swaps move the pools (swaps change no ticks) the book reads
/// nothing: the kept ticks are reused, the followed prices equal a fresh read, and the simulation still
/// equals QuoterV2. After liquidity is added (a `Mint`) the pool's ticks are read again, its followed
/// liquidity includes the new position's, and it still equals QuoterV2.
#[tokio::test]
async fn kept_pool_state_follows_swaps_and_new_liquidity() {
    use alloy::{
        eips::BlockNumberOrTag,
        primitives::aliases::I24,
        providers::{Provider, ext::AnvilApi},
    };
    use cascade::{
        chain::{
            bindings::{MintableERC20, NonfungiblePositionManager},
            metered::RpcMeter,
        },
        devnet::shock::{PriceMoveBps, shock_market},
        planner::venues::{
            Venue,
            book::{BookSettings, VenueBook},
        },
        protocol::{BlockRef, aave_v3::AaveV3},
        store::Store,
        watcher::{Head, Watcher, WatcherOptions},
    };

    let net = Devnet::start(&DevnetOptions {
        borrowers: 0,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("devnet did not start: {e:#}"));
    let (d, rpc) = (&net.deployment, &net.rpc);
    let quoter = d.uniswap.quoter;
    let (weth, usdc) = (d.asset("WETH").unwrap(), d.asset("USDC").unwrap());
    let settings = BookSettings {
        multicall: d.multicall,
        v3_factory: d.uniswap.factory,
        fee_tiers: vec![100, 500, 3000, 10_000],
        v2_factory: Some(d.uniswap.v2_factory),
    };
    // The book under test reads through a meter; a second book reads everything afresh.
    let meter = RpcMeter::default();
    let metered = chain::connect_http_metered(&net.rpc_url, &meter).unwrap();
    let book = VenueBook::new(metered, settings.clone());
    let fresh = |at: BlockRef| {
        let book = VenueBook::new(net.rpc.clone(), settings.clone());
        let (a, b) = (weth.address, usdc.address);
        async move { book.venues(a, b, at).await.unwrap() }
    };
    // A watcher with the book's tap, synced one block at a time as the keeper's is.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let aave = AaveV3::connect(&net.rpc, d.aave.addresses_provider, d.multicall, None)
        .await
        .unwrap();
    let mut watcher = Watcher::open(
        aave,
        net.rpc.clone(),
        store.market(d.aave.addresses_provider).unwrap(),
        WatcherOptions {
            deployment_block: d.deployment_block,
            ..Default::default()
        },
    )
    .unwrap();
    watcher.tap_logs(book.log_tap());
    watcher.sync().await.unwrap();
    let follow_to_head = async |watcher: &mut Watcher<AaveV3>| {
        let latest = rpc.get_block_number().await.unwrap();
        while watcher.cursor().unwrap().block < latest {
            let next = watcher.cursor().unwrap().block + 1;
            let b = rpc
                .get_block_by_number(BlockNumberOrTag::Number(next))
                .await
                .unwrap()
                .unwrap();
            let report = watcher.sync_to(Head::of_header(&b.header)).await.unwrap();
            let tapped = report.tapped.expect("one block synced: the tap's logs");
            book.follow_block(next, &tapped);
        }
        // Plans are made at the watcher's block (anvil may have mined another since).
        watcher.protocol().block.unwrap()
    };
    let same_state = |ours: &[Venue], theirs: &[Venue]| {
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(theirs) {
            match (a, b) {
                (Venue::V3(a), Venue::V3(b)) => assert_eq!(
                    (a.address, a.sqrt_price, a.tick, a.liquidity),
                    (b.address, b.sqrt_price, b.tick, b.liquidity),
                    "followed pool equals a fresh read"
                ),
                (Venue::V2(a), Venue::V2(b)) => {
                    assert_eq!(a, b, "followed pair equals a fresh read")
                }
                _ => panic!("venues in another order: {a:?} / {b:?}"),
            }
        }
    };
    let head = || async {
        let b = rpc
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .unwrap()
            .unwrap();
        BlockRef::of_header(&b.header)
    };
    let pools = |venues: &[Venue]| -> Vec<cascade::planner::venues::uniswap_v3::PoolState> {
        venues
            .iter()
            .filter_map(|v| match v {
                Venue::V3(p) => Some(p.clone()),
                Venue::V2(_) => None,
            })
            .collect()
    };
    // Every V3 pool of the pair sells 300 WETH for what QuoterV2 says, at the block read.
    let agrees_with_quoter = |venues: Vec<Venue>, at: BlockRef| async move {
        for pool in pools(&venues) {
            let amount = units(300, 18);
            let ours = pool.swap_exact_in(weth.address, amount).unwrap();
            let quote = chain::view(
                rpc,
                quoter,
                QuoterV2::quoteExactInputSingleCall {
                    params: QuoterV2::QuoteExactInputSingleParams {
                        tokenIn: weth.address,
                        tokenOut: usdc.address,
                        amountIn: amount,
                        fee: pool.fee.try_into().unwrap(),
                        sqrtPriceLimitX96: U160::ZERO,
                    },
                },
                "QuoterV2",
            )
            .await
            .unwrap();
            assert_eq!(
                ours.amount_out, quote.amountOut,
                "pool {} at block {}",
                pool.address, at.number
            );
        }
    };

    let b0 = head().await;
    let first = book.venues(weth.address, usdc.address, b0).await.unwrap();
    assert!(!pools(&first).is_empty());
    agrees_with_quoter(first.clone(), b0).await;

    // Arbitrage swaps every WETH pool to a price 3% lower: no tick changes.
    let config = d.config(
        &net.rpc_url,
        None,
        std::env::temp_dir().join("unused-store"),
    );
    shock_market(
        &net.rpc,
        config.devnet.as_ref().unwrap(),
        &weth.devnet_asset(),
        PriceMoveBps(-300),
    )
    .await
    .unwrap();
    let b1 = follow_to_head(&mut watcher).await;
    let before = meter.snapshot();
    let moved = book.venues(weth.address, usdc.address, b1).await.unwrap();
    let calls = meter.snapshot().since(&before);
    assert_eq!(
        calls.total_calls(),
        0,
        "the venues followed through the swaps' blocks are not read: {:?}",
        calls.by_method
    );
    same_state(&moved, &fresh(b1).await);
    for (before, after) in pools(&first).iter().zip(pools(&moved)) {
        assert!(
            std::sync::Arc::ptr_eq(&before.ticks, &after.ticks),
            "ticks kept after swaps"
        );
        assert_ne!(before.sqrt_price, after.sqrt_price, "the price moved");
    }
    agrees_with_quoter(moved.clone(), b1).await;

    // New liquidity in the first pool, over ticks nobody used before.
    let target = pools(&moved)[0].clone();
    let lp = alloy::primitives::Address::repeat_byte(0x5a);
    net.rpc.anvil_set_balance(lp, units(1, 18)).await.unwrap();
    let desired = |token| {
        if token == weth.address {
            units(100, 18)
        } else {
            units(200_000, 6)
        }
    };
    let spacing = target.tick_spacing;
    let lower = (target.tick.div_euclid(spacing) - 7) * spacing;
    let upper = (target.tick.div_euclid(spacing) + 9) * spacing;
    for token in [target.token0, target.token1] {
        chain::send_call(
            &net.rpc,
            lp,
            token,
            MintableERC20::mintCall {
                account: lp,
                value: units(1_000_000_000, 18),
            },
            "mint",
        )
        .await
        .unwrap();
        chain::send_call(
            &net.rpc,
            lp,
            token,
            MintableERC20::approveCall {
                spender: d.uniswap.position_manager,
                amount: U256::MAX,
            },
            "approve",
        )
        .await
        .unwrap();
    }
    chain::send_call(
        &net.rpc,
        lp,
        d.uniswap.position_manager,
        NonfungiblePositionManager::mintCall {
            params: NonfungiblePositionManager::MintParams {
                token0: target.token0,
                token1: target.token1,
                fee: target.fee.try_into().unwrap(),
                tickLower: I24::try_from(lower).unwrap(),
                tickUpper: I24::try_from(upper).unwrap(),
                amount0Desired: desired(target.token0),
                amount1Desired: desired(target.token1),
                amount0Min: U256::ZERO,
                amount1Min: U256::ZERO,
                recipient: lp,
                deadline: U256::MAX,
            },
        },
        "add liquidity",
    )
    .await
    .unwrap();
    let b2 = follow_to_head(&mut watcher).await;
    let minted = book.venues(weth.address, usdc.address, b2).await.unwrap();
    same_state(&minted, &fresh(b2).await);
    let after = pools(&minted)
        .into_iter()
        .find(|p| p.address == target.address)
        .unwrap();
    assert!(
        !std::sync::Arc::ptr_eq(&target.ticks, &after.ticks),
        "ticks read again after the Mint"
    );
    assert!(
        after.ticks.liquidity_net.contains_key(&lower)
            && after.ticks.liquidity_net.contains_key(&upper)
    );
    agrees_with_quoter(minted, b2).await;
}
