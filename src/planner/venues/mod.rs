//! Where seized collateral is sold: swaps simulated against the pools' on-chain state.

pub mod uniswap_v3;
