//! Exact on the Aave that runs today and on V3.0: on a devnet of each, every position's health factor,
//! collateral and debt equal the Pool's `getUserAccountData` to the wei (eMode borrowers and
//! two-collateral, two-debt borrowers among them) after seeding, blocks of interest, a jump of days
//! and a price fall; the release is told from the Pool; positions below 0.95 are closed in full and
//! every liquidation leaves no dust; a liquidation of a position's last collateral burns the rest of
//! its debt as a deficit and the borrower leaves the store.
//!
//! Needs the pinned toolchain (`make toolchain`); without it these tests fail and say so.

mod common;

use alloy::{
    primitives::{Address, U256, keccak256},
    providers::{Provider, ext::AnvilApi},
    sol_types::{SolCall, SolEvent},
};
use cascade::{
    chain::{
        self,
        bindings::{Liquidator, MintableERC20, Pool},
        metered::RpcMeter,
    },
    devnet::{
        Devnet,
        aave::DevnetAave,
        market::EMODE,
        shock::{self, PriceMoveBps},
    },
    planner::{PlanError, Planner},
    protocol::aave_v3::{AaveV3, release::Release},
    store::Store,
    watcher::Watcher,
};
use common::{assert_health_matches_chain, asset, devnet_with, planner_settings, send, watcher};

/// Mines `blocks` blocks `secs_apart` seconds apart.
async fn mine(net: &Devnet, blocks: u64, secs_apart: u64) {
    for _ in 0..blocks {
        net.rpc.anvil_increase_time(secs_apart).await.unwrap();
        net.rpc.evm_mine(None).await.unwrap();
    }
}

async fn health_is_the_pools_through_time(aave: DevnetAave) {
    let net = devnet_with(50, aave).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let meter = RpcMeter::default();
    let mut w = watcher(&net, &store, &meter).await;
    assert_eq!(w.protocol().release, aave.release(), "told from the Pool");
    w.sync().await.unwrap();
    assert_eq!(w.len(), 50);

    // The shapes that differ between releases are all there.
    let in_emode = w.positions().filter(|(_, p, _)| p.emode != 0).count();
    let two_by_two = w
        .positions()
        .filter(|(_, p, _)| {
            p.holdings.iter().filter(|h| h.collateral_enabled).count() == 2
                && p.holdings.iter().filter(|h| h.borrowing).count() == 2
        })
        .count();
    assert!(two_by_two >= 20, "{two_by_two} two-by-two borrowers");
    match aave {
        DevnetAave::V3_6 => {
            assert!(in_emode >= 5, "{in_emode} eMode borrowers");
            assert!(
                w.positions()
                    .all(|(_, p, _)| p.emode == 0 || p.emode == EMODE.id)
            );
        }
        DevnetAave::V3_0 => assert_eq!(in_emode, 0),
    }
    assert_health_matches_chain(&net, &w).await;

    // 20 blocks of interest, 12 seconds apart.
    mine(&net, 20, 12).await;
    w.sync().await.unwrap();
    assert_health_matches_chain(&net, &w).await;

    // Three days pass in one jump: indexes compound far from their last update.
    mine(&net, 1, 3 * 86_400).await;
    w.sync().await.unwrap();
    assert_health_matches_chain(&net, &w).await;

    // WETH falls 20%: positions cross 1, and the watcher's set is the chain's.
    shock::shock(&net.rpc, &asset(&net, "WETH"), PriceMoveBps(-2000))
        .await
        .unwrap();
    let report = w.sync().await.unwrap();
    let chain = assert_health_matches_chain(&net, &w).await;
    let below: Vec<Address> = chain
        .iter()
        .filter(|(_, hf)| hf.is_liquidatable())
        .map(|(u, _)| *u)
        .collect();
    let mut ours: Vec<Address> = report.liquidatable.iter().map(|c| c.user).collect();
    ours.sort();
    assert!(!below.is_empty());
    assert_eq!(ours, below);
    eprintln!(
        "Aave {}: 50 positions ({in_emode} in eMode, {two_by_two} two-by-two) equal the Pool's at every point; {} below 1 after WETH −20%",
        aave.release(),
        below.len()
    );
}

#[tokio::test]
async fn health_is_the_pools_through_time_on_v3_6() {
    health_is_the_pools_through_time(DevnetAave::V3_6).await;
}

#[tokio::test]
async fn health_is_the_pools_through_time_on_v3_0() {
    health_is_the_pools_through_time(DevnetAave::V3_0).await;
}

/// The Pool's variable debt of `user` in `asset`.
async fn debt_of(net: &Devnet, asset: Address, user: Address) -> U256 {
    let token = net
        .deployment
        .assets
        .iter()
        .find(|a| a.address == asset)
        .unwrap()
        .variable_debt_token;
    chain::view(
        &net.rpc,
        token,
        MintableERC20::balanceOfCall { account: user },
        "debt balance",
    )
    .await
    .unwrap()
}

/// A liquidation leaves none or at least $1,000 of the debt it repaid and of the collateral it
/// seized (`MustNotLeaveDust`); the Pool enforces it, so a liquidation that succeeded obeyed it,
/// and this checks the plan meant to.
async fn assert_no_dust(
    w: &Watcher<AaveV3>,
    net: &Devnet,
    user: Address,
    event: &Pool::LiquidationCall,
) {
    let market = w.protocol();
    let worth = |asset: Address, amount: U256| {
        let r = market.reserve_of(asset).unwrap();
        amount * r.price / U256::from(10u64).pow(U256::from(r.config.decimals))
    };
    let debt_left = debt_of(net, event.debtAsset, user).await;
    let a_token = market.reserve_of(event.collateralAsset).unwrap().a_token;
    let collateral_left = chain::view(
        &net.rpc,
        a_token,
        MintableERC20::balanceOfCall { account: user },
        "aToken balance",
    )
    .await
    .unwrap();
    let thousand = U256::from(1_000u64) * U256::from(100_000_000u64);
    let debt_ok = debt_left.is_zero() || worth(event.debtAsset, debt_left) >= thousand;
    let collateral_ok =
        collateral_left.is_zero() || worth(event.collateralAsset, collateral_left) >= thousand;
    assert!(
        debt_ok || collateral_ok,
        "{user}: {debt_left} debt and {collateral_left} collateral left"
    );
}

#[tokio::test]
async fn below_095_positions_are_closed_in_full_and_no_liquidation_leaves_dust() {
    let net = devnet_with(60, DevnetAave::V3_6).await;
    let d = net.deployment.clone();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let mut w = watcher(&net, &store, &RpcMeter::default()).await;
    w.sync().await.unwrap();
    // A deep fall with the pools following: many positions go below 0.95.
    let config = d.config(&net.rpc_url, None, dir.path().join("unused"));
    shock::shock_market(
        &net.rpc,
        config.devnet.as_ref().unwrap(),
        &asset(&net, "WETH"),
        PriceMoveBps(-2500),
    )
    .await
    .unwrap();
    w.sync().await.unwrap();
    let planner = Planner::new(net.rpc.clone(), planner_settings(&d, d.liquidator, d.admin))
        .await
        .unwrap();
    let (mut full_closes, mut partial, mut refused) = (0, 0, Vec::new());
    for user in w.liquidatable() {
        w.sync().await.unwrap();
        let position = w.position(user).cloned().unwrap();
        let hf = w.current_health(user).unwrap().health_factor;
        // Repaying all of the pair's debt (not stopped by the collateral running out) asks for more.
        let plan = match planner.plan(w.protocol(), user, &position).await {
            Ok(plan) => plan,
            Err(PlanError::Refused(r)) => {
                refused.push(r);
                continue;
            }
            Err(e) => panic!("{user}: {e}"),
        };
        let debt_before = debt_of(&net, plan.debt, user).await;
        let closes_in_full =
            !plan.amounts.collateral_bound && plan.amounts.debt_to_cover > plan.amounts.debt_repaid;
        if closes_in_full {
            // Asked for exactly the debt it saw, a block later the liquidation would leave the
            // interest of that block behind, which the dust rule refuses.
            let mut call = Liquidator::liquidateCall::abi_decode(&plan.calldata).unwrap();
            call.l.debtToCover = plan.amounts.debt_repaid;
            let latest = net
                .rpc
                .get_block_by_number(Default::default())
                .await
                .unwrap()
                .unwrap();
            let tx = alloy::rpc::types::TransactionRequest::default()
                .from(d.admin)
                .to(d.liquidator)
                .input(call.abi_encode().into());
            let err = net
                .rpc
                .call(tx)
                .with_block_overrides(alloy::rpc::types::BlockOverrides {
                    time: Some(latest.header.timestamp + 12),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            let reason = cascade::planner::decode_revert(&err);
            assert!(reason.contains("MustNotLeaveDust"), "{reason}");
        }
        let receipt = send(&net, d.admin, d.liquidator, plan.calldata.to_vec())
            .await
            .unwrap_or_else(|e| panic!("{user}'s liquidation reverted: {e}"));
        assert!(receipt.status());
        let event = receipt
            .inner
            .logs()
            .iter()
            .find_map(|l| Pool::LiquidationCall::decode_log_data(l.data()).ok())
            .unwrap();
        assert_no_dust(&w, &net, user, &event).await;
        if hf <= cascade::planner::sizing::CLOSE_FACTOR_HF_THRESHOLD && closes_in_full {
            // Planned on a debt a block younger: the Pool took the whole debt as it was then.
            assert_eq!(debt_of(&net, plan.debt, user).await, U256::ZERO, "{user}");
            assert!(event.debtToCover >= plan.amounts.debt_repaid);
            assert!(event.debtToCover <= debt_before);
            full_closes += 1;
        } else {
            partial += 1;
        }
    }
    eprintln!(
        "{full_closes} closed in full, {partial} partial or collateral-bound; refused: {refused:?}"
    );
    assert!(full_closes >= 1, "{full_closes} full closes");
}

/// Opens a borrower with one collateral (`collateral_usd` of ALT) and one debt (`debt_usd` of USDC).
async fn open_alt_borrower(net: &Devnet, collateral_usd: u64, debt_usd: u64) -> Address {
    let d = &net.deployment;
    let user = Address::from_slice(&keccak256("a borrower of ALT alone")[12..]);
    net.rpc
        .anvil_set_balance(user, U256::from(10u64).pow(U256::from(18)))
        .await
        .unwrap();
    let alt = d.asset("ALT").unwrap().address;
    let usdc = d.asset("USDC").unwrap().address;
    // ALT at $0.50, 18 decimals; USDC 6.
    let alt_amount = U256::from(collateral_usd * 2) * U256::from(10u64).pow(U256::from(18));
    let usdc_amount = U256::from(debt_usd) * U256::from(1_000_000u64);
    for call in [
        MintableERC20::mintCall {
            account: user,
            value: alt_amount,
        }
        .abi_encode(),
        MintableERC20::approveCall {
            spender: d.aave.pool,
            amount: U256::MAX,
        }
        .abi_encode(),
    ] {
        send(net, user, alt, call).await.unwrap();
    }
    let supply = Pool::supplyCall {
        asset: alt,
        amount: alt_amount,
        onBehalfOf: user,
        referralCode: 0,
    };
    send(net, user, d.aave.pool, supply.abi_encode())
        .await
        .unwrap();
    let borrow = Pool::borrowCall {
        asset: usdc,
        amount: usdc_amount,
        interestRateMode: U256::from(2u8),
        referralCode: 0,
        onBehalfOf: user,
    };
    send(net, user, d.aave.pool, borrow.abi_encode())
        .await
        .unwrap();
    user
}

#[tokio::test]
async fn a_liquidation_of_the_last_collateral_burns_the_rest_as_a_deficit() {
    let net = devnet_with(5, DevnetAave::V3_6).await;
    let d = net.deployment.clone();
    let user = open_alt_borrower(&net, 3_000, 1_400).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let mut w = watcher(&net, &store, &RpcMeter::default()).await;
    w.sync().await.unwrap();
    assert!(w.position(user).is_some());

    // ALT falls 70%: $900 of collateral against $1,400 of debt.
    let config = d.config(&net.rpc_url, None, dir.path().join("unused"));
    shock::shock_market(
        &net.rpc,
        config.devnet.as_ref().unwrap(),
        &asset(&net, "ALT"),
        PriceMoveBps(-7000),
    )
    .await
    .unwrap();
    w.sync().await.unwrap();
    let planner = Planner::new(net.rpc.clone(), planner_settings(&d, d.liquidator, d.admin))
        .await
        .unwrap();
    let position = w.position(user).cloned().unwrap();
    let plan = planner.plan(w.protocol(), user, &position).await.unwrap();
    assert!(
        plan.amounts.collateral_bound && plan.amounts.creates_deficit,
        "{plan:?}"
    );
    let receipt = send(&net, d.admin, d.liquidator, plan.calldata.to_vec())
        .await
        .unwrap();
    let deficits: Vec<Pool::DeficitCreated> = receipt
        .inner
        .logs()
        .iter()
        .filter_map(|l| Pool::DeficitCreated::decode_log_data(l.data()).ok())
        .collect();
    assert_eq!(deficits.len(), 1, "one debt reserve, one deficit");
    assert_eq!(deficits[0].user, user);
    let sold = receipt
        .inner
        .logs()
        .iter()
        .find_map(|l| Liquidator::Liquidated::decode_log_data(l.data()).ok())
        .unwrap();
    assert_eq!(sold.collateralSold, plan.amounts.collateral_to_liquidator);
    assert_eq!(debt_of(&net, plan.debt, user).await, U256::ZERO);

    // The borrower owes nothing now: it leaves the watcher and the store.
    w.sync().await.unwrap();
    assert!(w.position(user).is_none());
    assert!(
        store
            .market(d.aave.addresses_provider)
            .unwrap()
            .position(user)
            .unwrap()
            .is_none()
    );
    let _ = net.rpc.get_block_number().await;
}

#[tokio::test]
async fn the_release_is_told_from_the_pool_and_can_be_set() {
    for aave in [DevnetAave::V3_6, DevnetAave::V3_0] {
        let net = devnet_with(0, aave).await;
        let d = &net.deployment;
        let (release, revision) =
            cascade::protocol::aave_v3::detect_release(&net.rpc, d.aave.pool, d.multicall)
                .await
                .unwrap();
        assert_eq!(release, aave.release());
        let expected_revision = match aave {
            DevnetAave::V3_6 => 10u8,
            DevnetAave::V3_0 => 1,
        };
        assert_eq!(revision, Some(U256::from(expected_revision)));
        let told = AaveV3::connect(
            &net.rpc,
            d.aave.addresses_provider,
            d.multicall,
            Some(Release::V3_5),
        )
        .await
        .unwrap();
        assert_eq!(
            told.release,
            Release::V3_5,
            "a release set in the config wins"
        );
    }
}
