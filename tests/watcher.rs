//! The watcher on the devnet with the real Aave V3: every borrower found (opened before and while it
//! runs), health equal to the chain's, RPC requests per block that do not grow with the number of
//! borrowers, reorgs undone, restarts resumed from the cursor.
//!
//! Needs the pinned toolchain (`make toolchain`); without it these tests fail and say so.

mod common;

use alloy::{
    primitives::{Address, U256},
    providers::{Provider, ext::AnvilApi},
};
use cascade::{
    chain::{
        self,
        metered::{MeterCounts, RpcMeter},
    },
    devnet::{
        Devnet, seed,
        shock::{self, PriceMoveBps},
    },
    store::Store,
};
use common::{assert_health_matches_chain, devnet, watcher};
use std::{collections::BTreeSet, time::Instant};

fn weth(net: &Devnet) -> cascade::config::DevnetAsset {
    common::asset(net, "WETH")
}

#[tokio::test]
async fn finds_every_borrower_and_agrees_with_the_chain() {
    let net = devnet(150).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let meter = RpcMeter::default();
    let mut w = watcher(&net, &store, &meter).await;
    let first = w.sync().await.unwrap();
    assert!(first.backfilled);
    assert_eq!(w.len(), 150);

    // 60 more borrowers open while the watcher follows the chain.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut syncs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                w.sync().await.expect("sync while borrowers open");
                syncs += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            w.sync().await.unwrap();
            (w, syncs)
        })
    };
    let d = &net.deployment;
    let deployer = net.deployer();
    cascade::devnet::aave::set_seeding_ltvs(&deployer, &d.aave, &d.assets, true)
        .await
        .unwrap();
    seed::open_borrowers(&deployer, &d.aave, &d.assets, 150..210, 210)
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut w, syncs) = follower.await.unwrap();
    assert!(
        syncs > 5,
        "the watcher should have followed the chain block by block ({syncs} syncs)"
    );
    assert_eq!(w.len(), 210);
    for i in 0..210 {
        let user = seed::borrower_address(i);
        assert!(
            w.positions().any(|(u, _, _)| u == user),
            "borrower {i} not found"
        );
    }
    let hfs = assert_health_matches_chain(&net, &w).await;
    assert_eq!(hfs.len(), 210);

    // After a 25% WETH drop, what the watcher calls liquidatable is what the chain says is below 1.
    shock::shock(&net.rpc, &weth(&net), PriceMoveBps(-2500))
        .await
        .unwrap();
    let report = w.sync().await.unwrap();
    let chain_below_one: BTreeSet<Address> = assert_health_matches_chain(&net, &w)
        .await
        .into_iter()
        .filter(|(_, hf)| hf.is_liquidatable())
        .map(|(u, _)| u)
        .collect();
    let ours: BTreeSet<Address> = report.liquidatable.iter().map(|c| c.user).collect();
    assert!(!chain_below_one.is_empty());
    assert_eq!(ours, chain_below_one);
    for c in &report.liquidatable {
        assert_eq!(
            c.onchain_health_factor,
            Some(c.health_factor),
            "verified on-chain"
        );
    }
    eprintln!(
        "watcher: 210 borrowers found; after the shock {} liquidatable, {} re-priced in {:?}",
        ours.len(),
        report.repriced,
        report.reprice_time
    );
}

/// Requests for one idle block and for one block with a price change.
async fn requests_per_block(borrowers: u64) -> (MeterCounts, MeterCounts, usize) {
    let net = devnet(borrowers).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let meter = RpcMeter::default();
    let mut w = watcher(&net, &store, &meter).await;
    w.sync().await.unwrap();
    assert_eq!(w.len() as u64, borrowers);

    net.rpc.evm_mine(None).await.unwrap();
    let before = meter.snapshot();
    w.sync().await.unwrap();
    let idle = meter.snapshot().since(&before);

    shock::shock(&net.rpc, &weth(&net), PriceMoveBps(-2000))
        .await
        .unwrap();
    let before = meter.snapshot();
    let report = w.sync().await.unwrap();
    let price_change = meter.snapshot().since(&before);
    (idle, price_change, report.liquidatable.len())
}

#[tokio::test]
async fn requests_per_block_do_not_grow_with_borrowers() {
    let (idle_small, price_small, liq_small) = requests_per_block(100).await;
    let (idle_large, price_large, liq_large) = requests_per_block(1_000).await;
    eprintln!(
        "RPC requests per block, counted at the transport (one is the poll for the new head):"
    );
    eprintln!(
        "  100 borrowers:   idle {} {:?}; price change {} {:?} ({liq_small} liquidatable)",
        idle_small.requests, idle_small.by_method, price_small.requests, price_small.by_method
    );
    eprintln!(
        "  1,000 borrowers: idle {} {:?}; price change {} {:?} ({liq_large} liquidatable)",
        idle_large.requests, idle_large.by_method, price_large.requests, price_large.by_method
    );
    assert_eq!(idle_small, idle_large);
    assert_eq!(price_small, price_large);
    // Exactly: the head poll, the block's logs and one `aggregate3` of the market; a price change adds
    // one `eth_call`, the chain's own health of the positions that fell below 1.
    let methods = |counts: &MeterCounts| -> Vec<(String, u64)> {
        counts
            .by_method
            .iter()
            .map(|(m, n)| (m.clone(), *n))
            .collect()
    };
    let expected = |calls: u64| {
        vec![
            ("eth_call".to_string(), calls),
            ("eth_getBlockByNumber".to_string(), 1),
            ("eth_getLogs".to_string(), 1),
        ]
    };
    assert_eq!(idle_large.requests, 3, "{idle_large:?}");
    assert_eq!(methods(&idle_large), expected(1));
    assert_eq!(price_large.requests, 4, "{price_large:?}");
    assert_eq!(methods(&price_large), expected(2));
    assert!(liq_small > 0 && liq_large > liq_small);
}

#[tokio::test]
async fn reorged_borrow_is_undone() {
    let net = devnet(5).await;
    let d = &net.deployment;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let meter = RpcMeter::default();
    let mut w = watcher(&net, &store, &meter).await;
    w.sync().await.unwrap();
    let existing = seed::borrower_address(0);
    let before: Vec<_> = w
        .positions()
        .filter(|(u, _, _)| *u == existing)
        .map(|(_, p, _)| p.holdings.clone())
        .collect();
    let start_block = net.rpc.get_block_number().await.unwrap();

    // A new borrower opens (its Borrow lands in the last of these blocks) and an existing one borrows more.
    let deployer = net.deployer();
    cascade::devnet::aave::set_seeding_ltvs(&deployer, &d.aave, &d.assets, true)
        .await
        .unwrap();
    seed::open_borrowers(&deployer, &d.aave, &d.assets, 5..6, 6)
        .await
        .unwrap();
    let usdc = d.asset("USDC").unwrap().address;
    let borrow = cascade::chain::bindings::Pool::borrowCall {
        asset: usdc,
        amount: U256::from(10_000_000u64),
        interestRateMode: U256::from(2u8),
        referralCode: 0,
        onBehalfOf: existing,
    };
    chain::send_call(&net.rpc, existing, d.aave.pool, borrow, "borrow more")
        .await
        .unwrap();
    let report = w.sync().await.unwrap();
    assert_eq!(report.reorg_depth, None);
    let newcomer = seed::borrower_address(5);
    assert!(w.positions().any(|(u, _, _)| u == newcomer));

    // Those blocks are reorged out: roll back past them and build a longer chain without them.
    let depth = net.rpc.get_block_number().await.unwrap() - start_block;
    let _: serde_json::Value = net
        .rpc
        .raw_request("anvil_rollback".into(), (depth,))
        .await
        .unwrap();
    for _ in 0..depth + 2 {
        net.rpc.evm_mine(None).await.unwrap();
    }
    let report = w.sync().await.unwrap();
    assert!(report.reorg_depth.is_some(), "the reorg should be noticed");
    assert!(
        !w.positions().any(|(u, _, _)| u == newcomer),
        "the reorged-out borrower must disappear"
    );
    let after: Vec<_> = w
        .positions()
        .filter(|(u, _, _)| *u == existing)
        .map(|(_, p, _)| p.holdings.clone())
        .collect();
    assert_eq!(
        after, before,
        "the existing borrower reverts to its prior position"
    );
    let cursor = w.cursor().unwrap();
    let chain_hash = net
        .rpc
        .get_block_by_number(cursor.block.into())
        .await
        .unwrap()
        .unwrap()
        .header
        .hash;
    assert_eq!(cursor.hash, chain_hash);
    assert!(
        store
            .market(d.aave.addresses_provider)
            .unwrap()
            .position(newcomer)
            .unwrap()
            .is_none(),
        "and from the store"
    );
    assert_health_matches_chain(&net, &w).await;
}

#[tokio::test]
async fn restart_resumes_from_the_cursor() {
    let net = devnet(60).await;
    let dir = tempfile::tempdir().unwrap();
    let meter = RpcMeter::default();
    {
        let store = Store::open(dir.path(), false).unwrap();
        let mut w = watcher(&net, &store, &meter).await;
        assert!(w.sync().await.unwrap().backfilled);
        store.flush().unwrap();
    }
    // Activity while the watcher is down.
    shock::shock(&net.rpc, &weth(&net), PriceMoveBps(-500))
        .await
        .unwrap();
    for _ in 0..5 {
        net.rpc.evm_mine(None).await.unwrap();
    }

    let started = Instant::now();
    let before = meter.snapshot();
    let store = Store::open(dir.path(), false).unwrap();
    let mut w = watcher(&net, &store, &meter).await;
    assert_eq!(w.len(), 60, "positions come back from the store");
    let report = w.sync().await.unwrap();
    let elapsed = started.elapsed();
    let used = meter.snapshot().since(&before);
    assert!(!report.backfilled, "a restart must not rediscover");
    assert_eq!(report.blocks, 6);
    assert_eq!(
        w.cursor().unwrap().block,
        net.rpc.get_block_number().await.unwrap()
    );
    assert_health_matches_chain(&net, &w).await;
    eprintln!(
        "restart catch-up over 6 blocks with 60 borrowers: {elapsed:?}, {} requests {:?}",
        used.requests, used.by_method
    );

    // Restarting again with nothing new on chain still reads the market before computing health.
    drop(w);
    let mut again = watcher(&net, &store, &meter).await;
    again.sync().await.unwrap();
    assert_health_matches_chain(&net, &again).await;

    // --rebuild-store starts over from the chain and reaches the same positions.
    drop(again);
    drop(store);
    let rebuilt = Store::open(dir.path(), true).unwrap();
    let mut w2 = watcher(&net, &rebuilt, &meter).await;
    assert!(w2.sync().await.unwrap().backfilled);
    assert_eq!(w2.len(), 60);
}

#[tokio::test]
async fn follows_new_heads_over_websocket() {
    use cascade::watcher::follow::{Heads, follow};
    use tokio_util::sync::CancellationToken;

    let net = devnet(30).await;
    let ws_url = net
        .anvil
        .as_ref()
        .expect("an anvil we started")
        .ws_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let meter = RpcMeter::default();
    let mut w = watcher(&net, &store, &meter).await;
    w.sync().await.unwrap();

    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            follow(
                &mut w,
                Heads::Subscribe { ws_url },
                std::time::Duration::from_secs(1),
                cancel,
                &mut |_: &_, r: cascade::watcher::SyncReport| {
                    let _ = tx.send((r.block.map(|b| b.number), r.liquidatable.len()));
                    Ok::<_, cascade::watcher::WatcherError>(())
                },
            )
            .await
            .unwrap();
        })
    };
    // The first report is the catch-up on subscribing.
    rx.recv().await.unwrap();
    let before = meter.snapshot();
    for _ in 0..5 {
        net.rpc.evm_mine(None).await.unwrap();
        rx.recv().await.unwrap();
    }
    let idle = meter.snapshot().since(&before);
    eprintln!(
        "with a newHeads subscription: {} requests over 5 idle blocks {:?}",
        idle.requests, idle.by_method
    );
    assert_eq!(
        idle.requests, 10,
        "two requests per idle block: getLogs and aggregate3"
    );

    shock::shock(&net.rpc, &weth(&net), PriceMoveBps(-3000))
        .await
        .unwrap();
    let (_, liquidatable) = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        liquidatable > 0,
        "the price drop should be seen in the next block's report"
    );
    cancel.cancel();
    task.await.unwrap();
}
