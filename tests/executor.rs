//! The executor on the devnet: a stuck liquidation is replaced with higher fees and exactly one is
//! included when mining resumes; a crash between journaling and sending, or between sending and the
//! receipt, never leads to a second liquidation transaction.

use alloy::{
    primitives::{Address, U256},
    providers::{Provider, ext::AnvilApi},
};
use cascade::{
    devnet::{
        Devnet, DevnetOptions,
        shock::{self, PriceMoveBps},
    },
    executor::{
        journal::{Journal, JournalEntry, TxState},
        signer,
        submit::{ExecError, Executor, ExecutorOptions},
    },
    planner::{Plan, Planner, PlannerSettings},
    protocol::aave_v3::AaveV3,
    store::Store,
    watcher::{Watcher, WatcherOptions},
};
use std::time::Duration;

/// anvil's first dev key (public test material): the devnet's admin and the Liquidator's owner.
const ADMIN_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// The shocked devnet with every liquidatable position sized (not yet built into a transaction).
async fn sized() -> (
    Devnet,
    Planner,
    Watcher<AaveV3>,
    Vec<Plan>,
    Store,
    tempfile::TempDir,
) {
    let net = Devnet::start(&DevnetOptions {
        borrowers: 30,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("devnet did not start: {e:#}"));
    let d = net.deployment.clone();
    let weth = d.asset("WETH").unwrap();
    let feed = weth.devnet_asset();
    shock::shock(&net.rpc, &feed, PriceMoveBps(-2500))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let aave = AaveV3::connect(&net.rpc, d.aave.addresses_provider, d.multicall, None)
        .await
        .unwrap();
    let mut w = Watcher::open(
        aave,
        net.rpc.clone(),
        store.market(d.aave.addresses_provider).unwrap(),
        WatcherOptions {
            deployment_block: d.deployment_block,
            ..Default::default()
        },
    )
    .unwrap();
    w.sync().await.unwrap();
    let settings =
        PlannerSettings::from_config(&d.config(&net.rpc_url, None, dir.path().join("s"))).unwrap();
    let planner = Planner::new(net.rpc.clone(), settings).await.unwrap();
    let mut plans = Vec::new();
    for user in w.liquidatable() {
        let position = w.position(user).cloned().unwrap();
        if let Ok(plan) = planner.size(w.protocol(), user, &position).await {
            plans.push(plan);
        }
    }
    assert!(!plans.is_empty(), "no plan on the shocked devnet");
    (net, planner, w, plans, store, dir)
}

/// One liquidation of the shocked devnet, built and simulated.
async fn planned() -> (Devnet, Plan, Store, tempfile::TempDir) {
    let (net, planner, w, plans, store, dir) = sized().await;
    for plan in plans {
        if let Some(Ok(mut batch)) = planner.finalise_all(vec![plan], w.protocol()).await.pop() {
            return (net, batch.plans.pop().unwrap(), store, dir);
        }
    }
    panic!("no plan simulates on the shocked devnet");
}

async fn executor(net: &Devnet, store: &Store, bump_after: Duration) -> Executor {
    let key = signer::parse_key(ADMIN_KEY, "test").unwrap();
    let journal = Journal::new(store.journal_tree().unwrap()).unwrap();
    Executor::new(
        net.rpc.clone(),
        key,
        journal,
        ExecutorOptions {
            bump_after,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Transactions from `account` in blocks `from..=to`.
async fn sent_by(net: &Devnet, account: Address, from: u64, to: u64) -> usize {
    let mut n = 0;
    for b in from..=to {
        let block = net
            .rpc
            .get_block_by_number(b.into())
            .full()
            .await
            .unwrap()
            .unwrap();
        n += block
            .transactions
            .txns()
            .filter(|t| {
                alloy::consensus::Transaction::to(*t).is_some() && t.inner.signer() == account
            })
            .count();
    }
    n
}

/// Polls until an open entry is final, for at most 30 s of wall time.
async fn polled_until_final(ex: &mut Executor) -> Vec<JournalEntry> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let finished = ex.poll().await.unwrap();
        if !finished.is_empty() {
            return finished;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no receipt 30 s after the journaled transaction was sent: open entries {:?}",
            ex.journal().open().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const CAP: U256 = U256::from_limbs([1_000_000_000_000_000_000, 0, 0, 0]);

#[tokio::test]
async fn stuck_liquidation_is_bumped_and_included_once() {
    let (net, plan, store, _dir) = planned().await;
    let liquidator = net.deployment.liquidator;
    let mut ex = executor(&net, &store, Duration::from_millis(100)).await;
    let start = net.rpc.get_block_number().await.unwrap();
    net.rpc.anvil_set_auto_mine(false).await.unwrap();

    let entry = ex.submit(&plan, liquidator, CAP).await.expect("submit");
    assert!(
        matches!(
            ex.submit(&plan, liquidator, CAP).await,
            Err(ExecError::InFlight(_))
        ),
        "one liquidation per borrower in flight"
    );
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(ex.poll().await.unwrap().is_empty());
    }
    let open = ex.journal().open().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        open[0].attempts.len(),
        3,
        "two replacements while mining was paused"
    );
    // Each replacement raises both fees by exactly `bump_bps` (12.5%) and a wei, under the cap.
    let bumped = |x: u128| x + x * 1_250 / 10_000 + 1;
    for pair in open[0].attempts.windows(2) {
        assert_eq!(pair[1].max_fee_per_gas, bumped(pair[0].max_fee_per_gas));
        assert_eq!(
            pair[1].max_priority_fee_per_gas,
            bumped(pair[0].max_priority_fee_per_gas)
        );
    }

    net.rpc.evm_mine(None).await.unwrap();
    net.rpc.anvil_set_auto_mine(true).await.unwrap();
    let finished = ex.poll().await.unwrap();
    assert_eq!(finished.len(), 1);
    let TxState::Included {
        hash,
        success,
        profit,
        ..
    } = &finished[0].state
    else {
        panic!("{:?}", finished[0].state)
    };
    assert!(
        *success && profit.unwrap_or_default() > U256::ZERO,
        "{:?} (gas limit {})",
        finished[0].state,
        finished[0].gas_limit
    );
    assert_eq!(
        *hash,
        finished[0].attempts.last().unwrap().hash,
        "the highest-fee replacement is the one mined"
    );
    let end = net.rpc.get_block_number().await.unwrap();
    assert_eq!(
        sent_by(&net, ex.address(), start + 1, end).await,
        1,
        "exactly one transaction for the liquidation"
    );
    assert_eq!(entry.nonce, finished[0].nonce);
}

#[tokio::test]
async fn several_liquidations_in_one_transaction_are_journaled_bumped_and_settled_together() {
    let (net, planner, w, plans, store, _dir) = sized().await;
    assert!(plans.len() >= 3, "{} plans", plans.len());
    let plans: Vec<Plan> = plans.into_iter().take(3).collect();
    // Alone, for comparison: the first plan's own gas.
    let alone = planner
        .finalise_all(vec![plans[0].clone()], w.protocol())
        .await
        .pop()
        .unwrap()
        .unwrap();
    let mut batches = planner.finalise_all(plans.clone(), w.protocol()).await;
    assert_eq!(batches.len(), 1, "three plans, one transaction");
    let batch = batches.pop().unwrap().unwrap();
    assert_eq!(batch.plans.len(), 3);
    let gas_each = batch.plans[0].gas_cost_wei / U256::from(batch.plans[0].gas_price_wei);
    let gas_alone = alone.plans[0].gas_cost_wei / U256::from(alone.plans[0].gas_price_wei);
    eprintln!("gas per liquidation: {gas_each} in a batch of three, {gas_alone} alone");
    assert!(
        gas_each * U256::from(10u8) < gas_alone * U256::from(8u8),
        "a batch shares the warm storage: {gas_each} each vs {gas_alone} alone"
    );
    assert_eq!(
        batch.fee_cap_wei,
        batch.plans.iter().map(|p| p.fee_cap_wei).sum::<U256>()
    );

    let mut ex = executor(&net, &store, Duration::from_millis(100)).await;
    let start = net.rpc.get_block_number().await.unwrap();
    net.rpc.anvil_set_auto_mine(false).await.unwrap();
    let entries = ex
        .prepare_all(
            std::slice::from_ref(&batch),
            net.deployment.liquidator,
            None,
        )
        .await
        .unwrap()
        .pop()
        .unwrap()
        .unwrap();
    assert_eq!(entries.len(), 3, "an entry per liquidation");
    assert!(entries.iter().all(|e| e.nonce == entries[0].nonce
        && e.attempts == entries[0].attempts
        && e.gas_limit == batch.gas_limit));
    let sent = ex.send_all(entries).await;
    assert!(sent.iter().all(Result::is_ok));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(ex.poll().await.unwrap().is_empty());
    let open = ex.journal().open().unwrap();
    assert_eq!(open.len(), 3);
    assert!(
        open.iter()
            .all(|e| e.attempts.len() == 2 && e.attempts == open[0].attempts),
        "one replacement, written to every entry: {open:#?}"
    );

    net.rpc.evm_mine(None).await.unwrap();
    net.rpc.anvil_set_auto_mine(true).await.unwrap();
    let finished = polled_until_final(&mut ex).await;
    assert_eq!(finished.len(), 3);
    let receipt = net
        .rpc
        .get_transaction_receipt(open[0].attempts[1].hash)
        .await
        .unwrap()
        .expect("the replacement was mined");
    let mut fees = U256::ZERO;
    for (entry, plan) in finished.iter().zip(&batch.plans) {
        assert_eq!(entry.borrower, plan.borrower);
        let TxState::Included {
            hash,
            success: true,
            profit: Some(profit),
            fee_paid_wei,
            ..
        } = &entry.state
        else {
            panic!("{:?}", entry.state)
        };
        assert_eq!(*hash, receipt.transaction_hash);
        assert!(*profit >= plan.min_profit, "{entry:?}");
        fees += fee_paid_wei;
    }
    assert_eq!(
        fees,
        U256::from(receipt.gas_used) * U256::from(receipt.effective_gas_price),
        "the fee is shared out exactly"
    );
    let end = net.rpc.get_block_number().await.unwrap();
    assert_eq!(sent_by(&net, ex.address(), start + 1, end).await, 1);
    assert!(ex.journal().open().unwrap().is_empty());
}

#[tokio::test]
async fn crash_between_send_and_receipt_never_sends_twice() {
    let (net, plan, store, _dir) = planned().await;
    let liquidator = net.deployment.liquidator;
    let start = net.rpc.get_block_number().await.unwrap();
    net.rpc.anvil_set_auto_mine(false).await.unwrap();
    {
        let mut ex = executor(&net, &store, Duration::from_secs(60)).await;
        ex.submit(&plan, liquidator, CAP).await.unwrap();
        // The process dies here: the transaction is in the node's pool, the receipt never read.
    }
    let mut restarted = executor(&net, &store, Duration::from_secs(60)).await;
    assert!(
        restarted.reconcile().await.unwrap().is_empty(),
        "still pending"
    );
    assert!(matches!(
        restarted.submit(&plan, liquidator, CAP).await,
        Err(ExecError::InFlight(_))
    ));
    net.rpc.evm_mine(None).await.unwrap();
    net.rpc.anvil_set_auto_mine(true).await.unwrap();
    let finished = restarted.poll().await.unwrap();
    assert_eq!(finished.len(), 1);
    assert!(
        matches!(finished[0].state, TxState::Included { success: true, .. }),
        "{:?} (gas limit {})",
        finished[0].state,
        finished[0].gas_limit
    );
    assert_eq!(
        restarted.journal().entries().unwrap().len(),
        1,
        "the journal shows one liquidation"
    );
    let end = net.rpc.get_block_number().await.unwrap();
    assert_eq!(sent_by(&net, restarted.address(), start + 1, end).await, 1);
}

#[tokio::test]
async fn crash_between_journal_and_send_sends_the_journaled_transaction() {
    let (net, plan, store, _dir) = planned().await;
    let liquidator = net.deployment.liquidator;
    let start = net.rpc.get_block_number().await.unwrap();
    let prepared = {
        let mut ex = executor(&net, &store, Duration::from_secs(60)).await;
        ex.prepare(&plan, liquidator, CAP).await.unwrap()
        // The process dies before eth_sendRawTransaction.
    };
    let mut restarted = executor(&net, &store, Duration::from_secs(60)).await;
    let finished = restarted.reconcile().await.unwrap();
    let finished = if finished.is_empty() {
        // anvil's automine mines a moment after eth_sendRawTransaction returns, later still on a
        // loaded machine: wait for the block as the keeper would, one poll after another.
        polled_until_final(&mut restarted).await
    } else {
        finished
    };
    assert_eq!(finished.len(), 1);
    let TxState::Included {
        hash,
        success: true,
        ..
    } = finished[0].state
    else {
        panic!("{:?}", finished[0].state)
    };
    assert_eq!(
        hash, prepared.attempts[0].hash,
        "exactly the journaled transaction, not a new one"
    );
    let end = net.rpc.get_block_number().await.unwrap();
    assert_eq!(sent_by(&net, restarted.address(), start + 1, end).await, 1);
}

#[tokio::test]
async fn the_private_key_never_appears_in_any_output() {
    let net = Devnet::start(&DevnetOptions {
        borrowers: 3,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("devnet did not start: {e:#}"));
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("devnet.toml");
    net.deployment
        .config(&net.rpc_url, None, dir.path().join("store"))
        .write(&config_path, "test")
        .unwrap();
    let run = |key: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cascade"));
        cmd.args(args)
            .env("CASCADE_PRIVATE_KEY", key)
            .env("RUST_LOG", "trace")
            .env("RUST_BACKTRACE", "1");
        let out = cmd.output().expect("run cascade");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let config = config_path.to_str().unwrap();
    // A working key (deploys), and a broken one (one digit short), at the most verbose log level.
    let good = run(ADMIN_KEY, &["deploy-liquidator", "--config", config]);
    assert!(good.contains("Liquidator deployed at"), "{good}");
    let broken = &ADMIN_KEY[..ADMIN_KEY.len() - 1];
    let bad = run(broken, &["deploy-liquidator", "--config", config]);
    assert!(bad.contains("does not parse"), "{bad}");
    for output in [&good, &bad] {
        for secret in [ADMIN_KEY, &ADMIN_KEY[2..], &broken[2..], &ADMIN_KEY[2..20]] {
            assert!(
                !output.contains(secret),
                "key material in the output:\n{output}"
            );
        }
    }
}

#[tokio::test]
async fn a_configured_relay_gets_the_signed_bundle_and_the_mempool_nothing() {
    use cascade::executor::{bundle, submit::Route};
    let (net, plan, store, _dir) = planned().await;
    let (url, relay) = bundle::local_relay().await;
    let auth = alloy::signers::local::PrivateKeySigner::random();
    let mut ex = Executor::new(
        net.rpc.clone(),
        signer::parse_key(ADMIN_KEY, "test").unwrap(),
        Journal::new(store.journal_tree().unwrap()).unwrap(),
        ExecutorOptions {
            route: Route::Relay {
                url,
                auth: auth.clone(),
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let admin = net.deployment.admin;
    let pending_before = net
        .rpc
        .get_transaction_count(admin)
        .pending()
        .await
        .unwrap();
    let head = net.rpc.get_block_number().await.unwrap();
    let entry = ex
        .submit(&plan, net.deployment.liquidator, CAP)
        .await
        .unwrap();

    let (body, signer) = relay.await.unwrap();
    assert_eq!(signer, Some(auth.address()), "signed with the auth key");
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["method"], "eth_sendBundle");
    assert_eq!(
        payload["params"][0]["blockNumber"],
        format!("{:#x}", head + 1),
        "for the next block"
    );
    assert_eq!(
        payload["params"][0]["txs"][0],
        format!("{}", entry.attempts[0].raw),
        "the journaled transaction, exactly"
    );
    assert_eq!(
        net.rpc
            .get_transaction_count(admin)
            .pending()
            .await
            .unwrap(),
        pending_before,
        "nothing went to the public mempool"
    );
}

#[tokio::test]
async fn a_pending_liquidation_whose_position_is_gone_is_cancelled() {
    let (net, plan, store, _dir) = planned().await;
    let mut ex = executor(&net, &store, Duration::from_secs(600)).await;
    let start = net.rpc.get_block_number().await.unwrap();
    net.rpc.anvil_set_auto_mine(false).await.unwrap();
    ex.submit(&plan, net.deployment.liquidator, CAP)
        .await
        .unwrap();
    assert!(
        ex.cancel(plan.borrower, "test: position gone")
            .await
            .unwrap()
    );
    assert!(
        !ex.cancel(plan.borrower, "again").await.unwrap(),
        "a cancellation is not cancelled again"
    );
    net.rpc.anvil_set_auto_mine(true).await.unwrap();
    net.rpc.evm_mine(None).await.unwrap();
    let finished = ex.poll().await.unwrap();
    assert_eq!(finished.len(), 1);
    assert!(
        matches!(finished[0].state, TxState::Cancelled { .. }),
        "{:?}",
        finished[0].state
    );
    let end = net.rpc.get_block_number().await.unwrap();
    assert_eq!(sent_by(&net, net.deployment.admin, start + 1, end).await, 1);
    // The cancellation took the nonce: no liquidation happened.
    let logs = net
        .rpc
        .get_logs(
            &alloy::rpc::types::Filter::new()
                .address(net.deployment.aave.pool)
                .event_signature(
                    <cascade::chain::bindings::Pool::LiquidationCall as alloy::sol_types::SolEvent>::SIGNATURE_HASH,
                )
                .from_block(start + 1),
        )
        .await
        .unwrap();
    assert!(logs.is_empty());
}

#[tokio::test]
async fn nonces_stay_right_with_liquidations_in_flight_and_an_external_transaction() {
    let (net, plan, store, _dir) = planned().await;
    let mut ex = executor(&net, &store, Duration::from_secs(600)).await;
    let admin = net.deployment.admin;
    net.rpc.anvil_set_auto_mine(false).await.unwrap();
    let first = ex
        .prepare(&plan, net.deployment.liquidator, CAP)
        .await
        .unwrap();
    let first = ex.send_prepared(first).await.unwrap();
    // Someone else sends from the same account (an operator's wallet, a script) while ours is pending.
    let external = alloy::rpc::types::TransactionRequest::default()
        .from(admin)
        .to(admin)
        .gas_limit(21_000);
    let external = net.rpc.send_transaction(external).await.unwrap();
    // A second liquidation (another borrower) takes the next free nonce, after both.
    let second_plan = Plan {
        borrower: Address::repeat_byte(0x77),
        ..plan.clone()
    };
    let second = ex
        .prepare(&second_plan, net.deployment.liquidator, CAP)
        .await
        .unwrap();
    assert_eq!(
        second.nonce,
        first.nonce + 2,
        "ours, the external one, then this"
    );
    let mined = net
        .rpc
        .get_transaction_by_hash(*external.tx_hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        alloy::consensus::Transaction::nonce(&mined),
        first.nonce + 1
    );
    net.rpc.anvil_set_auto_mine(true).await.unwrap();
}

/// A block that mines one of ours frees its borrower for planning at once, on the account's nonce
/// at the block, before its receipt is read: its sale no longer counts into its pool, and a new
/// liquidation of the same borrower (a partial close's next step) can be signed. The receipt is read
/// after, and finishes only the mined one.
#[tokio::test]
async fn a_mined_liquidation_frees_its_borrower_before_its_receipt_is_read() {
    let (net, plan, store, _dir) = planned().await;
    let mut ex = executor(&net, &store, Duration::from_secs(600)).await;
    let liquidator = net.deployment.liquidator;
    net.rpc.anvil_set_auto_mine(false).await.unwrap();
    let sent = ex.prepare(&plan, liquidator, CAP).await.unwrap();
    let sent = ex.send_prepared(sent).await.unwrap();
    let before = net.rpc.get_block_number().await.unwrap();
    assert_eq!(ex.note_mined(before).await.unwrap(), sent.nonce);
    assert!(ex.in_flight().unwrap().contains(&plan.borrower));
    assert_eq!(ex.sales_in_flight().unwrap(), vec![plan.sale()]);
    assert!(matches!(
        ex.prepare(&plan, liquidator, CAP).await,
        Err(ExecError::InFlight(b)) if b == plan.borrower
    ));

    net.rpc.evm_mine(None).await.unwrap();
    let mined = net.rpc.get_block_number().await.unwrap();
    assert_eq!(ex.note_mined(mined).await.unwrap(), sent.nonce + 1);
    assert!(ex.in_flight().unwrap().is_empty());
    assert!(ex.sales_in_flight().unwrap().is_empty());
    assert!(
        ex.journal()
            .open_borrowers()
            .unwrap()
            .contains(&plan.borrower),
        "its outcome is not read yet"
    );
    let again = ex
        .prepare(&plan, liquidator, CAP)
        .await
        .expect("the borrower is no longer in flight");
    assert_eq!(again.nonce, sent.nonce + 1);
    assert_eq!(
        ex.journal().open_for(plan.borrower).unwrap().unwrap().nonce,
        again.nonce,
        "the one in flight, not the mined one"
    );

    // An earlier block's count again (a reorg): the mined one is in flight once more.
    ex.note_mined(before).await.unwrap();
    assert!(ex.in_flight().unwrap().contains(&plan.borrower));
    ex.note_mined(mined).await.unwrap();

    let finished = ex.poll().await.unwrap();
    assert_eq!(finished.len(), 1, "{finished:#?}");
    assert_eq!(finished[0].nonce, sent.nonce);
    assert!(
        matches!(finished[0].state, TxState::Included { block, success: true, .. } if block == mined),
        "{:?}",
        finished[0].state
    );
    let open = ex.journal().open().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].nonce, again.nonce);
    net.rpc.anvil_set_auto_mine(true).await.unwrap();
}

/// A block too full for our next transaction: anvil keeps that one queued but drops the one behind
/// it that would have fitted (its nonce ahead of the account's). The executor asks the node after
/// such a block and sends the forgotten one again at once, so it follows the next into the coming
/// block instead of waiting a block more for a "not mined although there was room".
#[tokio::test]
async fn a_transaction_the_node_forgot_behind_a_full_block_goes_in_the_next_block() {
    let (net, planner, w, plans, store, _dir) = sized().await;
    assert!(plans.len() >= 4, "{} plans", plans.len());
    let one = |plan: &Plan| {
        let (planner, w, plan) = (&planner, &w, plan.clone());
        async move {
            planner
                .finalise_all(vec![plan], w.protocol())
                .await
                .pop()
                .unwrap()
                .unwrap()
        }
    };
    let first = one(&plans[0]).await;
    let mut pair = planner
        .finalise_all(plans[1..3].to_vec(), w.protocol())
        .await;
    assert_eq!(pair.len(), 1, "two plans, one transaction");
    let pair = pair.pop().unwrap().unwrap();
    let last = one(&plans[3]).await;
    // Gas limits: the pair's must exceed the single one's by enough to tell them apart below.
    assert!(
        pair.gas_limit > last.gas_limit + 100_000,
        "{} vs {}",
        pair.gas_limit,
        last.gas_limit
    );

    let mut ex = executor(&net, &store, Duration::from_secs(600)).await;
    net.rpc.anvil_set_auto_mine(false).await.unwrap();
    let batches = [first.clone(), pair.clone(), last.clone()];
    let entries: Vec<JournalEntry> = ex
        .prepare_all(&batches, net.deployment.liquidator, None)
        .await
        .unwrap()
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    let first_nonce = entries[0].nonce;
    assert!(ex.send_all(entries).await.iter().all(Result::is_ok));
    // A block with room for the first transaction and then for the last but not for the pair.
    let first_gas =
        (first.plans[0].gas_cost_wei / U256::from(first.plans[0].gas_price_wei)).to::<u64>();
    let block_gas = first_gas + (pair.gas_limit + last.gas_limit) / 2;
    net.rpc.anvil_set_block_gas_limit(block_gas).await.unwrap();
    // Mines a block a second after the sends (so that they were sent before it, by its timestamp);
    // returns it and the account's nonce after it.
    let account = ex.address();
    let mine = || async {
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        net.rpc.evm_mine(None).await.unwrap();
        let block = net.rpc.get_block_number().await.unwrap();
        let nonce = net
            .rpc
            .get_transaction_count(account)
            .block_id(block.into())
            .await
            .unwrap();
        (block, nonce)
    };
    let (full, nonce) = mine().await;
    assert_eq!(
        nonce,
        first_nonce + 1,
        "only the first fitted the full block"
    );
    let forgotten = ex.journal().open().unwrap();
    let forgotten = forgotten
        .iter()
        .find(|e| e.nonce == first_nonce + 2)
        .unwrap();
    assert!(
        net.rpc
            .get_transaction_by_hash(forgotten.attempts[0].hash)
            .await
            .unwrap()
            .is_none(),
        "anvil dropped the transaction queued behind the one that did not fit"
    );

    net.rpc.anvil_set_block_gas_limit(30_000_000).await.unwrap();
    assert_eq!(ex.poll().await.unwrap().len(), 1, "the first is final");
    let (next, nonce) = mine().await;
    assert_eq!(
        nonce,
        first_nonce + 3,
        "the pair and the one the node forgot are in the block after the full one"
    );
    net.rpc.anvil_set_auto_mine(true).await.unwrap();
    let finished = polled_until_final(&mut ex).await;
    assert!(
        finished
            .iter()
            .all(|e| matches!(e.state, TxState::Included { .. })),
        "{finished:#?}"
    );
    assert_eq!(sent_by(&net, ex.address(), full, next).await, 3);
}
