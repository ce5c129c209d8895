//! Aave V3.6 compiled from `@aave-dao/aave-v3-origin` 3.6.0's sources and deployed the way the
//! package's own batches do it (`src/deployments/projects/aave-v3-batched`,
//! shared/reference/aave-versions.md §7), without the periphery a keeper does not touch (rewards,
//! treasury proxies, the config engine, stata tokens).
//!
//! The logic libraries go through the CREATE2 factory the package's library batches expect (the
//! Safe singleton factory, installed with `anvil_setCode`, as the package's tests `vm.etch` it), with
//! their salt, so they land where a forge deployment of the package would put them. The sources are
//! BUSL-1.1 and installed from npm, never committed; they compile once (solc 0.8.27+, optimizer 200
//! runs, shanghai, no via-IR) into `target/cascade-contracts/aave-v3.6`.

use super::{AaveDeployment, DeployedAsset, FLASHLOAN_PREMIUM_BPS, deploy_fallback_oracle};
use crate::{
    chain::{
        self,
        bindings::{
            ACLManager, ATokenInstance, AaveOracle, AaveProtocolDataProvider,
            DefaultReserveInterestRateStrategyV2, InterestRateData, PoolAddressesProvider,
            PoolConfiguratorV3_6, PoolInstance, VariableDebtTokenInstance,
        },
    },
    contracts::{CompileError, Contracts, SolProject},
    devnet::{
        Deployer,
        market::{ASSETS, EMODE, RateCurve},
    },
    protocol::aave_v3::release::Release,
    toolchain,
    units::Bps,
};
use alloy::{
    primitives::{Address, B256, Bytes, U256, address, bytes, keccak256},
    providers::ext::AnvilApi,
    sol_types::{SolConstructor, SolValue},
};
use eyre::WrapErr;
use std::path::PathBuf;

/// The npm package.
pub const PACKAGE: &str = "@aave-dao/aave-v3-origin";

/// The Safe singleton CREATE2 factory (`Create2Utils.CREATE2_FACTORY`).
pub const CREATE2_FACTORY: Address = address!("0x914d7Fec6aaC8cd542e72Bca78B30650d45643d7");

/// The factory's runtime code: calldata is `salt ‖ init code`, the answer the new address (the
/// package's `tests/utils/TestnetProcedures.sol` etches the same).
const CREATE2_FACTORY_CODE: Bytes = bytes!(
    "7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe03601600081602082378035828234f58015156039578182fd5b8082525050506014600cf3"
);

/// The contracts deployed, under `src/contracts` of the package; they import what else is compiled.
const TARGETS: [&str; 9] = [
    "instances/PoolInstance.sol",
    "instances/PoolConfiguratorInstance.sol",
    "instances/ATokenInstance.sol",
    "instances/VariableDebtTokenInstance.sol",
    "misc/AaveOracle.sol",
    "misc/DefaultReserveInterestRateStrategyV2.sol",
    "protocol/configuration/PoolAddressesProvider.sol",
    "protocol/configuration/ACLManager.sol",
    "helpers/AaveProtocolDataProvider.sol",
];

/// The logic libraries, in deployment order (FlashLoanLogic calls BorrowLogic, so it follows it).
const LIBRARIES: [&str; 6] = [
    "BorrowLogic",
    "ConfiguratorLogic",
    "FlashLoanLogic",
    "LiquidationLogic",
    "PoolLogic",
    "SupplyLogic",
];

/// Compiles the package's contracts the devnet deploys (once; then read from the cache).
pub fn compile() -> Result<Contracts, CompileError> {
    let node_modules = toolchain::node_modules();
    let root = node_modules.join(PACKAGE);
    Contracts::compile_project(&SolProject {
        sources: root.join("src").join("contracts"),
        root,
        targets: TARGETS.iter().map(PathBuf::from).collect(),
        // The sources import OpenZeppelin as a git submodule names it; npm installs it flat.
        remappings: vec![(
            "openzeppelin-contracts/contracts/".into(),
            node_modules.join("@openzeppelin").join("contracts"),
        )],
        build_dir: toolchain::project_root()
            .join("target")
            .join("cascade-contracts")
            .join("aave-v3.6"),
        evm_version: foundry_compilers::artifacts::EvmVersion::Shanghai,
    })
}

/// The rate curve of a reserve, in the V2 strategy's basis points.
fn rate_data(curve: RateCurve) -> InterestRateData {
    let (optimal, slope1, slope2) = match curve {
        RateCurve::Volatile => (4500, 700, 30000),
        RateCurve::Stable => (9000, 400, 6000),
    };
    InterestRateData {
        optimalUsageRatio: optimal,
        baseVariableBorrowRate: 0,
        variableRateSlope1: slope1,
        variableRateSlope2: slope2,
    }
}

/// Deploys the market and lists `tokens` (priced by `feeds`), unconfigured.
pub async fn deploy(
    d: &mut Deployer,
    treasury: Address,
    tokens: &[Address],
    feeds: &[Address],
) -> eyre::Result<AaveDeployment> {
    let contracts = tokio::task::spawn_blocking(compile)
        .await?
        .wrap_err("compiling Aave V3.6 from @aave-dao/aave-v3-origin")?;
    let admin = d.from;
    let code = |name: &str| contracts.get(name).map(|c| c.creation.clone());

    // The libraries, through the CREATE2 factory with the package's salt.
    d.rpc
        .anvil_set_code(CREATE2_FACTORY, CREATE2_FACTORY_CODE)
        .await
        .wrap_err("installing the CREATE2 factory")?;
    let salt = keccak256("AAVE_V3_LIBRARIES_BATCH");
    for name in LIBRARIES {
        let library = code(name)?;
        let init = library.link(d.libraries())?;
        let address = create2(d, salt, init)
            .await
            .wrap_err_with(|| format!("deploying {name}"))?;
        d.add_library(format!("{}:{name}", library.source_name), name, address);
    }

    // Setup batch: the addresses provider, its ACL and the rate strategy.
    let provider = d
        .deploy_linked(
            "PoolAddressesProvider",
            &code("PoolAddressesProvider")?,
            PoolAddressesProvider::constructorCall {
                marketId: "cascade-devnet".into(),
                owner: admin,
            }
            .abi_encode(),
        )
        .await?;
    let strategy = d
        .deploy_linked(
            "DefaultReserveInterestRateStrategyV2",
            &code("DefaultReserveInterestRateStrategyV2")?,
            DefaultReserveInterestRateStrategyV2::constructorCall { provider }.abi_encode(),
        )
        .await?;

    // Pool batch: the implementations.
    let pool_impl = d
        .deploy_linked(
            "PoolInstance (implementation)",
            &code("PoolInstance")?,
            PoolInstance::constructorCall {
                provider,
                interestRateStrategy: strategy,
            }
            .abi_encode(),
        )
        .await?;
    let configurator_impl = d
        .deploy_linked(
            "PoolConfiguratorInstance (implementation)",
            &code("PoolConfiguratorInstance")?,
            Vec::new(),
        )
        .await?;

    // Periphery batch: the oracle, falling back to the settable mock.
    let fallback = deploy_fallback_oracle(d, tokens).await?;
    let oracle = d
        .deploy_linked(
            "AaveOracle",
            &code("AaveOracle")?,
            AaveOracle::constructorCall {
                provider,
                assets: tokens.to_vec(),
                sources: feeds.to_vec(),
                fallbackOracle: fallback,
                baseCurrency: Address::ZERO,
                baseCurrencyUnit: U256::from(100_000_000u64),
            }
            .abi_encode(),
        )
        .await?;

    // `AaveV3SetupProcedure`: the oracle, the proxies, then the ACL (its admin set before it is built).
    d.send(
        provider,
        PoolAddressesProvider::setPriceOracleCall {
            newPriceOracle: oracle,
        },
        "setPriceOracle",
    )
    .await?;
    d.send(
        provider,
        PoolAddressesProvider::setPoolImplCall {
            newPoolImpl: pool_impl,
        },
        "setPoolImpl",
    )
    .await?;
    d.send(
        provider,
        PoolAddressesProvider::setPoolConfiguratorImplCall {
            newPoolConfiguratorImpl: configurator_impl,
        },
        "setPoolConfiguratorImpl",
    )
    .await?;
    d.send(
        provider,
        PoolAddressesProvider::setACLAdminCall { newAclAdmin: admin },
        "setACLAdmin",
    )
    .await?;
    let acl = d
        .deploy_linked(
            "ACLManager",
            &code("ACLManager")?,
            ACLManager::constructorCall { provider }.abi_encode(),
        )
        .await?;
    d.send(
        provider,
        PoolAddressesProvider::setACLManagerCall { newAclManager: acl },
        "setACLManager",
    )
    .await?;
    d.send(acl, ACLManager::addPoolAdminCall { admin }, "addPoolAdmin")
        .await?;
    d.send(
        acl,
        ACLManager::addEmergencyAdminCall { admin },
        "addEmergencyAdmin",
    )
    .await?;
    let pool = chain::view(
        &d.rpc,
        provider,
        PoolAddressesProvider::getPoolCall {},
        "getPool",
    )
    .await?;
    let configurator = chain::view(
        &d.rpc,
        provider,
        PoolAddressesProvider::getPoolConfiguratorCall {},
        "getPoolConfigurator",
    )
    .await?;
    d.deployed.push(("Pool".into(), pool));
    d.deployed.push(("PoolConfigurator".into(), configurator));
    d.send(
        configurator,
        PoolConfiguratorV3_6::updateFlashloanPremiumCall {
            newFlashloanPremium: FLASHLOAN_PREMIUM_BPS,
        },
        "updateFlashloanPremium",
    )
    .await?;

    // Getters batch: the data provider.
    let data_provider = d
        .deploy_linked(
            "AaveProtocolDataProvider",
            &code("AaveProtocolDataProvider")?,
            AaveProtocolDataProvider::constructorCall {
                addressesProvider: provider,
            }
            .abi_encode(),
        )
        .await?;
    d.send(
        provider,
        PoolAddressesProvider::setPoolDataProviderCall {
            newDataProvider: data_provider,
        },
        "setPoolDataProvider",
    )
    .await?;

    // Tokens batch: implementations built with the Pool proxy; then the listing.
    let a_token_impl = d
        .deploy_linked(
            "ATokenInstance (implementation)",
            &code("ATokenInstance")?,
            ATokenInstance::constructorCall {
                pool,
                rewardsController: Address::ZERO,
                treasury,
            }
            .abi_encode(),
        )
        .await?;
    let variable_impl = d
        .deploy_linked(
            "VariableDebtTokenInstance (implementation)",
            &code("VariableDebtTokenInstance")?,
            VariableDebtTokenInstance::constructorCall {
                pool,
                rewardsController: Address::ZERO,
            }
            .abi_encode(),
        )
        .await?;
    let inputs = ASSETS
        .iter()
        .zip(tokens)
        .map(|(spec, token)| PoolConfiguratorV3_6::InitReserveInput {
            aTokenImpl: a_token_impl,
            variableDebtTokenImpl: variable_impl,
            underlyingAsset: *token,
            aTokenName: format!("Aave Devnet {}", spec.symbol),
            aTokenSymbol: format!("a{}", spec.symbol),
            variableDebtTokenName: format!("Aave Devnet Variable Debt {}", spec.symbol),
            variableDebtTokenSymbol: format!("variableDebt{}", spec.symbol),
            params: Bytes::new(),
            interestRateData: rate_data(spec.curve).abi_encode().into(),
        })
        .collect();
    d.send(
        configurator,
        PoolConfiguratorV3_6::initReservesCall { input: inputs },
        "initReserves",
    )
    .await?;

    Ok(AaveDeployment {
        addresses_provider: provider,
        pool,
        configurator,
        oracle,
        acl_manager: acl,
        data_provider,
        treasury,
        release: Release::V3_6,
        emode_category: Some(EMODE.id),
    })
}

/// Sets up [`EMODE`] with LTV `ltv` (raised to the threshold while seeding opens positions close to
/// it, like the reserves' own LTVs), its collateral and its borrowable assets.
pub async fn configure_emode(
    d: &Deployer,
    market: &AaveDeployment,
    assets: &[DeployedAsset],
    ltv: Bps,
) -> eyre::Result<()> {
    let bps = |b: Bps| u16::try_from(b.0).unwrap_or(u16::MAX);
    d.send(
        market.configurator,
        PoolConfiguratorV3_6::setEModeCategoryCall {
            categoryId: EMODE.id,
            ltv: bps(ltv),
            liquidationThreshold: bps(EMODE.liquidation_threshold),
            liquidationBonus: bps(EMODE.liquidation_bonus),
            label: EMODE.label.into(),
        },
        "setEModeCategory",
    )
    .await?;
    for &i in EMODE.collateral {
        d.send(
            market.configurator,
            PoolConfiguratorV3_6::setAssetCollateralInEModeCall {
                asset: assets[i].address,
                categoryId: EMODE.id,
                allowed: true,
            },
            &format!("{} as eMode collateral", ASSETS[i].symbol),
        )
        .await?;
    }
    for &i in EMODE.borrowable {
        d.send(
            market.configurator,
            PoolConfiguratorV3_6::setAssetBorrowableInEModeCall {
                asset: assets[i].address,
                categoryId: EMODE.id,
                borrowable: true,
            },
            &format!("{} borrowable in eMode", ASSETS[i].symbol),
        )
        .await?;
    }
    Ok(())
}

/// Deploys `init` through [`CREATE2_FACTORY`] with `salt`; its address, checked to hold code.
async fn create2(d: &Deployer, salt: B256, init: Bytes) -> eyre::Result<Address> {
    let address = CREATE2_FACTORY.create2(salt, keccak256(&init));
    let mut data = salt.to_vec();
    data.extend_from_slice(&init);
    let tx = alloy::rpc::types::TransactionRequest::default()
        .from(d.from)
        .to(CREATE2_FACTORY)
        .input(Bytes::from(data).into());
    let receipt = chain::send_unlocked(&d.rpc, tx, "CREATE2 deployment").await?;
    eyre::ensure!(receipt.status(), "the CREATE2 factory reverted");
    let code = alloy::providers::Provider::get_code_at(&d.rpc, address)
        .await
        .wrap_err("reading the library's code")?;
    eyre::ensure!(
        !code.is_empty(),
        "the CREATE2 factory deployed nothing at {address}"
    );
    Ok(address)
}
