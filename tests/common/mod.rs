//! What the integration tests share: a devnet of either Aave, a watcher and a planner on it, sending
//! as an unlocked account, and the check that the watcher's figures are the Pool's.
//!
//! Every test binary includes this module and uses part of it.
#![allow(dead_code)]

pub mod daemon;

use alloy::{
    eips::BlockId,
    network::TransactionBuilder,
    primitives::{Address, U256},
    rpc::types::{TransactionReceipt, TransactionRequest},
};
use cascade::{
    chain::{self, metered::RpcMeter},
    config::DevnetAsset,
    devnet::{Deployment, Devnet, DevnetOptions, aave::DevnetAave, report},
    planner::PlannerSettings,
    protocol::aave_v3::AaveV3,
    store::Store,
    units::HealthFactor,
    watcher::{Watcher, WatcherOptions},
};
use std::collections::BTreeMap;

/// A devnet of `borrowers` on the Aave of `aave`, with every other option at its default.
pub async fn devnet_with(borrowers: u64, aave: DevnetAave) -> Devnet {
    start(DevnetOptions {
        borrowers,
        aave,
        ..Default::default()
    })
    .await
}

/// A devnet of `borrowers` on Aave V3.6.
pub async fn devnet(borrowers: u64) -> Devnet {
    devnet_with(borrowers, DevnetAave::V3_6).await
}

/// A devnet started with `opts`; a failure (the toolchain missing, say) fails the test with its cause.
pub async fn start(opts: DevnetOptions) -> Devnet {
    Devnet::start(&opts)
        .await
        .unwrap_or_else(|e| panic!("devnet did not start: {e:#}"))
}

/// A watcher of the devnet's market over a metered connection, on `store`.
pub async fn watcher(net: &Devnet, store: &Store, meter: &RpcMeter) -> Watcher<AaveV3> {
    watcher_via(net, &net.rpc_url, store, meter).await
}

/// A watcher of the devnet's market through `url` (a proxy in front of the devnet, say).
pub async fn watcher_via(
    net: &Devnet,
    url: &str,
    store: &Store,
    meter: &RpcMeter,
) -> Watcher<AaveV3> {
    let d = &net.deployment;
    let rpc = chain::connect_http_metered(url, meter).unwrap();
    let aave = AaveV3::connect(&rpc, d.aave.addresses_provider, d.multicall, None)
        .await
        .unwrap();
    let market = store.market(d.aave.addresses_provider).unwrap();
    let opts = WatcherOptions {
        deployment_block: d.deployment_block,
        ..Default::default()
    };
    Watcher::open(aave, rpc, market, opts).unwrap()
}

/// The planner's settings on the devnet, for `liquidator` sent from `sender`.
pub fn planner_settings(d: &Deployment, liquidator: Address, sender: Address) -> PlannerSettings {
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

/// The devnet's asset `symbol`, as shocks name it.
pub fn asset(net: &Devnet, symbol: &str) -> DevnetAsset {
    net.deployment.asset(symbol).unwrap().devnet_asset()
}

/// Sends `data` to `to` from the unlocked account `from`, and waits for its receipt.
pub async fn send(
    net: &Devnet,
    from: Address,
    to: Address,
    data: Vec<u8>,
) -> Result<TransactionReceipt, chain::ChainError> {
    let tx = TransactionRequest::default()
        .from(from)
        .to(to)
        .with_input(data);
    chain::send_unlocked(&net.rpc, tx, "test transaction").await
}

/// Every tracked position, recomputed at the watcher's block, equals `getUserAccountData` there to
/// the wei (health factor, collateral, debt); as cached, exact below 1 and on the right side of 1
/// above it (some blocks of interest behind, never past the position's horizon). The chain's health
/// factor of each user.
pub async fn assert_health_matches_chain(
    net: &Devnet,
    w: &Watcher<AaveV3>,
) -> BTreeMap<Address, HealthFactor> {
    let block = w.cursor().unwrap().block;
    let users: Vec<Address> = w.positions().map(|(u, _, _)| u).collect();
    let chain = report::account_health(
        &net.rpc,
        net.deployment.multicall,
        net.deployment.aave.pool,
        &users,
        BlockId::number(block),
    )
    .await
    .unwrap();
    let cached: BTreeMap<Address, _> = w.positions().map(|(u, _, h)| (u, h)).collect();
    for account in &chain {
        let h = w.current_health(account.borrower).unwrap();
        assert_eq!(
            h.health_factor, account.health_factor.0,
            "health of {}",
            account.borrower
        );
        assert_eq!(
            h.collateral_base, account.collateral.0,
            "collateral of {}",
            account.borrower
        );
        assert_eq!(h.debt_base, account.debt.0, "debt of {}", account.borrower);
        let c = cached[&account.borrower].health_factor;
        let one = cascade::units::WAD;
        if account.health_factor.0 < one {
            assert_eq!(
                c, account.health_factor.0,
                "cached health of liquidatable {}",
                account.borrower
            );
        } else {
            assert!(
                c >= one,
                "cached health of {} is below 1: {c}",
                account.borrower
            );
            let diff = c.abs_diff(account.health_factor.0);
            assert!(
                diff * U256::from(1_000u64) <= account.health_factor.0,
                "cached health of {}: {c} vs {}",
                account.borrower,
                account.health_factor
            );
        }
    }
    chain
        .iter()
        .map(|a| (a.borrower, a.health_factor))
        .collect()
}
