//! Plans on the devnet with the real Aave V3 and Uniswap V3, executed through the Liquidator: the
//! predicted profit is what the Liquidator realises, alone or with others in one transaction, also
//! once charged again at a dearer block's base fee; a plan made unprofitable reverts and loses
//! nothing (and does not sink the plans batched with it); sales into one pool in one block stop
//! where it no longer pays, and a plan sized again then sells where it still does; the gas priced
//! covers the receipt's, also when the reserves moved in the latest block, and on a node without
//! `eth_call` block overrides plans are still made; only the owner can liquidate, and the callbacks
//! refuse strangers.

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, U160, U256},
    providers::{Provider, ext::AnvilApi},
    rpc::types::TransactionRequest,
    sol_types::{SolCall, SolEvent},
};
use cascade::{
    chain::{
        self,
        bindings::{Liquidator, MintableERC20, QuoterV2, UniswapV3Pool},
        metered::RpcMeter,
    },
    devnet::{
        Devnet, DevnetOptions,
        shock::{self, PriceMoveBps},
    },
    executor,
    planner::fees::op_stack::{GAS_PRICE_ORACLE, GasPriceOracle},
    planner::{
        PlanError, Planner, PlannerSettings, Refusal, decode_revert, describe, venues::VenueKind,
    },
    protocol::aave_v3::AaveV3,
    store::Store,
    watcher::{Watcher, WatcherOptions},
};

struct Setup {
    net: Devnet,
    liquidator: Address,
    watcher: Watcher<AaveV3>,
    planner: Planner,
    _dir: tempfile::TempDir,
}

async fn setup(op_stack: bool) -> Setup {
    let net = Devnet::start(&DevnetOptions {
        borrowers: 40,
        op_stack,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("devnet did not start: {e:#}"));
    let d = net.deployment.clone();
    let liquidator = executor::liquidator::deploy(&net.rpc, d.admin, d.aave.pool, d.admin)
        .await
        .expect("deploy Liquidator");
    let weth = d.asset("WETH").unwrap();
    let feed = weth.devnet_asset();
    shock::shock(&net.rpc, &feed, PriceMoveBps(-2500))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let rpc = chain::connect_http_metered(&net.rpc_url, &RpcMeter::default()).unwrap();
    let aave = AaveV3::connect(&rpc, d.aave.addresses_provider, d.multicall, None)
        .await
        .unwrap();
    let mut watcher = Watcher::open(
        aave,
        rpc.clone(),
        store.market(d.aave.addresses_provider).unwrap(),
        WatcherOptions {
            deployment_block: d.deployment_block,
            ..Default::default()
        },
    )
    .unwrap();
    watcher.sync().await.unwrap();
    let planner = Planner::new(rpc, settings(&d, liquidator, d.admin))
        .await
        .unwrap();
    Setup {
        net,
        liquidator,
        watcher,
        planner,
        _dir: dir,
    }
}

/// The planner's settings on the devnet, for `liquidator` sent from `sender`.
fn settings(
    d: &cascade::devnet::Deployment,
    liquidator: Address,
    sender: Address,
) -> PlannerSettings {
    PlannerSettings {
        liquidator,
        sender,
        uniswap_factory: d.uniswap.factory,
        uniswap_v2_factory: Some(d.uniswap.v2_factory),
        fee_tiers: vec![500, 3000, 10000],
        native_asset: d.asset("WETH").unwrap().address,
        priority_fee_wei: 1_000_000_000,
        multicall: d.multicall,
        simulations_in_flight: 2,
    }
}

fn symbols(net: &Devnet) -> impl Fn(Address) -> (String, u8) + '_ {
    |a| {
        net.deployment
            .assets
            .iter()
            .find(|x| x.address == a)
            .map(|x| (x.symbol.clone(), x.decimals))
            .unwrap_or_default()
    }
}

/// The repay is the planned one; when all the collateral is seized, it is what that collateral covers
/// at execution, and when all the debt is repaid, the debt at execution: a second of interest later
/// than planned (within 0.001%).
fn assert_repaid_as_planned(plan: &cascade::planner::Plan, repaid: U256) {
    let planned = plan.amounts.debt_repaid;
    if plan.amounts.collateral_bound || full_close(plan) {
        assert!(
            repaid.abs_diff(planned) * U256::from(100_000u64) <= planned,
            "repaid {repaid}, planned {planned}"
        );
    } else {
        assert_eq!(repaid, planned);
    }
}

/// A plan repaying the whole debt: it asks for more, and the Pool takes the debt as it is then.
fn full_close(plan: &cascade::planner::Plan) -> bool {
    plan.amounts.debt_to_cover > plan.amounts.debt_repaid
}

/// Every liquidatable position of the shocked devnet that sizes profitably, sized (its transaction
/// not yet built).
async fn sized_plans(s: &Setup) -> Vec<cascade::planner::Plan> {
    let mut sized = Vec::new();
    for user in s.watcher.liquidatable() {
        let position = s.watcher.position(user).cloned().unwrap();
        if let Ok(plan) = s.planner.size(s.watcher.protocol(), user, &position).await {
            sized.push(plan);
        }
    }
    sized
}

/// Every profitable plan of the shocked devnet (two at least), built into one transaction.
async fn one_batch(s: &Setup) -> cascade::planner::Batch {
    let sized = sized_plans(s).await;
    assert!(
        sized.len() >= 2,
        "two profitable plans on the shocked devnet"
    );
    let mut built = s.planner.finalise_all(sized, s.watcher.protocol()).await;
    assert_eq!(built.len(), 1, "one transaction");
    built.pop().unwrap().expect("the batch simulates")
}

/// The gas the plans are priced with is the Liquidator's own measurement of the run with the
/// transaction's intrinsic gas, refunds not taken off: at or above the receipt's, and close to it.
fn assert_gas_priced_covers_the_receipt(
    batch: &cascade::planner::Batch,
    receipt: &alloy::rpc::types::TransactionReceipt,
) {
    assert!(receipt.gas_used <= batch.gas_limit);
    let priced: u64 = batch
        .plans
        .iter()
        .map(|p| (p.gas_cost_wei / U256::from(p.gas_price_wei)).to::<u64>())
        .sum();
    eprintln!(
        "gas priced {priced}, used {}, limit {}",
        receipt.gas_used, batch.gas_limit
    );
    assert!(
        priced >= receipt.gas_used && priced <= receipt.gas_used + receipt.gas_used / 10,
        "gas priced {priced}, used {}",
        receipt.gas_used
    );
}

/// The Liquidator's `Liquidated` events in a receipt, in order.
fn liquidated(receipt: &alloy::rpc::types::TransactionReceipt) -> Vec<Liquidator::Liquidated> {
    receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| Liquidator::Liquidated::decode_log_data(l.data()).ok())
        .collect()
}

/// Sends Liquidator calldata from the devnet's admin (the Liquidator's owner).
async fn liquidate_as_owner(
    s: &Setup,
    calldata: &alloy::primitives::Bytes,
) -> Result<alloy::rpc::types::TransactionReceipt, chain::ChainError> {
    send(
        &s.net,
        s.net.deployment.admin,
        s.liquidator,
        calldata.to_vec(),
    )
    .await
}

async fn send(
    net: &Devnet,
    from: Address,
    to: Address,
    data: Vec<u8>,
) -> Result<alloy::rpc::types::TransactionReceipt, chain::ChainError> {
    let tx = TransactionRequest::default()
        .from(from)
        .to(to)
        .with_input(data);
    chain::send_unlocked(&net.rpc, tx, "test transaction").await
}

#[tokio::test]
async fn predicted_profit_is_realised() {
    let mut s = setup(false).await;
    let liquidatable = s.watcher.liquidatable();
    assert!(!liquidatable.is_empty());
    let mut executed = 0;
    let mut refused = Vec::new();
    for user in liquidatable {
        // Plan on the latest state: an earlier liquidation moved the reserves' indexes and the pools.
        s.watcher.sync().await.unwrap();
        let position = s.watcher.position(user).cloned().unwrap();
        match s.planner.plan(s.watcher.protocol(), user, &position).await {
            Ok(plan) => {
                eprintln!("{}\n", describe(&plan, symbols(&s.net)));
                let receipt = liquidate_as_owner(&s, &plan.calldata)
                    .await
                    .expect("the planned liquidation succeeds");
                let event = receipt
                    .inner
                    .logs()
                    .iter()
                    .find_map(|l| Liquidator::Liquidated::decode_log_data(l.data()).ok())
                    .expect("Liquidated event");
                // The Liquidator's profit is swap output − repay; the plan's net profit
                // further subtracts gas and the L1 fee, paid by the sender in ETH.
                let predicted = plan.swap_out - plan.amounts.debt_repaid;
                eprintln!(
                    "predicted {predicted}, realised {} (difference {}), gas used {}",
                    event.profit,
                    event.profit.abs_diff(predicted),
                    receipt.gas_used
                );
                // The planned collateral is sold, exactly.
                assert_eq!(event.collateralSold, plan.amounts.collateral_to_liquidator);
                assert_repaid_as_planned(&plan, event.debtRepaid);
                if plan.amounts.collateral_bound || full_close(&plan) {
                    // All the collateral is seized, and it earns a second of supply interest between the
                    // plan (latest block) and execution (the next): the repay needed for it moves by
                    // that much (the extra collateral stays with the Liquidator). All the debt is
                    // repaid as it is a second later.
                    assert!(
                        event.profit.abs_diff(predicted) * U256::from(100_000u64) <= predicted,
                        "within 0.001%"
                    );
                } else {
                    assert_eq!(
                        event.profit, predicted,
                        "realised profit equals the prediction"
                    );
                }
                let held = chain::view(
                    &s.net.rpc,
                    plan.debt,
                    MintableERC20::balanceOfCall {
                        account: s.liquidator,
                    },
                    "balance",
                )
                .await
                .unwrap();
                assert!(held >= event.profit);
                executed += 1;
                if executed == 3 {
                    break;
                }
            }
            Err(PlanError::Refused(r)) => refused.push(r),
            Err(e) => panic!("planning failed: {e}"),
        }
    }
    eprintln!("{executed} executed; refused: {refused:?}");
    assert!(executed > 0);
}

#[tokio::test]
async fn unprofitable_plan_reverts_and_loses_nothing_and_strangers_are_refused() {
    let s = setup(false).await;
    let d = &s.net.deployment;
    let user = s.watcher.liquidatable()[0];
    let position = s.watcher.position(user).cloned().unwrap();
    let plan = match s.planner.plan(s.watcher.protocol(), user, &position).await {
        Ok(p) => p,
        Err(e) => panic!("no plan for {user}: {e}"),
    };
    // Demand more profit than the swap can yield.
    let greedy = Liquidator::liquidateCall {
        l: Liquidator::Liquidation {
            collateral: plan.collateral,
            debt: plan.debt,
            borrower: user,
            debtToCover: plan.amounts.debt_to_cover,
            collateralToSell: plan.amounts.collateral_to_liquidator,
            venue: Liquidator::Venue::UniswapV3,
            swapPool: plan.swap_pool,
            minProfit: plan.swap_out,
        },
    };
    let before = chain::view(
        &s.net.rpc,
        plan.debt,
        MintableERC20::balanceOfCall {
            account: s.liquidator,
        },
        "balance",
    )
    .await
    .unwrap();
    let call = TransactionRequest::default()
        .from(d.admin)
        .to(s.liquidator)
        .with_input(greedy.abi_encode());
    let err = s.net.rpc.call(call).await.unwrap_err();
    let reason = decode_revert(&err);
    assert!(reason.contains("InsufficientProfit"), "{reason}");
    // Sent anyway (with a fixed gas limit so it is mined): it reverts and nothing moves.
    let tx = TransactionRequest::default()
        .from(d.admin)
        .to(s.liquidator)
        .with_input(greedy.abi_encode())
        .with_gas_limit(2_000_000);
    let pending = s.net.rpc.send_transaction(tx).await.unwrap();
    let receipt = pending.get_receipt().await.unwrap();
    assert!(!receipt.status());
    let after = chain::view(
        &s.net.rpc,
        plan.debt,
        MintableERC20::balanceOfCall {
            account: s.liquidator,
        },
        "balance",
    )
    .await
    .unwrap();
    assert_eq!(before, after);

    // A stranger cannot liquidate or call either swap callback, not even the pool outside a swap.
    let stranger = Address::repeat_byte(0x66);
    s.net
        .rpc
        .anvil_set_balance(stranger, U256::from(10u64).pow(U256::from(18)))
        .await
        .unwrap();
    let call = TransactionRequest::default()
        .from(stranger)
        .to(s.liquidator)
        .with_input(plan.calldata.to_vec());
    let not_operator = decode_revert(&s.net.rpc.call(call).await.unwrap_err());
    assert!(not_operator.contains("NotOperator"), "{not_operator}");
    assert!(
        send(&s.net, stranger, s.liquidator, plan.calldata.to_vec())
            .await
            .is_err(),
        "nor sent"
    );
    let v2_callback = Liquidator::uniswapV2CallCall {
        sender: s.liquidator,
        amount0: U256::from(1u8),
        amount1: U256::ZERO,
        data: alloy::sol_types::SolValue::abi_encode(&greedy.l).into(),
    };
    let call = TransactionRequest::default()
        .from(stranger)
        .to(s.liquidator)
        .with_input(v2_callback.abi_encode());
    assert!(decode_revert(&s.net.rpc.call(call).await.unwrap_err()).contains("UnexpectedCallback"));
    let swap_cb = Liquidator::uniswapV3SwapCallbackCall {
        amount0Delta: alloy::primitives::I256::ONE,
        amount1Delta: alloy::primitives::I256::ZERO,
        data: alloy::sol_types::SolValue::abi_encode(&greedy.l).into(),
    };
    let call = TransactionRequest::default()
        .from(plan.swap_pool)
        .to(s.liquidator)
        .with_input(swap_cb.abi_encode());
    assert!(decode_revert(&s.net.rpc.call(call).await.unwrap_err()).contains("UnexpectedCallback"));
}

#[tokio::test]
async fn op_stack_plans_carry_an_l1_fee() {
    let s = setup(true).await;
    let mut planned = 0;
    for user in s.watcher.liquidatable() {
        let position = s.watcher.position(user).cloned().unwrap();
        match s.planner.plan(s.watcher.protocol(), user, &position).await {
            Ok(plan) => {
                // The chain's own GasPriceOracle, given the plan's transaction, charges what the plan
                // priced. The plan priced it before its minimum profit was final (the fee sets it): the
                // same bytes but for one word, a byte or two apart once compressed.
                let payload = cascade::planner::unsigned_bytes(
                    &plan.calldata,
                    plan.gas_limit,
                    plan.gas_price_wei,
                    s.liquidator,
                );
                let oracle = chain::view(
                    &s.net.rpc,
                    GAS_PRICE_ORACLE,
                    GasPriceOracle::getL1FeeCall {
                        data: payload.into(),
                    },
                    "getL1Fee",
                )
                .await
                .unwrap();
                assert!(
                    oracle > U256::ZERO,
                    "an OP-stack plan carries an L1 data fee"
                );
                assert!(
                    plan.l1_fee_wei.abs_diff(oracle) * U256::from(100u8) <= oracle,
                    "{user}: planned {} wei, GasPriceOracle.getL1Fee {oracle}",
                    plan.l1_fee_wei
                );
                planned += 1;
            }
            Err(PlanError::Refused(Refusal::Unprofitable { .. } | Refusal::NoVenue)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(planned > 0);
}

#[tokio::test]
async fn v2_venue_plans_are_realised_too() {
    let mut s = setup(false).await;
    let d = s.net.deployment.clone();
    // Only Uniswap V2 pairs as venues: WETH/USDC and ALT/USDC.
    let settings = PlannerSettings {
        liquidator: s.liquidator,
        sender: d.admin,
        uniswap_factory: d.uniswap.factory,
        uniswap_v2_factory: Some(d.uniswap.v2_factory),
        fee_tiers: vec![],
        native_asset: d.asset("WETH").unwrap().address,
        priority_fee_wei: 1_000_000_000,
        multicall: d.multicall,
        simulations_in_flight: 2,
    };
    let rpc = chain::connect_http(&s.net.rpc_url).unwrap();
    let planner = Planner::new(rpc, settings).await.unwrap();
    let mut executed = 0;
    for user in s.watcher.liquidatable() {
        s.watcher.sync().await.unwrap();
        let position = s.watcher.position(user).cloned().unwrap();
        let Ok(plan) = planner.plan(s.watcher.protocol(), user, &position).await else {
            continue;
        };
        assert_eq!(plan.venue, cascade::planner::venues::VenueKind::UniswapV2);
        let receipt = send(&s.net, d.admin, s.liquidator, plan.calldata.to_vec())
            .await
            .expect("the V2 liquidation succeeds");
        let event = receipt
            .inner
            .logs()
            .iter()
            .find_map(|l| Liquidator::Liquidated::decode_log_data(l.data()).ok())
            .unwrap();
        let predicted = plan.swap_out - plan.amounts.debt_repaid;
        eprintln!("V2: predicted {predicted}, realised {}", event.profit);
        if !plan.amounts.collateral_bound {
            assert_eq!(event.profit, predicted);
        }
        executed += 1;
        if executed == 2 {
            break;
        }
    }
    assert!(
        executed > 0,
        "some borrower should be liquidatable through a V2 pair"
    );
}

#[tokio::test]
async fn the_pair_chosen_is_the_most_profitable_not_the_largest() {
    let s = setup(false).await;
    let mut multi = 0;
    let mut differs_from_largest_repay = 0;
    let mut grid_checked = 0;
    for user in s.watcher.liquidatable() {
        let position = s.watcher.position(user).cloned().unwrap();
        let outcomes = s
            .planner
            .candidates(s.watcher.protocol(), user, &position)
            .await
            .unwrap();
        let sized: Vec<_> = outcomes.iter().filter_map(|o| o.plan.as_ref()).collect();
        let collaterals = position
            .holdings
            .iter()
            .filter(|h| h.collateral_enabled)
            .count();
        let debts = position.holdings.iter().filter(|h| h.borrowing).count();
        assert_eq!(
            outcomes.len(),
            collaterals * debts,
            "every collateral × every debt considered for {user}"
        );
        if sized.len() < 2 {
            continue;
        }
        multi += 1;
        let best = sized.iter().max_by_key(|p| p.net_profit_base).unwrap();
        let plan = s
            .planner
            .plan(s.watcher.protocol(), user, &position)
            .await
            .unwrap();
        assert_eq!(
            (plan.collateral, plan.debt),
            (best.collateral, best.debt),
            "{user}: the most profitable pair"
        );
        // Repays are in different units; compare them in USD.
        let usd = |p: &&cascade::planner::Plan| {
            let r = s.watcher.protocol().reserve_of(p.debt).unwrap();
            cascade::planner::base_value(p.amounts.debt_repaid, r.price, r.config.decimals)
        };
        let largest = sized.iter().max_by_key(|p| usd(p)).unwrap();
        if (largest.collateral, largest.debt) != (best.collateral, best.debt) {
            differs_from_largest_repay += 1;
        }
        // Independently: every pair, every V3 pool of it, a grid of repays priced by the chain's
        // QuoterV2. The plan's gross profit (its sale less its repay) is at least the best the grid
        // finds on any pair, but for what gas takes from it.
        let market = s.watcher.protocol();
        let price = |asset: Address| {
            let r = market.reserve_of(asset).unwrap();
            (r.price, r.config.decimals)
        };
        let in_usd = |amount: i128, asset: Address| {
            let (p, dec) = price(asset);
            let value = cascade::planner::base_value(U256::from(amount.unsigned_abs()), p, dec).0;
            let value = i128::try_from(value).unwrap();
            if amount < 0 { -value } else { value }
        };
        let grid_best = grid_best_gross_usd(&s, &position, &in_usd).await;
        let plan_gross = plan.net_profit_debt + i128::try_from(plan.fees_in_debt).unwrap();
        let fees = i128::try_from(plan.fees_in_debt).unwrap();
        assert!(
            in_usd(plan_gross + fees, plan.debt) >= grid_best,
            "{user}: the plan grosses {} (base units), a grid of repays on the chain finds {grid_best}",
            in_usd(plan_gross, plan.debt)
        );
        grid_checked += 1;
    }
    eprintln!(
        "{multi} borrowers with several profitable pairs; for {differs_from_largest_repay} the best is not the largest repay; {grid_checked} checked against a grid of repays quoted on the chain"
    );
    assert!(multi > 0 && grid_checked == multi);
}

/// The best gross profit (sale less repay, base units) a grid of 16 repays finds over every pair of
/// `position` and every Uniswap V3 pool of the pair, each sale quoted by the chain's QuoterV2.
async fn grid_best_gross_usd(
    s: &Setup,
    position: &cascade::store::StoredPosition,
    in_usd: &impl Fn(i128, Address) -> i128,
) -> i128 {
    use cascade::chain::bindings::{QuoterV2, UniswapV3Factory};
    let market = s.watcher.protocol();
    let d = &s.net.deployment;
    let account = market.account_data(position);
    let mut best = i128::MIN;
    for (c, cr, dd, dr) in cascade::planner::liquidation_pairs(market, position) {
        let Some(case) =
            cascade::planner::liquidation_case(market, position, &account, c, cr, dd, dr)
        else {
            continue;
        };
        let Ok(max) = cascade::planner::sizing::liquidation_amounts(&case, U256::MAX) else {
            continue;
        };
        for fee in [500u32, 3000, 10000] {
            let pool = UniswapV3Factory::new(d.uniswap.factory, &s.net.rpc)
                .getPool(cr.asset, dr.asset, fee.try_into().unwrap())
                .call()
                .await
                .unwrap();
            if pool == Address::ZERO {
                continue;
            }
            for k in 1..=16u64 {
                let repay = max.debt_to_cover * U256::from(k) / U256::from(16u8);
                let Ok(amounts) = cascade::planner::sizing::liquidation_amounts(&case, repay)
                else {
                    continue;
                };
                let quote = QuoterV2::new(d.uniswap.quoter, &s.net.rpc)
                    .quoteExactInputSingle(QuoterV2::QuoteExactInputSingleParams {
                        tokenIn: cr.asset,
                        tokenOut: dr.asset,
                        amountIn: amounts.collateral_to_liquidator,
                        fee: fee.try_into().unwrap(),
                        sqrtPriceLimitX96: U160::ZERO,
                    })
                    .call()
                    .await;
                let Ok(quote) = quote else { continue };
                let gross = i128::try_from(quote.amountOut).unwrap()
                    - i128::try_from(amounts.debt_repaid).unwrap();
                best = best.max(in_usd(gross, dr.asset));
            }
        }
    }
    best
}

/// The chain is where the simulation ran: a liquidation realises (its own `Liquidated` event's
/// profit) what it was planned with; a collateral-bound one seizes what interest has added since, and
/// repays a hair more.
fn assert_realised_as_planned(plan: &cascade::planner::Plan, profit: U256) {
    if !plan.amounts.collateral_bound {
        let planned = plan.net_profit_debt + i128::try_from(plan.fees_in_debt).unwrap();
        assert_eq!(
            i128::try_from(profit).unwrap(),
            planned,
            "{}",
            plan.borrower
        );
    }
}

#[tokio::test]
async fn plans_built_into_one_transaction_all_liquidate_as_planned() {
    let s = setup(false).await;
    let batch = one_batch(&s).await;
    let receipt = liquidate_as_owner(&s, &batch.calldata)
        .await
        .expect("the batch succeeds");
    assert_gas_priced_covers_the_receipt(&batch, &receipt);
    let events = liquidated(&receipt);
    assert_eq!(
        events.len(),
        batch.plans.len(),
        "one transaction, every liquidation"
    );
    for (plan, event) in batch.plans.iter().zip(&events) {
        assert_eq!(event.borrower, plan.borrower);
        assert_repaid_as_planned(plan, event.debtRepaid);
        assert!(event.profit >= plan.min_profit);
        assert_realised_as_planned(plan, event.profit);
    }
    // Liquidations selling on one pool are one sale: one swap, of their collateral together, whose
    // proceeds are their repays and profits (each credited its collateral's share, rounded down).
    let mut sales: Vec<Vec<usize>> = Vec::new();
    for (i, plan) in batch.plans.iter().enumerate() {
        match sales.last_mut() {
            Some(sale)
                if batch.plans[sale[0]].swap_pool == plan.swap_pool
                    && batch.plans[sale[0]].collateral == plan.collateral =>
            {
                sale.push(i)
            }
            _ => sales.push(vec![i]),
        }
    }
    assert!(
        sales.iter().any(|sale| sale.len() > 1),
        "two liquidations sell on one pool: {sales:?}"
    );
    eprintln!(
        "{} liquidations in {} sales: {} gas each",
        batch.plans.len(),
        sales.len(),
        receipt.gas_used / batch.plans.len() as u64
    );
    let swaps: Vec<(Address, UniswapV3Pool::Swap)> = receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| {
            UniswapV3Pool::Swap::decode_log_data(l.data())
                .ok()
                .map(|swap| (l.address(), swap))
        })
        .collect();
    let v3_sales: Vec<&Vec<usize>> = sales
        .iter()
        .filter(|sale| batch.plans[sale[0]].venue == VenueKind::UniswapV3)
        .collect();
    assert_eq!(swaps.len(), v3_sales.len(), "one swap per sale");
    for (sale, (pool, swap)) in v3_sales.into_iter().zip(&swaps) {
        assert_eq!(*pool, batch.plans[sale[0]].swap_pool);
        let (sold, bought) = if swap.amount0.is_positive() {
            (swap.amount0, -swap.amount1)
        } else {
            (swap.amount1, -swap.amount0)
        };
        let (sold, bought) = (sold.into_raw(), bought.into_raw());
        let members = sale.iter().map(|i| &events[*i]);
        let sold_by_members: U256 = members.clone().map(|e| e.collateralSold).sum();
        let credited: U256 = members.map(|e| e.debtRepaid + e.profit).sum();
        assert_eq!(sold, sold_by_members);
        assert!(
            credited <= bought && bought - credited < U256::from(sale.len()),
            "{credited} of {bought} credited"
        );
    }
}

/// On a live market the reserves a liquidation touches were often updated in the latest block. At that
/// block's own time Aave skips their interest update; the mined block, later, does not. The simulation
/// runs at a later time, so the gas priced still covers the receipt's: here the reserves are updated
/// in a block a few seconds after the one the plans were sized on (so the time first tried is before
/// their last update, and Aave's interest math reverts there), and the liquidation is mined later still.
#[tokio::test]
async fn gas_is_priced_at_a_later_time_than_the_latest_blocks_own() {
    let s = setup(false).await;
    let sized = sized_plans(&s).await;
    assert!(
        sized.len() >= 2,
        "two profitable plans on the shocked devnet"
    );
    let rpc = &s.net.rpc;
    let planned_on = s.watcher.protocol().block.expect("the watcher's block");
    let mut reserves: Vec<Address> = sized.iter().flat_map(|p| [p.collateral, p.debt]).collect();
    reserves.sort();
    reserves.dedup();
    // One block updates every reserve the plans touch: a supply of one unit of each.
    let supplier = cascade::devnet::seed::supplier_address();
    rpc.anvil_set_auto_mine(false).await.unwrap();
    let mut sent = Vec::new();
    for asset in &reserves {
        let unit = U256::from(10u64).pow(U256::from(symbols(&s.net)(*asset).1));
        let mint = MintableERC20::mintCall {
            account: supplier,
            value: unit,
        };
        let supply = cascade::chain::bindings::Pool::supplyCall {
            asset: *asset,
            amount: unit,
            onBehalfOf: supplier,
            referralCode: 0,
        };
        for (to, data) in [
            (*asset, mint.abi_encode()),
            (s.net.deployment.aave.pool, supply.abi_encode()),
        ] {
            let tx = TransactionRequest::default()
                .from(supplier)
                .to(to)
                .with_input(data)
                .with_gas_limit(500_000);
            sent.push(*rpc.send_transaction(tx).await.unwrap().tx_hash());
        }
    }
    rpc.anvil_set_next_block_timestamp(planned_on.timestamp + 5)
        .await
        .unwrap();
    rpc.evm_mine(None).await.unwrap();
    rpc.anvil_set_auto_mine(true).await.unwrap();
    for hash in sent {
        let receipt = rpc.get_transaction_receipt(hash).await.unwrap().unwrap();
        assert!(receipt.status(), "the supply in {hash} succeeds");
    }
    let mut built = s.planner.finalise_all(sized, s.watcher.protocol()).await;
    assert_eq!(built.len(), 1, "one transaction");
    let batch = built.pop().unwrap().expect("the batch simulates");
    rpc.anvil_set_next_block_timestamp(planned_on.timestamp + 17)
        .await
        .unwrap();
    let receipt = liquidate_as_owner(&s, &batch.calldata)
        .await
        .expect("the batch succeeds");
    eprintln!("{} reserves updated a block before", reserves.len());
    assert_gas_priced_covers_the_receipt(&batch, &receipt);
}

/// A node without `eth_call` block overrides (geth before them answers a fourth parameter with invalid
/// params): the planner tries the override once, then plans at the latest block's own time.
#[tokio::test]
async fn a_node_without_block_overrides_is_still_planned_on() {
    let s = setup(false).await;
    let d = &s.net.deployment;
    let refusals = RefuseBlockOverrides {
        liquidator: s.liquidator,
        counts: Default::default(),
    };
    let client = alloy::rpc::client::ClientBuilder::default()
        .layer(refusals.clone())
        .http(s.net.rpc_url.parse().unwrap());
    let rpc = alloy::providers::ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_client(client)
        .erased();
    let planner = Planner::new(rpc, settings(d, s.liquidator, d.admin))
        .await
        .unwrap();
    let mut planned = 0;
    for user in s.watcher.liquidatable().into_iter().take(3) {
        let position = s.watcher.position(user).cloned().unwrap();
        match planner.plan(s.watcher.protocol(), user, &position).await {
            Ok(plan) => {
                assert!(plan.net_profit_debt > 0);
                planned += 1;
            }
            Err(PlanError::Refused(_)) => {}
            Err(e) => panic!("planning on a node without block overrides failed: {e}"),
        }
    }
    assert!(planned > 0, "a liquidation planned");
    let (refused, plain) = refusals.counts();
    assert_eq!(refused, 1, "the override is tried once");
    assert!(
        plain >= planned,
        "then the Liquidator is simulated without it: {plain} calls"
    );
}

/// A transport layer that answers every `eth_call` with a block override (its fourth parameter) as a
/// node without them does, and counts those and the plain calls of the Liquidator.
#[derive(Clone)]
struct RefuseBlockOverrides {
    liquidator: Address,
    counts: std::sync::Arc<std::sync::Mutex<(usize, usize)>>,
}

impl RefuseBlockOverrides {
    fn counts(&self) -> (usize, usize) {
        *self.counts.lock().unwrap()
    }
}

impl<S> tower::Layer<S> for RefuseBlockOverrides {
    type Service = RefusingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefusingService {
            inner,
            liquidator: self.liquidator,
            counts: self.counts.clone(),
        }
    }
}

#[derive(Clone)]
struct RefusingService<S> {
    inner: S,
    liquidator: Address,
    counts: std::sync::Arc<std::sync::Mutex<(usize, usize)>>,
}

impl<S> tower::Service<alloy::rpc::json_rpc::RequestPacket> for RefusingService<S>
where
    S: tower::Service<
            alloy::rpc::json_rpc::RequestPacket,
            Response = alloy::rpc::json_rpc::ResponsePacket,
            Error = alloy::transports::TransportError,
            Future = alloy::transports::TransportFut<'static>,
        >,
{
    type Response = alloy::rpc::json_rpc::ResponsePacket;
    type Error = alloy::transports::TransportError;
    type Future = alloy::transports::TransportFut<'static>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: alloy::rpc::json_rpc::RequestPacket) -> Self::Future {
        use alloy::rpc::json_rpc::{
            ErrorPayload, RequestPacket, Response, ResponsePacket, ResponsePayload,
        };
        if let RequestPacket::Single(call) = &request
            && call.method() == "eth_call"
        {
            let params: Vec<serde_json::Value> = call
                .params()
                .and_then(|p| serde_json::from_str(p.get()).ok())
                .unwrap_or_default();
            let mut counts = self.counts.lock().unwrap();
            if params.len() >= 4 {
                counts.0 += 1;
                let refusal = Response {
                    id: call.id().clone(),
                    payload: ResponsePayload::Failure(ErrorPayload {
                        code: -32602,
                        message: "too many arguments, want at most 3".into(),
                        data: None,
                    }),
                };
                return Box::pin(async move { Ok(ResponsePacket::Single(refusal)) });
            }
            let to = params
                .first()
                .and_then(|tx| tx.get("to"))
                .and_then(|to| to.as_str())
                .and_then(|to| to.parse::<Address>().ok());
            if to == Some(self.liquidator) {
                counts.1 += 1;
            }
        }
        self.inner.call(request)
    }
}

#[tokio::test]
async fn liquidations_that_would_not_cover_their_share_of_the_fees_are_left_out_of_the_batch() {
    let s = setup(false).await;
    let mut sized = sized_plans(&s).await;
    assert!(sized.len() >= 4, "{} plans", sized.len());
    // Gas so dear that about half of them (those with the smaller profits) no longer pay: a fee of
    // about the median profit for ~300,000 gas.
    let mut profits: Vec<i128> = sized.iter().map(|p| p.net_profit_base).collect();
    profits.sort_unstable();
    let median = U256::from(profits[profits.len() / 2] as u128);
    let weth = s.net.deployment.asset("WETH").unwrap().address;
    let eth_price = s.watcher.protocol().reserve_of(weth).unwrap().price;
    let gas_price: u128 = (median * U256::from(10u64).pow(U256::from(18u8))
        / (U256::from(300_000u64) * eth_price))
        .to();
    for plan in &mut sized {
        plan.gas_price_wei = gas_price;
    }
    let built = s
        .planner
        .finalise_all(sized.clone(), s.watcher.protocol())
        .await;
    let (batches, refused): (Vec<_>, Vec<_>) = built.into_iter().partition(Result::is_ok);
    assert_eq!(batches.len(), 1, "the rest is one transaction");
    assert!(
        !refused.is_empty(),
        "some no longer pay at {gas_price} wei per gas"
    );
    for r in &refused {
        assert!(
            matches!(
                r,
                Err((_, PlanError::Refused(Refusal::Unprofitable { .. })))
            ),
            "{r:?}"
        );
    }
    let batch = batches.into_iter().next().unwrap().unwrap();
    assert_eq!(batch.plans.len() + refused.len(), sized.len());
    let receipt = liquidate_as_owner(&s, &batch.calldata)
        .await
        .expect("the rest liquidate");
    let events = liquidated(&receipt);
    assert_eq!(events.len(), batch.plans.len());
    for (plan, event) in batch.plans.iter().zip(&events) {
        assert_eq!(event.borrower, plan.borrower);
        assert!(plan.net_profit_debt > 0);
        // Each keeps at least its share of the fees, at the dear gas, and realises what it was
        // planned with (its own `Liquidated` event).
        assert!(event.profit >= plan.min_profit && plan.min_profit > U256::ZERO);
        assert_realised_as_planned(plan, event.profit);
    }
}

#[tokio::test]
async fn a_batch_held_for_a_dearer_block_is_charged_again_at_its_base_fee() {
    let s = setup(false).await;
    let planned = one_batch(&s).await;
    let market = s.watcher.protocol();
    let base_fee = planned.plans[0].base_fee_wei;
    let dearer = base_fee + 1_000_000_000;
    let batch = s
        .planner
        .reprice(planned.clone(), market, dearer)
        .expect("still pays at 1 gwei more");
    assert_eq!(batch.plans.len(), planned.plans.len());
    assert_eq!(batch.gas_limit, planned.gas_limit);
    let mut raised = false;
    for (before, after) in planned.plans.iter().zip(&batch.plans) {
        let priority = before.gas_price_wei - before.base_fee_wei;
        assert_eq!(after.base_fee_wei, dearer);
        assert_eq!(after.gas_price_wei, dearer + priority);
        // The same gas, at the new price; the same gross, less the larger fees.
        let gas = before.gas_cost_wei / U256::from(before.gas_price_wei);
        assert_eq!(after.gas_cost_wei, gas * U256::from(after.gas_price_wei));
        assert!(after.fees_in_debt > before.fees_in_debt);
        assert_eq!(
            after.net_profit_debt + i128::try_from(after.fees_in_debt).unwrap(),
            before.net_profit_debt + i128::try_from(before.fees_in_debt).unwrap()
        );
        assert_eq!(after.min_profit, after.fees_in_debt);
        raised |= after.min_profit > before.min_profit;
    }
    assert!(raised, "the minimum profits follow the fees");
    // The transaction carries the new minimum profits, and realises what was planned.
    let call = Liquidator::liquidateBatchCall::abi_decode(&batch.calldata).unwrap();
    let mins: Vec<U256> = call.ls.iter().map(|l| l.minProfit).collect();
    let expected: Vec<U256> = batch.plans.iter().map(|p| p.min_profit).collect();
    assert_eq!(mins, expected);
    let receipt = liquidate_as_owner(&s, &batch.calldata)
        .await
        .expect("the batch charged again succeeds");
    let events = liquidated(&receipt);
    assert_eq!(events.len(), batch.plans.len());
    for (plan, event) in batch.plans.iter().zip(&events) {
        assert_eq!(event.borrower, plan.borrower);
        assert!(event.profit >= plan.min_profit);
        assert_realised_as_planned(plan, event.profit);
    }
    // At a base fee no liquidation pays, every one is named.
    let refused = s
        .planner
        .reprice(planned.clone(), market, 1_000_000_000_000_000)
        .expect_err("nothing pays at a million gwei");
    assert_eq!(refused.len(), planned.plans.len());
    assert!(
        refused
            .iter()
            .all(|(_, r)| matches!(r, Refusal::Unprofitable { .. }))
    );
}

#[tokio::test]
async fn a_plan_that_would_revert_does_not_sink_the_plans_batched_with_it() {
    let s = setup(false).await;
    let mut sized = sized_plans(&s).await;
    assert!(
        sized.len() >= 3,
        "three profitable plans on the shocked devnet"
    );
    sized.truncate(3);
    // The middle one sells twice the collateral its liquidation seizes.
    sized[1].amounts.collateral_to_liquidator *= U256::from(2u8);
    let bad = sized[1].borrower;
    let built = s
        .planner
        .finalise_all(sized.clone(), s.watcher.protocol())
        .await;
    assert_eq!(built.len(), 3, "the batch reverts: each plan alone");
    for (plan, result) in sized.iter().zip(&built) {
        match result {
            Ok(batch) => {
                assert_ne!(plan.borrower, bad);
                assert_eq!(batch.plans.len(), 1);
                assert_eq!(batch.plans[0].borrower, plan.borrower);
            }
            Err((borrower, PlanError::Refused(Refusal::Reverted(reason)))) => {
                assert_eq!(*borrower, bad);
                assert!(reason.contains("SeizedTooLittle"), "{reason}");
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_plan_whose_transaction_would_revert_is_refused_with_the_decoded_reason() {
    let s = setup(false).await;
    let d = &s.net.deployment;
    // Planned for an account the Liquidator does not know: the simulation reverts with NotOperator.
    let planner = Planner::new(
        s.net.rpc.clone(),
        settings(d, s.liquidator, Address::repeat_byte(0x66)),
    )
    .await
    .unwrap();
    let user = s.watcher.liquidatable()[0];
    let position = s.watcher.position(user).cloned().unwrap();
    match planner.plan(s.watcher.protocol(), user, &position).await {
        Err(PlanError::Refused(Refusal::Reverted(reason))) => {
            assert!(reason.contains("NotOperator"), "{reason}")
        }
        other => panic!("expected a decoded revert, got {other:?}"),
    }
}

/// Several liquidations of one price move sell into the same pool in the same block; each was sized on
/// the pool as the block left it. The planner counts every sale it lets through into the pool's state
/// and holds back the first that would no longer pay (the Liquidator would revert on it): the same
/// point QuoterV2 shows for sales in a row. Sales still pending when the next block is planned count
/// there too.
#[tokio::test]
async fn sales_into_one_pool_in_one_block_stop_where_the_pool_no_longer_pays() {
    let mut s = setup(false).await;
    let mut found = None;
    for user in s.watcher.liquidatable() {
        let position = s.watcher.position(user).cloned().unwrap();
        if let Ok(plan) = s.planner.plan(s.watcher.protocol(), user, &position).await
            && plan.venue == VenueKind::UniswapV3
        {
            found = Some(plan);
            break;
        }
    }
    let plan = found.expect("a plan selling into a Uniswap V3 pool on the shocked devnet");
    let needed = plan.amounts.debt_repaid + plan.min_profit;
    let sale = plan.amounts.collateral_to_liquidator;

    // The same sale, again and again, as the liquidations of one price move would make it.
    let mut let_through = 0u64;
    while s.planner.claim_sale(&plan) {
        let_through += 1;
        assert!(
            let_through < 100_000,
            "100,000 sales of {sale} and the pool still pays: is the pool's state kept per block?"
        );
    }
    assert!(let_through >= 1, "the sale the plan was sized on pays");

    // QuoterV2 on the same pool: what n sales together return, so the n-th alone returns the
    // difference (within the rounding of the fee on each sale, a few units).
    let quote = |n: u64| {
        let rpc = s.net.rpc.clone();
        let quoter = s.net.deployment.uniswap.quoter;
        let (collateral, debt, fee) = (plan.collateral, plan.debt, plan.swap_fee);
        async move {
            if n == 0 {
                return U256::ZERO;
            }
            chain::view(
                &rpc,
                quoter,
                QuoterV2::quoteExactInputSingleCall {
                    params: QuoterV2::QuoteExactInputSingleParams {
                        tokenIn: collateral,
                        tokenOut: debt,
                        amountIn: sale * U256::from(n),
                        fee: fee.try_into().unwrap(),
                        sqrtPriceLimitX96: U160::ZERO,
                    },
                },
                "QuoterV2",
            )
            .await
            .expect("quote")
            .amountOut
        }
    };
    let rounding = U256::from(10u64 * let_through);
    let last_let_through = quote(let_through).await - quote(let_through - 1).await;
    let first_held_back = quote(let_through + 1).await - quote(let_through).await;
    eprintln!(
        "{let_through} sales of {sale} let through; the last returns {last_let_through}, the next \
         {first_held_back}; a sale must return {needed}"
    );
    assert!(
        last_let_through + rounding >= needed,
        "sale {let_through} was let through but returns {last_let_through} < {needed}"
    );
    assert!(
        first_held_back < needed + rounding,
        "sale {} was held back but returns {first_held_back} ≥ {needed}",
        let_through + 1
    );

    // When the block is full, sales sent in it are mined in the next, ahead of anything planned there
    // (lower nonces): carried into the next block's pools, all but one of them leave room for exactly
    // one more.
    s.net.rpc.evm_mine(None).await.unwrap();
    s.watcher.sync().await.unwrap();
    let next = s.watcher.protocol().block.expect("the watcher's block");
    assert_eq!(next.number, plan.block + 1);
    let in_flight = vec![plan.sale(); let_through as usize - 1];
    s.planner.carry_sales(&in_flight, next).await;
    let next_plan = cascade::planner::Plan {
        block: next.number,
        ..plan.clone()
    };
    assert!(s.planner.claim_sale(&next_plan), "one more fits");
    assert!(!s.planner.claim_sale(&next_plan), "and no more");

    // Sized again now, the position is sized on the pools as those sales leave them: another venue or
    // a smaller sale, which the pool check then lets through (or no plan at all).
    let position = s.watcher.position(plan.borrower).cloned().unwrap();
    match s
        .planner
        .size(s.watcher.protocol(), plan.borrower, &position)
        .await
    {
        Ok(resized) => {
            eprintln!(
                "sized again: {} of collateral on {} (was {sale} on {})",
                resized.amounts.collateral_to_liquidator, resized.swap_pool, plan.swap_pool
            );
            assert!(
                resized.swap_pool != plan.swap_pool
                    || resized.amounts.collateral_to_liquidator < sale,
                "the same sale on the same pool, which no longer pays"
            );
            assert!(s.planner.claim_sale(&resized), "the plan sized again fits");
        }
        Err(e) => assert!(
            matches!(
                e,
                PlanError::Refused(Refusal::Unprofitable { .. } | Refusal::NoVenue)
            ),
            "{e:?}"
        ),
    }
}
