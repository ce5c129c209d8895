//! The keeper as operators run it: a devnet with a block time, a config for it with metrics on a free
//! port, the `cascade run` binary started and stopped (or killed), and what tests read of it
//! afterwards (the chain's liquidations, the journal, the metrics).

use alloy::{primitives::Address, providers::Provider, rpc::types::Filter, sol_types::SolEvent};
use cascade::{
    chain::bindings::{Liquidator, Pool},
    config::{Config, DevnetAsset, DevnetConfig, MetricsConfig},
    devnet::{
        Devnet, DevnetOptions,
        aave::DevnetAave,
        report,
        shock::{PriceMoveBps, shock_market},
    },
    executor::journal::{Journal, JournalEntry},
    store::Store,
};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

/// anvil's second dev key (public test material) and its account: the keeper's, made an operator of
/// the Liquidator (the devnet admin, anvil's first account, owns it and makes the shocks).
pub const KEEPER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
pub const KEEPER_ACCOUNT: Address =
    alloy::primitives::address!("70997970C51812dc3A010C7d01b50e0d17dc79C8");
/// anvil's third dev key and account: neither owner nor operator.
pub const STRANGER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
pub const STRANGER_ACCOUNT: Address =
    alloy::primitives::address!("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");

pub struct Net {
    pub devnet: Devnet,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub config_path: PathBuf,
    pub metrics_port: u16,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lets `account` call the devnet's Liquidator (the admin owns it).
pub async fn make_operator(devnet: &Devnet, account: Address) {
    cascade::chain::send_call(
        &devnet.rpc,
        devnet.deployment.admin,
        devnet.deployment.liquidator,
        Liquidator::setOperatorCall {
            operator: account,
            allowed: true,
        },
        "setOperator",
    )
    .await
    .unwrap();
}

pub async fn net(borrowers: u64, block_time: Option<u64>) -> Net {
    net_on(borrowers, block_time, DevnetAave::V3_6).await
}

pub async fn net_on(borrowers: u64, block_time: Option<u64>, aave: DevnetAave) -> Net {
    let devnet = Devnet::start(&DevnetOptions {
        borrowers,
        block_time_secs: block_time,
        aave,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("devnet did not start: {e:#}"));
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let mut config =
        devnet
            .deployment
            .config(&devnet.rpc_url, block_time, dir.path().join("store"));
    config.metrics = Some(MetricsConfig {
        listen: ([127, 0, 0, 1], metrics_port).into(),
        stale_after_secs: None,
        map_every_blocks: 10,
    });
    // The keeper sends from its own account, an operator of the Liquidator, so the devnet admin's
    // transactions (the shocks) never mix with the keeper's.
    make_operator(&devnet, KEEPER_ACCOUNT).await;
    config.executor.as_mut().unwrap().account = KEEPER_ACCOUNT;
    let config_path = dir.path().join("cascade.toml");
    config.write(&config_path, "test").unwrap();
    Net {
        devnet,
        dir,
        config,
        config_path,
        metrics_port,
    }
}

impl Net {
    pub fn devnet_config(&self) -> DevnetConfig {
        self.config.devnet.clone().unwrap()
    }

    pub fn weth(&self) -> DevnetAsset {
        self.devnet_config()
            .assets
            .into_iter()
            .find(|a| a.symbol == "WETH")
            .unwrap()
    }

    /// Drops WETH by `bps` (oracle and pools, in one block).
    pub async fn crash_weth(&self, bps: i64) {
        shock_market(
            &self.devnet.rpc,
            &self.devnet_config(),
            &self.weth(),
            PriceMoveBps(bps),
        )
        .await
        .unwrap();
    }

    /// Every LiquidationCall on the market since `from`.
    pub async fn liquidations(&self, from: u64) -> Vec<(Pool::LiquidationCall, u64)> {
        let filter = Filter::new()
            .address(self.devnet.deployment.aave.pool)
            .event_signature(Pool::LiquidationCall::SIGNATURE_HASH)
            .from_block(from);
        self.devnet
            .rpc
            .get_logs(&filter)
            .await
            .unwrap()
            .iter()
            .map(|l| {
                (
                    Pool::LiquidationCall::decode_log_data(l.data()).unwrap(),
                    l.block_number.unwrap(),
                )
            })
            .collect()
    }

    pub async fn health(&self, block: u64) -> Vec<report::AccountHealth> {
        let d = &self.devnet.deployment;
        report::account_health(
            &self.devnet.rpc,
            d.multicall,
            d.aave.pool,
            &d.borrowers,
            block.into(),
        )
        .await
        .unwrap()
    }

    pub async fn nonce(&self) -> u64 {
        self.devnet
            .rpc
            .get_transaction_count(KEEPER_ACCOUNT)
            .await
            .unwrap()
    }
}

/// A `cascade run` process writing its output to files.
pub struct Daemon {
    pub child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, extra: &[&str], logs: &Path) -> Self {
        let out = logs.with_extension("out");
        let err = logs.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_cascade"))
            .args(["run", "--config"])
            .arg(config)
            .args(extra)
            .env("CASCADE_PRIVATE_KEY", KEEPER_KEY)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("cascade binary runs");
        Self { child, out, err }
    }

    pub fn output(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// SIGTERM, and the exit status once it has shut down.
    pub fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let output = self.output();
                assert!(
                    status.success(),
                    "the daemon exited with {status}:\n{output}"
                );
                return output;
            }
            assert!(Instant::now() < deadline, "no clean shutdown within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.output()
    }
}

pub async fn wait_until<F: AsyncFn() -> bool>(what: &str, timeout: Duration, check: F) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the keeper is done with what began at block `from`: six blocks on, the keeper caught up
/// with the head, nothing of the keeper's waiting in the node's pool, and no liquidation in the last
/// three blocks.
pub async fn settled(net: &Net, from: u64) {
    wait_until(
        "the keeper to settle",
        Duration::from_secs(120),
        async || {
            let rpc = &net.devnet.rpc;
            let head = rpc.get_block_number().await.unwrap();
            if head < from + 6 {
                return false;
            }
            if keeper_block(net).await.1.is_none_or(|done| done < head) {
                return false;
            }
            let mined = rpc.get_transaction_count(KEEPER_ACCOUNT).await.unwrap();
            let pending = rpc
                .get_transaction_count(KEEPER_ACCOUNT)
                .pending()
                .await
                .unwrap();
            mined == pending && net.liquidations(head - 2).await.is_empty()
        },
    )
    .await;
}

/// The keeper's `/health` status and the last block it processed.
pub async fn keeper_block(net: &Net) -> (u16, Option<u64>) {
    let Some((status, body)) = scrape(net.metrics_port, "/health").await else {
        return (0, None);
    };
    let block = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("block").and_then(|b| b.as_u64()));
    (status, block)
}

pub async fn scrape(port: u16, path: &str) -> Option<(u16, String)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn journal(store: &Path, dry_run: bool) -> Vec<JournalEntry> {
    let store = Store::open(store, false).unwrap();
    let tree = if dry_run {
        store.dry_run_journal_tree()
    } else {
        store.journal_tree()
    };
    Journal::new(tree.unwrap()).unwrap().entries().unwrap()
}

pub async fn healthy(net: &Net) {
    wait_until(
        "the daemon's /health to pass",
        Duration::from_secs(60),
        async || matches!(scrape(net.metrics_port, "/health").await, Some((200, _))),
    )
    .await;
}

pub fn assert_no_key(output: &str) {
    let bare = KEEPER_KEY.trim_start_matches("0x");
    assert!(
        !output.to_lowercase().contains(bare),
        "the private key appears in the output"
    );
}
