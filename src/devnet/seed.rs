//! Opens positions on the devnet market: a deep-pocketed supplier, so there is something to borrow,
//! and N borrowers with several collateral and debt reserves each and health factors spread from
//! 1.02 to 3.
//!
//! Borrowers are plain addresses derived from their index; anvil's auto-impersonation lets them send
//! without keys. Plans are pure functions of (index, count), so a devnet is the same on every run.

use super::{
    Deployer,
    aave::{AaveDeployment, DeployedAsset},
    market::{ASSETS, EMODE, EModeSpec},
};
use crate::{
    chain::{
        self,
        bindings::{MintableERC20, Pool},
    },
    units::{BaseAmount, Bps},
};
use alloy::{
    network::TransactionBuilder,
    primitives::{Address, U256, keccak256},
    providers::ext::AnvilApi,
    rpc::types::TransactionRequest,
    sol_types::SolCall,
};

/// Lowest and highest seeded health factor, in thousandths.
pub const HF_RANGE_MILLI: (u64, u64) = (1_020, 3_000);

/// The address of seeded borrower `index`.
pub fn borrower_address(index: u64) -> Address {
    let hash = keccak256(format!("cascade devnet borrower {index}"));
    Address::from_slice(&hash[12..])
}

/// The deep-pocketed supplier that funds the market's borrowable liquidity.
pub fn supplier_address() -> Address {
    Address::from_slice(&keccak256("cascade devnet supplier")[12..])
}

/// What one borrower holds, in base currency, and the health factor it was sized for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BorrowerPlan {
    /// (index into [`ASSETS`], value) of each collateral.
    pub collateral: Vec<(usize, BaseAmount)>,
    /// (index into [`ASSETS`], value) of each debt.
    pub debt: Vec<(usize, BaseAmount)>,
    /// The health factor the plan is sized for, in thousandths.
    pub target_hf_milli: u64,
    /// The eMode category the borrower enters (0 for none).
    pub emode: u8,
}

/// splitmix64: a small, well-mixed deterministic sequence for the plans.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The plan for borrower `index` of `count`, on a market with eMode category `emode` (or none).
///
/// Health factors follow a square-law spread over [`HF_RANGE_MILLI`]: denser near 1, as on a real
/// market where the riskiest quarter sits within a few percent of liquidation. Collateral is two
/// reserves (mostly WETH and WBTC, some ALT and USDC); debt is the next two reserves in the order
/// USDC, WETH, WBTC, ALT that the borrower does not use as collateral. Where the market has an eMode
/// category, a quarter of the borrowers enter it instead: the category's two collaterals against its
/// borrowable asset, at its threshold.
pub fn plan(index: u64, count: u64, emode: Option<&EModeSpec>) -> BorrowerPlan {
    let (lo, hi) = HF_RANGE_MILLI;
    let span = hi - lo;
    let target_hf_milli = if count <= 1 {
        lo
    } else {
        // lo + span·(i/(n-1))², in integers.
        let (i, n) = (u128::from(index), u128::from(count - 1));
        lo + (u128::from(span) * i * i / (n * n)) as u64
    };

    let r = mix(index);
    // Primary collateral: WETH 50%, WBTC 30%, ALT 10%, USDC 10%.
    let primary = match r % 10 {
        0..=4 => 0,
        5..=7 => 2,
        8 => 3,
        _ => 1,
    };
    let secondary = [0usize, 2, 3, 1]
        .into_iter()
        .filter(|&a| a != primary)
        .nth(((r >> 8) % 3) as usize)
        .unwrap_or(0);
    let sizes_usd = [2_000u64, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000];
    let total = BaseAmount::from_usd(sizes_usd[((r >> 16) % sizes_usd.len() as u64) as usize]);
    if let Some(e) = emode.filter(|_| (r >> 24).is_multiple_of(4)) {
        return emode_plan(e, total, target_hf_milli);
    }
    let primary_value = BaseAmount(Bps(6500).apply(total.0));
    let collateral = vec![
        (primary, primary_value),
        (secondary, BaseAmount(total.0 - primary_value.0)),
    ];

    // Debt such that Σ collateral·LT / debt = target HF.
    let weighted: U256 = collateral
        .iter()
        .map(|&(a, v)| ASSETS[a].liquidation_threshold.apply(v.0))
        .fold(U256::ZERO, |acc, x| acc + x);
    let total_debt = weighted * U256::from(1_000u64) / U256::from(target_hf_milli);
    let mut debt_assets = [1usize, 0, 2, 3]
        .into_iter()
        .filter(|a| collateral.iter().all(|(c, _)| c != a));
    let first = debt_assets.next().unwrap_or(1);
    let second = debt_assets.next().unwrap_or(0);
    let first_value = Bps(7000).apply(total_debt);
    let debt = vec![
        (first, BaseAmount(first_value)),
        (second, BaseAmount(total_debt - first_value)),
    ];
    BorrowerPlan {
        collateral,
        debt,
        target_hf_milli,
        emode: 0,
    }
}

/// A borrower in eMode category `e`: its first two collaterals (65% and 35%) against its first
/// borrowable asset, sized at the category's threshold.
fn emode_plan(e: &EModeSpec, total: BaseAmount, target_hf_milli: u64) -> BorrowerPlan {
    let first = BaseAmount(Bps(6500).apply(total.0));
    let collateral = vec![
        (e.collateral[0], first),
        (
            e.collateral[1 % e.collateral.len()],
            BaseAmount(total.0 - first.0),
        ),
    ];
    let weighted = e.liquidation_threshold.apply(total.0);
    let debt = weighted * U256::from(1_000u64) / U256::from(target_hf_milli);
    BorrowerPlan {
        collateral,
        debt: vec![(e.borrowable[0], BaseAmount(debt))],
        target_hf_milli,
        emode: e.id,
    }
}

/// Transactions mined together. Seeding thousands of borrowers one block per transaction would take
/// minutes; with automine paused, each borrower's transactions (in nonce order) and many borrowers'
/// go into one block. Gas limits are set per call, since nothing can be estimated against state that
/// earlier transactions in the same block create.
struct BlockBatch<'a> {
    d: &'a Deployer,
    sent: Vec<(alloy::primitives::B256, String)>,
}

/// Gas for each seeding call: generous upper bounds of what Aave and the token use.
const MINT_GAS: u64 = 120_000;
const APPROVE_GAS: u64 = 80_000;
const SUPPLY_GAS: u64 = 450_000;
const BORROW_GAS: u64 = 600_000;
const EMODE_GAS: u64 = 300_000;

impl<'a> BlockBatch<'a> {
    fn new(d: &'a Deployer) -> Self {
        Self {
            d,
            sent: Vec::new(),
        }
    }

    async fn send<C: SolCall>(
        &mut self,
        from: Address,
        to: Address,
        call: C,
        gas: u64,
        what: String,
    ) -> eyre::Result<()> {
        use alloy::providers::Provider;
        let tx = TransactionRequest::default()
            .from(from)
            .to(to)
            .with_input(call.abi_encode())
            .with_gas_limit(gas);
        let pending = self
            .d
            .rpc
            .send_transaction(tx)
            .await
            .map_err(|e| chain::ChainError::rpc(what.clone(), e))?;
        self.sent.push((*pending.tx_hash(), what));
        Ok(())
    }

    /// Mints, approves the Pool and supplies `amount` of `token` for `account`.
    async fn supply(
        &mut self,
        account: Address,
        pool: Address,
        token: Address,
        amount: U256,
    ) -> eyre::Result<()> {
        self.send(
            account,
            token,
            MintableERC20::mintCall {
                account,
                value: amount,
            },
            MINT_GAS,
            format!("mint for {account}"),
        )
        .await?;
        self.send(
            account,
            token,
            MintableERC20::approveCall {
                spender: pool,
                amount: U256::MAX,
            },
            APPROVE_GAS,
            format!("approve for {account}"),
        )
        .await?;
        self.send(
            account,
            pool,
            Pool::supplyCall {
                asset: token,
                amount,
                onBehalfOf: account,
                referralCode: 0,
            },
            SUPPLY_GAS,
            format!("supply from {account}"),
        )
        .await
    }

    /// Mines until every sent transaction is in a block, and checks each succeeded.
    async fn mine(&mut self) -> eyre::Result<()> {
        use alloy::providers::Provider;
        let mut pending: Vec<_> = std::mem::take(&mut self.sent);
        // More than a block holds stays in the pool for the next block.
        for _ in 0..1_000 {
            if pending.is_empty() {
                return Ok(());
            }
            // Seeding fills block after block, and EIP-1559 would raise the base fee 12.5% each time:
            // after a few hundred full blocks no borrower's 1 ETH pays for gas and its transactions wait
            // in the pool for ever. Seeding is setup, not market activity: keep the fee where it started.
            self.d
                .rpc
                .anvil_set_next_block_base_fee_per_gas(SEEDING_BASE_FEE)
                .await?;
            self.d.rpc.evm_mine(None).await?;
            let mut still = Vec::new();
            for (hash, what) in pending {
                match self.d.rpc.get_transaction_receipt(hash).await? {
                    Some(r) if r.status() => {}
                    Some(r) => eyre::bail!(
                        "{what}: transaction {hash} reverted (gas used {})",
                        r.gas_used
                    ),
                    None => still.push((hash, what)),
                }
            }
            pending = still;
        }
        eyre::bail!("{} seeding transactions were never mined", pending.len())
    }
}

/// Runs `f` with automine paused, restoring it afterwards even when `f` fails.
async fn without_automine<T>(
    d: &Deployer,
    f: impl std::future::Future<Output = eyre::Result<T>>,
) -> eyre::Result<T> {
    let was = d.rpc.anvil_get_auto_mine().await?;
    d.rpc.anvil_set_auto_mine(false).await?;
    let out = f.await;
    d.rpc.anvil_set_auto_mine(was).await?;
    out
}

/// Supplies every reserve from [`supplier_address`] with enough to fund `borrowers` positions.
pub async fn fund_market(
    d: &Deployer,
    market: &AaveDeployment,
    assets: &[DeployedAsset],
    borrowers: u64,
) -> eyre::Result<()> {
    let supplier = supplier_address();
    d.rpc
        .anvil_set_balance(supplier, U256::from(10u64).pow(U256::from(21)))
        .await?;
    // The largest plan borrows $250k·0.85 in total; $300k of every reserve per borrower covers any mix.
    let per_reserve = BaseAmount::from_usd(1_000_000 + 300_000 * borrowers);
    without_automine(d, async {
        let mut batch = BlockBatch::new(d);
        for (spec, asset) in ASSETS.iter().zip(assets) {
            let amount = per_reserve.to_tokens(spec.price(), spec.decimals);
            batch
                .supply(supplier, market.pool, asset.address, amount)
                .await?;
        }
        batch.mine().await
    })
    .await
}

/// The base fee of every seeding block (anvil's initial base fee, 1 gwei).
const SEEDING_BASE_FEE: u128 = 1_000_000_000;

/// Borrowers opened per mined block.
const BORROWERS_PER_BLOCK: u64 = 25;

/// Opens the positions of borrowers `range` (of `count` planned) at the current oracle prices.
pub async fn open_borrowers(
    d: &Deployer,
    market: &AaveDeployment,
    assets: &[DeployedAsset],
    range: std::ops::Range<u64>,
    count: u64,
) -> eyre::Result<Vec<Address>> {
    let mut opened = Vec::new();
    let emode = market.emode_category.map(|_| &EMODE);
    without_automine(d, async {
        let mut batch = BlockBatch::new(d);
        for index in range {
            let borrower = borrower_address(index);
            let p = plan(index, count, emode);
            d.rpc
                .anvil_set_balance(borrower, U256::from(10u64).pow(U256::from(18)))
                .await?;
            for &(a, value) in &p.collateral {
                let amount = value.to_tokens(ASSETS[a].price(), ASSETS[a].decimals);
                batch
                    .supply(borrower, market.pool, assets[a].address, amount)
                    .await?;
            }
            if p.emode != 0 {
                batch
                    .send(
                        borrower,
                        market.pool,
                        Pool::setUserEModeCall {
                            categoryId: p.emode,
                        },
                        EMODE_GAS,
                        format!("eMode for {borrower}"),
                    )
                    .await?;
            }
            for &(a, value) in &p.debt {
                let amount = value.to_tokens(ASSETS[a].price(), ASSETS[a].decimals);
                let borrow = Pool::borrowCall {
                    asset: assets[a].address,
                    amount,
                    interestRateMode: U256::from(2u8),
                    referralCode: 0,
                    onBehalfOf: borrower,
                };
                batch
                    .send(
                        borrower,
                        market.pool,
                        borrow,
                        BORROW_GAS,
                        format!("borrow {} by {borrower}", ASSETS[a].symbol),
                    )
                    .await?;
            }
            opened.push(borrower);
            if (opened.len() as u64).is_multiple_of(BORROWERS_PER_BLOCK) {
                batch.mine().await?;
            }
        }
        batch.mine().await
    })
    .await?;
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_covers_the_range_and_is_dense_near_one() {
        let n = 50;
        let hfs: Vec<u64> = (0..n).map(|i| plan(i, n, None).target_hf_milli).collect();
        assert_eq!(hfs[0], 1_020);
        assert_eq!(hfs[n as usize - 1], 3_000);
        assert!(hfs.windows(2).all(|w| w[0] <= w[1]));
        let below_1_25 = hfs.iter().filter(|&&h| h < 1_250).count();
        assert!(below_1_25 >= 15, "{below_1_25} of {n} below 1.25");
    }

    #[test]
    fn plans_hold_two_collaterals_and_two_distinct_debts() {
        for i in 0..200 {
            let p = plan(i, 200, None);
            assert_eq!(p.collateral.len(), 2);
            assert_ne!(p.collateral[0].0, p.collateral[1].0);
            assert_eq!(p.debt.len(), 2);
            assert_ne!(p.debt[0].0, p.debt[1].0);
            for (d, _) in &p.debt {
                assert!(
                    p.collateral.iter().all(|(c, _)| c != d),
                    "borrower {i} borrows its collateral"
                );
            }
        }
    }

    #[test]
    fn sized_for_the_target_health_factor() {
        for i in [0, 7, 33, 49] {
            let p = plan(i, 50, None);
            let weighted: U256 = p
                .collateral
                .iter()
                .map(|&(a, v)| ASSETS[a].liquidation_threshold.apply(v.0))
                .fold(U256::ZERO, |acc, x| acc + x);
            let debt: U256 = p
                .debt
                .iter()
                .map(|(_, v)| v.0)
                .fold(U256::ZERO, |acc, x| acc + x);
            let hf_milli = weighted * U256::from(1_000u64) / debt;
            let target = U256::from(p.target_hf_milli);
            assert!(
                hf_milli >= target && hf_milli <= target + U256::from(1u8),
                "borrower {i}: {hf_milli} vs {target}"
            );
        }
    }

    #[test]
    fn a_quarter_of_the_borrowers_enter_the_emode_at_its_threshold() {
        let n = 400;
        let plans: Vec<BorrowerPlan> = (0..n).map(|i| plan(i, n, Some(&EMODE))).collect();
        let in_emode: Vec<&BorrowerPlan> = plans.iter().filter(|p| p.emode == EMODE.id).collect();
        assert!(
            (60..140).contains(&in_emode.len()),
            "{} of {n}",
            in_emode.len()
        );
        for p in in_emode {
            assert!(
                p.collateral
                    .iter()
                    .all(|(c, _)| EMODE.collateral.contains(c))
            );
            assert!(p.debt.iter().all(|(d, _)| EMODE.borrowable.contains(d)));
            let collateral = sum(p.collateral.iter().map(|(_, v)| v.0));
            let debt = sum(p.debt.iter().map(|(_, v)| v.0));
            let hf_milli =
                EMODE.liquidation_threshold.apply(collateral) * U256::from(1_000u64) / debt;
            assert!(hf_milli >= U256::from(p.target_hf_milli));
            assert!(hf_milli <= U256::from(p.target_hf_milli + 1));
        }
        // Without a category, nobody.
        assert!((0..n).all(|i| plan(i, n, None).emode == 0));
    }

    fn sum(values: impl Iterator<Item = U256>) -> U256 {
        values.fold(U256::ZERO, |acc, x| acc + x)
    }

    #[test]
    fn addresses_are_stable_and_distinct() {
        assert_eq!(borrower_address(0), borrower_address(0));
        assert_ne!(borrower_address(0), borrower_address(1));
        assert_ne!(borrower_address(0), supplier_address());
    }
}
