//! The keeper end to end, as operators run it: the `cascade run` binary against a devnet with a block
//! time. A price crash is liquidated within two blocks with the store, the metrics and the chain in
//! agreement; a kill between send and receipt is recovered without a second liquidation; a dry run
//! never touches the chain; and every bad input is refused with a message that names it.

mod common;

use common::daemon::*;

use alloy::{
    primitives::{Address, U256},
    providers::{Provider, ext::AnvilApi},
    sol_types::SolCall,
};
use cascade::{
    chain::bindings::{Liquidator, MintableERC20, Pool},
    config::Config,
    devnet::{
        aave::DevnetAave,
        shock::{Landing, PriceMoveBps, route_through_fallback, shock_market_landing},
    },
    executor::journal::{JournalEntry, TxState},
    planner::{PlanError, Planner, PlannerSettings},
    protocol::aave_v3::AaveV3,
    store::Store,
    watcher::{Watcher, WatcherOptions},
};
use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_is_liquidated_within_two_blocks_and_the_store_metrics_and_chain_agree() {
    a_crash_is_liquidated_within_two_blocks(DevnetAave::V3_6).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_is_liquidated_within_two_blocks_on_aave_v3_0_too() {
    a_crash_is_liquidated_within_two_blocks(DevnetAave::V3_0).await;
}

/// On the Aave of `aave`: every position a 20% WETH crash takes below 1 is liquidated within two
/// blocks or has no profitable liquidation; no transaction of ours reverts; the journal, the metrics
/// and the chain agree.
async fn a_crash_is_liquidated_within_two_blocks(aave: DevnetAave) {
    let net = net_on(50, Some(1), aave).await;
    let daemon = Daemon::start(&net.config_path, &[], &net.dir.path().join("run"));
    healthy(&net).await;

    // Before the crash the cascade map's gauges say what falls of WETH would make liquidatable.
    let gauge = |text: &str, drop: u32, kind: &str| {
        metric(
            text,
            &format!("cascade_liquidatable_debt_usd{{drop=\"{drop}\",kind=\"{kind}\"}}"),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mapped = loop {
        let text = scrape(net.metrics_port, "/metrics")
            .await
            .map(|(_, text)| text)
            .unwrap_or_default();
        if gauge(&text, 20, "round0") > 0.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "no cascade map gauges:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for drop in [5, 10, 20] {
        assert!(gauge(&mapped, drop, "cascade") >= gauge(&mapped, drop, "round0"));
    }
    assert!(gauge(&mapped, 5, "round0") <= gauge(&mapped, 10, "round0"));
    assert!(gauge(&mapped, 10, "round0") <= gauge(&mapped, 20, "round0"));

    let before_block = net.devnet.rpc.get_block_number().await.unwrap();
    // Read before the shock: anvil writes the feed's storage into the latest block's state.
    let before = net.health(before_block).await;
    net.crash_weth(-2000).await;
    let crash_block = net.devnet.rpc.get_block_number().await.unwrap();
    let crossed: Vec<Address> = net
        .health(crash_block)
        .await
        .iter()
        .zip(before)
        .filter(|(after, before)| {
            after.health_factor.is_liquidatable() && !before.health_factor.is_liquidatable()
        })
        .map(|(a, _)| a.borrower)
        .collect();
    assert!(
        crossed.len() >= 5,
        "the crash should push several positions below 1: {} between blocks {before_block} and {crash_block}",
        crossed.len()
    );

    // Every crossed position is taken care of within a few blocks, the second rounds a 50% close
    // factor leaves included.
    settled(&net, crash_block).await;
    let (_, metrics) = scrape(net.metrics_port, "/metrics").await.expect("metrics");
    let output = daemon.stop();
    assert_no_key(&output);

    let events = net.liquidations(before_block).await;
    let liquidator = net.devnet.deployment.liquidator;
    assert!(
        events.iter().all(|(e, _)| e.liquidator == liquidator),
        "only our keeper liquidates on this devnet"
    );

    // Within two blocks of crossing, or no profitable plan exists.
    let d = &net.devnet.deployment;
    let aave = AaveV3::connect(
        &net.devnet.rpc,
        d.aave.addresses_provider,
        d.multicall,
        None,
    )
    .await
    .unwrap();
    let probe = tempfile::tempdir().unwrap();
    let probe_store = Store::open(probe.path(), false).unwrap();
    let mut watcher = Watcher::open(
        aave,
        net.devnet.rpc.clone(),
        probe_store.market(d.aave.addresses_provider).unwrap(),
        WatcherOptions {
            deployment_block: d.deployment_block,
            ..Default::default()
        },
    )
    .unwrap();
    watcher.sync().await.unwrap();
    let planner = Planner::new(
        net.devnet.rpc.clone(),
        PlannerSettings::from_config(&net.config).unwrap(),
    )
    .await
    .unwrap();
    let mut liquidated = 0;
    for borrower in &crossed {
        match events.iter().find(|(e, _)| e.user == *borrower) {
            Some((_, block)) => {
                assert!(
                    *block <= crash_block + 2,
                    "{borrower} crossed in block {crash_block} and was liquidated in {block}"
                );
                liquidated += 1;
            }
            None => {
                let position = watcher.position(*borrower).cloned().unwrap();
                match planner.plan(watcher.protocol(), *borrower, &position).await {
                    Err(PlanError::Refused(_)) => {}
                    other => panic!("{borrower} was left with {other:?}"),
                }
            }
        }
    }
    assert!(liquidated >= 5, "only {liquidated} liquidated");

    // The journal: every liquidation on chain is one included entry; each was profitable.
    let entries = journal(&net.config.store.path, false);
    let won: Vec<&JournalEntry> = entries
        .iter()
        .filter(|e| matches!(e.state, TxState::Included { success: true, .. }))
        .collect();
    assert_eq!(won.len(), events.len(), "journal vs LiquidationCall events");
    let reverted: Vec<&JournalEntry> = entries
        .iter()
        .filter(|e| matches!(e.state, TxState::Included { success: false, .. }))
        .collect();
    assert!(reverted.is_empty(), "mined and reverted: {reverted:?}");
    let prices = |asset| {
        let r = watcher.protocol().reserve_of(asset).unwrap();
        (r.price, r.config.decimals)
    };
    let (eth_price, _) = prices(d.asset("WETH").unwrap().address);
    for e in &won {
        let TxState::Included {
            profit: Some(profit),
            fee_paid_wei,
            ..
        } = &e.state
        else {
            panic!("{e:?} has no profit");
        };
        let (price, decimals) = prices(e.pair.1);
        let profit_usd = *profit * price / U256::from(10u64).pow(U256::from(decimals));
        let gas_usd = *fee_paid_wei * eth_price / U256::from(10u64).pow(U256::from(18));
        assert!(
            profit_usd > gas_usd,
            "{e:?}: profit {profit_usd} vs gas {gas_usd}"
        );
    }
    // The metrics count the same.
    assert_eq!(
        metric(&metrics, "cascade_liquidations_total{outcome=\"won\"}") as usize,
        events.len()
    );
    assert_eq!(
        metric(&metrics, "cascade_market_liquidations_total") as usize,
        events.len()
    );
    assert!(metric(&metrics, "cascade_realised_profit_usd") > 0.0);
    // Every borrower still in debt is tracked; one whose last collateral was seized had the rest of
    // its debt burnt as a deficit (V3.3+) and is tracked no more.
    assert_eq!(
        metric(&metrics, "cascade_positions_tracked") as usize,
        watcher.len()
    );
    for stage in ["repriced", "planned", "signed", "sent", "included"] {
        assert!(
            metric(
                &metrics,
                &format!("cascade_stage_seconds_count{{stage=\"{stage}\"}}")
            ) > 0.0,
            "no {stage} timings"
        );
    }
    assert!(
        output.contains("won"),
        "the closing summary is printed:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_between_send_and_receipt_is_finished_after_restart_without_a_second_liquidation() {
    let net = net(30, Some(1)).await;
    let logs = net.dir.path().join("first");
    let first = Daemon::start(&net.config_path, &[], &logs);
    healthy(&net).await;
    let nonce_before = net.nonce().await;

    let before_block = net.devnet.rpc.get_block_number().await.unwrap();
    net.crash_weth(-2500).await;
    // Stop mining: the keeper's liquidations stay pending.
    net.devnet.rpc.anvil_set_interval_mining(0).await.unwrap();
    net.devnet.rpc.anvil_set_auto_mine(false).await.unwrap();
    wait_until("the keeper to send", Duration::from_secs(30), async || {
        let pending = net
            .devnet
            .rpc
            .get_transaction_count(KEEPER_ACCOUNT)
            .pending()
            .await
            .unwrap();
        pending > nonce_before
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let output = first.kill();
    assert_no_key(&output);
    let pending_at_kill = net
        .devnet
        .rpc
        .get_transaction_count(KEEPER_ACCOUNT)
        .pending()
        .await
        .unwrap();
    let in_flight = pending_at_kill - nonce_before;
    assert!(in_flight >= 1);

    // Mining resumes; a new process starts on the same store.
    net.devnet.rpc.anvil_set_interval_mining(1).await.unwrap();
    let second = Daemon::start(&net.config_path, &[], &net.dir.path().join("second"));
    healthy(&net).await;
    let restarted = net.devnet.rpc.get_block_number().await.unwrap();
    settled(&net, restarted).await;
    let output = second.stop();
    assert_no_key(&output);
    assert!(
        output.contains("reconciling liquidations journaled before the restart"),
        "{output}"
    );

    let entries = journal(&net.config.store.path, false);
    let sent = net.nonce().await - nonce_before;
    // Every transaction the account sent is in the journal: one entry per liquidation it carries,
    // each borrower once.
    let mut nonces: Vec<u64> = entries.iter().map(|e| e.nonce).collect();
    nonces.dedup();
    assert_eq!(nonces.len() as u64, sent, "{entries:#?}");
    let mut liquidations: Vec<_> = entries.iter().map(|e| (e.nonce, e.borrower)).collect();
    liquidations.sort_unstable();
    liquidations.dedup();
    assert_eq!(liquidations.len(), entries.len());
    // The liquidations in flight at the kill were finished, not sent again: any later liquidation of
    // the same borrower was planned after the first one was mined.
    let events = net.liquidations(before_block).await;
    let journaled_at_kill = entries.iter().filter(|e| e.nonce < pending_at_kill);
    let mut nonces_at_kill: Vec<u64> = journaled_at_kill.clone().map(|e| e.nonce).collect();
    nonces_at_kill.dedup();
    assert_eq!(nonces_at_kill.len() as u64, in_flight);
    for first in journaled_at_kill {
        let TxState::Included { block, .. } = first.state else {
            panic!("not finished after the restart: {first:?}");
        };
        for later in entries
            .iter()
            .filter(|e| e.borrower == first.borrower && e.nonce > first.nonce)
        {
            assert!(
                later.planned_block >= block,
                "{later:?} duplicates {first:?}"
            );
        }
        let same_block = events
            .iter()
            .filter(|(e, b)| e.user == first.borrower && *b == block)
            .count();
        assert_eq!(same_block, 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_liquidates_on_a_fork_and_never_touches_the_chain() {
    let net = net(30, Some(1)).await;
    let daemon = Daemon::start(
        &net.config_path,
        &["--dry-run"],
        &net.dir.path().join("dry"),
    );
    healthy(&net).await;
    let nonce_before = net.nonce().await;
    let before_block = net.devnet.rpc.get_block_number().await.unwrap();
    net.crash_weth(-2500).await;
    let crash_block = net.devnet.rpc.get_block_number().await.unwrap();
    let debt_after_crash = net.health(crash_block).await;
    wait_until(
        "a dry-run liquidation",
        Duration::from_secs(30),
        async || {
            std::fs::read_to_string(net.dir.path().join("dry.log"))
                .unwrap_or_default()
                .contains("dry run: liquidated on the fork")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let output = daemon.stop();
    assert_no_key(&output);

    // Upstream: no transaction from the keeper, no liquidation, no debt repaid.
    assert_eq!(net.nonce().await, nonce_before);
    assert!(net.liquidations(before_block).await.is_empty());
    let now = net.devnet.rpc.get_block_number().await.unwrap();
    for (after, crash) in net.health(now).await.iter().zip(&debt_after_crash) {
        assert!(
            after.debt.0 >= crash.debt.0,
            "{} repaid upstream",
            after.borrower
        );
    }
    // The fork's outcomes are journaled apart, as successes with a profit; none reverted there.
    let entries = journal(&net.config.store.path, true);
    assert!(
        entries
            .iter()
            .all(|e| !matches!(e.state, TxState::Included { success: false, .. })),
        "mined and reverted on the fork: {entries:?}"
    );
    assert!(entries.iter().any(|e| matches!(
        e.state,
        TxState::Included { success: true, profit: Some(p), .. } if p > U256::ZERO
    )));
    assert!(journal(&net.config.store.path, false).is_empty());
}

/// Runs `cascade run` with `config` and `key`, expecting it to fail; returns what it said.
fn refused(config: &Path, key: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args(["run", "--config"])
        .arg(config)
        .env("CASCADE_PRIVATE_KEY", key)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "expected a refusal, it ran:\n{text}");
    assert!(
        !text.contains(key.trim_start_matches("0x")) || key.len() < 16,
        "the key was echoed"
    );
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_exit_non_zero_naming_the_problem() {
    let net = net(4, None).await;
    let dir = net.dir.path();
    let text = std::fs::read_to_string(&net.config_path).unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let with = |name: &str, edit: &dyn Fn(&mut Config)| {
        let mut c = net.config.clone();
        edit(&mut c);
        let p = dir.join(name);
        c.write(&p, "test").unwrap();
        p
    };
    let expect = |config: &Path, key: &str, needles: &[&str]| {
        let said = refused(config, key);
        for n in needles {
            assert!(said.contains(n), "expected {n:?} in:\n{said}");
        }
    };

    let unknown = write(
        "unknown.toml",
        &text.replace("[chain]\n", "[chain]\nbogus = 1\n"),
    );
    expect(&unknown, KEEPER_KEY, &["unknown field", "bogus"]);
    let missing = write(
        "missing.toml",
        &text
            .lines()
            .filter(|l| !l.starts_with("chain_id"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    expect(&missing, KEEPER_KEY, &["missing field", "chain_id"]);
    let malformed = write("malformed.toml", "[chain\nname = ");
    expect(&malformed, KEEPER_KEY, &["invalid"]);

    let wrong_chain = with("chain.toml", &|c| c.chain.chain_id = 1);
    expect(
        &wrong_chain,
        KEEPER_KEY,
        &["chain id mismatch", "31337", "chain_id = 1"],
    );
    // An endpoint that does not answer is waited for (chain.startup_retry_secs), then named.
    let unreachable = with("down.toml", &|c| {
        c.chain.rpc_urls = vec!["http://127.0.0.1:9".into()];
        c.chain.startup_retry_secs = Some(1);
    });
    let waited = Instant::now();
    expect(
        &unreachable,
        KEEPER_KEY,
        &["cannot reach the RPC", "127.0.0.1:9"],
    );
    assert!(waited.elapsed() >= Duration::from_secs(1), "retried first");
    // A fallback URL on another chain is refused even when the first URL is right.
    let other_chain = alloy::node_bindings::Anvil::at(cascade::toolchain::anvil().unwrap())
        .chain_id(5)
        .spawn();
    let mixed = with("mixed.toml", &|c| {
        c.chain.rpc_urls.push(other_chain.endpoint());
    });
    expect(&mixed, KEEPER_KEY, &["chain id mismatch", "chain 5"]);

    let no_code = with("nocode.toml", &|c| {
        c.executor.as_mut().unwrap().liquidator = Address::repeat_byte(0x42)
    });
    expect(&no_code, KEEPER_KEY, &["has no code", "deploy-liquidator"]);
    // A contract that has an owner() but is not this keeper's Liquidator (as the flash-loan one before
    // VERSION was not): the Uniswap V3 factory.
    let factory = net.devnet.deployment.uniswap.factory;
    let old = with("old.toml", &|c| {
        c.executor.as_mut().unwrap().liquidator = factory
    });
    expect(
        &old,
        KEEPER_KEY,
        &[
            "does not speak",
            "VERSION() does not answer",
            "deploy-liquidator",
        ],
    );
    let stranger = with("stranger.toml", &|c| {
        c.executor.as_mut().unwrap().account = STRANGER_ACCOUNT
    });
    expect(
        &stranger,
        STRANGER_KEY,
        &["may not call the Liquidator", "setOperator"],
    );
    expect(
        &net.config_path,
        STRANGER_KEY,
        &["signing key is for", "executor.account"],
    );
    expect(
        &net.config_path,
        "0x1234",
        &["does not parse", "4 hex characters"],
    );

    // An operator with no ETH.
    let empty_key = "0x00000000000000000000000000000000000000000000000000000000000000aa";
    let empty = alloy::signers::local::PrivateKeySigner::from_bytes(&empty_key.parse().unwrap())
        .unwrap()
        .address();
    make_operator(&net.devnet, empty).await;
    let broke = with("broke.toml", &|c| {
        c.executor.as_mut().unwrap().account = empty
    });
    expect(
        &broke,
        empty_key,
        &["less than one liquidation's gas", "fund it"],
    );
}

/// Another keeper outbids ours: it sees our liquidation waiting in the pool and sends the same one
/// (borrower, collateral, debt; all the debt it may cover) straight to the Pool with a higher tip, so
/// the block orders it first. The keeper reports that liquidation lost to the other keeper, naming
/// the winner and how many blocks ahead it was, and counts it.
#[tokio::test(flavor = "multi_thread")]
async fn a_liquidation_taken_by_a_faster_keeper_is_counted_lost() {
    let net = net(30, Some(1)).await;
    let daemon = Daemon::start(&net.config_path, &[], &net.dir.path().join("run"));
    healthy(&net).await;
    let rpc = &net.devnet.rpc;
    let nonce_before = net.nonce().await;

    // Blocks only when the test mines them: the keeper's liquidations wait in the pool.
    rpc.anvil_set_interval_mining(0).await.unwrap();
    rpc.anvil_set_auto_mine(false).await.unwrap();
    let before_block = rpc.get_block_number().await.unwrap();
    net.crash_weth(-2500).await;
    wait_until("the keeper to send", Duration::from_secs(30), async || {
        rpc.get_transaction_count(KEEPER_ACCOUNT)
            .pending()
            .await
            .unwrap()
            > nonce_before
    })
    .await;
    let pending = rpc
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Pending)
        .full()
        .await
        .unwrap()
        .expect("a pending block");
    let ours = pending
        .transactions
        .txns()
        .filter(|t| t.inner.signer() == KEEPER_ACCOUNT)
        .find_map(|t| {
            // Alone, or the first of a batch.
            let input = alloy::consensus::Transaction::input(t);
            Liquidator::liquidateCall::abi_decode(input)
                .map(|c| c.l)
                .ok()
                .or_else(|| {
                    Liquidator::liquidateBatchCall::abi_decode(input)
                        .ok()
                        .and_then(|c| c.ls.into_iter().next())
                })
        })
        .expect("the keeper's liquidation is in the pending block");

    // The other keeper: the debt asset, the Pool allowed to take it, and the liquidation, all with a
    // tip far above ours.
    let d = &net.devnet.deployment;
    let from_stranger = |to: Address, input: Vec<u8>, gas: u64| {
        alloy::rpc::types::TransactionRequest::default()
            .from(STRANGER_ACCOUNT)
            .to(to)
            .input(input.into())
            .gas_limit(gas)
            .max_priority_fee_per_gas(500_000_000_000)
            .max_fee_per_gas(1_000_000_000_000)
    };
    let big = U256::from(10u64).pow(U256::from(30));
    let txs = [
        from_stranger(
            ours.debt,
            MintableERC20::mintCall {
                account: STRANGER_ACCOUNT,
                value: big,
            }
            .abi_encode(),
            200_000,
        ),
        from_stranger(
            ours.debt,
            MintableERC20::approveCall {
                spender: d.aave.pool,
                amount: U256::MAX,
            }
            .abi_encode(),
            200_000,
        ),
        from_stranger(
            d.aave.pool,
            Pool::liquidationCallCall {
                collateralAsset: ours.collateral,
                debtAsset: ours.debt,
                user: ours.borrower,
                debtToCover: U256::MAX,
                receiveAToken: false,
            }
            .abi_encode(),
            2_000_000,
        ),
    ];
    for tx in txs {
        let _pending = rpc.send_transaction(tx).await.unwrap();
    }
    rpc.evm_mine(None).await.unwrap();
    rpc.anvil_set_interval_mining(1).await.unwrap();

    let theirs = net
        .liquidations(before_block)
        .await
        .into_iter()
        .find(|(e, _)| e.user == ours.borrower && e.liquidator == STRANGER_ACCOUNT)
        .expect("the other keeper's liquidation is on chain");
    wait_until(
        "the keeper to count the liquidation lost",
        Duration::from_secs(30),
        async || {
            let Some((_, text)) = scrape(net.metrics_port, "/metrics").await else {
                return false;
            };
            metric(&text, "cascade_liquidations_total{outcome=\"lost\"}") >= 1.0
        },
    )
    .await;
    let output = daemon.stop();
    assert_no_key(&output);
    let lost = output
        .lines()
        .find(|l| {
            l.contains("lost a liquidation to another keeper")
                && l.contains(&ours.borrower.to_string())
        })
        .unwrap_or_else(|| panic!("no report of the lost liquidation:\n{output}"));
    assert!(lost.contains(&STRANGER_ACCOUNT.to_string()), "{lost}");
    assert!(
        lost.contains("blocks_ahead=0") || lost.contains("blocks_ahead=1"),
        "the other keeper was in the block ours was sent for: {lost} (theirs in block {})",
        theirs.1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_price_update_in_the_mempool_is_planned_before_its_block_and_sent_as_it_lands() {
    let mut net = net(50, Some(1)).await;
    // Heads, and the mempool, over anvil's WebSocket (the same port).
    let ws = net.devnet.rpc_url.replacen("http", "ws", 1);
    net.config.chain.rpc_urls.push(ws);
    net.config.write(&net.config_path, "test").unwrap();
    let rpc = &net.devnet.rpc;
    // WETH priced by the fallback PriceOracle: its updates are transactions that wait for a block.
    route_through_fallback(rpc, &net.devnet_config(), &net.weth())
        .await
        .unwrap();
    let daemon = Daemon::start(&net.config_path, &[], &net.dir.path().join("run"));
    healthy(&net).await;
    let sent = async || {
        rpc.get_transaction_count(KEEPER_ACCOUNT)
            .pending()
            .await
            .unwrap()
    };
    let held = |output: &str| output.matches("held for it").count();

    // Blocks only when the test mines them.
    rpc.anvil_set_interval_mining(0).await.unwrap();
    rpc.anvil_set_auto_mine(false).await.unwrap();
    // Sent, then waiting for its block (which the test mines) in a task of its own.
    let shock = |bps: i64| {
        let (rpc, devnet, weth) = (rpc.clone(), net.devnet_config(), net.weth());
        tokio::spawn(async move {
            shock_market_landing(&rpc, &devnet, &weth, PriceMoveBps(bps), Landing::NextBlock)
                .await
                .unwrap()
        })
    };

    // 1. The pending block is mined as it was planned on: the held plans go out at once.
    let nonce_before = sent().await;
    let before_block = rpc.get_block_number().await.unwrap();
    let landed = shock(-2000);
    wait_until(
        "plans held for the pending block",
        Duration::from_secs(30),
        async || held(&daemon.output()) >= 1,
    )
    .await;
    assert_eq!(
        sent().await,
        nonce_before,
        "nothing is sent while the update waits in the mempool"
    );
    rpc.evm_mine(None).await.unwrap();
    landed.await.unwrap();
    let update_block = before_block + 1;
    wait_until(
        "the held liquidations to be sent",
        Duration::from_secs(10),
        async || sent().await > nonce_before,
    )
    .await;
    rpc.evm_mine(None).await.unwrap();
    let output = daemon.output();
    assert!(
        output.contains("sent the liquidations planned on the pending block"),
        "{output}"
    );
    let events = net.liquidations(before_block).await;
    assert!(!events.is_empty(), "the update made positions liquidatable");
    assert!(
        events.iter().all(|(_, block)| *block == update_block + 1),
        "every liquidation is in the block after the update's: {:?}",
        events.iter().map(|(_, b)| b).collect::<Vec<_>>()
    );

    // 2. A block that is not the pending block planned on (a transaction arrived after the plans
    // were made): they are dropped, and the block is planned as it comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nonce_before = sent().await;
    let before_block = rpc.get_block_number().await.unwrap();
    let held_before = held(&daemon.output());
    let landed = shock(-2500);
    wait_until(
        "plans held for the pending block",
        Duration::from_secs(30),
        async || held(&daemon.output()) > held_before,
    )
    .await;
    let _late = rpc
        .send_transaction(
            alloy::rpc::types::TransactionRequest::default()
                .from(STRANGER_ACCOUNT)
                .to(STRANGER_ACCOUNT)
                .value(U256::from(1)),
        )
        .await
        .unwrap();
    rpc.evm_mine(None).await.unwrap();
    landed.await.unwrap();
    wait_until(
        "the block's own liquidations to be sent",
        Duration::from_secs(10),
        async || sent().await > nonce_before,
    )
    .await;
    rpc.evm_mine(None).await.unwrap();
    rpc.anvil_set_interval_mining(1).await.unwrap();
    let output = daemon.stop();
    assert!(
        output.contains("held liquidations dropped: the block is not the pending block"),
        "{output}"
    );
    let events = net.liquidations(before_block).await;
    assert!(
        events.iter().any(|(_, block)| *block == before_block + 2),
        "the update's block is planned when the held plans are dropped: {:?}",
        events.iter().map(|(_, b)| b).collect::<Vec<_>>()
    );
    assert_no_key(&output);
}
