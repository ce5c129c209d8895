//! The command line: one module per command, each with its `Args` and `run`.

pub mod bench;
pub mod demo;
pub mod deploy_liquidator;
pub mod devnet;
pub mod fault_proxy;
pub mod map;
pub mod plan;
pub mod positions;
pub mod run;
pub mod shock;
pub mod watch;

use clap::{Parser, Subcommand};

/// cascade: a liquidation keeper for Aave V3 markets.
#[derive(Debug, Parser)]
#[command(name = "cascade", version, about, long_about = None)]
pub struct Cli {
    /// Log format: `text` for a terminal, `json` for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

pub use crate::telemetry::LogFormat;

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The keeper: follow the chain and liquidate (or, with --dry-run, liquidate on a local fork).
    Run(run::Args),
    /// Measure discovery, per-block cost, the peers' sweep, detection to submission, memory, at N borrowers.
    Bench(bench::Args),
    /// Start anvil with the real Aave V3 and Uniswap V3 deployed and borrowers seeded; runs until Ctrl-C.
    Devnet(devnet::Args),
    /// On a devnet, move an asset's oracle price by a percentage.
    Shock(shock::Args),
    /// Devnet, borrowers, a price crash, and the positions it makes liquidatable.
    Demo(demo::Args),
    /// The positions closest to liquidation, from the store after catching up with the chain.
    Positions(positions::Args),
    /// Follow the chain and report positions as they become liquidatable (until Ctrl-C).
    Watch(watch::Args),
    /// The liquidation the keeper would make for one borrower now, with every figure, or why none.
    Plan(plan::Args),
    /// How far a price fall spreads: round by round, forced sales into the pools, the prices that
    /// follow them, the positions that fall next.
    Map(map::Args),
    /// Deploy the flash-swap Liquidator for the configured market, owned by the configured signer.
    DeployLiquidator(deploy_liquidator::Args),
    /// A loopback JSON-RPC proxy that fails a share of requests, to try the keeper against an
    /// endpoint in trouble.
    FaultProxy(fault_proxy::Args),
}

impl Cli {
    /// Runs the chosen command.
    pub async fn run(self) -> eyre::Result<()> {
        match self.command {
            Command::Run(args) => run::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Devnet(args) => devnet::run(args).await,
            Command::Shock(args) => shock::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Positions(args) => positions::run(args).await,
            Command::Watch(args) => watch::run(args).await,
            Command::Plan(args) => plan::run(args).await,
            Command::Map(args) => map::run(args).await,
            Command::DeployLiquidator(args) => deploy_liquidator::run(args).await,
            Command::FaultProxy(args) => fault_proxy::run(args).await,
        }
    }
}
