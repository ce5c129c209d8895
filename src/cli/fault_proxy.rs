//! `cascade fault-proxy`: a loopback JSON-RPC proxy that fails a share of requests, to try a keeper
//! (this one, or a config of it) against an endpoint in trouble before meeting one.

use crate::devnet::fault_proxy::{FaultKind, FaultPlan, FaultProxy};
use eyre::WrapErr;
use std::{net::SocketAddr, time::Duration};

/// Arguments of `cascade fault-proxy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The JSON-RPC endpoint behind it (http).
    #[arg(long)]
    pub upstream: String,
    /// Where it listens: a loopback address.
    #[arg(long, default_value = "127.0.0.1:8547")]
    pub listen: SocketAddr,
    /// The share of requests failed, 0 to 1.
    #[arg(long, default_value_t = 0.2)]
    pub rate: f64,
    /// The ways of failing drawn from (comma-separated): http500, http429, delay, malformed,
    /// rpc-error, drop, http504. All by default.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<FaultKind>,
    /// Seeds which requests fail, to repeat a run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fail only requests calling these JSON-RPC methods (comma-separated, e.g. eth_getLogs,eth_call).
    /// Every method by default.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Stop failing after this many seconds (and pass everything through).
    #[arg(long, value_name = "SECS")]
    pub for_secs: Option<u64>,
}

/// Runs `cascade fault-proxy` until Ctrl-C, then prints what it failed.
pub async fn run(args: Args) -> eyre::Result<()> {
    let plan = FaultPlan {
        rate: args.rate,
        kinds: if args.kinds.is_empty() {
            FaultKind::ALL.to_vec()
        } else {
            args.kinds.clone()
        },
        seed: args.seed,
        active_for: args.for_secs.map(Duration::from_secs),
        methods: args.methods.clone(),
        ..Default::default()
    };
    let proxy = FaultProxy::start(&args.upstream, args.listen, plan)
        .await
        .wrap_err("starting the fault proxy")?;
    println!(
        "failing {:.0}% of requests to {} at {}; Ctrl-C to stop",
        args.rate * 100.0,
        crate::chain::redact_url(&args.upstream),
        proxy.url()
    );
    crate::telemetry::shutdown_signal()
        .await
        .wrap_err("waiting for Ctrl-C")?;
    let stats = proxy.stats();
    println!("{} requests", stats.requests);
    for (kind, n) in &stats.faulted {
        println!("  {:<10} {n}", kind.name());
    }
    println!("  outage drops {}", stats.outage_drops);
    Ok(())
}
