//! `cascade bench`: the keeper's speed and cost at N borrowers, measured on its own devnet side by side
//! with the sweep peers use (`getUserAccountData` for every borrower, batched 100 to an `aggregate3`,
//! every block) and against the loopback RPC round trip.
//!
//! Seeding is not timed. Then, in order: discovery from an empty store; restart catch-up from the warm
//! store after blocks were missed; idle blocks (requests at the transport, wall and re-pricing CPU time);
//! a price change; the sweep over the same blocks; and K price shocks followed by the keeper itself,
//! timing each liquidation from the block's arrival to `eth_sendRawTransaction` returning.

use crate::{
    chain::{self, bindings::Liquidator, metered::RpcMeter, send_call},
    cli::run::run_keeper,
    devnet::{
        Devnet, DevnetOptions, report,
        shock::{self, Landing, PriceMoveBps},
    },
    keeper::{
        OutcomeKind,
        startup::{self, RunOptions},
    },
    protocol::aave_v3::AaveV3,
    store::Store,
    watcher::{SyncReport, Watcher, WatcherOptions},
};
use alloy::{
    eips::BlockId,
    primitives::{Address, address},
    providers::{Provider, ext::AnvilApi},
    sol_types::SolEvent,
};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use eyre::WrapErr;
use serde::Serialize;
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// anvil's second dev account and its published key (test material): the bench keeper's account.
const BENCH_KEEPER: Address = address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
const BENCH_KEEPER_KEY: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// Arguments of `cascade bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Borrowers to seed.
    #[arg(long, default_value_t = 10_000)]
    pub borrowers: u64,
    /// The Aave the devnet deploys: 3.6 (from its sources) or 3.0 (from its artifacts).
    #[arg(long, value_name = "VERSION", default_value = "3.6")]
    pub aave: crate::devnet::aave::DevnetAave,
    /// Price shocks for the detection-to-submission figures.
    #[arg(long, default_value_t = 5)]
    pub shocks: u32,
    /// Each shock moves WETH by this much, in percent: the default is one Chainlink ETH/USD update on
    /// Ethereum, whose deviation threshold is 0.5%. Shocks go on until `--shocks` of them made
    /// positions liquidatable.
    #[arg(long, allow_hyphen_values = true, default_value = "-0.5")]
    pub shock_pct: PriceMoveBps,
    /// Idle blocks to average over.
    #[arg(long, default_value_t = 10)]
    pub blocks: u32,
    /// Gas a block holds (default: anvil's 30,000,000; Ethereum's is 60,000,000; at least 1,000,000):
    /// how many of a cascade's liquidations fit the first block after the update.
    #[arg(long, value_name = "GAS", value_parser = clap::value_parser!(u64).range(1_000_000..))]
    pub block_gas_limit: Option<u64>,
    /// Also write the figures here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The figures, in the units their names say.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchReport {
    /// Borrowers seeded.
    pub borrowers: u64,
    /// The Aave release of the market.
    pub aave: String,
    /// Positions the watcher found (with debt).
    pub positions: usize,
    /// Empty store to every borrower known.
    pub discovery_ms: f64,
    /// Warm store, blocks missed, to caught up.
    pub restart_catchup_ms: f64,
    /// Blocks missed before the restart.
    pub restart_missed_blocks: u64,
    /// JSON-RPC requests per block with no activity (at the transport).
    pub rpc_requests_per_block_idle: f64,
    /// The same in the block with a price change.
    pub rpc_requests_per_block_price_change: f64,
    /// CPU time re-pricing the positions a price change touches.
    pub reprice_cpu_ms: f64,
    /// Positions re-priced after the price change.
    pub repriced_after_price_change: usize,
    /// CPU time re-pricing every position (a full re-price).
    pub reprice_all_cpu_ms: f64,
    /// Our wall time per idle block (sync to the new head).
    pub ours_ms_per_block: f64,
    /// The sweep's wall time per block.
    pub sweep_ms_per_block: f64,
    /// The sweep's requests per block.
    pub sweep_requests_per_block: f64,
    /// sweep_ms_per_block / ours_ms_per_block.
    pub sweep_ratio: f64,
    /// Loopback `eth_blockNumber` round trip, median.
    pub rpc_rtt_ms: f64,
    /// Liquidations timed from the block's arrival to the send returning.
    pub liquidations: usize,
    /// p50 of detection to submission.
    pub detect_to_send_ms_p50: f64,
    /// p99.
    pub detect_to_send_ms_p99: f64,
    /// max.
    pub detect_to_send_ms_max: f64,
    /// Of those, the ones planned on the pending block while their price update waited in the
    /// mempool, and sent when it was mined.
    pub liquidations_planned_ahead: usize,
    /// Liquidations mined but reverted (gas spent, nothing earned).
    pub liquidations_reverted: usize,
    /// Price shocks sent, including those that made nothing liquidatable.
    pub shocks_sent: u32,
    /// Share of the positions the price updates took below 1 whose first liquidation was included
    /// in the block after the update.
    pub first_block_inclusion_pct: f64,
    /// Liquidations of a position after its first one (what a partial liquidation left below 1).
    pub liquidations_later_rounds: usize,
    /// Positions whose first liquidation was planned after the block they crossed in: they did not
    /// pay then (unprofitable at that price, or their pool no longer paying after that block's
    /// earlier sales), and a later move made them pay.
    pub liquidations_paying_later: usize,
    /// Share of the same positions whose first liquidation was in the first block after the update
    /// that had room for it: every block before it was full for us (less gas left than the limit of
    /// the next of ours in nonce order), filled by the cascade's earlier liquidations and the
    /// arbitrage. The difference from `first_block_inclusion_pct` is the chain's capacity; what
    /// this misses is the keeper's.
    pub first_block_with_room_pct: f64,
    /// Gas a block held in the run (its last block's limit).
    pub block_gas_limit: u64,
    /// Gas used by one of our liquidations, median (a transaction's gas shared among those it
    /// carries).
    pub liquidation_gas_p50: u64,
    /// Peak resident memory of this process after seeding (discovery, the watcher, the sweep, the
    /// keeper).
    pub peak_rss_mb: f64,
    /// The store's size on disk.
    pub store_bytes: u64,
    /// The cascade map of every position (51 steps to −50% WETH, pass-through 1), ms.
    pub map_ms: f64,
    /// Its most feedback rounds at a step.
    pub map_max_rounds: u32,
    /// Resident memory when seeding was done (the devnet's deployment still held), MB: the floor of
    /// `peak_rss_mb`.
    pub rss_after_seeding_mb: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Starts the peak resident set size over (Linux: writing 5 to `clear_refs` resets `VmHWM`), so that
/// the figure is the keeper's, not the seeding's (compiled artifacts, thousands of seeding
/// transactions). Says whether it could.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size (VmHWM), MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs `cascade bench`.
pub async fn run(args: Args) -> eyre::Result<()> {
    let report = bench(&args).await?;
    println!("{}", table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .wrap_err_with(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    Ok(())
}

/// Runs the benchmark and returns its figures.
pub async fn bench(args: &Args) -> eyre::Result<BenchReport> {
    eprintln!("seeding {} borrowers (not timed)…", args.borrowers);
    let devnet = Devnet::start(&DevnetOptions {
        borrowers: args.borrowers,
        aave: args.aave,
        block_gas_limit: args.block_gas_limit,
        ..Default::default()
    })
    .await?;
    eprintln!("seeded in {:.1} s", devnet.setup_secs);
    let mut out = BenchReport {
        borrowers: args.borrowers,
        aave: args.aave.release().to_string(),
        ..Default::default()
    };
    if !reset_peak_rss() {
        eprintln!("could not reset the peak RSS: the figure includes the seeding");
    }
    out.rss_after_seeding_mb = peak_rss_mb();
    let d = devnet.deployment.clone();
    let dir = tempfile::tempdir()?;
    let meter = RpcMeter::default();
    let rpc = chain::connect_http_metered(&devnet.rpc_url, &meter)?;
    let opts = WatcherOptions {
        deployment_block: d.deployment_block,
        ..Default::default()
    };
    let open = |store: &Store| -> eyre::Result<_> { Ok(store.market(d.aave.addresses_provider)?) };

    // Discovery from an empty store.
    let store = Store::open(&dir.path().join("store"), false)?;
    let aave = AaveV3::connect(&rpc, d.aave.addresses_provider, d.multicall, None).await?;
    let mut watcher = Watcher::open(aave, rpc.clone(), open(&store)?, opts.clone())?;
    let started = Instant::now();
    watcher.sync().await?;
    out.discovery_ms = ms(started.elapsed());
    out.positions = watcher.len();
    tracing::info!(peak_rss_mb = peak_rss_mb(), "after discovery");

    // Restart: blocks pass while the watcher is down.
    drop(watcher);
    out.restart_missed_blocks = 6;
    for _ in 0..out.restart_missed_blocks {
        devnet.rpc.evm_mine(None).await?;
    }
    let started = Instant::now();
    let aave = AaveV3::connect(&rpc, d.aave.addresses_provider, d.multicall, None).await?;
    let mut watcher = Watcher::open(aave, rpc.clone(), open(&store)?, opts.clone())?;
    watcher.sync().await?;
    out.restart_catchup_ms = ms(started.elapsed());
    tracing::info!(peak_rss_mb = peak_rss_mb(), "after the restart");

    // Idle blocks.
    let mut idle_requests = 0;
    let mut idle_wall = Duration::ZERO;
    for _ in 0..args.blocks {
        devnet.rpc.evm_mine(None).await?;
        let before = meter.snapshot();
        let started = Instant::now();
        watcher.sync().await?;
        idle_wall += started.elapsed();
        idle_requests += meter.snapshot().since(&before).total_calls();
    }
    out.rpc_requests_per_block_idle = idle_requests as f64 / f64::from(args.blocks);
    out.ours_ms_per_block = ms(idle_wall) / f64::from(args.blocks);

    // A price change: WETH −1% (feed only, so nothing becomes liquidatable by it).
    let weth = d
        .asset("WETH")
        .map(|a| a.devnet_asset())
        .ok_or_else(|| eyre::eyre!("no WETH on the devnet"))?;
    shock::shock(&devnet.rpc, &weth, PriceMoveBps(-100)).await?;
    let before = meter.snapshot();
    let report: SyncReport = watcher.sync().await?;
    out.rpc_requests_per_block_price_change = meter.snapshot().since(&before).total_calls() as f64;
    out.reprice_cpu_ms = ms(report.reprice_time);
    out.repriced_after_price_change = report.repriced;
    out.reprice_all_cpu_ms = ms(watcher.reprice_all());

    // The sweep, over as many blocks, measured as ours is: from the poll that finds the new head to
    // every borrower's health read at it.
    let sweep_meter = RpcMeter::default();
    let sweep_rpc = chain::connect_http_metered(&devnet.rpc_url, &sweep_meter)?;
    let mut sweep_wall = Duration::ZERO;
    let before = sweep_meter.snapshot();
    for _ in 0..args.blocks {
        devnet.rpc.evm_mine(None).await?;
        let started = Instant::now();
        let head = sweep_rpc
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await?
            .ok_or_else(|| eyre::eyre!("the node has no latest block"))?;
        report::account_health(
            &sweep_rpc,
            d.multicall,
            d.aave.pool,
            &d.borrowers,
            BlockId::hash(head.header.hash),
        )
        .await?;
        sweep_wall += started.elapsed();
    }
    out.sweep_requests_per_block =
        sweep_meter.snapshot().since(&before).total_calls() as f64 / f64::from(args.blocks);
    out.sweep_ms_per_block = ms(sweep_wall) / f64::from(args.blocks);
    out.sweep_ratio = out.sweep_ms_per_block / out.ours_ms_per_block.max(1e-6);
    tracing::info!(peak_rss_mb = peak_rss_mb(), "after the sweep");

    // Loopback round trip.
    let mut rtts = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        devnet.rpc.get_block_number().await?;
        rtts.push(ms(started.elapsed()));
    }
    rtts.sort_by(f64::total_cmp);
    out.rpc_rtt_ms = percentile(&rtts, 50.0);
    out.store_bytes = store.size_on_disk();

    // The cascade map of every position: WETH falling to −50% in 1% steps, the oracle following
    // the pools fully.
    let (map_ms, map_rounds) = map_figures(&devnet, &watcher).await?;
    out.map_ms = map_ms;
    out.map_max_rounds = map_rounds;
    drop(watcher);
    drop(store);

    // The keeper through K shocks, with 1-second blocks.
    shocks(&devnet, args.shocks, args.shock_pct, dir.path(), &mut out).await?;
    out.peak_rss_mb = peak_rss_mb();
    Ok(out)
}

/// The map of `watcher`'s positions on the devnet: its compute time (ms, the venues already read)
/// and its most rounds at a step.
async fn map_figures(
    devnet: &Devnet,
    watcher: &crate::watcher::Watcher<AaveV3>,
) -> eyre::Result<(f64, u32)> {
    let d = &devnet.deployment;
    let config = d.config(&devnet.rpc_url, None, std::path::PathBuf::from("unused"));
    let snapshot = super::map::snapshot_of(&config, watcher).await?;
    let weth = d
        .asset("WETH")
        .ok_or_else(|| eyre::eyre!("no WETH on the devnet"))?
        .address;
    let params = crate::map::MapParams {
        assets: vec![weth],
        to_bps: 5_000,
        step_bps: 100,
        pass_through_bps: 10_000,
        max_rounds: 20,
    };
    let started = Instant::now();
    let map = crate::map::compute(&snapshot, &params, &["WETH".to_owned()]);
    let ms = ms(started.elapsed());
    let rounds = map.steps.iter().map(|s| s.rounds).max().unwrap_or(0);
    tracing::info!(map_ms = ms, steps = map.steps.len(), rounds, "cascade map");
    Ok((ms, rounds))
}

async fn shocks(
    devnet: &Devnet,
    count: u32,
    step: PriceMoveBps,
    dir: &std::path::Path,
    out: &mut BenchReport,
) -> eyre::Result<()> {
    let d = &devnet.deployment;
    // The keeper starts from the store the bench's watcher built, as a restarted keeper does: one
    // discovery per process, as in production (a second one here would only measure the allocator).
    let mut config = d.config(&devnet.rpc_url, Some(1), dir.join("store"));
    config.metrics = None;
    // anvil's WebSocket, on the same port: heads by subscription, and the mempool's price updates.
    config
        .chain
        .rpc_urls
        .push(devnet.rpc_url.replacen("http", "ws", 1));
    config
        .executor
        .as_mut()
        .expect("devnet configs have [executor]")
        .account = BENCH_KEEPER;
    send_call(
        &devnet.rpc,
        d.admin,
        d.liquidator,
        Liquidator::setOperatorCall {
            operator: BENCH_KEEPER,
            allowed: true,
        },
        "setOperator",
    )
    .await?;
    let devnet_cfg = config.devnet.clone().unwrap_or_else(|| unreachable!());
    let weth = devnet_cfg
        .assets
        .iter()
        .find(|a| a.symbol == "WETH")
        .cloned()
        .ok_or_else(|| eyre::eyre!("no WETH on the devnet"))?;
    // The shocks are price updates sent as transactions, each waiting in the mempool for its block.
    shock::route_through_fallback(&devnet.rpc, &devnet_cfg, &weth).await?;
    let running = startup::start(
        &config,
        &dir.join("keeper.toml"),
        &RunOptions {
            key: Some(BENCH_KEEPER_KEY.parse()?),
            ..Default::default()
        },
    )
    .await?;
    let cancel = CancellationToken::new();
    // One-second blocks on a clock of our own: `evm_mine` every second. (anvil's interval miner
    // stalled for good once at 10,000 borrowers with a full mempool; a missed tick here is logged.)
    devnet.rpc.anvil_set_auto_mine(false).await?;
    let clock = {
        let rpc = devnet.rpc.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !cancel.is_cancelled() {
                tick.tick().await;
                if let Err(e) = rpc.evm_mine(None).await {
                    tracing::warn!(error = %e, "mining the bench's next block failed");
                }
            }
        })
    };
    let task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { run_keeper(running, None, cancel).await })
    };
    // Discovery first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Each shock lands in a block the chain mines on its own clock, a whole block time before the next
    // one, as an oracle update does. A shock that made nothing liquidatable (the keeper sent nothing)
    // does not count towards `count`; the price keeps falling until `count` did.
    let sent = || devnet.rpc.get_transaction_count(BENCH_KEEPER).pending();
    let mut liquidating = 0;
    while liquidating < count && out.shocks_sent < count * 8 + 10 {
        let before = sent().await?;
        shock::shock_market_landing(&devnet.rpc, &devnet_cfg, &weth, step, Landing::NextBlock)
            .await?;
        out.shocks_sent += 1;
        tokio::time::sleep(Duration::from_secs(3)).await;
        if sent().await? > before {
            liquidating += 1;
            eprintln!(
                "shock {}: liquidations sent ({liquidating}/{count})",
                out.shocks_sent
            );
        } else {
            eprintln!("shock {}: nothing liquidatable yet", out.shocks_sent);
        }
    }
    cancel.cancel();
    let keeper = task.await??;
    clock.abort();
    let mut latencies: Vec<f64> = keeper.send_latencies().iter().map(|d| ms(*d)).collect();
    latencies.sort_by(f64::total_cmp);
    out.liquidations = latencies.len();
    out.detect_to_send_ms_p50 = percentile(&latencies, 50.0);
    out.detect_to_send_ms_p99 = percentile(&latencies, 99.0);
    out.detect_to_send_ms_max = latencies.last().copied().unwrap_or(0.0);
    out.liquidations_planned_ahead = keeper.sent_ahead();
    out.liquidations_reverted = keeper
        .outcomes()
        .iter()
        .filter(|o| o.kind == OutcomeKind::Reverted)
        .count();
    let won: Vec<_> = keeper
        .outcomes()
        .iter()
        .filter(|o| o.kind == OutcomeKind::Won)
        .collect();
    // Each crossing (a position seen below 1 at a block) is counted once, by its first liquidation:
    // a liquidation that leaves the position below 1 (a partial close of one debt of two, say) is
    // followed by another, planned once the first is mined, which is a later round, not a miss.
    let mut crossings: std::collections::BTreeMap<(Address, u64), &&crate::keeper::Outcome> =
        Default::default();
    for o in &won {
        let (Some(crossed), Some(included)) = (o.crossed_block, o.included_block) else {
            continue;
        };
        crossings
            .entry((o.borrower, crossed))
            .and_modify(|first| {
                if first.included_block.is_some_and(|b| included < b) {
                    *first = o;
                }
            })
            .or_insert(o);
    }
    out.liquidations_later_rounds = won.len() - crossings.len();
    // A position that did not pay in the block it crossed in (unprofitable at that price, or its pool
    // no longer paying after the block's earlier sales) was planned at a later block, when a further
    // move made it pay: that is the market, not the keeper's speed, and is counted apart.
    crossings.retain(|_, o| o.crossed_block.is_some_and(|c| o.planned_block <= c));
    out.liquidations_paying_later = won.len() - out.liquidations_later_rounds - crossings.len();
    // The first block after the one the keeper saw the position cross in.
    let first = crossings
        .values()
        .filter(|o| o.included_block == o.crossed_block.map(|b| b + 1))
        .count();
    out.first_block_inclusion_pct = if crossings.is_empty() {
        0.0
    } else {
        100.0 * first as f64 / crossings.len() as f64
    };
    // Why the others were later: their first block had no room left (30M gas holds about 160
    // liquidations), or the keeper was too slow for it. Our transactions are mined in nonce order, and a
    // block takes the next one only while the gas it has left covers that transaction's gas limit, so
    // a block is full for us when its room is less than the limit of the next of ours (the first of
    // ours in the next block that has any).
    let mut blocks: Vec<u64> = won.iter().filter_map(|o| o.included_block).collect();
    blocks.sort_unstable();
    blocks.dedup();
    let mut ours_by_block = std::collections::BTreeMap::new();
    for b in blocks {
        let receipts = devnet
            .rpc
            .get_block_receipts(BlockId::number(b))
            .await?
            .unwrap_or_default();
        // Gas used per liquidation (a transaction can carry several) and hash of each of ours, in
        // block order.
        let ours: Vec<(u64, alloy::primitives::TxHash)> = receipts
            .iter()
            .filter(|r| r.from == BENCH_KEEPER && r.to == Some(d.liquidator) && r.status())
            .map(|r| {
                let liquidations = r
                    .inner
                    .logs()
                    .iter()
                    .filter(|l| Liquidator::Liquidated::decode_log_data(l.data()).is_ok())
                    .count();
                (r.gas_used / liquidations.max(1) as u64, r.transaction_hash)
            })
            .collect();
        ours_by_block.insert(b, ours);
    }
    out.block_gas_limit = devnet
        .rpc
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await?
        .ok_or_else(|| eyre::eyre!("no latest block"))?
        .header
        .gas_limit;
    let mut gas: Vec<u64> = ours_by_block.values().flatten().map(|(g, _)| *g).collect();
    gas.sort_unstable();
    out.liquidation_gas_p50 = gas.get(gas.len() / 2).copied().unwrap_or(0);
    // A liquidation not in its first block waited for room when every block from that one to the one
    // before it was full for us: the chain's capacity, not the keeper's speed. One header read per
    // block.
    let mut full_blocks = std::collections::HashMap::new();
    let mut with_room = 0;
    for o in crossings.values() {
        let (Some(crossed), Some(included)) = (o.crossed_block, o.included_block) else {
            continue;
        };
        let mut waited_for_room = true;
        for b in crossed + 1..included {
            let full = match full_blocks.get(&b) {
                Some(full) => *full,
                None => {
                    let full = full_for_us(&devnet.rpc, &ours_by_block, b).await?;
                    full_blocks.insert(b, full);
                    full
                }
            };
            if !full {
                waited_for_room = false;
                break;
            }
        }
        with_room += usize::from(waited_for_room);
    }
    out.first_block_with_room_pct = if crossings.is_empty() {
        0.0
    } else {
        100.0 * with_room as f64 / crossings.len() as f64
    };
    Ok(())
}

/// Whether block `b` was full for us: less gas left in it than the limit of the next of ours in
/// nonce order (the first of ours in a later block; `ours_by_block` has each block's, in order).
async fn full_for_us(
    rpc: &crate::chain::Rpc,
    ours_by_block: &std::collections::BTreeMap<u64, Vec<(u64, alloy::primitives::TxHash)>>,
    b: u64,
) -> eyre::Result<bool> {
    let header = rpc
        .get_block_by_number(b.into())
        .await?
        .ok_or_else(|| eyre::eyre!("block {b} is gone"))?
        .header;
    let next_limit = match ours_by_block
        .range(b + 1..)
        .find_map(|(_, ours)| ours.first())
    {
        Some((_, hash)) => rpc
            .get_transaction_by_hash(*hash)
            .await?
            .map_or(0, |tx| alloy::consensus::Transaction::gas_limit(&tx)),
        None => 0,
    };
    let full = header.gas_limit - header.gas_used < next_limit;
    tracing::debug!(
        block = b,
        gas_used = header.gas_used,
        gas_limit = header.gas_limit,
        ours = ours_by_block.get(&b).map_or(0, Vec::len),
        next_limit,
        full,
        "a block some liquidations waited through"
    );
    Ok(full)
}

fn table(r: &BenchReport) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["figure", "value"]);
    let rows: Vec<(&str, String)> = vec![
        ("Aave", r.aave.clone()),
        (
            "cascade map (WETH to −50% in 1% steps, pass-through 1)",
            format!("{:.0} ms (up to {} rounds)", r.map_ms, r.map_max_rounds),
        ),
        (
            "borrowers (positions found)",
            format!("{} ({})", r.borrowers, r.positions),
        ),
        (
            "discovery, empty store",
            format!("{:.0} ms", r.discovery_ms),
        ),
        (
            "restart catch-up",
            format!(
                "{:.0} ms ({} blocks missed)",
                r.restart_catchup_ms, r.restart_missed_blocks
            ),
        ),
        (
            "RPC requests per idle block",
            format!("{:.1}", r.rpc_requests_per_block_idle),
        ),
        (
            "RPC requests, block with a price change",
            format!("{:.0}", r.rpc_requests_per_block_price_change),
        ),
        (
            "re-pricing CPU after a price change",
            format!(
                "{:.2} ms ({} positions)",
                r.reprice_cpu_ms, r.repriced_after_price_change
            ),
        ),
        (
            "re-pricing CPU, every position",
            format!("{:.2} ms", r.reprice_all_cpu_ms),
        ),
        (
            "ours per block (wall)",
            format!("{:.2} ms", r.ours_ms_per_block),
        ),
        (
            "sweep per block (wall, requests)",
            format!(
                "{:.1} ms, {:.0}",
                r.sweep_ms_per_block, r.sweep_requests_per_block
            ),
        ),
        ("sweep / ours", format!("{:.0}×", r.sweep_ratio)),
        (
            "loopback RPC round trip (p50)",
            format!("{:.2} ms", r.rpc_rtt_ms),
        ),
        (
            "detect → sent, p50 / p99 / max",
            format!(
                "{:.1} / {:.1} / {:.1} ms over {} liquidations ({} price updates)",
                r.detect_to_send_ms_p50,
                r.detect_to_send_ms_p99,
                r.detect_to_send_ms_max,
                r.liquidations,
                r.shocks_sent
            ),
        ),
        (
            "planned while the update was pending",
            format!("{} of {}", r.liquidations_planned_ahead, r.liquidations),
        ),
        (
            "liquidated again (later rounds) / paying only after a later move",
            format!(
                "{} / {}",
                r.liquidations_later_rounds, r.liquidations_paying_later
            ),
        ),
        (
            "positions liquidated in the first block after the update",
            format!(
                "{:.1}% ({:.1}% in the first with room for them; {} gas a block)",
                r.first_block_inclusion_pct, r.first_block_with_room_pct, r.block_gas_limit
            ),
        ),
        (
            "gas per liquidation (p50)",
            format!("{}", r.liquidation_gas_p50),
        ),
        (
            "liquidations mined but reverted",
            format!("{}", r.liquidations_reverted),
        ),
        (
            "peak RSS after seeding",
            format!(
                "{:.0} MB ({:.0} MB when seeding was done)",
                r.peak_rss_mb, r.rss_after_seeding_mb
            ),
        ),
        (
            "store on disk",
            format!("{:.1} MB", r.store_bytes as f64 / 1e6),
        ),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    t.to_string()
}
