//! Solidity interfaces the keeper and the devnet call, written from the protocols' published sources
//! (`@aave/core-v3` 1.19.3, `@uniswap/v3-core` / `-periphery`, Multicall3). Constructors are declared
//! where the devnet deploys the contract, so their arguments are ABI-encoded by the same types.

#![allow(missing_docs, clippy::too_many_arguments)]

use alloy::sol;

sol! {
    /// An ERC-20 token; on the devnet, Aave's `MintableERC20`, which anyone may mint.
    #[sol(rpc)]
    contract MintableERC20 {
        constructor(string name, string symbol, uint8 decimals);
        function mint(address account, uint256 value) external returns (bool);
        function approve(address spender, uint256 amount) external returns (bool);
        function transfer(address to, uint256 amount) external returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        function decimals() external view returns (uint8);
        function symbol() external view returns (string);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }

    /// Aave's mock Chainlink feed: a fixed answer in storage slot 0, 8 decimals.
    #[sol(rpc)]
    contract MockAggregator {
        constructor(int256 initialAnswer);
        function latestAnswer() external view returns (int256);
        event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
    }

    #[sol(rpc)]
    contract PoolAddressesProvider {
        constructor(string marketId, address owner);
        function setACLAdmin(address newAclAdmin) external;
        function setACLManager(address newAclManager) external;
        function setPoolDataProvider(address newDataProvider) external;
        function setPoolImpl(address newPoolImpl) external;
        function setPoolConfiguratorImpl(address newPoolConfiguratorImpl) external;
        function setPriceOracle(address newPriceOracle) external;
        function getPool() external view returns (address);
        function getPoolConfigurator() external view returns (address);
        function getPriceOracle() external view returns (address);
        function getACLManager() external view returns (address);
        function getPoolDataProvider() external view returns (address);
        function getPriceOracleSentinel() external view returns (address);
    }

    #[sol(rpc)]
    contract ACLManager {
        constructor(address provider);
        function addPoolAdmin(address admin) external;
        function addEmergencyAdmin(address admin) external;
        function isPoolAdmin(address admin) external view returns (bool);
    }

    #[sol(rpc)]
    contract AaveProtocolDataProvider {
        constructor(address addressesProvider);
        function getReserveConfigurationData(address asset) external view returns (
            uint256 decimals,
            uint256 ltv,
            uint256 liquidationThreshold,
            uint256 liquidationBonus,
            uint256 reserveFactor,
            bool usageAsCollateralEnabled,
            bool borrowingEnabled,
            bool stableBorrowRateEnabled,
            bool isActive,
            bool isFrozen
        );
        function getReserveTokensAddresses(address asset) external view returns (
            address aTokenAddress,
            address stableDebtTokenAddress,
            address variableDebtTokenAddress
        );
        function getLiquidationProtocolFee(address asset) external view returns (uint256);
        function getUserReserveData(address asset, address user) external view returns (
            uint256 currentATokenBalance,
            uint256 currentStableDebt,
            uint256 currentVariableDebt,
            uint256 principalStableDebt,
            uint256 scaledVariableDebt,
            uint256 stableBorrowRate,
            uint256 liquidityRate,
            uint40 stableRateLastUpdated,
            bool usageAsCollateralEnabled
        );
    }

    /// The Aave V3 Pool (V3.0 layout of `getReserveData`, as in `@aave/core-v3` 1.19.3).
    #[sol(rpc)]
    contract Pool {
        struct ReserveConfigurationMap {
            uint256 data;
        }

        struct ReserveData {
            ReserveConfigurationMap configuration;
            uint128 liquidityIndex;
            uint128 currentLiquidityRate;
            uint128 variableBorrowIndex;
            uint128 currentVariableBorrowRate;
            uint128 currentStableBorrowRate;
            uint40 lastUpdateTimestamp;
            uint16 id;
            address aTokenAddress;
            address stableDebtTokenAddress;
            address variableDebtTokenAddress;
            address interestRateStrategyAddress;
            uint128 accruedToTreasury;
            uint128 unbacked;
            uint128 isolationModeTotalDebt;
        }

        struct EModeCategory {
            uint16 ltv;
            uint16 liquidationThreshold;
            uint16 liquidationBonus;
            address priceSource;
            string label;
        }

        constructor(address provider);
        function supply(address asset, uint256 amount, address onBehalfOf, uint16 referralCode) external;
        function withdraw(address asset, uint256 amount, address to) external returns (uint256);
        function borrow(address asset, uint256 amount, uint256 interestRateMode, uint16 referralCode, address onBehalfOf) external;
        function repay(address asset, uint256 amount, uint256 interestRateMode, address onBehalfOf) external returns (uint256);
        function liquidationCall(address collateralAsset, address debtAsset, address user, uint256 debtToCover, bool receiveAToken) external;
        function setUserUseReserveAsCollateral(address asset, bool useAsCollateral) external;
        function setUserEMode(uint8 categoryId) external;
        function getUserAccountData(address user) external view returns (
            uint256 totalCollateralBase,
            uint256 totalDebtBase,
            uint256 availableBorrowsBase,
            uint256 currentLiquidationThreshold,
            uint256 ltv,
            uint256 healthFactor
        );
        function getReserveData(address asset) external view returns (ReserveData memory);
        function getReservesList() external view returns (address[] memory);
        function getUserEMode(address user) external view returns (uint256);
        function getUserConfiguration(address user) external view returns (ReserveConfigurationMap memory);
        function getEModeCategoryData(uint8 id) external view returns (EModeCategory memory);
        function POOL_REVISION() external view returns (uint256);

        // V3.1+.
        function getLiquidationGracePeriod(address asset) external view returns (uint40);
        function getVirtualUnderlyingBalance(address asset) external view returns (uint128);
        // V3.2+.
        function getEModeCategoryCollateralConfig(uint8 id) external view returns (CollateralConfig memory);
        function getEModeCategoryCollateralBitmap(uint8 id) external view returns (uint128);
        // V3.3+.
        function getReserveDeficit(address asset) external view returns (uint256);
        // V3.4+.
        function RESERVE_INTEREST_RATE_STRATEGY() external view returns (address);
        // V3.6+.
        function getEModeCategoryLtvzeroBitmap(uint8 id) external view returns (uint128);
        // V3.7.
        function getIsEModeCategoryIsolated(uint8 id) external view returns (bool);

        struct CollateralConfig {
            uint16 ltv;
            uint16 liquidationThreshold;
            uint16 liquidationBonus;
        }

        event Supply(address indexed reserve, address user, address indexed onBehalfOf, uint256 amount, uint16 indexed referralCode);
        event Withdraw(address indexed reserve, address indexed user, address indexed to, uint256 amount);
        event Borrow(address indexed reserve, address user, address indexed onBehalfOf, uint256 amount, uint8 interestRateMode, uint256 borrowRate, uint16 indexed referralCode);
        event Repay(address indexed reserve, address indexed user, address indexed repayer, uint256 amount, bool useATokens);
        event LiquidationCall(address indexed collateralAsset, address indexed debtAsset, address indexed user, uint256 debtToCover, uint256 liquidatedCollateralAmount, address liquidator, bool receiveAToken);
        event ReserveUsedAsCollateralEnabled(address indexed reserve, address indexed user);
        event ReserveUsedAsCollateralDisabled(address indexed reserve, address indexed user);
        event UserEModeSet(address indexed user, uint8 categoryId);
        event SwapBorrowRateMode(address indexed reserve, address indexed user, uint8 interestRateMode);
        event RebalanceStableBorrowRate(address indexed reserve, address indexed user);
        /// V3.3+: debt burnt because the borrower has no collateral left, one per debt reserve.
        event DeficitCreated(address indexed user, address indexed debtAsset, uint256 amountCreated);
    }

    /// V3.5+ aTokens burn by scaled amounts: a function older aTokens lack (see
    /// `protocol::aave_v3::release`).
    contract ScaledBurnAToken {
        function burn(address from, address receiverOfUnderlying, uint256 amount, uint256 scaledAmount, uint256 index) external returns (bool);
    }

    /// An L2 market's sequencer sentinel (V3.0–3.6 honour it).
    contract PriceOracleSentinel {
        function isLiquidationAllowed() external view returns (bool);
    }

    /// aTokens and debt tokens store balances divided by the reserve's index.
    #[sol(rpc)]
    contract ScaledBalanceToken {
        function scaledBalanceOf(address user) external view returns (uint256);
        function balanceOf(address user) external view returns (uint256);
        /// aToken transfers: collateral moving between users without a Pool event.
        event BalanceTransfer(address indexed from, address indexed to, uint256 value, uint256 index);
    }

    /// V3.0 to V3.1 stable debt: balances compound at each user's own rate since their last update.
    #[sol(rpc)]
    contract StableDebtToken {
        function totalSupply() external view returns (uint256);
        function principalBalanceOf(address user) external view returns (uint256);
        function getUserStableRate(address user) external view returns (uint256);
        function getUserLastUpdated(address user) external view returns (uint40);
    }

    #[sol(rpc)]
    contract PoolConfigurator {
        struct InitReserveInput {
            address aTokenImpl;
            address stableDebtTokenImpl;
            address variableDebtTokenImpl;
            uint8 underlyingAssetDecimals;
            address interestRateStrategyAddress;
            address underlyingAsset;
            address treasury;
            address incentivesController;
            string aTokenName;
            string aTokenSymbol;
            string variableDebtTokenName;
            string variableDebtTokenSymbol;
            string stableDebtTokenName;
            string stableDebtTokenSymbol;
            bytes params;
        }

        function initReserves(InitReserveInput[] input) external;
        function configureReserveAsCollateral(address asset, uint256 ltv, uint256 liquidationThreshold, uint256 liquidationBonus) external;
        function setReserveBorrowing(address asset, bool enabled) external;
        function setReserveFlashLoaning(address asset, bool enabled) external;
        function setReserveFactor(address asset, uint256 newReserveFactor) external;
        function setLiquidationProtocolFee(address asset, uint256 newFee) external;
        function updateFlashloanPremiumTotal(uint128 newFlashloanPremiumTotal) external;
        function updateFlashloanPremiumToProtocol(uint128 newFlashloanPremiumToProtocol) external;
    }

    #[sol(rpc)]
    contract AaveOracle {
        constructor(address provider, address[] assets, address[] sources, address fallbackOracle, address baseCurrency, uint256 baseCurrencyUnit);
        function getAssetPrice(address asset) external view returns (uint256);
        function getAssetsPrices(address[] assets) external view returns (uint256[] memory);
        function getSourceOfAsset(address asset) external view returns (address);
        function getFallbackOracle() external view returns (address);
        function setAssetSources(address[] assets, address[] sources) external;
        event AssetSourceUpdated(address indexed asset, address indexed source);
    }

    /// Aave's mock fallback oracle: prices anyone can set, one transaction per update. The devnet's
    /// AaveOracle falls back to it for an asset whose source is cleared, so a price update is a
    /// transaction that waits in the mempool, as a feed's update does on a live chain.
    #[sol(rpc)]
    contract PriceOracle {
        function getAssetPrice(address asset) external view returns (uint256);
        function setAssetPrice(address asset, uint256 price) external;
        event AssetPriceUpdated(address asset, uint256 price, uint256 timestamp);
    }

    /// Token implementations are constructed with the Pool proxy's address.
    contract AaveTokenImpl {
        constructor(address pool);
    }

    contract DefaultReserveInterestRateStrategy {
        constructor(
            address provider,
            uint256 optimalUsageRatio,
            uint256 baseVariableBorrowRate,
            uint256 variableRateSlope1,
            uint256 variableRateSlope2,
            uint256 stableRateSlope1,
            uint256 stableRateSlope2,
            uint256 baseStableRateOffset,
            uint256 stableRateExcessOffset,
            uint256 optimalStableToTotalDebtRatio
        );
    }

    #[sol(rpc)]
    contract UniswapV3Factory {
        function createPool(address tokenA, address tokenB, uint24 fee) external returns (address pool);
        function getPool(address tokenA, address tokenB, uint24 fee) external view returns (address pool);
        function feeAmountTickSpacing(uint24 fee) external view returns (int24);
    }

    #[sol(rpc)]
    contract UniswapV3Pool {
        function initialize(uint160 sqrtPriceX96) external;
        function slot0() external view returns (
            uint160 sqrtPriceX96,
            int24 tick,
            uint16 observationIndex,
            uint16 observationCardinality,
            uint16 observationCardinalityNext,
            uint8 feeProtocol,
            bool unlocked
        );
        function liquidity() external view returns (uint128);
        function token0() external view returns (address);
        function token1() external view returns (address);
        function fee() external view returns (uint24);
        function tickSpacing() external view returns (int24);
        event Swap(address indexed sender, address indexed recipient, int256 amount0, int256 amount1, uint160 sqrtPriceX96, uint128 liquidity, int24 tick);
    }

    #[sol(rpc)]
    contract NonfungiblePositionManager {
        struct MintParams {
            address token0;
            address token1;
            uint24 fee;
            int24 tickLower;
            int24 tickUpper;
            uint256 amount0Desired;
            uint256 amount1Desired;
            uint256 amount0Min;
            uint256 amount1Min;
            address recipient;
            uint256 deadline;
        }

        constructor(address factory, address weth9, address tokenDescriptor);
        function mint(MintParams params) external payable returns (uint256 tokenId, uint128 liquidity, uint256 amount0, uint256 amount1);
    }

    #[sol(rpc)]
    contract SwapRouter {
        struct ExactInputSingleParams {
            address tokenIn;
            address tokenOut;
            uint24 fee;
            address recipient;
            uint256 deadline;
            uint256 amountIn;
            uint256 amountOutMinimum;
            uint160 sqrtPriceLimitX96;
        }

        constructor(address factory, address weth9);
        function exactInputSingle(ExactInputSingleParams params) external payable returns (uint256 amountOut);
    }

    #[sol(rpc)]
    contract QuoterV2 {
        struct QuoteExactInputSingleParams {
            address tokenIn;
            address tokenOut;
            uint256 amountIn;
            uint24 fee;
            uint160 sqrtPriceLimitX96;
        }

        constructor(address factory, address weth9);
        function quoteExactInputSingle(QuoteExactInputSingleParams params) external returns (
            uint256 amountOut,
            uint160 sqrtPriceX96After,
            uint32 initializedTicksCrossed,
            uint256 gasEstimate
        );
    }

    /// Multicall3's batch interface (canonical address in [`crate::chain::multicall::MULTICALL3`]).
    #[sol(rpc)]
    contract Multicall3 {
        struct Call3 {
            address target;
            bool allowFailure;
            bytes callData;
        }

        struct Result {
            bool success;
            bytes returnData;
        }

        function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory returnData);
        function getBlockNumber() external view returns (uint256 blockNumber);
    }
}

sol! {
    /// Aave V3.6's constructors and configuration calls that differ from V3.0's
    /// (`@aave-dao/aave-v3-origin` 3.6.0), for the devnet's deployment.
    #[sol(rpc)]
    contract PoolConfiguratorV3_6 {
        struct InitReserveInput {
            address aTokenImpl;
            address variableDebtTokenImpl;
            address underlyingAsset;
            string aTokenName;
            string aTokenSymbol;
            string variableDebtTokenName;
            string variableDebtTokenSymbol;
            bytes params;
            bytes interestRateData;
        }

        function initReserves(InitReserveInput[] input) external;
        function updateFlashloanPremium(uint128 newFlashloanPremium) external;
        function setEModeCategory(uint8 categoryId, uint16 ltv, uint16 liquidationThreshold, uint16 liquidationBonus, string label) external;
        function setAssetCollateralInEMode(address asset, uint8 categoryId, bool allowed) external;
        function setAssetBorrowableInEMode(address asset, uint8 categoryId, bool borrowable) external;
    }

    /// `IDefaultInterestRateStrategyV2.InterestRateData`, ABI-encoded into a reserve's listing.
    struct InterestRateData {
        uint16 optimalUsageRatio;
        uint32 baseVariableBorrowRate;
        uint32 variableRateSlope1;
        uint32 variableRateSlope2;
    }

    contract PoolInstance {
        constructor(address provider, address interestRateStrategy);
    }

    contract ATokenInstance {
        constructor(address pool, address rewardsController, address treasury);
    }

    contract VariableDebtTokenInstance {
        constructor(address pool, address rewardsController);
    }

    contract DefaultReserveInterestRateStrategyV2 {
        constructor(address provider);
    }
}

/// The `VERSION` of contracts/Liquidator.sol these bindings speak.
pub const LIQUIDATOR_VERSION: u16 = 4;

sol! {
    /// cascade's flash-swap liquidator (contracts/Liquidator.sol).
    #[sol(rpc, all_derives)]
    contract Liquidator {
        enum Venue { UniswapV3, UniswapV2 }

        struct Liquidation {
            address collateral;
            address debt;
            address borrower;
            uint256 debtToCover;
            uint256 collateralToSell;
            Venue venue;
            address swapPool;
            uint256 minProfit;
        }

        constructor(address aavePool_, address owner_);
        function VERSION() external view returns (uint16);
        function owner() external view returns (address);
        function operators(address account) external view returns (bool);
        function aavePool() external view returns (address);
        function liquidate(Liquidation l) external returns (uint256 profit, uint256 gasUsed);
        function liquidateBatch(Liquidation[] ls) external returns (uint256[] profits, uint256 gasUsed);
        function setOperator(address operator, bool allowed) external;
        function sweep(address token, address to, uint256 amount) external;
        function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta, bytes data) external;
        function uniswapV2Call(address sender, uint256 amount0, uint256 amount1, bytes data) external;

        event Liquidated(address indexed borrower, address indexed collateral, address indexed debt, uint256 debtRepaid, uint256 collateralSold, uint256 profit);

        error NotOwner();
        error NotOperator();
        error UnexpectedCallback();
        error InsufficientProfit(uint256 profit, uint256 minProfit);
        error SeizedTooLittle(uint256 seized, uint256 owed);
    }
}
