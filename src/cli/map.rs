//! `cascade map`: how far a price fall spreads, round by round, from the market's own positions and
//! pools at one block ([`crate::map`]). Prints a table; with `--out`, writes `map.json`, `map.csv`,
//! `positions.csv` and `map.svg` there.

use super::positions::open_watcher;
use crate::{
    chain::bindings::MintableERC20,
    config::Config,
    map::{self, CascadeMap, MapParams},
    planner::{
        SizingCosts,
        fees::eip1559::next_base_fee_after,
        venues::book::{BookSettings, VenueBook},
    },
    protocol::aave_v3::AaveV3,
};
use alloy::{eips::BlockNumberOrTag, primitives::Address};
use eyre::{WrapErr, eyre};
use std::path::{Path, PathBuf};

/// Arguments of `cascade map`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// An asset that falls (its symbol); several fall together. Default: the market's largest
    /// collateral that is not a stablecoin.
    #[arg(long = "asset")]
    pub assets: Vec<String>,
    /// The deepest fall, percent.
    #[arg(long, allow_hyphen_values = true, default_value_t = -50.0)]
    pub to: f64,
    /// The step, percent.
    #[arg(long, default_value_t = 1.0)]
    pub step: f64,
    /// How far the oracle follows its deepest pool: 0 (not at all: round 0 only) to 1 (fully).
    #[arg(long, default_value_t = 1.0)]
    pub pass_through: f64,
    /// Rounds at most per step.
    #[arg(long, default_value_t = 20)]
    pub max_rounds: u32,
    /// The block to read (default: the latest). The store must not be past it.
    #[arg(long)]
    pub block: Option<u64>,
    /// Where to write map.json, map.csv, positions.csv and map.svg.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Delete the store and rebuild it from the chain.
    #[arg(long)]
    pub rebuild_store: bool,
}

/// A market read for mapping: the snapshot, and each reserve's symbol.
pub struct MarketRead {
    /// The positions, venues and gas at the block.
    pub snapshot: map::Snapshot,
    /// Each reserve's token symbol.
    pub symbols: Vec<(Address, String)>,
}

impl MarketRead {
    /// The reserve named `name` (its symbol, any case).
    pub fn asset(&self, name: &str) -> eyre::Result<Address> {
        self.symbols
            .iter()
            .find(|(_, s)| s.eq_ignore_ascii_case(name))
            .map(|(a, _)| *a)
            .ok_or_else(|| {
                let known: Vec<&str> = self.symbols.iter().map(|(_, s)| s.as_str()).collect();
                eyre!(
                    "no reserve {name} in this market; it lists {}",
                    known.join(", ")
                )
            })
    }

    /// The symbol of `asset` (its address when the token does not answer).
    pub fn symbol(&self, asset: Address) -> String {
        self.symbols
            .iter()
            .find(|(a, _)| *a == asset)
            .map_or_else(|| asset.to_string(), |(_, s)| s.clone())
    }
}

/// Reads the market of `config` at `block` (the latest by default), catching its store up first.
pub async fn read_market(
    config: &Config,
    config_path: &Path,
    rebuild_store: bool,
    block: Option<u64>,
) -> eyre::Result<MarketRead> {
    let (store, mut watcher, _) = open_watcher(config, config_path, rebuild_store).await?;
    match block {
        Some(n) => {
            if let Some(cursor) = watcher.cursor()
                && cursor.block > n
            {
                return Err(eyre!(
                    "the store is at block {}, past --block {n}: map a later block, or use --rebuild-store (or a store of its own: store.path)",
                    cursor.block
                ));
            }
            let head = watcher.head_at(BlockNumberOrTag::Number(n)).await?;
            watcher.sync_to(head).await?;
        }
        None => {
            watcher.sync().await?;
        }
    }
    store.flush()?;
    let symbols = read_symbols(watcher.rpc(), watcher.protocol(), config.multicall.address).await;
    let snapshot = snapshot_of(config, &watcher).await?;
    Ok(MarketRead { snapshot, symbols })
}

/// What the map needs of `watcher`'s market as it stands: its positions, the venues of `config`'s
/// Uniswap factories read at its block, and gas at the next block's base fee.
pub async fn snapshot_of(
    config: &Config,
    watcher: &crate::watcher::Watcher<AaveV3>,
) -> eyre::Result<map::Snapshot> {
    let market = watcher.protocol();
    let block = market
        .block
        .ok_or_else(|| eyre!("the market was not read at any block"))?;
    let positions: Vec<_> = watcher
        .positions()
        .map(|(user, position, _)| (user, position.clone()))
        .collect();
    let uniswap = config.uniswap_v3.as_ref().ok_or_else(|| {
        eyre!("no [uniswap_v3] section: the map sells seized collateral on Uniswap")
    })?;
    let book = VenueBook::new(
        watcher.rpc().clone(),
        BookSettings {
            multicall: config.multicall.address,
            v3_factory: uniswap.factory,
            fee_tiers: uniswap.fee_tiers.clone(),
            v2_factory: config.uniswap_v2.as_ref().map(|v| v.factory),
        },
    );
    let base_fee = next_base_fee_after(watcher.rpc(), Some(block))
        .await
        .wrap_err("reading the block's base fee")?;
    let costs = SizingCosts::at(
        market,
        config.planner.native_asset,
        base_fee,
        u128::from(config.planner.priority_fee_wei),
    );
    map::snapshot(market, positions, &book, block, costs)
        .await
        .wrap_err("reading the venues")
}

/// Runs `cascade map`.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::load(&args.config)?;
    if !(args.to < 0.0 && args.to >= -99.0) || args.step <= 0.0 {
        return Err(eyre!(
            "--to must be a fall between 0 and -99 percent (e.g. -50), --step a positive percent"
        ));
    }
    if !(0.0..=2.0).contains(&args.pass_through) {
        return Err(eyre!(
            "--pass-through must be between 0 and 2 (1: the oracle follows the pools fully)"
        ));
    }
    let read = read_market(&config, &args.config, args.rebuild_store, args.block).await?;
    let snapshot = &read.snapshot;
    let assets = if args.assets.is_empty() {
        vec![
            map::largest_volatile_collateral(&snapshot.market, &snapshot.positions)
                .ok_or_else(|| eyre!("no collateral to fall: the market has no borrower"))?,
        ]
    } else {
        args.assets
            .iter()
            .map(|name| read.asset(name))
            .collect::<eyre::Result<Vec<_>>>()?
    };
    let params = MapParams {
        assets,
        to_bps: (-args.to * 100.0).round() as u32,
        step_bps: (args.step * 100.0).round().max(1.0) as u32,
        pass_through_bps: (args.pass_through * 10_000.0).round() as u32,
        max_rounds: args.max_rounds.max(1),
    };
    let names: Vec<String> = params.assets.iter().map(|a| read.symbol(*a)).collect();
    let started = std::time::Instant::now();
    let result = map::compute(snapshot, &params, &names);
    tracing::info!(
        positions = snapshot.positions.len(),
        steps = result.steps.len(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "mapped"
    );
    println!(
        "cascade map at block {}: {} falling, oracle pass-through {:.2}, {} positions\n{}",
        result.block,
        names.join(" + "),
        result.pass_through,
        snapshot.positions.len(),
        map::table(&result)
    );
    if let Some(dir) = &args.out {
        write(dir, &result)?;
        println!("written to {}", dir.display());
    }
    Ok(())
}

/// Writes the map's files into `dir`.
pub fn write(dir: &Path, map: &CascadeMap) -> eyre::Result<()> {
    std::fs::create_dir_all(dir).wrap_err_with(|| format!("creating {}", dir.display()))?;
    let files = [
        ("map.json", serde_json::to_string_pretty(map)?),
        ("map.csv", map::steps_csv(map)),
        ("positions.csv", map::positions_csv(map)),
        ("map.svg", map::chart_svg(map)),
    ];
    for (name, body) in files {
        let path = dir.join(name);
        std::fs::write(&path, body).wrap_err_with(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Each reserve's token symbol (its address where the token does not answer).
pub async fn read_symbols(
    rpc: &crate::chain::Rpc,
    market: &AaveV3,
    multicall: Address,
) -> Vec<(Address, String)> {
    let assets: Vec<Address> = market.reserves.values().map(|r| r.asset).collect();
    let calls: Vec<(Address, MintableERC20::symbolCall)> = assets
        .iter()
        .map(|&a| (a, MintableERC20::symbolCall {}))
        .collect();
    let answers = crate::chain::multicall::aggregate3(
        rpc,
        multicall,
        &calls,
        market
            .block
            .map_or(alloy::eips::BlockId::latest(), |b| b.id()),
    )
    .await
    .unwrap_or_default();
    assets
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let name = answers
                .get(i)
                .and_then(|r| r.as_ref().ok())
                .cloned()
                .unwrap_or_else(|| a.to_string());
            (a, name)
        })
        .collect()
}
