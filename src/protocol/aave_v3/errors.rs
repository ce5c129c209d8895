//! Aave's revert reasons by name: V3.0–3.3 revert with a numeric string (`Error("45")`), V3.4+ with a
//! custom error (`HealthFactorNotBelowThreshold()`). Both are named here from the releases'
//! `Errors.sol`, so a refused plan or a mined revert says what the Pool objected to.

#![allow(missing_docs)]

alloy::sol! {
    /// Every custom error of `Errors.sol` in V3.4 to V3.7.
    #[derive(Debug, PartialEq, Eq)]
    interface AaveErrors {
        error AclAdminCannotBeZero();
        error AddressesProviderAlreadyAdded();
        error AddressesProviderNotRegistered();
        error AssetNotBorrowableInIsolation();
        error AssetNotListed();
        error BorrowCapExceeded();
        error BorrowingNotEnabled();
        error CallerMustBePool();
        error CallerNotAToken();
        error CallerNotAssetListingOrPoolAdmin();
        error CallerNotPoolAdmin();
        error CallerNotPoolConfigurator();
        error CallerNotPoolOrEmergencyAdmin();
        error CallerNotPositionManager();
        error CallerNotRiskOrPoolAdmin();
        error CallerNotRiskOrPoolOrEmergencyAdmin();
        error CallerNotUmbrella();
        error CollateralCannotBeLiquidated();
        error CollateralCannotCoverNewBorrow();
        error DebtCeilingExceeded();
        error DebtCeilingNotZero();
        error EModeCategoryReserved();
        error FlashloanDisabled();
        error FlashloanPremiumInvalid();
        error HealthFactorLowerThanLiquidationThreshold();
        error HealthFactorNotBelowThreshold();
        error InconsistentEModeCategory();
        error InconsistentFlashloanParams();
        error InconsistentParamsLength();
        error InvalidAddressesProvider();
        error InvalidAddressesProviderId();
        error InvalidAmount();
        error InvalidBorrowCap();
        error InvalidBurnAmount();
        error InvalidCollateralInEmode(address reserve, uint256 categoryId);
        error InvalidDebtCeiling();
        error InvalidDebtInEmode(address reserve, uint256 categoryId);
        error InvalidDecimals();
        error InvalidEmodeCategoryParams();
        error InvalidExpiration();
        error InvalidFlashloanExecutorReturn();
        error InvalidFreezeState();
        error InvalidGracePeriod();
        error InvalidInterestRateModeSelected();
        error InvalidLiquidationBonus();
        error InvalidLiquidationProtocolFee();
        error InvalidLiquidationThreshold();
        error InvalidLtv();
        error InvalidLtvzeroState();
        error InvalidMaxRate();
        error InvalidMintAmount();
        error InvalidOptimalUsageRatio();
        error InvalidReserveFactor();
        error InvalidReserveIndex();
        error InvalidReserveParams();
        error InvalidSignature();
        error InvalidSupplyCap();
        error LiquidationGraceSentinelCheckFailed();
        error LtvValidationFailed();
        error MustBeEmodeCollateral(address reserve, uint256 categoryId);
        error MustNotLeaveDust();
        error NoDebtOfSelectedType();
        error NoExplicitAmountToRepayOnBehalf();
        error NoMoreReservesAllowed();
        error NotBorrowableInEMode();
        error NotContract();
        error NotEnoughAvailableUserBalance();
        error OperationNotSupported();
        error PoolAddressesDoNotMatch();
        error PriceOracleSentinelCheckFailed();
        error ReserveAlreadyAdded();
        error ReserveAlreadyInitialized();
        error ReserveDebtNotZero();
        error ReserveFrozen();
        error ReserveInactive();
        error ReserveLiquidityNotZero();
        error ReserveNotInDeficit();
        error ReservePaused();
        error SelfLiquidation();
        error SiloedBorrowingViolation();
        error Slope2MustBeGteSlope1();
        error SpecifiedCurrencyNotBorrowedByUser();
        error SupplyCapExceeded();
        error SupplyToAToken();
        error UnderlyingBalanceZero();
        error UnderlyingCannotBeRescued();
        error UnderlyingClaimableRightsNotZero();
        error UserCannotHaveDebt();
        error UserHasAssetWithZeroLtv();
        error UserInIsolationModeOrLtvZero();
        error VariableDebtSupplyNotZero();
        error WithdrawToAToken();
        error ZeroAddressNotValid();
    }
}

/// The name of a V3.0–3.3 numeric error code (`Errors.sol` of V3.3, which kept every earlier code).
pub fn code_name(code: &str) -> Option<&'static str> {
    let code = code
        .trim()
        .trim_start_matches("execution reverted: ")
        .trim_start_matches("revert: ");
    Some(match code {
        "1" => "CALLER_NOT_POOL_ADMIN",
        "2" => "CALLER_NOT_EMERGENCY_ADMIN",
        "3" => "CALLER_NOT_POOL_OR_EMERGENCY_ADMIN",
        "4" => "CALLER_NOT_RISK_OR_POOL_ADMIN",
        "5" => "CALLER_NOT_ASSET_LISTING_OR_POOL_ADMIN",
        "6" => "CALLER_NOT_BRIDGE",
        "7" => "ADDRESSES_PROVIDER_NOT_REGISTERED",
        "8" => "INVALID_ADDRESSES_PROVIDER_ID",
        "9" => "NOT_CONTRACT",
        "10" => "CALLER_NOT_POOL_CONFIGURATOR",
        "11" => "CALLER_NOT_ATOKEN",
        "12" => "INVALID_ADDRESSES_PROVIDER",
        "13" => "INVALID_FLASHLOAN_EXECUTOR_RETURN",
        "14" => "RESERVE_ALREADY_ADDED",
        "15" => "NO_MORE_RESERVES_ALLOWED",
        "16" => "EMODE_CATEGORY_RESERVED",
        "17" => "INVALID_EMODE_CATEGORY_ASSIGNMENT",
        "18" => "RESERVE_LIQUIDITY_NOT_ZERO",
        "19" => "FLASHLOAN_PREMIUM_INVALID",
        "20" => "INVALID_RESERVE_PARAMS",
        "21" => "INVALID_EMODE_CATEGORY_PARAMS",
        "22" => "BRIDGE_PROTOCOL_FEE_INVALID",
        "23" => "CALLER_MUST_BE_POOL",
        "24" => "INVALID_MINT_AMOUNT",
        "25" => "INVALID_BURN_AMOUNT",
        "26" => "INVALID_AMOUNT",
        "27" => "RESERVE_INACTIVE",
        "28" => "RESERVE_FROZEN",
        "29" => "RESERVE_PAUSED",
        "30" => "BORROWING_NOT_ENABLED",
        "32" => "NOT_ENOUGH_AVAILABLE_USER_BALANCE",
        "33" => "INVALID_INTEREST_RATE_MODE_SELECTED",
        "34" => "COLLATERAL_BALANCE_IS_ZERO",
        "35" => "HEALTH_FACTOR_LOWER_THAN_LIQUIDATION_THRESHOLD",
        "36" => "COLLATERAL_CANNOT_COVER_NEW_BORROW",
        "37" => "COLLATERAL_SAME_AS_BORROWING_CURRENCY",
        "39" => "NO_DEBT_OF_SELECTED_TYPE",
        "40" => "NO_EXPLICIT_AMOUNT_TO_REPAY_ON_BEHALF",
        "42" => "NO_OUTSTANDING_VARIABLE_DEBT",
        "43" => "UNDERLYING_BALANCE_ZERO",
        "44" => "INTEREST_RATE_REBALANCE_CONDITIONS_NOT_MET",
        "45" => "HEALTH_FACTOR_NOT_BELOW_THRESHOLD",
        "46" => "COLLATERAL_CANNOT_BE_LIQUIDATED",
        "47" => "SPECIFIED_CURRENCY_NOT_BORROWED_BY_USER",
        "49" => "INCONSISTENT_FLASHLOAN_PARAMS",
        "50" => "BORROW_CAP_EXCEEDED",
        "51" => "SUPPLY_CAP_EXCEEDED",
        "52" => "UNBACKED_MINT_CAP_EXCEEDED",
        "53" => "DEBT_CEILING_EXCEEDED",
        "54" => "UNDERLYING_CLAIMABLE_RIGHTS_NOT_ZERO",
        "56" => "VARIABLE_DEBT_SUPPLY_NOT_ZERO",
        "57" => "LTV_VALIDATION_FAILED",
        "58" => "INCONSISTENT_EMODE_CATEGORY",
        "59" => "PRICE_ORACLE_SENTINEL_CHECK_FAILED",
        "60" => "ASSET_NOT_BORROWABLE_IN_ISOLATION",
        "61" => "RESERVE_ALREADY_INITIALIZED",
        "62" => "USER_IN_ISOLATION_MODE_OR_LTV_ZERO",
        "63" => "INVALID_LTV",
        "64" => "INVALID_LIQ_THRESHOLD",
        "65" => "INVALID_LIQ_BONUS",
        "66" => "INVALID_DECIMALS",
        "67" => "INVALID_RESERVE_FACTOR",
        "68" => "INVALID_BORROW_CAP",
        "69" => "INVALID_SUPPLY_CAP",
        "70" => "INVALID_LIQUIDATION_PROTOCOL_FEE",
        "71" => "INVALID_EMODE_CATEGORY",
        "72" => "INVALID_UNBACKED_MINT_CAP",
        "73" => "INVALID_DEBT_CEILING",
        "74" => "INVALID_RESERVE_INDEX",
        "75" => "ACL_ADMIN_CANNOT_BE_ZERO",
        "76" => "INCONSISTENT_PARAMS_LENGTH",
        "77" => "ZERO_ADDRESS_NOT_VALID",
        "78" => "INVALID_EXPIRATION",
        "79" => "INVALID_SIGNATURE",
        "80" => "OPERATION_NOT_SUPPORTED",
        "81" => "DEBT_CEILING_NOT_ZERO",
        "82" => "ASSET_NOT_LISTED",
        "83" => "INVALID_OPTIMAL_USAGE_RATIO",
        "85" => "UNDERLYING_CANNOT_BE_RESCUED",
        "86" => "ADDRESSES_PROVIDER_ALREADY_ADDED",
        "87" => "POOL_ADDRESSES_DO_NOT_MATCH",
        "89" => "SILOED_BORROWING_VIOLATION",
        "90" => "RESERVE_DEBT_NOT_ZERO",
        "91" => "FLASHLOAN_DISABLED",
        "92" => "INVALID_MAX_RATE",
        "93" => "WITHDRAW_TO_ATOKEN",
        "94" => "SUPPLY_TO_ATOKEN",
        "95" => "SLOPE_2_MUST_BE_GTE_SLOPE_1",
        "96" => "CALLER_NOT_RISK_OR_POOL_OR_EMERGENCY_ADMIN",
        "97" => "LIQUIDATION_GRACE_SENTINEL_CHECK_FAILED",
        "98" => "INVALID_GRACE_PERIOD",
        "99" => "INVALID_FREEZE_STATE",
        "100" => "NOT_BORROWABLE_IN_EMODE",
        "101" => "CALLER_NOT_UMBRELLA",
        "102" => "RESERVE_NOT_IN_DEFICIT",
        "103" => "MUST_NOT_LEAVE_DUST",
        "104" => "USER_CANNOT_HAVE_DEBT",
        _ => return None,
    })
}

/// Aave's reason in a revert's data: a custom error by name (with its arguments), or a numeric
/// string code with its name; `None` when the data is neither.
pub fn describe(data: &[u8]) -> Option<String> {
    use alloy::sol_types::SolInterface;
    if let Ok(error) = AaveErrors::AaveErrorsErrors::abi_decode(data) {
        let debug = format!("{error:?}");
        // `MustNotLeaveDust(MustNotLeaveDust)` → `MustNotLeaveDust`; errors with fields keep them.
        let name = debug.split('(').next().unwrap_or(&debug);
        return Some(if debug.ends_with(&format!("({name})")) {
            format!("{name}()")
        } else {
            debug
        });
    }
    let reason = alloy::sol_types::decode_revert_reason(data)?;
    let code = reason.trim_start_matches("revert: ");
    code_name(code).map(|name| format!("{code} ({name})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::sol_types::{SolError, SolValue};

    #[test]
    fn custom_errors_are_named_by_their_selectors() {
        // Selectors from shared/reference/aave-versions.md §2.4.
        let cases = [
            ("930bb771", "HealthFactorNotBelowThreshold()"),
            ("b629b0e4", "MustNotLeaveDust()"),
            ("44511af1", "SelfLiquidation()"),
            ("9e3e6060", "LiquidationGraceSentinelCheckFailed()"),
            ("2075cc10", "InvalidBurnAmount()"),
            ("979b5ce8", "CollateralCannotBeLiquidated()"),
        ];
        for (selector, name) in cases {
            let data = alloy::primitives::hex::decode(selector).unwrap();
            assert_eq!(describe(&data).as_deref(), Some(name), "{selector}");
        }
        assert_eq!(
            AaveErrors::MustNotLeaveDust::SELECTOR,
            [0xb6, 0x29, 0xb0, 0xe4]
        );
    }

    #[test]
    fn numeric_codes_are_named() {
        let data = alloy::sol_types::Revert::from("45").abi_encode();
        assert_eq!(
            describe(&data).as_deref(),
            Some("45 (HEALTH_FACTOR_NOT_BELOW_THRESHOLD)")
        );
        let dust = alloy::sol_types::Revert::from("103").abi_encode();
        assert_eq!(
            describe(&dust).as_deref(),
            Some("103 (MUST_NOT_LEAVE_DUST)")
        );
        assert_eq!(
            code_name("execution reverted: 27"),
            Some("RESERVE_INACTIVE")
        );
        assert_eq!(code_name("999"), None);
        // Neither kind: not Aave's.
        assert_eq!(describe(&("x".to_string()).abi_encode()), None);
        assert_eq!(describe(&[]), None);
    }
}
