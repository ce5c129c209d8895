//! The planner: turns a liquidatable position into a sized, priced liquidation (a [`Plan`]) or a
//! reasoned refusal.
//!
//! For every collateral × debt pair of the borrower it sizes the liquidation by the protocol's rules
//! ([`sizing`]), sells the collateral it would receive on every Uniswap pool of the pair (simulated
//! against the pools' state, [`venues`]), and takes the repay amount that maximises the debt asset
//! left after the repay and gas: where the pool's price at the margin falls to what the protocol
//! charges per unit of collateral, one price-limited swap per venue ([`sizing::best_on_venue`]). The
//! sale's pool pays out the debt asset before the liquidation (a flash swap), so there is no
//! flash-loan premium: the pool's fee is in the sale's price ([`Planner::size`]). The plans sized
//! together are then built into one exact `Liquidator` transaction (a [`Batch`]), which is run once on
//! the latest state, at the next block's time, with `eth_call` (the Liquidator answers with what each
//! liquidation realises and the gas it used; a revert says why); each plan is priced with its share of
//! the gas, one that would not pay for itself is dropped, and a revert is decoded and its plan dropped
//! with the reason ([`Planner::finalise_all`]).

pub mod block_order;
pub mod fees;
pub mod sizing;
pub mod venues;

use crate::protocol::aave_v3::release::Release;
use crate::{
    chain::{ChainError, Rpc, bindings::Liquidator},
    protocol::aave_v3::{
        AaveV3, Reserve,
        math::{self, UserReserve},
    },
    store::StoredPosition,
    units::BaseAmount,
};
use alloy::{
    eips::BlockId,
    network::TransactionBuilder,
    primitives::{Address, Bytes, U256},
    providers::Provider,
    rpc::types::TransactionRequest,
    sol_types::{SolCall, SolInterface},
};
use fees::op_stack::L1FeeParams;
use sizing::{LiquidationAmounts, LiquidationCase, ScaledCollateral, Side, signed};
use std::borrow::Borrow;
use venues::{
    Venue, VenueKind, VenueSale,
    book::{BookSettings, SaleCheck, VenueBook},
};

/// A priced liquidation, with everything that went into the price.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The borrower.
    pub borrower: Address,
    /// Collateral seized and sold.
    pub collateral: Address,
    /// Debt asset repaid (the swap pool pays it out before the collateral is seized).
    pub debt: Address,
    /// The release whose rules it was sized by.
    pub release: Release,
    /// Repay, collateral received, protocol fee.
    pub amounts: LiquidationAmounts,
    /// Uniswap V3 or V2.
    pub venue: VenueKind,
    /// The pool the collateral is sold on.
    pub swap_pool: Address,
    /// Its fee tier (hundredths of a bip).
    pub swap_fee: u32,
    /// Debt asset the sale returns.
    pub swap_out: U256,
    /// How much worse than the pool's price before it the sale fills, bps.
    pub price_impact_bps: u64,
    /// Gas limit of its transaction (from the simulation, with headroom); in a batch, its share.
    pub gas_limit: u64,
    /// Price per gas assumed (wei): the next block's base fee plus the priority fee.
    pub gas_price_wei: u128,
    /// The next block's base fee assumed (wei).
    pub base_fee_wei: u128,
    /// Gas cost (wei); in a batch, its share of the gas used.
    pub gas_cost_wei: U256,
    /// L1 data fee (wei), on OP-stack chains; in a batch, its share.
    pub l1_fee_wei: U256,
    /// All fees in the debt asset.
    pub fees_in_debt: U256,
    /// What it realises less fees, in the debt asset (negative when it loses): swap_out − repay − fees
    /// when sized; once built, its profit in the simulated transaction less its fees.
    pub net_profit_debt: i128,
    /// The same in USD (base currency).
    pub net_profit_base: i128,
    /// The minimum profit the Liquidator must keep, in the debt asset (covers the fees).
    pub min_profit: U256,
    /// The `Liquidator.liquidate` calldata.
    pub calldata: Bytes,
    /// The block whose state it was planned on.
    pub block: u64,
    /// The most its transaction's fees may reach, fee bumps included (wei): the fees planned plus the
    /// expected net profit, so a bumped liquidation at worst breaks even.
    pub fee_cap_wei: U256,
}

/// The sale of a liquidation sent and not mined yet: what it will do to its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SaleInFlight {
    /// Collateral sold.
    pub collateral: Address,
    /// Debt asset bought.
    pub debt: Address,
    /// The pool or pair it sells into.
    pub pool: Address,
    /// Collateral sold (collateral units).
    pub amount: U256,
}

impl Plan {
    /// The sale this plan makes.
    pub fn sale(&self) -> SaleInFlight {
        SaleInFlight {
            collateral: self.collateral,
            debt: self.debt,
            pool: self.swap_pool,
            amount: self.amounts.collateral_to_liquidator,
        }
    }
}

/// One transaction: one liquidation, or several in one `liquidateBatch` (all or none). Each plan in it
/// carries its share of the gas and fees, and its own minimum profit.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The liquidations, in the order the transaction runs them.
    pub plans: Vec<Plan>,
    /// The `Liquidator.liquidate` or `liquidateBatch` calldata.
    pub calldata: Bytes,
    /// Gas limit of the transaction.
    pub gas_limit: u64,
    /// The most its fees may reach, bumps included (wei): the plans' caps together.
    pub fee_cap_wei: U256,
}

/// A simulated transaction, or a plan refused (with its borrower).
pub type BatchResult = Result<Batch, (Address, PlanError)>;

impl Batch {
    /// One plan's own transaction (its calldata, gas limit and fee cap).
    pub fn single(plan: Plan) -> Self {
        Self {
            calldata: plan.calldata.clone(),
            gas_limit: plan.gas_limit,
            fee_cap_wei: plan.fee_cap_wei,
            plans: vec![plan],
        }
    }

    /// The transaction of `plans`, charged and in order, each keeping its minimum profit.
    fn of(plans: Vec<Plan>, gas_limit: u64) -> Self {
        Self {
            calldata: liquidation_calldata(
                plans.iter().map(|p| liquidation(p, p.min_profit)).collect(),
            ),
            gas_limit,
            fee_cap_wei: plans.iter().map(|p| p.fee_cap_wei).sum(),
            plans,
        }
    }
}

/// One collateral × debt pair's best size, or how close it came to profit.
#[derive(Debug, Clone)]
pub struct PairOutcome {
    /// Collateral asset.
    pub collateral: Address,
    /// Debt asset.
    pub debt: Address,
    /// The most profitable plan for the pair (sized and priced, transaction not yet built).
    pub plan: Option<Plan>,
    /// With no profitable size: the net outcome of the largest repay, base units (`None` as well when
    /// no venue sells this collateral for this debt).
    pub best_loss_base: Option<i128>,
}

/// Why there is no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not liquidatable.
    #[error("health factor {0} is not below 1")]
    Healthy(String),
    /// No collateral × debt pair has a pool to sell on.
    #[error("no Uniswap pool or pair sells any of the borrower's collateral for any of its debt")]
    NoVenue,
    /// Every size loses money after the swap and gas.
    #[error("no liquidation size is profitable: best net {best_net_base} USD (×1e-8) for {pair}")]
    Unprofitable {
        /// The best net outcome found, base units.
        best_net_base: i128,
        /// Which pair.
        pair: String,
    },
    /// The exact transaction reverts on the latest state.
    #[error("simulation reverted: {0}")]
    Reverted(String),
    /// The market will not take a liquidation of this position now: a reserve paused, inactive or in
    /// its grace period, or an L2 sentinel holding liquidations back.
    #[error("the market does not allow it now: {0}")]
    Closed(String),
    /// This block's earlier liquidations, selling into the same pool, leave it paying less than the
    /// repay: planned again next block.
    #[error("after this block's earlier liquidations, pool {0} no longer pays for it")]
    PoolMoved(Address),
}

/// Errors of the planner that are not refusals.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Talking to the chain failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The position cannot be liquidated profitably.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// What planning needs besides the market.
#[derive(Debug, Clone)]
pub struct PlannerSettings {
    /// The Liquidator contract.
    pub liquidator: Address,
    /// The account that sends (owner or operator of the Liquidator).
    pub sender: Address,
    /// Uniswap V3 factory.
    pub uniswap_factory: Address,
    /// Uniswap V2 factory, where V2 pairs are a venue too.
    pub uniswap_v2_factory: Option<Address>,
    /// Fee tiers to try.
    pub fee_tiers: Vec<u32>,
    /// Asset whose price stands for the chain's native currency (WETH), to price gas in USD.
    pub native_asset: Address,
    /// Priority fee to offer (wei per gas).
    pub priority_fee_wei: u128,
    /// Multicall3.
    pub multicall: Address,
    /// Transactions the node is asked to simulate at once (`planner.simulations_in_flight`).
    pub simulations_in_flight: usize,
}

impl PlannerSettings {
    /// From the config's `[executor]`, `[uniswap_v3]`, `[uniswap_v2]` and `[planner]`; the error names
    /// what is missing.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, String> {
        let executor = config
            .executor
            .as_ref()
            .ok_or("no [executor] section: planning needs the Liquidator's address and the sending account")?;
        let uniswap = config
            .uniswap_v3
            .as_ref()
            .ok_or("no [uniswap_v3] section: planning needs a venue to sell collateral on")?;
        let native_asset = config
            .planner
            .native_asset
            .ok_or("set planner.native_asset (the WETH reserve) so gas can be priced")?;
        Ok(Self {
            liquidator: executor.liquidator,
            sender: executor.account,
            uniswap_factory: uniswap.factory,
            uniswap_v2_factory: config.uniswap_v2.as_ref().map(|v| v.factory),
            fee_tiers: uniswap.fee_tiers.clone(),
            native_asset,
            priority_fee_wei: u128::from(config.planner.priority_fee_wei),
            multicall: config.multicall.address,
            simulations_in_flight: config.planner.simulations_in_flight,
        })
    }
}

/// Gas assumed for one liquidation while sizing; the chosen plan is estimated exactly.
const SIZING_GAS: u64 = 700_000;

fn book_settings(settings: &PlannerSettings) -> BookSettings {
    BookSettings {
        multicall: settings.multicall,
        v3_factory: settings.uniswap_factory,
        fee_tiers: settings.fee_tiers.clone(),
        v2_factory: settings.uniswap_v2_factory,
    }
}

/// Plans liquidations on one Aave market.
pub struct Planner {
    rpc: Rpc,
    settings: PlannerSettings,
    l1: Option<L1FeeParams>,
    /// Pools and pairs to sell on, kept current across blocks.
    book: VenueBook,
    /// The next block's base fee, by the block it was computed from.
    base_fee_cache: std::sync::Mutex<Option<(u64, u128)>>,
    /// Whether the node takes `eth_call`'s block overrides (cleared the first time it refuses them):
    /// simulations run at the next block's time ([`Planner::run`]).
    block_overrides: std::sync::atomic::AtomicBool,
}

impl Planner {
    /// A planner for `settings`; reads the L1 fee parameters on an OP-stack chain (an error only
    /// for transient trouble reading them). The market's release sets the liquidation rules.
    pub async fn new(rpc: Rpc, settings: PlannerSettings) -> Result<Self, ChainError> {
        // No L1Block predeploy answering: not an OP-stack chain. Trouble reaching the node is not
        // an answer (start-up retries it).
        let l1 = match L1FeeParams::read(&rpc).await {
            Ok(params) => Some(params).filter(|p| !p.l1_base_fee.is_zero()),
            Err(e) if e.is_retryable() => return Err(e),
            Err(_) => None,
        };
        let book = VenueBook::new(rpc.clone(), book_settings(&settings));
        Ok(Self {
            rpc,
            settings,
            l1,
            book,
            base_fee_cache: std::sync::Mutex::new(None),
            block_overrides: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// A planner like this one with a book of its own ([`VenueBook::copy_for_pending`]): for plans
    /// made on the pending block, whose pools (read there) and sales must not reach the book that
    /// follows mined blocks.
    pub fn for_pending_block(&self) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        Self {
            rpc: self.rpc.clone(),
            settings: self.settings.clone(),
            l1: self.l1,
            book: self.book.copy_for_pending(),
            base_fee_cache: std::sync::Mutex::new(None),
            block_overrides: std::sync::atomic::AtomicBool::new(self.block_overrides.load(Relaxed)),
        }
    }

    /// Transactions to have the node simulate at once.
    pub fn simulations_in_flight(&self) -> usize {
        self.settings.simulations_in_flight.max(1)
    }

    /// The most profitable liquidation of `borrower`, or why there is none: [`Self::size`], built into
    /// the exact transaction and simulated.
    pub async fn plan(
        &self,
        market: &AaveV3,
        borrower: Address,
        position: &StoredPosition,
    ) -> Result<Plan, PlanError> {
        let plan = self.size(market, borrower, position).await?;
        let mut batch = self.finalise_alone(plan, market).await?;
        Ok(batch.plans.pop().expect("a batch of one"))
    }

    /// The most profitable pair of [`Self::candidates`], sized and priced at the sizing gas (an upper
    /// bound), its transaction not yet built: what `finalise` takes, alone or with others.
    pub async fn size(
        &self,
        market: &AaveV3,
        borrower: Address,
        position: &StoredPosition,
    ) -> Result<Plan, PlanError> {
        let started = std::time::Instant::now();
        let outcomes = self.candidates(market, borrower, position).await?;
        tracing::trace!(%borrower, sizing_ms = started.elapsed().as_secs_f64() * 1e3, "sized");
        let best = outcomes
            .iter()
            .filter_map(|o| o.plan.as_ref())
            .max_by_key(|p| p.net_profit_base)
            .cloned();
        best.ok_or_else(|| {
            let closest = outcomes
                .iter()
                .filter_map(|o| {
                    o.best_loss_base
                        .map(|b| (b, format!("{} → {}", o.collateral, o.debt)))
                })
                .max_by_key(|(b, _)| *b);
            match closest {
                Some((best_net_base, pair)) => Refusal::Unprofitable {
                    best_net_base,
                    pair,
                },
                None => Refusal::NoVenue,
            }
            .into()
        })
    }

    /// Sized plans of one block, as transactions: all of them in one `liquidateBatch` (all or none).
    /// A plan whose sale, after the batch's earlier ones (and the block's liquidations already sent),
    /// would return less than its repay is left out first ([`Refusal::PoolMoved`]): it would lose
    /// money. The batch is simulated once; a liquidation whose realised profit there (its share of
    /// its sale's, when it shares a pool) does not cover its share of the fees is refused and the
    /// rest simulated again without it. A batch that reverts is split: each plan alone, so that one
    /// bad plan is refused with its reason and does not sink the others; one the node fails to run
    /// leaves each of its plans to the next block. One result per transaction
    /// or refused plan. One transaction of several costs well under half the gas of each alone: the
    /// Pool's and the tokens' storage is warm after the first, and liquidations selling on the same
    /// pool share one swap.
    pub async fn finalise_all(&self, mut plans: Vec<Plan>, market: &AaveV3) -> Vec<BatchResult> {
        let mut out = Vec::new();
        // Liquidations selling on the same pool side by side: the Liquidator makes them one sale (one
        // swap). Plans on one pool keep their order, which is the order their sales were sized in.
        plans.sort_by_key(|p| (p.swap_pool, p.collateral, p.debt));
        if plans.len() > 1 {
            let (keep, refused) = self.without_losing_sales(plans);
            plans = keep;
            for (borrower, refusal) in refused {
                out.push(Err((borrower, refusal.into())));
            }
        }
        while !plans.is_empty() {
            match self.finalise(plans.clone(), market).await {
                Ok(Finalised::Batch(batch)) => {
                    out.push(Ok(batch));
                    break;
                }
                Ok(Finalised::Short(refused)) => {
                    plans.retain(|p| !refused.iter().any(|(b, _)| *b == p.borrower));
                    for (borrower, refusal) in refused {
                        out.push(Err((borrower, refusal.into())));
                    }
                }
                Err(PlanError::Chain(e)) => {
                    // The node could not run it (not a revert): each plan is tried again at the next
                    // block, not split into as many more calls to a node in trouble.
                    let message = e.to_string();
                    let mut plans = plans.into_iter();
                    if let Some(first) = plans.next() {
                        out.push(Err((first.borrower, e.into())));
                    }
                    for plan in plans {
                        let e = ChainError::rpc(
                            "simulating the transaction it was in",
                            alloy::transports::RpcError::local_usage_str(&message),
                        );
                        out.push(Err((plan.borrower, e.into())));
                    }
                    break;
                }
                Err(e) if plans.len() > 1 => {
                    tracing::debug!(liquidations = plans.len(), error = %e, "a batch reverted; finalising its plans one by one");
                    let alone = plans.into_iter().map(|plan| async move {
                        let borrower = plan.borrower;
                        self.finalise_alone(plan, market)
                            .await
                            .map_err(|e| (borrower, e))
                    });
                    out.extend(futures::future::join_all(alone).await);
                    break;
                }
                Err(e) => {
                    out.push(Err((plans[0].borrower, e)));
                    break;
                }
            }
        }
        out
    }

    /// One plan as its own transaction.
    async fn finalise_alone(&self, plan: Plan, market: &AaveV3) -> Result<Batch, PlanError> {
        let sale = (plan.borrower, plan.swap_pool, plan.amounts, plan.swap_out);
        let finalised = self.finalise(vec![plan], market).await;
        if let Err(PlanError::Refused(Refusal::Reverted(reason))) = &finalised {
            // The sale as the model priced it, to set against what the chain did.
            let (borrower, pool, amounts, swap_out) = sale;
            tracing::debug!(%borrower, %reason, %pool, repay = %amounts.debt_repaid, collateral = %amounts.collateral_to_liquidator, %swap_out, "a liquidation alone reverted in simulation");
        }
        match finalised? {
            Finalised::Batch(batch) => Ok(batch),
            Finalised::Short(mut refused) => Err(refused.pop().expect("the one plan").1.into()),
        }
    }

    /// Every collateral × debt pair of `borrower`, each with its most profitable size (before the exact
    /// transaction is built), or how close it came.
    pub async fn candidates(
        &self,
        market: &AaveV3,
        borrower: Address,
        position: &StoredPosition,
    ) -> Result<Vec<PairOutcome>, PlanError> {
        let account = market.account_data(position);
        if account.health_factor >= crate::units::WAD {
            return Err(Refusal::Healthy(
                crate::units::HealthFactor(account.health_factor).to_string(),
            )
            .into());
        }
        if !market.liquidations_allowed
            && account.health_factor >= sizing::CLOSE_FACTOR_HF_THRESHOLD
        {
            return Err(Refusal::Closed(
                "the market's PriceOracleSentinel allows liquidations only below HF 0.95".into(),
            )
            .into());
        }
        let now = market.block.map(|b| b.timestamp).unwrap_or_default();

        let all_pairs = liquidation_pairs(market, position);
        // The liquidation lands in a later block: a reserve must be open then.
        let pairs: Vec<_> = all_pairs
            .iter()
            .copied()
            .filter(|(_, cr, _, dr)| cr.liquidation_open(now + 1) && dr.liquidation_open(now + 1))
            .collect();
        if pairs.is_empty()
            && let Some((_, cr, _, dr)) = all_pairs.first()
        {
            let closed = if cr.liquidation_open(now + 1) { dr } else { cr };
            return Err(Refusal::Closed(format!(
                "reserve {} is paused, inactive or in its liquidation grace period (until {})",
                closed.asset, closed.grace_until
            ))
            .into());
        }
        // The next base fee and every pair's venues, read side by side.
        let venues = futures::future::try_join_all(
            pairs
                .iter()
                .map(|(_, cr, _, dr)| self.venues(cr.asset, dr.asset, market.block)),
        );
        let reading = std::time::Instant::now();
        let (base_fee, venues) = tokio::try_join!(self.next_base_fee(market.block), venues)?;
        tracing::trace!(%borrower, reads_ms = reading.elapsed().as_secs_f64() * 1e3, "venues and base fee read");
        let costs = self.costs_at(market, base_fee);
        let gas_price = costs.gas_price_wei;
        let mut outcomes = Vec::new();
        for (&(c, cr, d, dr), candidates) in pairs.iter().zip(&venues) {
            let sized = liquidation_case(market, position, &account, c, cr, d, dr)
                .ok_or(None)
                .and_then(|case| best_sale(&PairCase::new(case), cr, dr, candidates, &costs));
            let (sale, pool) = match sized {
                Ok(best) => best,
                Err(best_loss_base) => {
                    // No profitable size: how close the largest repay came, for the refusal.
                    outcomes.push(PairOutcome {
                        collateral: cr.asset,
                        debt: dr.asset,
                        plan: None,
                        best_loss_base,
                    });
                    continue;
                }
            };
            let unit = signed(U256::from(10u64).pow(U256::from(dr.config.decimals)));
            let net_base = sale.net_debt * signed(dr.price) / unit;
            let plan = Plan {
                borrower,
                collateral: cr.asset,
                debt: dr.asset,
                release: market.release,
                amounts: sale.amounts,
                venue: pool.kind(),
                swap_pool: pool.address(),
                swap_fee: pool.fee(),
                swap_out: sale.swap_out,
                price_impact_bps: pool
                    .price_impact_bps(cr.asset, sale.amounts.collateral_to_liquidator),
                gas_limit: SIZING_GAS,
                gas_price_wei: gas_price,
                base_fee_wei: base_fee,
                gas_cost_wei: U256::from(SIZING_GAS) * U256::from(gas_price),
                l1_fee_wei: U256::ZERO,
                fees_in_debt: sale.fees_in_debt,
                net_profit_debt: sale.net_debt,
                net_profit_base: net_base,
                min_profit: sale.fees_in_debt,
                calldata: Bytes::new(),
                block: market.block.map(|b| b.number).unwrap_or_default(),
                fee_cap_wei: U256::ZERO,
            };
            outcomes.push(PairOutcome {
                collateral: cr.asset,
                debt: dr.asset,
                plan: Some(plan),
                best_loss_base: None,
            });
        }
        Ok(outcomes)
    }

    /// Builds `plans` into one transaction (`liquidate` for one, `liquidateBatch` for more), runs it
    /// on the latest state with no minimum profit, and prices each plan with its share of the gas and
    /// of the L1 fee. Each liquidation must then keep at least its share of the fees: its minimum
    /// profit. The run's `Liquidated` events show what each realises (its sale after the batch's
    /// earlier ones): those that would not cover their fees come back [`Finalised::Short`].
    async fn finalise(
        &self,
        mut plans: Vec<Plan>,
        market: &AaveV3,
    ) -> Result<Finalised, PlanError> {
        let build = |plans: &[Plan], min_profits: &[U256]| -> Bytes {
            liquidation_calldata(
                plans
                    .iter()
                    .zip(min_profits)
                    .map(|(plan, min)| liquidation(plan, *min))
                    .collect(),
            )
        };
        let n = plans.len() as u64;
        let gas_price = plans[0].gas_price_wei;
        let run = self
            .run(
                build(&plans, &vec![U256::ZERO; plans.len()]),
                plans.len(),
                market.block,
            )
            .await?;
        let (gas, realised) = match run {
            Run::Succeeded(gas, realised) => (gas, realised),
            Run::Reverted(reason) => return Err(Refusal::Reverted(reason).into()),
        };
        // The whole transaction's L1 fee, shared evenly (its calldata with minimum profits of about
        // the size they will have: those sizing set).
        let l1_fee = self.l1.as_ref().map_or(U256::ZERO, |l1| {
            let sizing_mins: Vec<U256> = plans.iter().map(|p| p.min_profit).collect();
            let unsigned = unsigned_bytes(
                &build(&plans, &sizing_mins),
                gas.limit,
                gas_price,
                self.settings.liquidator,
            );
            fees::op_stack::l1_fee_unsigned(&unsigned, l1).div_ceil(U256::from(n))
        });
        let mut short = Vec::new();
        for (plan, realised) in plans.iter_mut().zip(realised) {
            plan.gas_limit = gas.limit.div_ceil(n);
            plan.l1_fee_wei = l1_fee;
            // What it realises in the run (its share of its sale's profit, as its event will say).
            if let Err(refusal) = self.charge(plan, market, gas.used.div_ceil(n), signed(realised))
            {
                short.push((plan.borrower, refusal));
            }
        }
        if !short.is_empty() {
            return Ok(Finalised::Short(short));
        }
        Ok(Finalised::Batch(Batch::of(plans, gas.limit)))
    }

    /// Charges `plan` its fees: `gas_used` (its share of its transaction's) at its gas price, and its
    /// L1 fee, against `gross` (what it realises before fees, in the debt asset). Sets its fees, net
    /// profit, fee cap, minimum profit and its calldata alone; refused when the net is not positive.
    fn charge(
        &self,
        plan: &mut Plan,
        market: &AaveV3,
        gas_used: u64,
        gross: i128,
    ) -> Result<(), Refusal> {
        let native_price = market
            .reserve_of(self.settings.native_asset)
            .map(|r| r.price)
            .unwrap_or_default();
        let (debt_unit, debt_price) = debt_unit_and_price(market, plan.debt);
        plan.gas_cost_wei = U256::from(gas_used) * U256::from(plan.gas_price_wei);
        // Wei in the debt asset, rounded up (fees are never understated).
        plan.fees_in_debt =
            ((plan.gas_cost_wei + plan.l1_fee_wei) * native_price / crate::units::WAD * debt_unit)
                .div_ceil(debt_price.max(U256::from(1u8)));
        let net = gross - signed(plan.fees_in_debt);
        plan.net_profit_debt = net;
        plan.net_profit_base = net * signed(debt_price) / signed(debt_unit);
        if net <= 0 {
            return Err(Refusal::Unprofitable {
                best_net_base: plan.net_profit_base,
                pair: format!("{} → {}", plan.collateral, plan.debt),
            });
        }
        let net_wei = U256::from(net as u128) * debt_price * crate::units::WAD
            / (debt_unit * native_price.max(U256::from(1u8)));
        plan.fee_cap_wei = plan.gas_cost_wei + plan.l1_fee_wei + net_wei;
        // The contract keeps at least the fees: a liquidation that cannot pay for itself reverts.
        plan.min_profit = plan.fees_in_debt;
        plan.calldata = liquidation_calldata(vec![liquidation(plan, plan.min_profit)]);
        Ok(())
    }

    /// `batch`, planned for a block whose base fee came out above the one it was priced at, priced
    /// again at `base_fee`: the same liquidations and gas, each charged at the new price, with its
    /// minimum profit raised to match; or the borrowers that no longer pay. (A pending block's gas
    /// can fall a little short of the mined block's: a reserve updated in the block before skips
    /// its interest update at the pending block's time, and the mined block, later, does not.)
    pub fn reprice(
        &self,
        mut batch: Batch,
        market: &AaveV3,
        base_fee: u128,
    ) -> Result<Batch, Vec<(Address, Refusal)>> {
        let mut short = Vec::new();
        for plan in &mut batch.plans {
            let priority = plan.gas_price_wei.saturating_sub(plan.base_fee_wei);
            let gas_used = plan.gas_cost_wei / U256::from(plan.gas_price_wei.max(1));
            let gross = plan.net_profit_debt + signed(plan.fees_in_debt);
            plan.base_fee_wei = base_fee;
            plan.gas_price_wei = base_fee + priority;
            if let Err(refusal) = self.charge(plan, market, gas_used.saturating_to(), gross) {
                short.push((plan.borrower, refusal));
            }
        }
        if !short.is_empty() {
            return Err(short);
        }
        Ok(Batch::of(batch.plans, batch.gas_limit))
    }

    /// Runs the exact transaction on the latest state with one `eth_call` (any node has it): the
    /// Liquidator returns each liquidation's profit, its sale coming after the batch's earlier ones,
    /// and the gas its call used from its first statement to its last. The transaction's gas is that,
    /// its intrinsic gas (with room for the minimum profits its final calldata will carry) and
    /// [`CALL_FRAME_GAS`] for the little that runs outside the measurement, with no refund taken off:
    /// at or above what its receipt will show. A revert comes back decoded, as a run that reverted.
    ///
    /// It runs at the time of the block after `planned_on`, not at the latest block's own: a reserve
    /// updated in that block skips its interest update at the same timestamp, and the mined block,
    /// later, does not (several thousand gas per reserve, so priced gas fell short of receipts).
    async fn run(
        &self,
        calldata: Bytes,
        liquidations: usize,
        planned_on: Option<crate::protocol::BlockRef>,
    ) -> Result<Run, ChainError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut time = planned_on
            .map(|b| b.timestamp + 1)
            .filter(|_| self.block_overrides.load(Relaxed));
        let mut time_checked = false;
        // A plan made on the pending block runs on it; others on the latest state.
        let at = planned_on
            .filter(|b| b.pending)
            .map_or(BlockId::latest(), |b| b.id());
        let started = std::time::Instant::now();
        let returned = loop {
            match self.call_at(&calldata, time, at).await {
                Ok(returned) => break returned,
                Err(e) if is_revert(&e) => {
                    // Aave's interest math reverts on a time before a reserve's last update: when the
                    // chain has passed the time set, run again just after its latest block.
                    if let Some(t) = time
                        && !time_checked
                    {
                        time_checked = true;
                        let latest = self.latest_timestamp().await?;
                        if latest > t {
                            tracing::debug!(
                                time_set = t,
                                latest,
                                "the chain passed the simulation's time; running it again after the latest block"
                            );
                            time = Some(latest + 1);
                            continue;
                        }
                    }
                    return Ok(Run::Reverted(decode_revert(&e)));
                }
                Err(e) if time.is_some() && refuses_block_overrides(&e) => {
                    // Not every node takes the override: simulate without it, at the latest block's
                    // own time, from now on.
                    if self.block_overrides.swap(false, Relaxed) {
                        tracing::warn!(error = %e, "the node refuses eth_call's block overrides: simulating at the latest block's own time, so the gas priced can fall short of the receipt's where a reserve was updated in that block");
                    }
                    time = None;
                }
                Err(e) => return Err(ChainError::rpc("eth_call (the liquidation)", e)),
            }
        };
        tracing::trace!(
            liquidations,
            node_ms = started.elapsed().as_secs_f64() * 1e3,
            "simulated"
        );
        let decoded = if liquidations == 1 {
            Liquidator::liquidateCall::abi_decode_returns(&returned)
                .map(|r| (vec![r.profit], r.gasUsed))
        } else {
            Liquidator::liquidateBatchCall::abi_decode_returns(&returned)
                .map(|r| (r.profits, r.gasUsed))
        };
        let (profits, measured) = match decoded {
            Ok(d) if d.0.len() == liquidations => d,
            _ => {
                return Err(ChainError::rpc(
                    format!(
                        "the Liquidator's answer to {liquidations} liquidations does not decode ({} bytes)",
                        returned.len()
                    ),
                    alloy::transports::RpcError::NullResp,
                ));
            }
        };
        let gas = intrinsic_gas(&calldata)
            + MIN_PROFIT_CALLDATA_GAS * liquidations as u64
            + CALL_FRAME_GAS
            + measured.saturating_to::<u64>();
        Ok(Run::Succeeded(
            Gas {
                used: gas,
                limit: gas_limit_for(gas),
            },
            profits,
        ))
    }

    /// One `eth_call` of the transaction on the state `at`, at `time` where given.
    async fn call_at(
        &self,
        calldata: &Bytes,
        time: Option<u64>,
        at: BlockId,
    ) -> Result<Bytes, alloy::transports::RpcError<alloy::transports::TransportErrorKind>> {
        let tx = TransactionRequest::default()
            .from(self.settings.sender)
            .to(self.settings.liquidator)
            .with_input(calldata.clone());
        self.rpc
            .call(tx)
            .block(at)
            .with_block_overrides_opt(time.map(|time| alloy::rpc::types::BlockOverrides {
                time: Some(time),
                ..Default::default()
            }))
            .await
    }

    /// The latest block's timestamp.
    async fn latest_timestamp(&self) -> Result<u64, ChainError> {
        let block = self
            .rpc
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| ChainError::rpc("the latest block", e))?;
        Ok(block.map_or(0, |b| b.header.timestamp))
    }

    /// The base fee of the block after `block` (latest when unknown), from its header: the one the
    /// watcher read when it has its gas figures, else read once per block, however many positions
    /// are planned in it.
    /// What gas costs a liquidation planned on `market`: the next block's base fee plus our priority
    /// fee, valued at the native asset's oracle price.
    pub async fn sizing_costs(&self, market: &AaveV3) -> Result<SizingCosts, ChainError> {
        Ok(self.costs_at(market, self.next_base_fee(market.block).await?))
    }

    fn costs_at(&self, market: &AaveV3, base_fee: u128) -> SizingCosts {
        SizingCosts::at(
            market,
            Some(self.settings.native_asset),
            base_fee,
            self.settings.priority_fee_wei,
        )
    }

    /// The pools and pairs the planner sells on, kept current across blocks.
    pub fn book(&self) -> &VenueBook {
        &self.book
    }

    /// The next block's base fee after `block`; a header read once per block when the block does not
    /// carry its gas figures.
    async fn next_base_fee(
        &self,
        block: Option<crate::protocol::BlockRef>,
    ) -> Result<u128, ChainError> {
        let read = block.filter(|b| b.gas.is_none());
        if let Some(b) = read
            && let Ok(cached) = self.base_fee_cache.lock()
            && let Some((number, fee)) = *cached
            && number == b.number
        {
            return Ok(fee);
        }
        let fee = fees::eip1559::next_base_fee_after(&self.rpc, block).await?;
        if let Some(b) = read
            && let Ok(mut cached) = self.base_fee_cache.lock()
        {
            *cached = Some((b.number, fee));
        }
        Ok(fee)
    }

    /// The venues between `a` and `b` at `block` (the market's block; latest when unknown), as the
    /// sales counted at it leave them: ours sent in earlier blocks and still pending, and this block's
    /// sent so far. They are mined ahead of what is planned now.
    async fn venues(
        &self,
        a: Address,
        b: Address,
        block: Option<crate::protocol::BlockRef>,
    ) -> Result<Vec<Venue>, ChainError> {
        match block {
            Some(block) => Ok(self
                .book
                .after_sales(block.number, self.book.venues(a, b, block).await?)),
            None => self.book.venues_latest(a, b).await,
        }
    }

    /// Checks the sales of one transaction's plans, in its order, against their pools as this block's
    /// liquidations already sent leave them (ours are mined in nonce order, ahead of it), each against
    /// the repay and minimum profit it must return; when every one still pays, counts them all in.
    /// One answer per plan: `false` for a sale that would now return too little (the Liquidator would
    /// revert, and the gas be lost). With any `false` nothing is counted: the others are to be built
    /// again without it, and checked again. Plans of a block sell into the same pools; each was sized
    /// on the block's state.
    pub fn claim_sales(&self, plans: &[Plan]) -> Vec<bool> {
        let (fits, after) = self.sales_in_order(plans.iter().map(|plan| {
            (
                plan.block,
                plan.sale(),
                plan.amounts.debt_repaid + plan.min_profit,
            )
        }));
        if let (true, Some(first)) = (fits.iter().all(|f| *f), plans.first()) {
            self.record_sales(first.block, after);
        }
        fits
    }

    fn record_sales(&self, block: u64, after: std::collections::HashMap<Address, Venue>) {
        for venue in after.into_values() {
            self.book.record_sale(block, venue);
        }
    }

    /// The plans whose sales, in this order after this block's liquidations already sent, still
    /// return at least their repay, and (refused) those that would not: one of those would revert a
    /// whole batch, whatever its minimum profit. Nothing is counted in.
    pub fn without_losing_sales(&self, plans: Vec<Plan>) -> (Vec<Plan>, Vec<(Address, Refusal)>) {
        let (fits, _) = self.sales_in_order(
            plans
                .iter()
                .map(|plan| (plan.block, plan.sale(), plan.amounts.debt_repaid)),
        );
        let (keep, lose): (Vec<_>, Vec<_>) = plans.into_iter().zip(fits).partition(|(_, f)| *f);
        let refused = lose
            .into_iter()
            .map(|(plan, _)| (plan.borrower, Refusal::PoolMoved(plan.swap_pool)))
            .collect();
        (keep.into_iter().map(|(plan, _)| plan).collect(), refused)
    }

    /// Walks sales in order through their pools as the sales counted at their block leave them, each
    /// given as (block, sale, what it must return): whether each returns at least that (one that does
    /// not is left out of the walk), and the pools after those that do. A pool the book holds no
    /// state of at that block passes uncounted.
    fn sales_in_order(
        &self,
        sales: impl Iterator<Item = (u64, SaleInFlight, U256)>,
    ) -> (Vec<bool>, std::collections::HashMap<Address, Venue>) {
        let mut after: std::collections::HashMap<Address, Venue> = Default::default();
        let fits = sales
            .map(|(block, sale, needed)| {
                let check = match after.get(&sale.pool) {
                    Some(venue) => SaleCheck::on(venue, sale.collateral, sale.amount),
                    None => self
                        .book
                        .check_sale(block, sale.pool, sale.collateral, sale.amount),
                };
                match pays(check, needed) {
                    None => false,
                    Some(venue) => {
                        after.extend(venue.map(|v| (sale.pool, v)));
                        true
                    }
                }
            })
            .collect();
        (fits, after)
    }

    /// [`Self::claim_sales`] of a transaction of one.
    pub fn claim_sale(&self, plan: &Plan) -> bool {
        self.claim_sales(std::slice::from_ref(plan))[0]
    }

    /// Counts in, at `block`, the sales of our liquidations sent in earlier blocks and not mined yet:
    /// when blocks are full they are mined after this block, ahead of anything planned in it (lower
    /// nonces), so this block's plans are sized, and their sales checked, on the pools as those leave
    /// them. `sales` in nonce order. A pool that cannot be read is left as the chain has it (logged).
    pub async fn carry_sales(&self, sales: &[SaleInFlight], block: crate::protocol::BlockRef) {
        // Their pairs' pools, read in one batch (planning reads the same ones: cached for it). A pair
        // that cannot be read leaves its sales uncounted: the book has no state of it at this block.
        let pairs: Vec<(Address, Address)> = sales.iter().map(|s| (s.collateral, s.debt)).collect();
        if let Err(e) = self.book.read_pairs(&pairs, block).await {
            tracing::debug!(error = %e, "reading the pools to carry sales in flight failed");
        }
        // Already sent: counted whatever they return.
        let (_, after) =
            self.sales_in_order(sales.iter().map(|sale| (block.number, *sale, U256::ZERO)));
        self.record_sales(block.number, after);
    }

    /// After a reorg: pools' ticks are read again before they are trusted.
    pub fn reorged(&self) {
        self.book.forget_block_state();
    }

    /// The tap through which the watcher fetches the followed venues' events with each block's own.
    pub fn log_tap(&self) -> crate::watcher::tap::LogTap {
        self.book.log_tap()
    }

    /// Carries the venues the book follows through `block`'s events (the watcher's tapped logs), so
    /// that the block's plans read none of them.
    pub fn follow_block(&self, block: u64, tapped: &crate::watcher::tap::TappedLogs) {
        self.book.follow_block(block, tapped);
    }

    /// The pairs of `positions` whose venues the book does not hold yet, or holds ticks about to age
    /// out for, at block `block`: what [`Self::warm`] should read ahead.
    pub fn cold_pairs<'a>(
        &self,
        market: &AaveV3,
        positions: impl Iterator<Item = &'a StoredPosition>,
        block: u64,
    ) -> Vec<(Address, Address)> {
        let mut pairs = token_pairs(market, positions);
        pairs.retain(|&(a, b)| !self.book.is_warm(a, b, block));
        pairs
    }

    /// Reads `pairs`' venues ahead at `block`, so that the block a price move makes their positions
    /// liquidatable reads only what swaps changed. Failures are only logged: planning reads what it
    /// needs anyway.
    pub async fn warm(&self, pairs: Vec<(Address, Address)>, block: crate::protocol::BlockRef) {
        if let Err(e) = self.book.read_pairs(&pairs, block).await {
            tracing::debug!(error = %e, "reading venues ahead failed");
        }
    }

    /// Reads at `block`, in one batch, the venues of every pair `positions` can be liquidated on:
    /// what their plans are about to ask for, one pair at a time. A failure is only logged: each plan
    /// reads what it needs.
    pub async fn read_venues<'a>(
        &self,
        market: &AaveV3,
        positions: impl Iterator<Item = &'a StoredPosition>,
        block: crate::protocol::BlockRef,
    ) {
        let pairs = token_pairs(market, positions);
        if let Err(e) = self.book.read_pairs(&pairs, block).await {
            tracing::debug!(error = %e, "reading the block's venues in one batch failed");
        }
    }
}

/// What gas costs while sizing: its price, and the native asset's, to count it in a debt asset.
#[derive(Debug, Clone, Copy)]
pub struct SizingCosts {
    /// Price per gas (wei).
    pub gas_price_wei: u128,
    /// The native asset's oracle price (base units per 1e18 wei).
    pub native_price: U256,
}

impl SizingCosts {
    /// Gas at `base_fee` plus `priority_fee_wei`, the native asset at `market`'s oracle price (none
    /// named or not listed: gas counted as free).
    pub fn at(
        market: &AaveV3,
        native_asset: Option<Address>,
        base_fee: u128,
        priority_fee_wei: u128,
    ) -> Self {
        Self {
            gas_price_wei: base_fee + priority_fee_wei,
            native_price: native_asset
                .and_then(|a| market.reserve_of(a))
                .map_or(U256::ZERO, |r| r.price),
        }
    }

    /// The fees of `gas` in `debt`'s units, rounded up (never understated).
    pub fn in_debt(&self, gas: u64, debt: &Reserve) -> U256 {
        let wei = U256::from(gas) * U256::from(self.gas_price_wei);
        // wei → base (native price per 1e18) → debt units.
        let base = wei * self.native_price / crate::units::WAD;
        (base * U256::from(10u64).pow(U256::from(debt.config.decimals)))
            .div_ceil(debt.price.max(U256::from(1u8)))
    }
}

/// The most a pair's liquidation could net on `venues` (base units): its largest repay's collateral
/// sold at the best venue's price less its fee, with no impact, less the repay. A sale nets no more
/// than that at any size (the price only falls as it sells, and the repay buys collateral at one
/// rate), so a pair whose bound is below a profit already found need not be simulated.
pub fn pair_bound<V: Borrow<Venue>>(
    pair: &PairCase,
    cr: &Reserve,
    dr: &Reserve,
    venues: &[V],
) -> i128 {
    let Ok(largest) = pair.largest else {
        return i128::MAX;
    };
    let out = venues
        .iter()
        .map(|v| {
            v.borrow()
                .spot_out(cr.asset, largest.collateral_to_liquidator)
        })
        .max()
        .unwrap_or_default();
    let net = signed(out) - signed(largest.debt_repaid);
    net.saturating_mul(signed(dr.price)) / signed(math::pow10(dr.config.decimals))
}

/// A pair's liquidation case with the largest liquidation the rules allow in it, which every
/// venue's sizing starts from.
#[derive(Debug, Clone, Copy)]
pub struct PairCase {
    /// What the protocol looks at.
    pub case: LiquidationCase,
    /// [`sizing::largest_allowed`] of it.
    pub largest: Result<LiquidationAmounts, sizing::SizingError>,
}

impl PairCase {
    /// `case`, with its largest liquidation.
    pub fn new(case: LiquidationCase) -> Self {
        Self {
            largest: sizing::largest_allowed(&case),
            case,
        }
    }
}

/// A pair's best liquidation on one venue (see [`best_sale`]).
#[derive(Debug, Clone, Copy)]
pub struct VenueSaleSize {
    /// What the protocol does with it.
    pub amounts: LiquidationAmounts,
    /// What its collateral sells for (debt units).
    pub swap_out: U256,
    /// The fees it is sized with (debt units).
    pub fees_in_debt: U256,
    /// What it nets (debt units): swap out less repay and fees.
    pub net_debt: i128,
}

/// Everything the protocol looks at to liquidate collateral `c` (reserve `cr`) against debt `d`
/// (reserve `dr`) of `position`, whose account figures are `account`; `None` when the collateral has
/// no bonus to seize it with (reserve threshold 0 outside eMode).
pub fn liquidation_case(
    market: &AaveV3,
    position: &StoredPosition,
    account: &math::AccountData,
    c: &UserReserve,
    cr: &Reserve,
    d: &UserReserve,
    dr: &Reserve,
) -> Option<LiquidationCase> {
    let bonus_bps = sizing::liquidation_bonus(
        cr.config.liquidation_bonus,
        cr.id,
        market.emode_of(position),
    );
    if bonus_bps <= 10_000 {
        return None;
    }
    let now = market.block.map(|b| b.timestamp).unwrap_or_default();
    Some(LiquidationCase {
        release: market.release,
        health_factor: account.health_factor,
        total_debt_base: account.total_debt_base,
        total_collateral_base: account.total_collateral_base,
        collateral: Side {
            balance: market.collateral_balance(c),
            price: cr.price,
            decimals: cr.config.decimals,
        },
        scaled_collateral: ScaledCollateral {
            scaled: c.scaled_a_token,
            index: cr.indexes.normalized_income(now),
        },
        collateral_available: cr.virtual_balance,
        debt: Side {
            balance: market.debt_balance(d),
            price: dr.price,
            decimals: dr.config.decimals,
        },
        bonus_bps,
        protocol_fee_bps: cr.config.liquidation_protocol_fee,
    })
}

/// The most profitable liquidation of `case` selling its collateral (`cr`'s asset) for the debt
/// (`dr`'s) on one of `venues`, at the sizing gas: the size, and the venue. With none profitable, how
/// close the largest repay came (base units; `None` when no venue takes it).
pub fn best_sale<'v, V: Borrow<Venue>>(
    pair: &PairCase,
    cr: &Reserve,
    dr: &Reserve,
    venues: &'v [V],
    costs: &SizingCosts,
) -> Result<(VenueSaleSize, &'v Venue), Option<i128>> {
    let fees_in_debt = costs.in_debt(SIZING_GAS, dr);
    // Each venue's best size (one or two simulated swaps), and the best of those; a venue whose
    // price less its fee, with no impact, could not beat the best found is not simulated.
    let (case, largest) = (&pair.case, pair.largest.ok());
    let mut order: Vec<(i128, &Venue)> = venues
        .iter()
        .map(|v| {
            let v = v.borrow();
            let bound = largest.map_or(i128::MAX, |a| {
                signed(v.spot_out(cr.asset, a.collateral_to_liquidator)) - signed(a.debt_repaid)
            });
            (bound, v)
        })
        .collect();
    order.sort_by_key(|(bound, _)| std::cmp::Reverse(*bound));
    let mut best: Option<((LiquidationAmounts, U256, i128), &Venue)> = None;
    for (bound, v) in order {
        if best.as_ref().is_some_and(|((_, _, net), _)| bound <= *net) {
            break;
        }
        let sale = VenueSale {
            venue: v,
            token_in: cr.asset,
        };
        if let Some(found) = sizing::best_on_venue(case, &pair.largest, &sale, fees_in_debt)
            && best.as_ref().is_none_or(|((_, _, net), _)| found.2 > *net)
        {
            best = Some((found, v));
        }
    }
    if let Some(((amounts, swap_out, net_debt), venue)) = best {
        return Ok((
            VenueSaleSize {
                amounts,
                swap_out,
                fees_in_debt,
                net_debt,
            },
            venue,
        ));
    }
    let full = sizing::liquidation_amounts(case, U256::MAX).ok();
    Err(full
        .as_ref()
        .and_then(|a| {
            venues
                .iter()
                .filter_map(|v| v.borrow().sell(cr.asset, a.collateral_to_liquidator))
                .max()
                .map(|out| signed(out) - signed(a.debt_repaid + fees_in_debt))
        })
        .map(|n| {
            n * signed(dr.price) / signed(U256::from(10u64).pow(U256::from(dr.config.decimals)))
        }))
}

/// The token pairs `positions` can be liquidated on, each once.
fn token_pairs<'a>(
    market: &AaveV3,
    positions: impl Iterator<Item = &'a StoredPosition>,
) -> Vec<(Address, Address)> {
    let mut pairs: Vec<(Address, Address)> = positions
        .flat_map(|p| liquidation_pairs(market, p))
        .map(|(_, cr, _, dr)| venues::book::pair_key(cr.asset, dr.asset))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// Whether a checked sale returns at least `needed`: `None` when it does not (or cannot fill),
/// otherwise the venue as the sale leaves it (`None` inside for a venue the book does not hold at that
/// block: it passes, uncounted).
fn pays(check: SaleCheck, needed: U256) -> Option<Option<Venue>> {
    match check {
        SaleCheck::Unknown => Some(None),
        SaleCheck::CannotFill => None,
        SaleCheck::Fills(out, _) if out < needed => None,
        SaleCheck::Fills(_, after) => Some(Some(after)),
    }
}

/// Every (collateral, debt) pair of `position` the protocol would liquidate: enabled collateral (with
/// a liquidation threshold before V3.6, which refuses to seize collateral without one), against each
/// other asset it borrows.
pub fn liquidation_pairs<'a>(
    market: &'a AaveV3,
    position: &'a StoredPosition,
) -> Vec<(&'a UserReserve, &'a Reserve, &'a UserReserve, &'a Reserve)> {
    let any_threshold = market.release.zero_threshold_collateral();
    let mut pairs = Vec::new();
    for c in position
        .holdings
        .iter()
        .filter(|h| h.collateral_enabled && !h.scaled_a_token.is_zero())
    {
        let Some(cr) = market.reserves.get(&c.reserve_id) else {
            continue;
        };
        if cr.config.liquidation_threshold == 0 && !any_threshold {
            continue;
        }
        for d in position.holdings.iter().filter(|h| h.borrowing) {
            if let Some(dr) = market.reserves.get(&d.reserve_id)
                && dr.asset != cr.asset
            {
                pairs.push((c, cr, d, dr));
            }
        }
    }
    pairs
}

/// The bytes `GasPriceOracle.getL1Fee` is given for a transaction of `input` to `to`: an unsigned
/// EIP-1559 transaction's RLP.
pub fn unsigned_bytes(input: &Bytes, gas_limit: u64, gas_price: u128, to: Address) -> Vec<u8> {
    use alloy::{
        consensus::{SignableTransaction, TxEip1559},
        primitives::TxKind,
    };
    let unsigned = TxEip1559 {
        chain_id: 0,
        nonce: 0,
        gas_limit,
        max_fee_per_gas: gas_price,
        max_priority_fee_per_gas: gas_price,
        to: TxKind::Call(to),
        value: U256::ZERO,
        access_list: Default::default(),
        input: input.clone(),
    };
    let mut out = Vec::new();
    unsigned.encode_for_signing(&mut out);
    out
}

/// The unit (10^decimals) and price of a debt asset (18 decimals and a price of 1 when unknown).
fn debt_unit_and_price(market: &AaveV3, debt: Address) -> (U256, U256) {
    let reserve = market.reserve_of(debt);
    (
        U256::from(10u64).pow(U256::from(reserve.map_or(18, |r| r.config.decimals))),
        reserve.map_or(U256::from(1u8), |r| r.price),
    )
}

/// `plan` as the Liquidator's struct, keeping at least `min_profit`.
fn liquidation(plan: &Plan, min_profit: U256) -> Liquidator::Liquidation {
    Liquidator::Liquidation {
        collateral: plan.collateral,
        debt: plan.debt,
        borrower: plan.borrower,
        debtToCover: plan.amounts.debt_to_cover,
        collateralToSell: plan.amounts.collateral_to_liquidator,
        venue: match plan.venue {
            VenueKind::UniswapV3 => Liquidator::Venue::UniswapV3,
            VenueKind::UniswapV2 => Liquidator::Venue::UniswapV2,
        },
        swapPool: plan.swap_pool,
        minProfit: min_profit,
    }
}

/// The Liquidator call for `liquidations`: `liquidate` for one, `liquidateBatch` for more.
fn liquidation_calldata(mut liquidations: Vec<Liquidator::Liquidation>) -> Bytes {
    if liquidations.len() == 1 {
        let l = liquidations.pop().expect("one");
        return Liquidator::liquidateCall { l }.abi_encode().into();
    }
    Liquidator::liquidateBatchCall { ls: liquidations }
        .abi_encode()
        .into()
}

/// A revert's reason: the Liquidator's custom errors and Aave's numeric error strings by name where known.
pub fn decode_revert(
    err: &alloy::transports::RpcError<alloy::transports::TransportErrorKind>,
) -> String {
    err.as_error_resp()
        .and_then(|payload| payload.as_revert_data())
        .and_then(|data| decode_revert_data(&data))
        .unwrap_or_else(|| err.to_string())
}

/// Whether the node answered that the call reverted (geth's code 3, or "execution reverted"), as
/// opposed to failing to run it: a rate limit, a missing header or an internal error is trouble to
/// retry at the next block, not a reason to refuse the plan.
fn is_revert(err: &alloy::transports::RpcError<alloy::transports::TransportErrorKind>) -> bool {
    crate::chain::trouble::Trouble::of(err) == crate::chain::trouble::Trouble::Revert
}

/// Whether the node refused the call's parameters (JSON-RPC's invalid params, or a message naming the
/// override): what a node that does not take `eth_call`'s block overrides answers. Other errors (a
/// rate limit, a node in trouble) are not taken as a refusal.
fn refuses_block_overrides(
    err: &alloy::transports::RpcError<alloy::transports::TransportErrorKind>,
) -> bool {
    err.as_error_resp().is_some_and(|payload| {
        payload.code == -32602 || payload.message.to_ascii_lowercase().contains("override")
    })
}

/// A revert's reason from its data: the Liquidator's custom errors and Aave's error codes by name
/// where known, the raw data otherwise; `None` when there is no data.
pub(crate) fn decode_revert_data(data: &[u8]) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    if let Ok(e) = Liquidator::LiquidatorErrors::abi_decode(data) {
        return Some(format!("Liquidator: {e:?}"));
    }
    if let Some(aave) = crate::protocol::aave_v3::errors::describe(data) {
        return Some(format!("Aave: {aave}"));
    }
    if let Some(reason) = alloy::sol_types::decode_revert_reason(data) {
        return Some(reason);
    }
    Some(format!("revert data {}", Bytes::copy_from_slice(data)))
}

/// Room the gas limit leaves above the most gas in use for what the 63/64 rule holds back at each
/// nested call (Liquidator → pool → Liquidator → Aave Pool → tokens: about a tenth of one
/// liquidation's gas; a batch runs its liquidations one after the other, so it needs no more).
const NESTED_CALL_ROOM: u64 = 60_000;

/// Gas of what runs outside the Liquidator's own measurement of a call: the dispatch to the function
/// and the decoding of its arguments before, the encoding of its answer after (a few hundred gas each
/// for a batch of sixteen; this is several times that).
const CALL_FRAME_GAS: u64 = 5_000;

/// Calldata gas a liquidation's minimum profit can add when the run's zeros become its final figure:
/// a 32-byte word whose bytes go from zero (4 gas) to non-zero (16).
const MIN_PROFIT_CALLDATA_GAS: u64 = 32 * 12;

/// A transaction's intrinsic gas: 21,000 and its calldata, 4 gas per zero byte and 16 per other
/// (EIP-2028). (EIP-7623's floor for calldata-heavy transactions is far below a liquidation's
/// execution.)
fn intrinsic_gas(calldata: &[u8]) -> u64 {
    let zeros = calldata.iter().filter(|b| **b == 0).count() as u64;
    21_000 + 4 * zeros + 16 * (calldata.len() as u64 - zeros)
}

/// The gas limit for a transaction that needs `gas` before refunds: that, a sixteenth more for state
/// that moves between the simulation and the block (a sale crossing one more tick), and room for the
/// 63/64 rule. A block takes a transaction only while its gas left covers the limit, so a limit
/// larger than needed costs room, not just headroom; a transaction pays only for the gas it uses.
fn gas_limit_for(gas: u64) -> u64 {
    gas + gas / 16 + NESTED_CALL_ROOM
}

/// How a run of the exact transaction went.
enum Run {
    /// It succeeded with this gas; each liquidation's profit (debt asset), in the transaction's order.
    Succeeded(Gas, Vec<U256>),
    Reverted(String),
}

/// Plans built into one transaction, or those of them that would not pay for themselves in it.
enum Finalised {
    Batch(Batch),
    Short(Vec<(Address, Refusal)>),
}

/// Gas a run used (before refunds), and the limit to send it with.
struct Gas {
    used: u64,
    limit: u64,
}

/// A plan's figures for a person.
pub fn describe(plan: &Plan, symbol: impl Fn(Address) -> (String, u8)) -> String {
    let (cs, cd) = symbol(plan.collateral);
    let (ds, dd) = symbol(plan.debt);
    let tok = |x: U256, d: u8| crate::units::format_token(x, d);
    let usd = |b: i128| format!("{:.2}", b as f64 / 1e8);
    [
        format!("borrower           {}", plan.borrower),
        format!("rules              Aave {}", plan.release),
        format!(
            "repay              {} {ds}",
            tok(plan.amounts.debt_repaid, dd)
        ),
        format!(
            "seized (to us)     {} {cs}",
            tok(plan.amounts.collateral_to_liquidator, cd)
        ),
        format!(
            "protocol fee       {} {cs}",
            tok(plan.amounts.protocol_fee, cd)
        ),
        format!(
            "sold on            {} ({:?} {}%), impact {} bps",
            plan.swap_pool,
            plan.venue,
            plan.swap_fee as f64 / 10_000.0,
            plan.price_impact_bps
        ),
        format!("swap output        {} {ds}", tok(plan.swap_out, dd)),
        format!(
            "gas                {} × {} gwei = {} ETH",
            plan.gas_cost_wei / U256::from(plan.gas_price_wei.max(1)),
            plan.gas_price_wei as f64 / 1e9,
            tok(plan.gas_cost_wei, 18)
        ),
        format!("L1 data fee        {} ETH", tok(plan.l1_fee_wei, 18)),
        format!("fees in {ds:<11}{} {ds}", tok(plan.fees_in_debt, dd)),
        format!(
            "net profit         {} {ds} (${})",
            if plan.net_profit_debt < 0 {
                format!(
                    "-{}",
                    tok(U256::from(plan.net_profit_debt.unsigned_abs()), dd)
                )
            } else {
                tok(U256::from(plan.net_profit_debt as u128), dd)
            },
            usd(plan.net_profit_base)
        ),
    ]
    .join("\n")
}

/// The base value of a debt amount, for display.
pub fn base_value(amount: U256, price: U256, decimals: u8) -> BaseAmount {
    BaseAmount::of_tokens(amount, BaseAmount(price), decimals)
}

#[cfg(test)]
mod tests {
    use super::{is_revert, refuses_block_overrides};
    use alloy::rpc::json_rpc::ErrorPayload;
    use alloy::transports::{RpcError, TransportErrorKind};

    fn answer(code: i64, message: &'static str) -> RpcError<TransportErrorKind> {
        RpcError::ErrorResp(ErrorPayload {
            code,
            message: message.into(),
            data: None,
        })
    }

    #[test]
    fn only_a_revert_refuses_a_plan_and_node_trouble_is_retried() {
        assert!(is_revert(&answer(3, "execution reverted")));
        assert!(is_revert(&answer(-32000, "execution reverted: 45")));
        assert!(is_revert(&answer(-32603, "EVM error: Revert")));
        assert!(!is_revert(&answer(-32005, "rate limit exceeded")));
        assert!(!is_revert(&answer(-32000, "header not found")));
        assert!(!is_revert(&RpcError::<TransportErrorKind>::NullResp));
    }

    #[test]
    fn a_node_refusing_block_overrides_is_told_from_one_in_trouble() {
        // geth before block overrides in eth_call, and a node that names them.
        assert!(refuses_block_overrides(&answer(
            -32602,
            "too many arguments, want at most 3"
        )));
        assert!(refuses_block_overrides(&answer(
            -32000,
            "block overrides are not supported"
        )));
        assert!(!refuses_block_overrides(&answer(
            -32005,
            "rate limit exceeded"
        )));
        assert!(!refuses_block_overrides(&answer(
            -32000,
            "header not found"
        )));
        assert!(!refuses_block_overrides(
            &RpcError::<TransportErrorKind>::NullResp
        ));
    }
}
