//! The executor: turns plans into included transactions through the `Liquidator` contract.

pub mod bundle;
pub mod journal;
pub mod liquidator;
pub mod signer;
pub mod submit;
