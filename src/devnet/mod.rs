//! The devnet: anvil running the real Aave V3 and Uniswap V3 from their npm artifacts, a Multicall3 at
//! its canonical address, and seeded borrowers. Used by `cascade devnet`, the demo and the tests.

pub mod aave;
pub mod deployer;
pub mod fault_proxy;
pub mod market;
pub mod op_stack;
pub mod report;
pub mod seed;
pub mod shock;
pub mod uniswap;

pub use deployer::Deployer;

use crate::{
    chain::{self, Rpc, multicall::MULTICALL3},
    config::{
        AaveConfig, ChainConfig, Config, DevnetConfig, DevnetPool, ExecutorConfig, MetricsConfig,
        MulticallConfig, PlannerConfig, StoreConfig, UniswapV2Config, UniswapV3Config,
    },
    contracts::Contracts,
    toolchain,
};
use aave::{AaveDeployment, DeployedAsset};
use alloy::{
    node_bindings::{Anvil, AnvilInstance},
    primitives::Address,
    providers::{Provider, ext::AnvilApi},
};
use eyre::WrapErr;
use serde::{Deserialize, Serialize};
use std::{path::PathBuf, time::Instant};
use uniswap::UniswapDeployment;

/// How to bring up a devnet.
#[derive(Debug, Clone)]
pub struct DevnetOptions {
    /// Port for the anvil we start; `None` picks a free one.
    pub port: Option<u16>,
    /// Use this node instead of starting anvil (it must be anvil: the devnet uses its cheat RPCs).
    pub rpc_url: Option<String>,
    /// Borrowers to open.
    pub borrowers: u64,
    /// Once deployed, mine a block every this many seconds (automine until then, and when `None`).
    pub block_time_secs: Option<u64>,
    /// Once deployed, blocks hold this much gas (anvil's 30M until then, and when `None`): a cascade
    /// larger than one block spills into the next, so how far depends on it (Ethereum's blocks hold
    /// 60M since late 2025).
    pub block_gas_limit: Option<u64>,
    /// Make the chain an OP-stack chain for fees: GasPriceOracle and L1Block at their predeploys.
    pub op_stack: bool,
    /// Which Aave to deploy.
    pub aave: aave::DevnetAave,
}

/// Simulations the keeper asks of a devnet's anvil at once: it shares the keeper's machine (two cores
/// on the machines this project is measured on).
const DEVNET_SIMULATIONS_IN_FLIGHT: usize = 2;

impl Default for DevnetOptions {
    fn default() -> Self {
        Self {
            port: None,
            rpc_url: None,
            borrowers: 50,
            block_time_secs: None,
            block_gas_limit: None,
            op_stack: false,
            aave: aave::DevnetAave::default(),
        }
    }
}

/// Everything deployed, as written beside the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The chain id.
    pub chain_id: u64,
    /// The account that deployed and administers everything.
    pub admin: Address,
    /// The first block of the Aave deployment: where event discovery starts.
    pub deployment_block: u64,
    /// The Aave market.
    pub aave: AaveDeployment,
    /// The market's assets.
    pub assets: Vec<DeployedAsset>,
    /// Uniswap V3.
    pub uniswap: UniswapDeployment,
    /// Multicall3 (canonical address).
    pub multicall: Address,
    /// Seeded borrowers.
    pub borrowers: Vec<Address>,
    /// Every contract deployed, by name, in order.
    pub contracts: Vec<(String, Address)>,
    /// cascade's Liquidator, owned by the admin.
    pub liquidator: Address,
}

impl Deployment {
    /// The asset with this symbol.
    pub fn asset(&self, symbol: &str) -> Option<&DeployedAsset> {
        self.assets
            .iter()
            .find(|a| a.symbol.eq_ignore_ascii_case(symbol))
    }

    /// A ready-to-use keeper config for this devnet.
    pub fn config(&self, rpc_url: &str, block_time_secs: Option<u64>, store: PathBuf) -> Config {
        Config {
            chain: ChainConfig {
                name: "devnet".into(),
                chain_id: self.chain_id,
                rpc_urls: vec![rpc_url.to_owned()],
                block_time_secs,
                request_timeout_ms: None,
                startup_retry_secs: None,
            },
            aave: AaveConfig {
                addresses_provider: self.aave.addresses_provider,
                deployment_block: self.deployment_block,
                release: None,
            },
            multicall: MulticallConfig {
                address: self.multicall,
            },
            uniswap_v3: Some(UniswapV3Config {
                factory: self.uniswap.factory,
                quoter: self.uniswap.quoter,
                fee_tiers: vec![500, 3000, 10000],
            }),
            uniswap_v2: Some(UniswapV2Config {
                factory: self.uniswap.v2_factory,
            }),
            store: StoreConfig { path: store },
            signer: Some(crate::config::SignerConfig {
                private_key: Some("env:CASCADE_PRIVATE_KEY".into()),
                keystore: None,
            }),
            executor: Some(ExecutorConfig {
                liquidator: self.liquidator,
                account: self.admin,
                bump_after_blocks: 3,
                bump_bps: 1_250,
                max_batch: crate::config::DEFAULT_MAX_BATCH,
                relay: None,
            }),
            planner: PlannerConfig {
                native_asset: self.asset("WETH").map(|a| a.address),
                simulations_in_flight: DEVNET_SIMULATIONS_IN_FLIGHT,
                ..Default::default()
            },
            metrics: Some(MetricsConfig {
                listen: ([127, 0, 0, 1], 9464).into(),
                stale_after_secs: None,
                map_every_blocks: 10,
            }),
            devnet: Some(DevnetConfig {
                admin: self.admin,
                assets: self
                    .assets
                    .iter()
                    .map(DeployedAsset::devnet_asset)
                    .collect(),
                oracle: self.aave.oracle,
                router: self.uniswap.router,
                pools: self
                    .uniswap
                    .pools
                    .iter()
                    .map(|p| (p, false))
                    .chain(self.uniswap.v2_pairs.iter().map(|p| (p, true)))
                    .map(|(p, v2)| DevnetPool {
                        address: p.address,
                        token0: p.token0,
                        token1: p.token1,
                        fee: p.fee,
                        v2,
                    })
                    .collect(),
            }),
        }
    }
}

/// A running devnet. Dropping it stops the anvil it started.
pub struct Devnet {
    /// The anvil process, when we started it.
    pub anvil: Option<AnvilInstance>,
    /// Its HTTP endpoint.
    pub rpc_url: String,
    /// A provider on it.
    pub rpc: Rpc,
    /// What is deployed.
    pub deployment: Deployment,
    /// How long deployment and seeding took.
    pub setup_secs: f64,
}

/// Starts anvil from the pinned toolchain with auto-impersonation (seeded borrowers have no keys).
pub fn spawn_anvil(port: Option<u16>, extra_args: &[&str]) -> eyre::Result<AnvilInstance> {
    let path = toolchain::anvil()?;
    let mut anvil = Anvil::at(path)
        .arg("--auto-impersonate")
        .args(extra_args.iter().copied());
    if let Some(port) = port {
        anvil = anvil.port(port);
    }
    anvil.try_spawn().wrap_err("starting anvil")
}

impl Devnet {
    /// Starts (or connects to) anvil, deploys everything and opens the borrowers.
    pub async fn start(opts: &DevnetOptions) -> eyre::Result<Self> {
        let (anvil, rpc_url) = match &opts.rpc_url {
            Some(url) => (None, url.clone()),
            None => {
                let anvil = spawn_anvil(opts.port, &[])?;
                let url = anvil.endpoint();
                (Some(anvil), url)
            }
        };
        let rpc = chain::connect_http(&rpc_url)?;
        let started = Instant::now();
        let deployment = deploy(&rpc, opts.borrowers, opts.aave).await?;
        if opts.op_stack {
            op_stack::install(&rpc, &op_stack::typical_l1_values())
                .await
                .wrap_err("installing the OP-stack fee predeploys")?;
        }
        if let Some(gas) = opts.block_gas_limit {
            rpc.anvil_set_block_gas_limit(gas)
                .await
                .wrap_err("setting anvil's block gas limit")?;
        }
        if let Some(secs) = opts.block_time_secs {
            rpc.anvil_set_interval_mining(secs)
                .await
                .wrap_err("switching anvil to interval mining")?;
        }
        Ok(Self {
            anvil,
            rpc_url,
            rpc,
            deployment,
            setup_secs: started.elapsed().as_secs_f64(),
        })
    }

    /// A deployer on this devnet (the admin account), for opening more positions after start.
    pub fn deployer(&self) -> Deployer {
        Deployer::new(
            self.rpc.clone(),
            self.deployment.admin,
            toolchain::node_modules(),
        )
    }
}

/// Deploys the whole devnet (with the Aave of `aave`) on an anvil node at `rpc` and opens
/// `borrowers` positions.
pub async fn deploy(rpc: &Rpc, borrowers: u64, aave: aave::DevnetAave) -> eyre::Result<Deployment> {
    let chain_id = rpc
        .get_chain_id()
        .await
        .wrap_err("reading the devnet's chain id")?;
    rpc.anvil_auto_impersonate_account(true)
        .await
        .wrap_err("the devnet needs anvil (anvil_autoImpersonateAccount failed)")?;
    let admin = *rpc
        .get_accounts()
        .await?
        .first()
        .ok_or_else(|| eyre::eyre!("the node has no unlocked account to deploy from"))?;
    let mut d = Deployer::new(rpc.clone(), admin, toolchain::node_modules());

    install_multicall(rpc).await?;

    let deployment_block = rpc.get_block_number().await? + 1;
    let treasury =
        Address::from_slice(&alloy::primitives::keccak256("cascade devnet treasury")[12..]);
    let (aave, assets) = aave::deploy(&mut d, treasury, aave)
        .await
        .wrap_err_with(|| format!("deploying Aave {}", aave.release()))?;
    let uniswap = uniswap::deploy(&mut d, &assets)
        .await
        .wrap_err("deploying Uniswap V3")?;

    seed::fund_market(&d, &aave, &assets, borrowers)
        .await
        .wrap_err("funding the market")?;
    aave::set_seeding_ltvs(&d, &aave, &assets, true).await?;
    let opened = seed::open_borrowers(&d, &aave, &assets, 0..borrowers, borrowers)
        .await
        .wrap_err("opening borrowers")?;
    aave::set_seeding_ltvs(&d, &aave, &assets, false).await?;

    let liquidator = crate::executor::liquidator::deploy(rpc, admin, aave.pool, admin)
        .await
        .wrap_err("deploying the Liquidator")?;
    let mut contracts = vec![("Multicall3".to_owned(), MULTICALL3)];
    contracts.append(&mut d.deployed);
    contracts.push(("Liquidator (cascade)".to_owned(), liquidator));
    Ok(Deployment {
        chain_id,
        admin,
        deployment_block,
        aave,
        assets,
        uniswap,
        multicall: MULTICALL3,
        borrowers: opened,
        contracts,
        liquidator,
    })
}

/// Compiles our Multicall3-compatible contract and installs its runtime code at the canonical address.
async fn install_multicall(rpc: &Rpc) -> eyre::Result<()> {
    let contracts = Contracts::compile().wrap_err("compiling contracts/")?;
    let multicall = contracts.get("Multicall3")?;
    rpc.anvil_set_code(MULTICALL3, multicall.deployed_bytecode.clone())
        .await
        .wrap_err("installing Multicall3")?;
    Ok(())
}
