//! Deploys a real Aave V3 market: V3.6 compiled from `@aave-dao/aave-v3-origin` 3.6.0's sources
//! ([`origin`], as deployed today), or V3.0 from `@aave/core-v3` 1.19.3's artifacts, in the order
//! recorded in shared/reference/devnet-notes.md (the traps are noted where the order matters). Both
//! list the same tokens and price feeds with the same risk parameters; V3.6 adds an eMode category.

pub mod origin;

use super::{
    Deployer,
    market::{ASSETS, EMODE, RateCurve},
};
use crate::chain::bindings::{
    ACLManager, AaveOracle, AaveProtocolDataProvider, AaveTokenImpl,
    DefaultReserveInterestRateStrategy, MintableERC20, MockAggregator, Pool, PoolAddressesProvider,
    PoolConfigurator, PriceOracle,
};
use crate::protocol::aave_v3::release::Release;
use alloy::primitives::{Address, Bytes, U256};
use serde::{Deserialize, Serialize};

const CORE: &str = "@aave/core-v3/artifacts/contracts";

/// Flash-loan premium the devnet sets, in bps (Aave's governance has used 5 to 9).
pub const FLASHLOAN_PREMIUM_BPS: u128 = 9;

/// Addresses of the deployed market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AaveDeployment {
    /// PoolAddressesProvider: the market's root; everything else is found through it.
    pub addresses_provider: Address,
    /// The Pool proxy.
    pub pool: Address,
    /// The PoolConfigurator proxy.
    pub configurator: Address,
    /// AaveOracle.
    pub oracle: Address,
    /// ACLManager.
    pub acl_manager: Address,
    /// AaveProtocolDataProvider.
    pub data_provider: Address,
    /// Receives the protocol's share of liquidation bonuses.
    pub treasury: Address,
    /// The release deployed.
    pub release: Release,
    /// The eMode category some seeded borrowers are in (V3.6 only).
    #[serde(default)]
    pub emode_category: Option<u8>,
}

/// Which Aave the devnet deploys (`cascade devnet --aave`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevnetAave {
    /// V3.6 compiled from `@aave-dao/aave-v3-origin` 3.6.0's sources: the release markets run today.
    #[default]
    V3_6,
    /// V3.0 from `@aave/core-v3` 1.19.3's artifacts.
    V3_0,
}

impl std::str::FromStr for DevnetAave {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Release>()? {
            Release::V3_6 => Ok(Self::V3_6),
            Release::V3_0 => Ok(Self::V3_0),
            other => Err(format!(
                "the devnet deploys Aave 3.6 (from its sources) or 3.0 (from its artifacts), not {other}"
            )),
        }
    }
}

impl DevnetAave {
    /// The release it is.
    pub fn release(self) -> Release {
        match self {
            Self::V3_6 => Release::V3_6,
            Self::V3_0 => Release::V3_0,
        }
    }
}

/// A token of the market with its feed and Aave tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedAsset {
    /// Symbol.
    pub symbol: String,
    /// The underlying token.
    pub address: Address,
    /// Decimals.
    pub decimals: u8,
    /// The MockAggregator behind its oracle price.
    pub feed: Address,
    /// Its aToken.
    pub a_token: Address,
    /// Its variable debt token.
    pub variable_debt_token: Address,
}

impl DeployedAsset {
    /// The asset as the devnet config names it, for shocks.
    pub fn devnet_asset(&self) -> crate::config::DevnetAsset {
        crate::config::DevnetAsset {
            symbol: self.symbol.clone(),
            address: self.address,
            decimals: self.decimals,
            feed: self.feed,
        }
    }
}

fn ray_bps(bps: u64) -> U256 {
    // 1 bp of a ray is 1e23.
    U256::from(bps) * U256::from(10u64).pow(U256::from(23))
}

/// Deploys tokens, feeds and the whole Aave market of `version`; lists and configures every asset in
/// [`ASSETS`] (and, on V3.6, the eMode category [`EMODE`]).
pub async fn deploy(
    d: &mut Deployer,
    treasury: Address,
    version: DevnetAave,
) -> eyre::Result<(AaveDeployment, Vec<DeployedAsset>)> {
    let (tokens, feeds) = deploy_tokens_and_feeds(d).await?;
    let market = match version {
        DevnetAave::V3_0 => deploy_v3_0(d, treasury, &tokens, &feeds).await?,
        DevnetAave::V3_6 => origin::deploy(d, treasury, &tokens, &feeds).await?,
    };
    let assets = configure_reserves(d, &market, &tokens, &feeds).await?;
    if market.emode_category.is_some() {
        origin::configure_emode(d, &market, &assets, EMODE.ltv).await?;
    }
    Ok((market, assets))
}

/// The tokens and their price feeds: Aave's own `MintableERC20` and `MockAggregator` (8 decimals).
async fn deploy_tokens_and_feeds(d: &mut Deployer) -> eyre::Result<(Vec<Address>, Vec<Address>)> {
    let mut tokens = Vec::new();
    let mut feeds = Vec::new();
    for spec in &ASSETS {
        let token = d
            .deploy_with(
                spec.symbol,
                &format!("{CORE}/mocks/tokens/MintableERC20.sol/MintableERC20.json"),
                MintableERC20::constructorCall {
                    name: spec.name.into(),
                    symbol: spec.symbol.into(),
                    decimals: spec.decimals,
                },
            )
            .await?;
        let feed = d
            .deploy_with(
                &format!("{} feed", spec.symbol),
                &format!(
                    "{CORE}/mocks/oracle/CLAggregators/MockAggregator.sol/MockAggregator.json"
                ),
                MockAggregator::constructorCall {
                    initialAnswer: alloy::primitives::I256::try_from(spec.price_base)?,
                },
            )
            .await?;
        tokens.push(token);
        feeds.push(feed);
    }
    Ok((tokens, feeds))
}

/// Aave's settable mock oracle, seeded with every price: the AaveOracle's fallback, so that an asset
/// whose source is cleared is priced there, one transaction per update (see `devnet::shock`).
async fn deploy_fallback_oracle(d: &mut Deployer, tokens: &[Address]) -> eyre::Result<Address> {
    let fallback = d
        .deploy(
            "PriceOracle (fallback)",
            &format!("{CORE}/mocks/oracle/PriceOracle.sol/PriceOracle.json"),
            Vec::new(),
        )
        .await?;
    for (spec, &asset) in ASSETS.iter().zip(tokens) {
        d.send(
            fallback,
            PriceOracle::setAssetPriceCall {
                asset,
                price: U256::from(spec.price_base),
            },
            "seed the fallback oracle",
        )
        .await?;
    }
    Ok(fallback)
}

/// The V3.0 market from `@aave/core-v3`'s artifacts, its reserves listed (not yet configured).
async fn deploy_v3_0(
    d: &mut Deployer,
    treasury: Address,
    tokens: &[Address],
    feeds: &[Address],
) -> eyre::Result<AaveDeployment> {
    let admin = d.from;

    // 3-4. Addresses provider and ACL. The ACL admin must be set before ACLManager is constructed.
    let provider = d
        .deploy_with(
            "PoolAddressesProvider",
            &format!(
                "{CORE}/protocol/configuration/PoolAddressesProvider.sol/PoolAddressesProvider.json"
            ),
            PoolAddressesProvider::constructorCall {
                marketId: "cascade-devnet".into(),
                owner: admin,
            },
        )
        .await?;
    d.send(
        provider,
        PoolAddressesProvider::setACLAdminCall { newAclAdmin: admin },
        "setACLAdmin",
    )
    .await?;
    let acl = d
        .deploy_with(
            "ACLManager",
            &format!("{CORE}/protocol/configuration/ACLManager.sol/ACLManager.json"),
            ACLManager::constructorCall { provider },
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

    // 5. Data provider.
    let data_provider = d
        .deploy_with(
            "AaveProtocolDataProvider",
            &format!("{CORE}/misc/AaveProtocolDataProvider.sol/AaveProtocolDataProvider.json"),
            AaveProtocolDataProvider::constructorCall {
                addressesProvider: provider,
            },
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

    // 6-8. Pool and configurator implementations (their logic libraries are deployed and linked on the
    // way), then the proxies. The Pool must exist before the configurator is set, or the configurator
    // proxy is initialised with a zero Pool.
    let pool_impl = d
        .deploy_with(
            "Pool (implementation)",
            &format!("{CORE}/protocol/pool/Pool.sol/Pool.json"),
            Pool::constructorCall { provider },
        )
        .await?;
    let configurator_impl = d
        .deploy(
            "PoolConfigurator (implementation)",
            &format!("{CORE}/protocol/pool/PoolConfigurator.sol/PoolConfigurator.json"),
            Vec::new(),
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
    let pool = crate::chain::view(
        &d.rpc,
        provider,
        PoolAddressesProvider::getPoolCall {},
        "getPool",
    )
    .await?;
    let configurator = crate::chain::view(
        &d.rpc,
        provider,
        PoolAddressesProvider::getPoolConfiguratorCall {},
        "getPoolConfigurator",
    )
    .await?;
    d.deployed.push(("Pool".into(), pool));
    d.deployed.push(("PoolConfigurator".into(), configurator));

    // 9. Oracle: USD base currency with 8 decimals, as on every V3 market, falling back to the
    // settable mock.
    let fallback = deploy_fallback_oracle(d, tokens).await?;
    let oracle = d
        .deploy_with(
            "AaveOracle",
            &format!("{CORE}/misc/AaveOracle.sol/AaveOracle.json"),
            AaveOracle::constructorCall {
                provider,
                assets: tokens.to_vec(),
                sources: feeds.to_vec(),
                fallbackOracle: fallback,
                baseCurrency: Address::ZERO,
                baseCurrencyUnit: U256::from(100_000_000u64),
            },
        )
        .await?;
    d.send(
        provider,
        PoolAddressesProvider::setPriceOracleCall {
            newPriceOracle: oracle,
        },
        "setPriceOracle",
    )
    .await?;

    // 10. Flash-loan premium.
    d.send(
        configurator,
        PoolConfigurator::updateFlashloanPremiumTotalCall {
            newFlashloanPremiumTotal: FLASHLOAN_PREMIUM_BPS,
        },
        "updateFlashloanPremiumTotal",
    )
    .await?;
    d.send(
        configurator,
        PoolConfigurator::updateFlashloanPremiumToProtocolCall {
            newFlashloanPremiumToProtocol: 0,
        },
        "updateFlashloanPremiumToProtocol",
    )
    .await?;

    // 11. Token implementations, constructed with the Pool proxy (not the implementation).
    let tokenization = format!("{CORE}/protocol/tokenization");
    let a_token_impl = d
        .deploy_with(
            "AToken (implementation)",
            &format!("{tokenization}/AToken.sol/AToken.json"),
            AaveTokenImpl::constructorCall { pool },
        )
        .await?;
    let stable_impl = d
        .deploy_with(
            "StableDebtToken (implementation)",
            &format!("{tokenization}/StableDebtToken.sol/StableDebtToken.json"),
            AaveTokenImpl::constructorCall { pool },
        )
        .await?;
    let variable_impl = d
        .deploy_with(
            "VariableDebtToken (implementation)",
            &format!("{tokenization}/VariableDebtToken.sol/VariableDebtToken.json"),
            AaveTokenImpl::constructorCall { pool },
        )
        .await?;

    // 12. Interest-rate strategies.
    let strategy_path = format!(
        "{CORE}/protocol/pool/DefaultReserveInterestRateStrategy.sol/DefaultReserveInterestRateStrategy.json"
    );
    let strategy_for = |curve| {
        let (optimal, slope1, slope2, stable1, stable2) = match curve {
            RateCurve::Volatile => (4500, 700, 30000, 0, 0),
            RateCurve::Stable => (9000, 400, 6000, 200, 6000),
        };
        DefaultReserveInterestRateStrategy::constructorCall {
            provider,
            optimalUsageRatio: ray_bps(optimal),
            baseVariableBorrowRate: U256::ZERO,
            variableRateSlope1: ray_bps(slope1),
            variableRateSlope2: ray_bps(slope2),
            stableRateSlope1: ray_bps(stable1),
            stableRateSlope2: ray_bps(stable2),
            baseStableRateOffset: ray_bps(200),
            stableRateExcessOffset: ray_bps(500),
            optimalStableToTotalDebtRatio: ray_bps(2000),
        }
    };
    let volatile = strategy_for(RateCurve::Volatile);
    let stable = strategy_for(RateCurve::Stable);
    let volatile_strategy = d
        .deploy_with("Strategy (volatile)", &strategy_path, volatile)
        .await?;
    let stable_strategy = d
        .deploy_with("Strategy (stable)", &strategy_path, stable)
        .await?;

    // 13. List the reserves.
    let inputs = ASSETS
        .iter()
        .zip(tokens)
        .map(|(spec, token)| PoolConfigurator::InitReserveInput {
            aTokenImpl: a_token_impl,
            stableDebtTokenImpl: stable_impl,
            variableDebtTokenImpl: variable_impl,
            underlyingAssetDecimals: spec.decimals,
            interestRateStrategyAddress: match spec.curve {
                RateCurve::Volatile => volatile_strategy,
                RateCurve::Stable => stable_strategy,
            },
            underlyingAsset: *token,
            treasury,
            incentivesController: Address::ZERO,
            aTokenName: format!("Aave Devnet {}", spec.symbol),
            aTokenSymbol: format!("a{}", spec.symbol),
            variableDebtTokenName: format!("Aave Devnet Variable Debt {}", spec.symbol),
            variableDebtTokenSymbol: format!("variableDebt{}", spec.symbol),
            stableDebtTokenName: format!("Aave Devnet Stable Debt {}", spec.symbol),
            stableDebtTokenSymbol: format!("stableDebt{}", spec.symbol),
            params: Bytes::new(),
        })
        .collect();
    d.send(
        configurator,
        PoolConfigurator::initReservesCall { input: inputs },
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
        release: Release::V3_0,
        emode_category: None,
    })
}

/// Each listed reserve's risk parameters (the same calls on V3.0 and V3.6), and its tokens.
async fn configure_reserves(
    d: &Deployer,
    market: &AaveDeployment,
    tokens: &[Address],
    feeds: &[Address],
) -> eyre::Result<Vec<DeployedAsset>> {
    let configurator = market.configurator;
    let mut assets = Vec::new();
    for ((spec, token), feed) in ASSETS.iter().zip(tokens).zip(feeds) {
        let asset = *token;
        d.send(
            configurator,
            PoolConfigurator::configureReserveAsCollateralCall {
                asset,
                ltv: U256::from(spec.ltv.0),
                liquidationThreshold: U256::from(spec.liquidation_threshold.0),
                liquidationBonus: U256::from(spec.liquidation_bonus.0),
            },
            &format!("configureReserveAsCollateral {}", spec.symbol),
        )
        .await?;
        d.send(
            configurator,
            PoolConfigurator::setReserveBorrowingCall {
                asset,
                enabled: true,
            },
            "setReserveBorrowing",
        )
        .await?;
        d.send(
            configurator,
            PoolConfigurator::setReserveFlashLoaningCall {
                asset,
                enabled: true,
            },
            "setReserveFlashLoaning",
        )
        .await?;
        d.send(
            configurator,
            PoolConfigurator::setReserveFactorCall {
                asset,
                newReserveFactor: U256::from(spec.reserve_factor.0),
            },
            "setReserveFactor",
        )
        .await?;
        d.send(
            configurator,
            PoolConfigurator::setLiquidationProtocolFeeCall {
                asset,
                newFee: U256::from(spec.liquidation_protocol_fee.0),
            },
            "setLiquidationProtocolFee",
        )
        .await?;
        let reserve = crate::chain::view(
            &d.rpc,
            market.pool,
            Pool::getReserveDataCall { asset },
            "getReserveData",
        )
        .await?;
        assets.push(DeployedAsset {
            symbol: spec.symbol.to_owned(),
            address: asset,
            decimals: spec.decimals,
            feed: *feed,
            a_token: reserve.aTokenAddress,
            variable_debt_token: reserve.variableDebtTokenAddress,
        });
    }
    Ok(assets)
}

/// Sets each reserve's LTV: to its liquidation threshold while seeding (`seeding = true`), so borrowers
/// can be opened close to liquidation, or back to the listed LTV. LTV only limits new borrows; health
/// factors use the threshold, so this does not change any seeded position's health.
pub async fn set_seeding_ltvs(
    d: &Deployer,
    market: &AaveDeployment,
    assets: &[DeployedAsset],
    seeding: bool,
) -> eyre::Result<()> {
    for (spec, asset) in ASSETS.iter().zip(assets) {
        let ltv = if seeding {
            spec.liquidation_threshold
        } else {
            spec.ltv
        };
        d.send(
            market.configurator,
            PoolConfigurator::configureReserveAsCollateralCall {
                asset: asset.address,
                ltv: U256::from(ltv.0),
                liquidationThreshold: U256::from(spec.liquidation_threshold.0),
                liquidationBonus: U256::from(spec.liquidation_bonus.0),
            },
            &format!("set LTV of {}", spec.symbol),
        )
        .await?;
    }
    if market.emode_category.is_some() {
        let ltv = if seeding {
            EMODE.liquidation_threshold
        } else {
            EMODE.ltv
        };
        origin::configure_emode(d, market, assets, ltv).await?;
    }
    Ok(())
}
