//! The `Liquidator` contract (contracts/Liquidator.sol): compiled by foundry-compilers and deployed.

use crate::{
    chain::{self, Rpc, bindings::Liquidator},
    contracts::Contracts,
};
use alloy::{primitives::Address, sol_types::SolConstructor};
use eyre::WrapErr;

/// Compiles contracts/ (from the cache when unchanged) and deploys a Liquidator for `aave_pool` owned by
/// `owner`, from the unlocked account `from`.
pub async fn deploy(
    rpc: &Rpc,
    from: Address,
    aave_pool: Address,
    owner: Address,
) -> eyre::Result<Address> {
    let contracts = Contracts::compile().wrap_err("compiling contracts/")?;
    let artifact = contracts.get("Liquidator")?;
    let mut code = artifact.bytecode.to_vec();
    code.extend(
        Liquidator::constructorCall {
            aavePool_: aave_pool,
            owner_: owner,
        }
        .abi_encode(),
    );
    Ok(chain::deploy_unlocked(rpc, from, code.into(), "Liquidator").await?)
}
