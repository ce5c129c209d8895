//! cascade: a liquidation keeper for on-chain lending markets.
//!
//! The data flow is watcher → planner → executor, with the chain access and the store beside them.
//! This crate is the library behind the `cascade` binary; `main.rs` only parses arguments and runs a
//! command from [`cli`].

pub mod chain;
pub mod cli;
pub mod config;
pub mod contracts;
pub mod devnet;
pub mod executor;
pub mod keeper;
pub mod map;
pub mod planner;
pub mod protocol;
pub mod store;
pub mod telemetry;
pub mod toolchain;
pub mod units;
pub mod watcher;
