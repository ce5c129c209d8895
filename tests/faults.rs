//! The keeper through an endpoint that fails: `cascade run` with `chain.rpc_urls` pointed at the
//! fault proxy (`devnet::fault_proxy`) in front of the devnet, while WETH falls in steps. A fifth of
//! requests failing still liquidates what a clean run does and leaves no profitable position below
//! 1; half of them failing, the keeper stays up and still liquidates; an endpoint that vanishes for
//! 20 s is followed again within two blocks of its return, and `/health` says stale meanwhile; and
//! kills at random moments never send a liquidation twice, never mine a revert and never leave a
//! nonce behind.
//!
//! CI runs a short version of each. `make faults` runs the full campaign (`CASCADE_FAULT_CAMPAIGN=full`:
//! more borrowers, a clean run to compare with, 30 kills) and prints the figures.
//!
//! Needs the pinned toolchain (`make toolchain`); without it these tests fail and say so.

mod common;

use alloy::{primitives::Address, providers::Provider};
use cascade::{
    devnet::{
        fault_proxy::{FaultKind, FaultPlan, FaultProxy},
        shock::{self, PriceMoveBps},
    },
    executor::journal::TxState,
    planner::{PlanError, Planner, PlannerSettings},
    store::Store,
};
use common::daemon::*;
use std::time::{Duration, Instant};

/// The full campaign, or CI's short one.
fn full() -> bool {
    std::env::var("CASCADE_FAULT_CAMPAIGN").is_ok_and(|v| v == "full")
}

/// Borrowers on the devnet.
fn borrowers() -> u64 {
    if full() { 200 } else { 60 }
}

/// Points the keeper of `net` at `url` (the proxy), keeping its other settings.
fn through(net: &mut Net, url: &str) {
    net.config.chain.rpc_urls = vec![url.to_owned()];
    net.config.write(&net.config_path, "test").unwrap();
}

/// WETH falls `steps` times by `bps`, `every` apart (oracle and pools together, as arbitrage does).
/// WETH falls `bps` `steps` times, `every` apart. The blocks the falls landed in.
async fn fall(net: &Net, steps: u32, bps: i64, every: Duration) -> Vec<u64> {
    let mut blocks = Vec::new();
    for _ in 0..steps {
        blocks.push(crash_weth_in(net, bps).await);
        tokio::time::sleep(every).await;
    }
    blocks
}

/// WETH falls `bps`; the block the fall landed in.
async fn crash_weth_in(net: &Net, bps: i64) -> u64 {
    net.crash_weth(bps).await;
    net.devnet.rpc.get_block_number().await.unwrap()
}

/// What a run did, read from the chain and the journal once it is over.
#[derive(Debug, Default)]
struct RunFigures {
    liquidations: usize,
    /// Positions below 1 that a plan made now would still liquidate at a profit.
    profitable_left: usize,
    /// Our transactions mined and reverted outside the blocks a fall landed in. In such a block the
    /// fall's arbitrage goes first (it pays a high tip) and can leave a pool paying less than a
    /// liquidation sent for the block before needs: a race no plan can win, which the keeper's own
    /// minimum profit turns into a cheap revert rather than a loss.
    reverted: usize,
    /// Our transactions mined and reverted in a block a fall landed in.
    reverted_in_falls: usize,
    /// Our transactions still pending (a nonce gap holds them back).
    stuck: u64,
    /// Blocks the keeper was behind the head, sampled while prices fell, sorted.
    lag_blocks: Vec<u64>,
}

impl RunFigures {
    /// The median and the largest lag sampled.
    fn lag(&self) -> (u64, u64) {
        let at = |i: usize| self.lag_blocks.get(i).copied().unwrap_or(0);
        (
            at(self.lag_blocks.len() / 2),
            at(self.lag_blocks.len().saturating_sub(1)),
        )
    }
}

async fn figures(net: &Net, from_block: u64, falls: &[u64]) -> RunFigures {
    let events = net.liquidations(from_block).await;
    let entries = journal(&net.config.store.path, false);
    let reverted_at: Vec<u64> = entries
        .iter()
        .filter_map(|e| match e.state {
            TxState::Included {
                success: false,
                block,
                ..
            } => Some(block),
            _ => None,
        })
        .collect();
    let reverted_in_falls = reverted_at.iter().filter(|b| falls.contains(b)).count();
    let reverted = reverted_at.len() - reverted_in_falls;
    let pending = net
        .devnet
        .rpc
        .get_transaction_count(KEEPER_ACCOUNT)
        .pending()
        .await
        .unwrap();
    let mined = net.nonce().await;
    // A clean planner on the chain as it is now.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let mut watcher = common::watcher(&net.devnet, &store, &Default::default()).await;
    watcher.sync().await.unwrap();
    let settings = PlannerSettings::from_config(&net.config).unwrap();
    let planner = Planner::new(net.devnet.rpc.clone(), settings)
        .await
        .unwrap();
    let mut profitable_left = 0;
    for user in watcher.liquidatable() {
        let position = watcher.position(user).cloned().unwrap();
        match planner.plan(watcher.protocol(), user, &position).await {
            Ok(plan) => {
                eprintln!(
                    "left below 1 with a profitable plan: {user} (${:.2})",
                    plan.net_profit_base as f64 / 1e8
                );
                profitable_left += 1;
            }
            Err(PlanError::Refused(_)) => {}
            Err(e) => panic!("planning {user}: {e}"),
        }
    }
    RunFigures {
        liquidations: events.len(),
        profitable_left,
        reverted,
        reverted_in_falls,
        stuck: pending - mined,
        lag_blocks: Vec::new(),
    }
}

/// A block whose sync fails after its market was read (its logs did not come) is tried again; the
/// price move the first try read must still re-price the positions it moved, though the market read
/// again sees nothing new.
#[tokio::test(flavor = "multi_thread")]
async fn a_price_move_read_in_a_block_that_failed_is_applied_when_it_is_tried_again() {
    let net = common::devnet(40).await;
    let proxy = FaultProxy::start(
        &net.rpc_url,
        "127.0.0.1:0".parse().unwrap(),
        FaultPlan {
            rate: 0.0,
            // Late: the market's read, sent beside the logs, has come back by then.
            kinds: vec![FaultKind::Http504],
            delay: (Duration::from_millis(500), Duration::from_millis(600)),
            methods: vec!["eth_getLogs".to_owned()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), false).unwrap();
    let mut watcher = common::watcher_via(&net, &proxy.url(), &store, &Default::default()).await;
    watcher.sync().await.unwrap();
    assert!(watcher.liquidatable().is_empty(), "healthy before the fall");

    shock::shock(&net.rpc, &common::asset(&net, "WETH"), PriceMoveBps(-2500))
        .await
        .unwrap();
    proxy.set_rate(1.0);
    let failed = watcher.sync().await;
    assert!(failed.is_err(), "the block's logs failed: {failed:?}");
    proxy.set_rate(0.0);
    watcher.sync().await.unwrap();

    let chain = common::assert_health_matches_chain(&net, &watcher).await;
    let below: Vec<Address> = chain
        .iter()
        .filter(|(_, h)| h.0 < cascade::units::WAD)
        .map(|(user, _)| *user)
        .collect();
    assert!(!below.is_empty(), "the fall takes positions below 1");
    let mut seen = watcher.liquidatable();
    seen.sort_unstable();
    assert_eq!(seen, below);
}

/// A run of the keeper through a proxy failing `rate` of the requests while WETH falls 3% six times,
/// then a settling time with the faults over. The figures, and the proxy's.
async fn run_with_faults(
    rate: f64,
    seed: u64,
) -> (RunFigures, cascade::devnet::fault_proxy::FaultStats) {
    let mut net = net_on(borrowers(), Some(1), Default::default()).await;
    let proxy = FaultProxy::start(
        &net.devnet.rpc_url,
        "127.0.0.1:0".parse().unwrap(),
        FaultPlan {
            rate,
            seed,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    through(&mut net, &proxy.url());
    let daemon = Daemon::start(&net.config_path, &[], &net.dir.path().join("run"));
    // Start-up retries what fails; healthy once following.
    let started = Instant::now();
    while !matches!(scrape(net.metrics_port, "/health").await, Some((200, _))) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the daemon did not follow the chain within 120 s:\n{}",
            daemon.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let from = net.devnet.rpc.get_block_number().await.unwrap();
    // How far behind the head the keeper is while WETH falls, sampled from its /health.
    let (falls, lags) = tokio::join!(fall(&net, 6, -300, Duration::from_secs(3)), async {
        let mut lags = Vec::new();
        let until = Instant::now() + Duration::from_secs(18);
        while Instant::now() < until {
            let head = net.devnet.rpc.get_block_number().await.unwrap();
            if let (_, Some(block)) = keeper_block(&net).await {
                lags.push(head.saturating_sub(block));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        lags
    });
    // The faults end; the keeper finishes what the falls left.
    proxy.set_rate(0.0);
    let last_fall = net.devnet.rpc.get_block_number().await.unwrap();
    settled(&net, last_fall).await;
    let output = daemon.stop();
    assert_no_key(&output);
    for line in output.lines().filter(|l| l.contains("reverted")) {
        eprintln!("{line}");
    }
    let mut figures = figures(&net, from, &falls).await;
    figures.lag_blocks = lags;
    figures.lag_blocks.sort_unstable();
    (figures, proxy.stats())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifth_of_requests_failing_leaves_no_profitable_position_below_1() {
    let (faulty, stats) = run_with_faults(0.2, 7).await;
    eprintln!("20% faults: {faulty:?}; proxy {stats:?}");
    assert!(
        stats.faulted.values().sum::<u64>() > 20,
        "the proxy failed requests: {stats:?}"
    );
    assert!(faulty.liquidations > 0);
    assert_eq!(faulty.profitable_left, 0, "{faulty:?}");
    assert_eq!(faulty.reverted, 0, "{faulty:?}");
    assert_eq!(
        faulty.stuck, 0,
        "nothing held behind a nonce gap: {faulty:?}"
    );
    if full() {
        let (clean, _) = run_with_faults(0.0, 7).await;
        let share = faulty.liquidations as f64 / clean.liquidations.max(1) as f64;
        println!("{}", figures_row("0%", &clean, None));
        println!("{}", figures_row("20%", &faulty, Some(&clean)));
        assert!(share >= 0.95, "{share}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn half_of_requests_failing_the_keeper_stays_up_and_liquidates() {
    let (faulty, stats) = run_with_faults(0.5, 11).await;
    eprintln!("50% faults: {faulty:?}; proxy {stats:?}");
    assert!(faulty.liquidations > 0, "{faulty:?}");
    assert_eq!(faulty.reverted, 0, "{faulty:?}");
    assert_eq!(faulty.stuck, 0, "{faulty:?}");
    if full() {
        println!("{}", figures_row("50%", &faulty, None));
    }
}

/// A row of the fault table: rate, liquidations (and their share of a clean run's), positions left
/// that would pay, the keeper's lag behind the head (median / max blocks), reverts outside and inside
/// the falls' blocks, transactions stuck.
fn figures_row(rate: &str, run: &RunFigures, clean: Option<&RunFigures>) -> String {
    let share = clean.map_or(String::new(), |c| {
        format!(
            " ({:.0}% of the clean run's)",
            100.0 * run.liquidations as f64 / c.liquidations.max(1) as f64
        )
    });
    let (median, max) = run.lag();
    format!(
        "| {rate} | {}{share} | {} | {median} / {max} | {} ({} in a fall's block) | {} |",
        run.liquidations, run.profitable_left, run.reverted, run.reverted_in_falls, run.stuck
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_vanishes_is_followed_again_within_two_blocks_of_its_return() {
    let mut net = net_on(20, Some(1), Default::default()).await;
    let proxy = FaultProxy::start(
        &net.devnet.rpc_url,
        "127.0.0.1:0".parse().unwrap(),
        FaultPlan {
            rate: 0.0,
            kinds: FaultKind::ALL.to_vec(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    through(&mut net, &proxy.url());
    let daemon = Daemon::start(&net.config_path, &[], &net.dir.path().join("run"));
    healthy(&net).await;

    let outage = Duration::from_secs(20);
    proxy.outage(outage);
    let gone = Instant::now();
    // Blind: /health says so within a few block times.
    wait_until(
        "/health to say stale",
        Duration::from_secs(10),
        async || keeper_block(&net).await.0 == 503,
    )
    .await;
    let stale_after = gone.elapsed();
    tokio::time::sleep(outage.saturating_sub(gone.elapsed())).await;
    let back = net.devnet.rpc.get_block_number().await.unwrap();
    let returned = Instant::now();
    wait_until(
        "the keeper to follow the chain again",
        Duration::from_secs(30),
        async || keeper_block(&net).await.1.is_some_and(|b| b >= back),
    )
    .await;
    let resumed_after = returned.elapsed();
    let head = net.devnet.rpc.get_block_number().await.unwrap();
    daemon.stop();
    eprintln!(
        "outage of {outage:?}: /health stale after {stale_after:?}; following again {resumed_after:?} after the return (chain at {head}, back at {back})"
    );
    assert!(
        head <= back + 2,
        "the chain was at {back} on return, {head} when followed"
    );
    assert!(stale_after <= Duration::from_secs(6), "{stale_after:?}");
}

/// A kill campaign: the keeper killed (SIGKILL) at random moments while WETH falls, restarted each
/// time; then stopped cleanly and left to settle. Kills land between journal and send and between
/// send and receipt among others; every transaction the account sent must be in the journal once,
/// none reverted, none left queued behind a nonce.
#[tokio::test(flavor = "multi_thread")]
async fn kills_at_random_moments_never_duplicate_revert_or_leave_a_gap() {
    let kills = if full() { 30 } else { 6 };
    let net = net_on(borrowers(), Some(1), Default::default()).await;
    let from = net.devnet.rpc.get_block_number().await.unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut prepared_at_kill, mut sent_at_kill) = (0, 0);
    let mut falls = Vec::new();
    for k in 0..kills {
        let daemon = Daemon::start(
            &net.config_path,
            &[],
            &net.dir.path().join(format!("run{k}")),
        );
        healthy(&net).await;
        if k % 2 == 0 {
            falls.push(crash_weth_in(&net, -200).await);
        }
        // Somewhere in the plan-sign-journal-send-receipt path of that fall, or later.
        tokio::time::sleep(Duration::from_millis(next() % 1_500)).await;
        let output = daemon.kill();
        assert_no_key(&output);
        let open: Vec<_> = journal(&net.config.store.path, false)
            .into_iter()
            .filter(|e| !e.state.is_final())
            .collect();
        prepared_at_kill += open.iter().filter(|e| e.state == TxState::Prepared).count();
        sent_at_kill += open.iter().filter(|e| e.state == TxState::Sent).count();
    }
    // A last run settles what the kills left in flight.
    let daemon = Daemon::start(&net.config_path, &[], &net.dir.path().join("last"));
    healthy(&net).await;
    let restarted = net.devnet.rpc.get_block_number().await.unwrap();
    settled(&net, restarted).await;
    daemon.stop();

    let entries = journal(&net.config.store.path, false);
    assert!(entries.iter().all(|e| e.state.is_final()), "settled");
    // Every transaction of the account, mined, is one journaled transaction.
    let mined = net.nonce().await;
    let mut journaled: Vec<(u64, Address)> =
        entries.iter().map(|e| (e.nonce, e.borrower)).collect();
    journaled.sort();
    let before = journaled.len();
    journaled.dedup();
    assert_eq!(
        journaled.len(),
        before,
        "an entry per liquidation, none twice"
    );
    let nonces: std::collections::BTreeSet<u64> = entries.iter().map(|e| e.nonce).collect();
    assert_eq!(
        nonces.len() as u64,
        mined,
        "every nonce the account used is a journaled transaction, and every journaled one was mined"
    );
    let figures = figures(&net, from, &falls).await;
    eprintln!(
        "{kills} kills: {} liquidations; open at a kill: {prepared_at_kill} journaled not sent, {sent_at_kill} sent not mined; {figures:?}",
        figures.liquidations
    );
    // One liquidation per borrower per LiquidationCall, none of them twice for one plan.
    let events = net.liquidations(from).await;
    let won = entries
        .iter()
        .filter(|e| matches!(e.state, TxState::Included { success: true, .. }))
        .count();
    assert_eq!(won, events.len());
    assert_eq!(figures.reverted, 0, "no revert caused by a restart");
    assert_eq!(figures.stuck, 0, "no nonce gap");
    if full() {
        println!(
            "| {kills} kills | {} liquidations | 0 duplicates | {} reverted | {} stuck | {prepared_at_kill} + {sent_at_kill} |",
            figures.liquidations, figures.reverted, figures.stuck
        );
    }
}
