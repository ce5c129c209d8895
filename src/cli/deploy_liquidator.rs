//! `cascade deploy-liquidator`: deploys contracts/Liquidator.sol for the configured market, owned by the
//! configured signer, and prints the address to put in the config.

use crate::{
    chain::{self, bindings::Liquidator},
    cli::positions::connect_checked,
    config::Config,
    contracts::Contracts,
    executor::signer,
    protocol::aave_v3::AaveV3,
};
use alloy::{
    network::{EthereumWallet, TransactionBuilder},
    providers::{Provider, ProviderBuilder},
    rpc::types::TransactionRequest,
    sol_types::SolConstructor,
};
use eyre::{WrapErr, eyre};
use std::path::PathBuf;

/// Arguments of `cascade deploy-liquidator`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
}

/// Runs `cascade deploy-liquidator`.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::load(&args.config)?;
    let (rpc, url) = connect_checked(&config, &args.config).await?;
    let key = signer::load(config.signer.as_ref())?;
    let owner = key.address();
    let balance = rpc
        .get_balance(owner)
        .await
        .wrap_err("reading the signer's balance")?;
    if balance.is_zero() {
        return Err(eyre!(
            "the signer {owner} has no ETH on chain {} to pay for the deployment",
            config.chain.chain_id
        ));
    }
    let market = AaveV3::connect(
        &rpc,
        config.aave.addresses_provider,
        config.multicall.address,
        config.aave.release,
    )
    .await
    .wrap_err("reading the Aave Pool behind aave.addresses_provider")?;
    let contracts = Contracts::compile().wrap_err("compiling contracts/")?;
    let mut code = contracts.get("Liquidator")?.bytecode.to_vec();
    code.extend(
        Liquidator::constructorCall {
            aavePool_: market.pool,
            owner_: owner,
        }
        .abi_encode(),
    );

    let wallet = ProviderBuilder::new()
        .wallet(EthereumWallet::from(key))
        .connect_http(url.parse().map_err(|_| eyre!("RPC URL does not parse"))?);
    let tx = TransactionRequest::default().with_deploy_code(code);
    let receipt = wallet
        .send_transaction(tx)
        .await
        .wrap_err_with(|| format!("sending the deployment to {}", chain::redact_url(&url)))?
        .get_receipt()
        .await
        .wrap_err("waiting for the deployment's receipt")?;
    let address = receipt
        .contract_address
        .filter(|_| receipt.status())
        .ok_or_else(|| eyre!("the deployment {} reverted", receipt.transaction_hash))?;
    println!(
        "Liquidator deployed at {address} (owner {owner}, Aave Pool {})",
        market.pool
    );
    println!(
        "\nput this in {}:\n\n[executor]\nliquidator = \"{address}\"\naccount = \"{owner}\"",
        args.config.display()
    );
    Ok(())
}
