//! Aave V3 (and forks with its Pool interface) behind [`LendingProtocol`], priced by the rules of the
//! release the Pool turns out to run ([`release`]).

pub mod errors;
pub mod math;
pub mod release;

use super::{BlockRef, Health, LendingProtocol, MarketChange};
use crate::{
    chain::{
        ChainError, Rpc,
        bindings::{
            AaveOracle, Pool, PoolAddressesProvider, PriceOracleSentinel, ScaledBalanceToken,
            ScaledBurnAToken, StableDebtToken,
        },
        multicall::{self, CallFailure},
        view,
    },
    store::StoredPosition,
};
use alloy::{
    eips::BlockId,
    primitives::{Address, B256, U256},
    rpc::types::Log,
    sol_types::{SolCall, SolEvent},
};
use math::{EModeCategory, ReserveConfig, ReserveIndexes, ReserveView, UserReserve};
use release::{Marker, Release};
use std::collections::BTreeMap;

/// One listed reserve and its state at the last refreshed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserve {
    /// The underlying asset.
    pub asset: Address,
    /// Its id (position in the Pool's reserves list and in user configuration bitmaps).
    pub id: u16,
    /// aToken.
    pub a_token: Address,
    /// Stable debt token.
    pub stable_debt_token: Address,
    /// Variable debt token.
    pub variable_debt_token: Address,
    /// Configuration.
    pub config: ReserveConfig,
    /// Indexes and rates.
    pub indexes: ReserveIndexes,
    /// Oracle price (base currency).
    pub price: U256,
    /// V3.1+: the end of the reserve's liquidation grace period (a timestamp; 0 for none). A
    /// liquidation of this collateral or debt reverts until a block whose time is past it.
    pub grace_until: u64,
    /// V3.1+: the underlying the reserve holds for withdrawals and liquidations (`None` before): a
    /// liquidation paying out more of this collateral reverts.
    pub virtual_balance: Option<U256>,
    /// V3.0–3.1: some of the reserve's debt is at a stable rate, so its borrowers' stable balances are
    /// read (with stable borrowing off, older stable loans still run).
    pub stable_debt_outstanding: bool,
}

impl Reserve {
    /// Whether a liquidation of this reserve (as collateral or debt) can run in a block at `time`:
    /// active, not paused, and past any grace period.
    pub fn liquidation_open(&self, time: u64) -> bool {
        self.config.active && !self.config.paused && self.grace_until < time
    }
}

/// An Aave V3 market, found through its PoolAddressesProvider.
#[derive(Debug, Clone)]
pub struct AaveV3 {
    /// PoolAddressesProvider.
    pub addresses_provider: Address,
    /// The Pool proxy.
    pub pool: Address,
    /// The price oracle.
    pub oracle: Address,
    /// Multicall3.
    pub multicall: Address,
    /// Reserves by id.
    pub reserves: BTreeMap<u16, Reserve>,
    /// eMode categories in use, by id.
    pub emodes: BTreeMap<u8, EModeCategory>,
    /// The block the state was read at.
    pub block: Option<BlockRef>,
    /// The release whose rules the market follows.
    pub release: Release,
    /// `POOL_REVISION()`, for display (forks number their own).
    pub revision: Option<U256>,
    /// The PoolAddressesProvider's PriceOracleSentinel (L2 markets; `None` for none).
    pub sentinel: Option<Address>,
    /// What the sentinel said at `block`: liquidations above HF 0.95 allowed (true without one, and
    /// from V3.7, which ignores it).
    pub liquidations_allowed: bool,
    /// The block of the last scan of every eMode category id (categories can be added at any time).
    emode_scan_block: Option<u64>,
    /// A user read found a category the last scan did not: scan again at the next block.
    unknown_emode_seen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Each reserve as health needs it at `block` (configuration, normalized income and debt index,
    /// price), indexed by id: computed once per block, not once per position holding it, and read by
    /// re-pricing without a map lookup.
    priced: Vec<Option<PricedReserve>>,
}

/// A reserve's [`ReserveView`] at one block, owned.
#[derive(Debug, Clone, Copy)]
struct PricedReserve {
    config: ReserveConfig,
    income: U256,
    debt_index: U256,
    price: U256,
    /// Variable borrow rate (ray per year).
    borrow_rate: U256,
}

/// `getUserAccountData` calls per `aggregate3` when verifying: up to ~100k gas each with several
/// reserves, so 300 stay within geth's 50M `eth_call` cap.
const VERIFY_BATCH: usize = 300;

/// Blocks between scans of every eMode category id (1 to 255): the categories in use are read every
/// block, and one that governance adds is found within this many blocks (a user can only enter a
/// category that exists; one seen in a user read before the next scan triggers it at once).
const EMODE_RESCAN_BLOCKS: u64 = 1_800;

/// Calls per `aggregate3` for user reads: each is a cheap balance read (a few thousand gas).
const USER_READ_BATCH: usize = 500;

impl AaveV3 {
    /// Looks up the Pool and oracle behind `addresses_provider`, and the release the Pool runs (or
    /// takes `release` as told: for a fork whose getters mislead the detection).
    pub async fn connect(
        rpc: &Rpc,
        addresses_provider: Address,
        multicall: Address,
        release: Option<Release>,
    ) -> Result<Self, ChainError> {
        let pool = view(
            rpc,
            addresses_provider,
            PoolAddressesProvider::getPoolCall {},
            "PoolAddressesProvider.getPool",
        )
        .await?;
        let oracle = view(
            rpc,
            addresses_provider,
            PoolAddressesProvider::getPriceOracleCall {},
            "getPriceOracle",
        )
        .await?;
        let (detected, revision) = detect_release(rpc, pool, multicall).await?;
        Ok(Self {
            addresses_provider,
            pool,
            oracle,
            multicall,
            reserves: BTreeMap::new(),
            emodes: BTreeMap::new(),
            block: None,
            release: release.unwrap_or(detected),
            revision,
            sentinel: None,
            liquidations_allowed: true,
            emode_scan_block: None,
            unknown_emode_seen: Default::default(),
            priced: Vec::new(),
        })
    }

    /// A market known only by its state at `block`, with no chain behind it: for what-if pricing (the
    /// cascade map moves its prices) and tests.
    pub fn from_state(
        release: Release,
        reserves: BTreeMap<u16, Reserve>,
        emodes: BTreeMap<u8, EModeCategory>,
        block: BlockRef,
    ) -> Self {
        let mut market = Self {
            addresses_provider: Address::ZERO,
            pool: Address::ZERO,
            oracle: Address::ZERO,
            multicall: Address::ZERO,
            reserves,
            emodes,
            block: Some(block),
            release,
            revision: None,
            sentinel: None,
            liquidations_allowed: true,
            emode_scan_block: None,
            unknown_emode_seen: Default::default(),
            priced: Vec::new(),
        };
        market.price_reserves();
        market
    }

    /// Sets reserve `id`'s oracle price (what-if pricing: the health of every position at a price the
    /// oracle has not reported).
    pub fn set_price(&mut self, id: u16, price: U256) {
        if let Some(r) = self.reserves.get_mut(&id) {
            r.price = price;
        }
        if let Some(Some(p)) = self.priced.get_mut(usize::from(id)) {
            p.price = price;
        }
    }

    /// The reserve holding `asset`.
    pub fn reserve_of(&self, asset: Address) -> Option<&Reserve> {
        self.reserves.values().find(|r| r.asset == asset)
    }

    #[inline]
    fn view_of(&self, id: u16) -> Option<ReserveView<'_>> {
        let p = self.priced.get(usize::from(id))?.as_ref()?;
        Some(ReserveView {
            config: &p.config,
            income: p.income,
            debt_index: p.debt_index,
            price: p.price,
        })
    }

    /// Recomputes [`Self::priced`] for the current block.
    fn price_reserves(&mut self) {
        let now = self.block.map(|b| b.timestamp).unwrap_or_default();
        let len = self
            .reserves
            .keys()
            .max()
            .map_or(0, |m| usize::from(*m) + 1);
        self.priced = vec![None; len];
        for (id, r) in &self.reserves {
            self.priced[usize::from(*id)] = Some(PricedReserve {
                config: r.config,
                income: r.indexes.normalized_income(now),
                debt_index: r.indexes.normalized_debt(self.release.compounding(), now),
                price: r.price,
                borrow_rate: r.indexes.variable_borrow_rate,
            });
        }
    }

    /// Reads every eMode category id (1 to 255) and returns those that exist (a threshold above 0):
    /// the ones read each block from then on.
    async fn scan_emodes(&self, rpc: &Rpc, at: BlockId) -> Result<Vec<u8>, ChainError> {
        let calls: Vec<(Address, Vec<u8>)> = (1..=u8::MAX)
            .map(|id| {
                let call = if self.release.emode_bitmaps() {
                    Pool::getEModeCategoryCollateralConfigCall { id }.abi_encode()
                } else {
                    Pool::getEModeCategoryDataCall { id }.abi_encode()
                };
                (self.pool, call)
            })
            .collect();
        let results =
            multicall::aggregate3_raw(rpc, self.multicall, calls, at, MARKET_READ_BATCH).await?;
        let exists = |result| {
            if self.release.emode_bitmaps() {
                multicall::decode::<Pool::getEModeCategoryCollateralConfigCall>(result)
                    .is_ok_and(|c| c.liquidationThreshold != 0)
            } else {
                multicall::decode::<Pool::getEModeCategoryDataCall>(result)
                    .is_ok_and(|c| c.liquidationThreshold != 0)
            }
        };
        Ok((1..=u8::MAX)
            .zip(&results)
            .filter(|(_, r)| exists(r))
            .map(|(id, _)| id)
            .collect())
    }

    /// eMode category `id` from its calls' results ([`emode_calls`]), taken in order by `take`; before
    /// V3.2 its price from `oracle` and its members from `reserves` (the read's, not yet kept).
    async fn decode_emode<'r>(
        &self,
        rpc: &Rpc,
        at: BlockId,
        id: u8,
        oracle: Address,
        reserves: &BTreeMap<u16, Reserve>,
        take: &mut impl FnMut(
            &str,
        )
            -> Result<&'r Result<alloy::primitives::Bytes, CallFailure>, ChainError>,
    ) -> Result<EModeCategory, ChainError> {
        if self.release.emode_bitmaps() {
            let config = decode::<Pool::getEModeCategoryCollateralConfigCall>(
                take("eMode config")?,
                "getEModeCategoryCollateralConfig",
            )?;
            let bitmap = decode::<Pool::getEModeCategoryCollateralBitmapCall>(
                take("eMode bitmap")?,
                "getEModeCategoryCollateralBitmap",
            )?;
            return Ok(EModeCategory {
                id,
                ltv: u64::from(config.ltv),
                liquidation_threshold: u64::from(config.liquidationThreshold),
                liquidation_bonus: u64::from(config.liquidationBonus),
                collateral_bitmap: bitmap,
                price: U256::ZERO,
            });
        }
        let data = decode::<Pool::getEModeCategoryDataCall>(
            take("eMode category")?,
            "getEModeCategoryData",
        )?;
        let price = if data.priceSource.is_zero() {
            U256::ZERO
        } else {
            crate::chain::view_at(
                rpc,
                oracle,
                AaveOracle::getAssetPriceCall {
                    asset: data.priceSource,
                },
                at,
                "eMode price",
            )
            .await?
        };
        // Before V3.2 a reserve names its one category in its configuration.
        let collateral_bitmap = reserves
            .values()
            .filter(|r| r.config.emode_category == id && r.id < 128)
            .fold(0u128, |bits, r| bits | 1 << r.id);
        Ok(EModeCategory {
            id,
            ltv: u64::from(data.ltv),
            liquidation_threshold: u64::from(data.liquidationThreshold),
            liquidation_bonus: u64::from(data.liquidationBonus),
            collateral_bitmap,
            price,
        })
    }

    /// Full account data (as `getUserAccountData`) of a stored position at the last refreshed block.
    pub fn account_data(&self, position: &StoredPosition) -> math::AccountData {
        let now = self.block.map(|b| b.timestamp).unwrap_or_default();
        // Most positions are in no category: no lookup for them.
        let emode = self.emode_of(position);
        math::account_data(self.release, &position.holdings, emode, now, |id| {
            self.view_of(id)
        })
    }

    /// A holding's collateral balance at the last refreshed block, as the aToken gives it.
    pub fn collateral_balance(&self, holding: &UserReserve) -> U256 {
        self.view_of(holding.reserve_id).map_or(U256::ZERO, |r| {
            self.release
                .a_token_balance(holding.scaled_a_token, r.income)
        })
    }

    /// A holding's debt at the last refreshed block (variable, and stable before V3.2), as the debt
    /// tokens give it.
    pub fn debt_balance(&self, holding: &UserReserve) -> U256 {
        let now = self.block.map(|b| b.timestamp).unwrap_or_default();
        let variable = self.view_of(holding.reserve_id).map_or(U256::ZERO, |r| {
            self.release
                .debt_balance(holding.scaled_variable_debt, r.debt_index)
        });
        variable + math::stable_debt(holding, now)
    }

    /// The eMode category a position is in, when it is in one the market knows.
    pub fn emode_of(&self, position: &StoredPosition) -> Option<&EModeCategory> {
        match position.emode {
            0 => None,
            id => self.emodes.get(&id),
        }
    }

    /// [`Health::recheck_at`] of a position with health factor `health_factor` at the last refreshed
    /// block. Its debt grows no faster than the highest rate it borrows at (Aave's compounded interest
    /// grows no faster than e^(rate·t)) and its collateral never shrinks (supply indexes only rise), so
    /// a health factor h stays at or above 1 for ln(h) / rate years, which is more than
    /// (1 − 1/h) / rate: half of that, against rounding.
    fn recheck_at(&self, position: &StoredPosition, health_factor: U256) -> u64 {
        if health_factor <= crate::units::WAD {
            return 0;
        }
        let rate = position
            .holdings
            .iter()
            .filter(|h| h.borrowing)
            .map(|h| {
                let variable = if h.scaled_variable_debt.is_zero() {
                    U256::ZERO
                } else {
                    self.priced
                        .get(usize::from(h.reserve_id))
                        .and_then(|p| p.as_ref())
                        .map_or(U256::MAX, |p| p.borrow_rate)
                };
                let stable = if h.stable_principal.is_zero() {
                    U256::ZERO
                } else {
                    h.stable_rate
                };
                variable.max(stable)
            })
            .max()
            .unwrap_or_default();
        if rate.is_zero() || health_factor == U256::MAX {
            return u64::MAX;
        }
        if rate == U256::MAX {
            // A reserve the market read does not know: no bound, re-priced every block.
            return 0;
        }
        let now = self.block.map(|b| b.timestamp).unwrap_or_default();
        now.saturating_add(horizon_secs(health_factor, rate))
    }
}

/// Half of (1 − 1/h) / rate years, in seconds, for a health factor h above 1 (WAD) and a rate (ray per
/// year) above 0. Every position re-priced computes it: in u128 where the figures fit (health factors
/// below 10^13; U256's long division by a three-limb divisor was a third of a position's re-pricing),
/// each division rounding down, which only brings the recheck earlier.
fn horizon_secs(health_factor: U256, rate: U256) -> u64 {
    let year = u128::from(math::SECONDS_PER_YEAR);
    if let (Ok(h), Ok(r)) = (u128::try_from(health_factor), u128::try_from(rate))
        && let Some(above) = (h - crate::units::WAD.to::<u128>()).checked_mul(year)
    {
        // At most half a year of seconds, so the product with a ray fits.
        let half_years = above / (2 * h);
        return u64::try_from(half_years * crate::units::RAY.to::<u128>() / r).unwrap_or(u64::MAX);
    }
    horizon_secs_wide(health_factor, rate)
}

/// [`horizon_secs`] in U256, for any figures, rounded down once.
fn horizon_secs_wide(health_factor: U256, rate: U256) -> u64 {
    let secs = (health_factor - crate::units::WAD)
        * U256::from(math::SECONDS_PER_YEAR)
        * crate::units::RAY
        / (U256::from(2u8) * health_factor * rate);
    secs.saturating_to::<u64>()
}

/// Calls per `aggregate3` for the market's own read: each a few storage reads (a reserve's data, its
/// grace period, a price), so a market of a hundred reserves is still one request.
const MARKET_READ_BATCH: usize = 1_000;

/// The calls that read eMode category `id` as `release` keeps it.
fn emode_calls(pool: Address, release: Release, id: u8) -> Vec<(Address, Vec<u8>)> {
    if release.emode_bitmaps() {
        vec![
            (
                pool,
                Pool::getEModeCategoryCollateralConfigCall { id }.abi_encode(),
            ),
            (
                pool,
                Pool::getEModeCategoryCollateralBitmapCall { id }.abi_encode(),
            ),
        ]
    } else {
        vec![(pool, Pool::getEModeCategoryDataCall { id }.abi_encode())]
    }
}

/// The release `pool` runs, from the getters it answers ([`release::MARKERS`], all asked in one
/// `aggregate3`), and its `POOL_REVISION()` where it has one.
pub async fn detect_release(
    rpc: &Rpc,
    pool: Address,
    multicall: Address,
) -> Result<(Release, Option<U256>), ChainError> {
    // V3.5's marker is on an aToken: the first reserve's, when the Pool lists any.
    let listed = view(rpc, pool, Pool::getReservesListCall {}, "getReservesList").await?;
    let a_token = match listed.first() {
        Some(&asset) => Some(
            view(
                rpc,
                pool,
                Pool::getReserveDataCall { asset },
                "getReserveData",
            )
            .await?
            .aTokenAddress,
        ),
        None => None,
    };
    let mut calls = vec![(pool, Pool::POOL_REVISIONCall {}.abi_encode())];
    for marker in release::MARKERS {
        let call = match marker {
            Marker::GracePeriod => Pool::getLiquidationGracePeriodCall {
                asset: Address::ZERO,
            }
            .abi_encode(),
            Marker::EModeBitmap => {
                Pool::getEModeCategoryCollateralBitmapCall { id: 0 }.abi_encode()
            }
            Marker::ReserveDeficit => Pool::getReserveDeficitCall {
                asset: Address::ZERO,
            }
            .abi_encode(),
            Marker::RateStrategyImmutable => {
                Pool::RESERVE_INTEREST_RATE_STRATEGYCall {}.abi_encode()
            }
            Marker::ScaledBurn => ScaledBurnAToken::burnCall {
                from: Address::ZERO,
                receiverOfUnderlying: Address::ZERO,
                amount: U256::ZERO,
                scaledAmount: U256::ZERO,
                index: U256::ZERO,
            }
            .abi_encode(),
            Marker::LtvzeroBitmap => Pool::getEModeCategoryLtvzeroBitmapCall { id: 0 }.abi_encode(),
            Marker::IsolatedEMode => Pool::getIsEModeCategoryIsolatedCall { id: 0 }.abi_encode(),
        };
        let target = match marker {
            Marker::ScaledBurn => a_token.unwrap_or(pool),
            _ => pool,
        };
        calls.push((target, call));
    }
    let results =
        multicall::aggregate3_raw(rpc, multicall, calls, BlockId::latest(), multicall::BATCH)
            .await?;
    let revision = decode::<Pool::POOL_REVISIONCall>(&results[0], "POOL_REVISION").ok();
    let answered: Vec<bool> = release::MARKERS
        .iter()
        .zip(&results[1..])
        .map(|(marker, result)| match (marker, result) {
            // Refused by a function that exists: a revert with data. A missing one reverts empty.
            (Marker::ScaledBurn, Err(CallFailure::Reverted(data))) => {
                a_token.is_some() && data.len() > "0x".len()
            }
            (Marker::ScaledBurn, Ok(_)) => false,
            (_, result) => result.is_ok(),
        })
        .collect();
    Ok((Release::from_markers(&answered), revision))
}

/// Raw multicall results into one type, with the failure named.
fn decoded<T>(r: Result<T, CallFailure>, what: &str) -> Result<T, ChainError> {
    r.map_err(|e| {
        ChainError::rpc(
            what.to_owned(),
            alloy::transports::RpcError::LocalUsageError(Box::new(e)),
        )
    })
}

/// Decodes one raw batch result as `C`'s return type, naming the call on failure.
fn decode<C: SolCall>(
    r: &Result<alloy::primitives::Bytes, CallFailure>,
    what: &str,
) -> Result<C::Return, ChainError> {
    decoded(multicall::decode::<C>(r), what)
}

impl LendingProtocol for AaveV3 {
    fn name(&self) -> &'static str {
        "aave-v3"
    }

    fn log_filter(&self) -> (Vec<Address>, Vec<B256>) {
        let mut addresses = vec![self.pool];
        addresses.extend(self.reserves.values().map(|r| r.a_token));
        let topics = vec![
            Pool::Supply::SIGNATURE_HASH,
            Pool::Withdraw::SIGNATURE_HASH,
            Pool::Borrow::SIGNATURE_HASH,
            Pool::Repay::SIGNATURE_HASH,
            Pool::LiquidationCall::SIGNATURE_HASH,
            Pool::ReserveUsedAsCollateralEnabled::SIGNATURE_HASH,
            Pool::ReserveUsedAsCollateralDisabled::SIGNATURE_HASH,
            Pool::UserEModeSet::SIGNATURE_HASH,
            Pool::SwapBorrowRateMode::SIGNATURE_HASH,
            Pool::RebalanceStableBorrowRate::SIGNATURE_HASH,
            ScaledBalanceToken::BalanceTransfer::SIGNATURE_HASH,
        ];
        (addresses, topics)
    }

    fn liquidation(&self, log: &Log) -> Option<crate::protocol::MarketLiquidation> {
        if log.address() != self.pool || log.removed {
            return None;
        }
        let event = Pool::LiquidationCall::decode_log_data(log.data()).ok()?;
        Some(crate::protocol::MarketLiquidation {
            user: event.user,
            liquidator: event.liquidator,
            collateral: event.collateralAsset,
            debt: event.debtAsset,
            debt_repaid: event.debtToCover,
            collateral_seized: event.liquidatedCollateralAmount,
            block: log.block_number.unwrap_or_default(),
            tx: log.transaction_hash,
        })
    }

    fn touched_users(&self, log: &Log, out: &mut Vec<Address>) {
        let topics = log.topics();
        let Some(&topic0) = topics.first() else {
            return;
        };
        let topic_address = |i: usize| topics.get(i).map(|t| Address::from_slice(&t[12..]));
        let users: &[Option<Address>] = &match topic0 {
            // Supply(reserve, user, onBehalfOf, …) / Borrow(…): the position holder is onBehalfOf.
            t if t == Pool::Supply::SIGNATURE_HASH || t == Pool::Borrow::SIGNATURE_HASH => {
                [topic_address(2), None]
            }
            // Withdraw(reserve, user, to) / Repay(reserve, user, repayer): the position holder is user.
            t if t == Pool::Withdraw::SIGNATURE_HASH || t == Pool::Repay::SIGNATURE_HASH => {
                [topic_address(2), None]
            }
            t if t == Pool::LiquidationCall::SIGNATURE_HASH => {
                // The liquidator gains aTokens when it takes them; BalanceTransfer covers that too.
                [topic_address(3), None]
            }
            t if t == Pool::ReserveUsedAsCollateralEnabled::SIGNATURE_HASH
                || t == Pool::ReserveUsedAsCollateralDisabled::SIGNATURE_HASH
                || t == Pool::SwapBorrowRateMode::SIGNATURE_HASH
                || t == Pool::RebalanceStableBorrowRate::SIGNATURE_HASH =>
            {
                [topic_address(2), None]
            }
            t if t == Pool::UserEModeSet::SIGNATURE_HASH => [topic_address(1), None],
            t if t == ScaledBalanceToken::BalanceTransfer::SIGNATURE_HASH => {
                [topic_address(1), topic_address(2)]
            }
            _ => [None, None],
        };
        out.extend(users.iter().flatten().filter(|a| !a.is_zero()));
    }

    async fn refresh_market(
        &mut self,
        rpc: &Rpc,
        block: BlockRef,
    ) -> Result<MarketChange, ChainError> {
        let at = block.id();
        let release = self.release;
        let unknown_seen = self
            .unknown_emode_seen
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        let scanned = if unknown_seen
            || self
                .emode_scan_block
                .is_none_or(|scanned| block.number >= scanned + EMODE_RESCAN_BLOCKS)
        {
            match self.scan_emodes(rpc, at).await {
                Ok(ids) => Some(ids),
                Err(e) => {
                    // Asked for again by the next read.
                    self.unknown_emode_seen
                        .fetch_or(unknown_seen, std::sync::atomic::Ordering::Relaxed);
                    return Err(e);
                }
            }
        } else {
            None
        };
        // The reserves list, the oracle (governance can replace it), the sentinel, every reserve and
        // every price, the eMode categories in use: one request. Only when the list changed (a
        // reserve was listed) is a second needed.
        let mut assets: Vec<Address> = self.reserves.values().map(|r| r.asset).collect();
        let emode_ids: Vec<u8> = scanned
            .clone()
            .unwrap_or_else(|| self.emodes.keys().copied().collect());
        let sentinel = self.sentinel.filter(|_| release.sentinel());
        let per_reserve = 1 + if release.grace_periods() { 2 } else { 0 };
        let results = loop {
            let mut calls: Vec<(Address, Vec<u8>)> = vec![
                (self.pool, Pool::getReservesListCall {}.abi_encode()),
                (
                    self.addresses_provider,
                    PoolAddressesProvider::getPriceOracleCall {}.abi_encode(),
                ),
                (
                    self.addresses_provider,
                    PoolAddressesProvider::getPriceOracleSentinelCall {}.abi_encode(),
                ),
                (
                    self.oracle,
                    AaveOracle::getAssetsPricesCall {
                        assets: assets.clone(),
                    }
                    .abi_encode(),
                ),
            ];
            for &asset in &assets {
                calls.push((self.pool, Pool::getReserveDataCall { asset }.abi_encode()));
                if release.grace_periods() {
                    calls.push((
                        self.pool,
                        Pool::getLiquidationGracePeriodCall { asset }.abi_encode(),
                    ));
                    calls.push((
                        self.pool,
                        Pool::getVirtualUnderlyingBalanceCall { asset }.abi_encode(),
                    ));
                }
            }
            // Stable debt outstanding, for the reserves whose stable token the last read named.
            let stable_tokens: Vec<Address> = if release.stable_debt() {
                self.reserves
                    .values()
                    .map(|r| r.stable_debt_token)
                    .filter(|t| !t.is_zero())
                    .collect()
            } else {
                Vec::new()
            };
            calls.extend(
                stable_tokens
                    .iter()
                    .map(|&t| (t, StableDebtToken::totalSupplyCall {}.abi_encode())),
            );
            calls.extend(
                emode_ids
                    .iter()
                    .flat_map(|&id| emode_calls(self.pool, release, id)),
            );
            if let Some(sentinel) = sentinel {
                calls.push((
                    sentinel,
                    PriceOracleSentinel::isLiquidationAllowedCall {}.abi_encode(),
                ));
            }
            let results =
                multicall::aggregate3_raw(rpc, self.multicall, calls, at, MARKET_READ_BATCH)
                    .await?;
            let listed = decode::<Pool::getReservesListCall>(&results[0], "getReservesList")?;
            if listed == assets {
                break (results, stable_tokens);
            }
            assets = listed;
        };
        let (results, stable_tokens) = results;
        let mut next = results[1..].iter();
        let mut take = |what: &str| {
            next.next().ok_or_else(|| {
                ChainError::rpc(what.to_owned(), alloy::transports::RpcError::NullResp)
            })
        };

        let mut change = MarketChange {
            all: self.block.is_none(),
            ..Default::default()
        };
        // Nothing is kept until everything is read: a read that fails midway leaves the market as
        // it was, and the next one reports the whole change.
        let oracle =
            decode::<PoolAddressesProvider::getPriceOracleCall>(take("oracle")?, "getPriceOracle")?;
        if oracle != self.oracle {
            // Prices were read from the old oracle; read again from the new one next block.
            change.all = true;
        }
        // A provider without the getter (a fork) has no sentinel.
        let sentinel_now = decode::<PoolAddressesProvider::getPriceOracleSentinelCall>(
            take("sentinel")?,
            "getPriceOracleSentinel",
        )
        .ok()
        .filter(|a| !a.is_zero());
        let prices = decode::<AaveOracle::getAssetsPricesCall>(take("prices")?, "getAssetsPrices")?;
        let mut reserves = BTreeMap::new();
        for (i, &asset) in assets.iter().enumerate() {
            let data = decode::<Pool::getReserveDataCall>(take("reserve")?, "getReserveData")?;
            let (grace_until, virtual_balance) = if per_reserve > 1 {
                let grace = decode::<Pool::getLiquidationGracePeriodCall>(
                    take("grace")?,
                    "getLiquidationGracePeriod",
                )?;
                let balance = decode::<Pool::getVirtualUnderlyingBalanceCall>(
                    take("virtual balance")?,
                    "getVirtualUnderlyingBalance",
                )?;
                (grace.to::<u64>(), Some(U256::from(balance)))
            } else {
                (0, None)
            };
            let old = self.reserves.get(&data.id);
            let reserve = Reserve {
                asset,
                id: data.id,
                a_token: data.aTokenAddress,
                stable_debt_token: data.stableDebtTokenAddress,
                variable_debt_token: data.variableDebtTokenAddress,
                config: ReserveConfig::decode(data.configuration.data),
                indexes: ReserveIndexes {
                    liquidity_index: U256::from(data.liquidityIndex),
                    liquidity_rate: U256::from(data.currentLiquidityRate),
                    variable_borrow_index: U256::from(data.variableBorrowIndex),
                    variable_borrow_rate: U256::from(data.currentVariableBorrowRate),
                    last_update_timestamp: data.lastUpdateTimestamp.to::<u64>(),
                },
                price: prices.get(i).copied().unwrap_or_default(),
                grace_until,
                virtual_balance,
                // Until its stable token's supply is read: assume some, so none is missed.
                stable_debt_outstanding: release.stable_debt()
                    && !data.stableDebtTokenAddress.is_zero()
                    && old.is_none_or(|o| o.stable_debt_outstanding),
            };
            match old {
                None => change.all = true,
                Some(old) => {
                    if old.price != reserve.price || old.config != reserve.config {
                        change.reserves.push(reserve.id)
                    }
                    if reserve.indexes.variable_borrow_rate > old.indexes.variable_borrow_rate {
                        change.rates_rose.push(reserve.id)
                    }
                }
            }
            reserves.insert(reserve.id, reserve);
        }
        for token in stable_tokens {
            let supply =
                decode::<StableDebtToken::totalSupplyCall>(take("stable supply")?, "totalSupply")
                    .unwrap_or(U256::MAX);
            for r in reserves
                .values_mut()
                .filter(|r| r.stable_debt_token == token)
            {
                r.stable_debt_outstanding = r.config.stable_borrowing || !supply.is_zero();
            }
        }
        let mut emodes = Vec::with_capacity(emode_ids.len());
        for id in emode_ids {
            let category = self
                .decode_emode(rpc, at, id, oracle, &reserves, &mut take)
                .await?;
            if self.emodes.get(&id) != Some(&category) {
                change.all = true;
            }
            emodes.push(category);
        }
        let liquidations_allowed = match sentinel {
            Some(_) => decode::<PriceOracleSentinel::isLiquidationAllowedCall>(
                take("sentinel answer")?,
                "isLiquidationAllowed",
            )
            .unwrap_or(false),
            None => true,
        };
        self.oracle = oracle;
        self.sentinel = sentinel_now;
        self.reserves = reserves;
        if let Some(ids) = scanned {
            self.emodes.retain(|id, _| ids.contains(id));
            self.emode_scan_block = Some(block.number);
        }
        for category in emodes {
            self.emodes.insert(category.id, category);
        }
        self.liquidations_allowed = liquidations_allowed;
        self.block = Some(block);
        self.price_reserves();
        Ok(change)
    }

    async fn load_users(
        &self,
        rpc: &Rpc,
        users: &[Address],
        block: BlockRef,
    ) -> Result<Vec<Option<StoredPosition>>, ChainError> {
        let at = block.id();
        let reserves: Vec<&Reserve> = self.reserves.values().collect();
        let mut calls = Vec::new();
        for &user in users {
            calls.push((
                self.pool,
                Pool::getUserConfigurationCall { user }.abi_encode(),
            ));
            calls.push((self.pool, Pool::getUserEModeCall { user }.abi_encode()));
            for r in &reserves {
                calls.push((
                    r.a_token,
                    ScaledBalanceToken::scaledBalanceOfCall { user }.abi_encode(),
                ));
                calls.push((
                    r.variable_debt_token,
                    ScaledBalanceToken::scaledBalanceOfCall { user }.abi_encode(),
                ));
                if r.stable_debt_outstanding {
                    calls.push((
                        r.stable_debt_token,
                        StableDebtToken::principalBalanceOfCall { user }.abi_encode(),
                    ));
                    calls.push((
                        r.stable_debt_token,
                        StableDebtToken::getUserStableRateCall { user }.abi_encode(),
                    ));
                    calls.push((
                        r.stable_debt_token,
                        StableDebtToken::getUserLastUpdatedCall { user }.abi_encode(),
                    ));
                }
            }
        }
        let results =
            multicall::aggregate3_raw(rpc, self.multicall, calls, at, USER_READ_BATCH).await?;
        let mut it = results.iter();
        let mut next = |what: &str| {
            it.next().ok_or_else(|| {
                ChainError::rpc(what.to_owned(), alloy::transports::RpcError::NullResp)
            })
        };
        let mut out = Vec::with_capacity(users.len());
        for _ in users {
            let user_config =
                decode::<Pool::getUserConfigurationCall>(next("config")?, "getUserConfiguration")?
                    .data;
            let emode = decode::<Pool::getUserEModeCall>(next("emode")?, "getUserEMode")?;
            let mut holdings = Vec::new();
            for r in &reserves {
                let scaled_a_token = decode::<ScaledBalanceToken::scaledBalanceOfCall>(
                    next("a")?,
                    "aToken.scaledBalanceOf",
                )?;
                let scaled_variable_debt = decode::<ScaledBalanceToken::scaledBalanceOfCall>(
                    next("v")?,
                    "variableDebt.scaledBalanceOf",
                )?;
                let (mut stable_principal, mut stable_rate, mut stable_last_update) =
                    (U256::ZERO, U256::ZERO, 0);
                if r.stable_debt_outstanding {
                    stable_principal = decode::<StableDebtToken::principalBalanceOfCall>(
                        next("s")?,
                        "stable principal",
                    )?;
                    stable_rate = decode::<StableDebtToken::getUserStableRateCall>(
                        next("s")?,
                        "stable rate",
                    )?;
                    stable_last_update = decode::<StableDebtToken::getUserLastUpdatedCall>(
                        next("s")?,
                        "stable update",
                    )?
                    .to::<u64>();
                }
                let bit = |i: usize| (user_config >> i) & U256::from(1u8) == U256::from(1u8);
                let borrowing = bit(usize::from(r.id) * 2);
                let collateral_enabled = bit(usize::from(r.id) * 2 + 1);
                if scaled_a_token.is_zero()
                    && scaled_variable_debt.is_zero()
                    && stable_principal.is_zero()
                    && !borrowing
                    && !collateral_enabled
                {
                    continue;
                }
                holdings.push(UserReserve {
                    reserve_id: r.id,
                    scaled_a_token,
                    scaled_variable_debt,
                    stable_principal,
                    stable_rate,
                    stable_last_update,
                    collateral_enabled,
                    borrowing,
                });
            }
            let has_debt = holdings.iter().any(|h| h.borrowing);
            if !has_debt {
                // Suppliers without debt can never be liquidated; forget them until they borrow.
                out.push(None);
                continue;
            }
            let emode = u8::try_from(emode).unwrap_or(0);
            if emode != 0 && !self.emodes.contains_key(&emode) {
                self.unknown_emode_seen
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            out.push(Some(StoredPosition {
                holdings,
                emode,
                health_factor: U256::MAX,
                collateral_base: U256::ZERO,
                debt_base: U256::ZERO,
                loaded_block: block.number,
                block: block.number,
            }));
        }
        Ok(out)
    }

    fn health(&self, position: &StoredPosition) -> Health {
        let data = self.account_data(position);
        Health {
            collateral_base: data.total_collateral_base,
            debt_base: data.total_debt_base,
            health_factor: data.health_factor,
            recheck_at: self.recheck_at(position, data.health_factor),
        }
    }

    fn moved_by(&self, position: &StoredPosition, reserves: &[u16]) -> bool {
        position
            .holdings
            .iter()
            .any(|h| reserves.contains(&h.reserve_id))
    }

    async fn onchain_health(
        &self,
        rpc: &Rpc,
        users: &[Address],
        block: BlockRef,
    ) -> Result<Vec<Option<U256>>, ChainError> {
        let calls: Vec<_> = users
            .iter()
            .map(|&user| {
                (
                    self.pool,
                    Pool::getUserAccountDataCall { user }.abi_encode(),
                )
            })
            .collect();
        let results =
            multicall::aggregate3_raw(rpc, self.multicall, calls, block.id(), VERIFY_BATCH).await?;
        Ok(results
            .iter()
            .map(|r| {
                decode::<Pool::getUserAccountDataCall>(r, "getUserAccountData")
                    .ok()
                    .map(|d| d.healthFactor)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{RAY, WAD};

    /// A market of two reserves at `now`: 0 a collateral at $2,000 (18 decimals, 82.5% threshold), 1 a
    /// debt at $1 (6 decimals) borrowed at `borrow_rate` (ray per year).
    fn market(now: u64, borrow_rate: U256) -> AaveV3 {
        let reserve = |id: u16, price: u64, decimals: u8, threshold: u64, rate: U256| Reserve {
            asset: Address::repeat_byte(id as u8 + 1),
            id,
            a_token: Address::ZERO,
            stable_debt_token: Address::ZERO,
            variable_debt_token: Address::ZERO,
            config: ReserveConfig {
                liquidation_threshold: threshold,
                decimals,
                active: true,
                ..Default::default()
            },
            indexes: ReserveIndexes {
                liquidity_index: RAY,
                liquidity_rate: U256::ZERO,
                variable_borrow_index: RAY,
                variable_borrow_rate: rate,
                last_update_timestamp: 1_000,
            },
            price: U256::from(price) * U256::from(100_000_000u64),
            grace_until: 0,
            virtual_balance: None,
            stable_debt_outstanding: false,
        };
        AaveV3::from_state(
            Release::V3_0,
            BTreeMap::from([
                (0, reserve(0, 2_000, 18, 8_250, U256::ZERO)),
                (1, reserve(1, 1, 6, 0, borrow_rate)),
            ]),
            BTreeMap::new(),
            BlockRef {
                number: 1,
                hash: B256::ZERO,
                timestamp: now,
                gas: None,
                pending: false,
            },
        )
    }

    /// 1 of the collateral against `debt` of the debt asset, variable.
    fn position(debt: u64) -> StoredPosition {
        StoredPosition {
            holdings: vec![
                UserReserve {
                    reserve_id: 0,
                    scaled_a_token: WAD,
                    collateral_enabled: true,
                    ..Default::default()
                },
                UserReserve {
                    reserve_id: 1,
                    scaled_variable_debt: U256::from(debt) * U256::from(1_000_000u64),
                    borrowing: true,
                    ..Default::default()
                },
            ],
            emode: 0,
            health_factor: U256::ZERO,
            collateral_base: U256::ZERO,
            debt_base: U256::ZERO,
            loaded_block: 1,
            block: 1,
        }
    }

    #[test]
    fn a_position_is_not_below_1_before_its_recheck_and_is_some_time_after() {
        // 300% a year, about the devnet's rate at full utilisation: the fastest debt grows there.
        let rate = RAY * U256::from(3u8);
        let p = position(1_560); // $1,650 of threshold against $1,560: HF ≈ 1.058
        let start = market(1_000, rate);
        let h = start.health(&p);
        assert!(
            h.health_factor > WAD && h.health_factor < WAD * U256::from(11u8) / U256::from(10u8)
        );
        let horizon = h.recheck_at - 1_000;
        // Half of (1 − 1/h) / rate years: about three days at HF 1.058 and 300%.
        assert!((200_000..400_000).contains(&horizon), "{horizon} s");
        // Interest alone, at that rate: still above 1 just before the recheck, below 1 within three
        // times the horizon (ln h / rate, the true crossing, is about 2.05 horizons away here).
        let at = |t: u64| market(t, rate).health(&p).health_factor;
        assert!(at(h.recheck_at - 1) >= WAD);
        assert!(at(1_000 + 3 * horizon) < WAD);
        // Lower rates give later rechecks; no debt, never; below 1, every block.
        assert!(market(1_000, rate / U256::from(2u8)).health(&p).recheck_at > h.recheck_at);
        assert_eq!(market(1_000, U256::ZERO).health(&p).recheck_at, u64::MAX);
        assert_eq!(start.health(&position(0)).recheck_at, u64::MAX);
        assert_eq!(start.health(&position(2_000)).recheck_at, 0);
    }

    #[test]
    fn the_horizon_in_u128_is_the_wide_one_rounded_down_by_at_most_a_step() {
        let wad = |milli: u64| U256::from(milli) * WAD / U256::from(1_000u16);
        let factors = [
            wad(1_001),
            wad(1_058),
            wad(1_500),
            wad(3_000),
            wad(1_000_000),
        ];
        let rates = [
            RAY / U256::from(1_000_000u32),
            RAY / U256::from(20u8),
            RAY * U256::from(3u8),
        ];
        for h in factors {
            for r in rates {
                let (fast, wide) = (horizon_secs(h, r), horizon_secs_wide(h, r));
                // The first division's lost second, scaled by 1/rate, and the last one's.
                let step = (RAY / r).to::<u64>() + 1;
                assert!(
                    fast <= wide && wide - fast <= step,
                    "{h} {r}: {fast} {wide}"
                );
            }
        }
        // Beyond u128: the wide path.
        let huge = U256::from(10u8).pow(U256::from(40u8));
        assert_eq!(horizon_secs(huge, RAY), horizon_secs_wide(huge, RAY));
    }
}
