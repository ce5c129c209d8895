//! Other contracts' logs, fetched in the `eth_getLogs` the watcher makes for each new block anyway.
//!
//! The planner keeps its pools' prices current from their own events (`Swap`, `Sync`, `Mint`,
//! `Burn`); asking for them in the market's request costs no round trip and no extra request, where a
//! read of every pool's state in the block of a price move cost a few milliseconds before any
//! position could be sized. The consumer sets which addresses it wants; each block's report carries
//! their logs and the addresses asked for, since only those are complete.

use alloy::{
    primitives::{Address, B256},
    rpc::types::Log,
};
use std::sync::{Arc, Mutex, PoisonError};

/// Addresses and event signatures whose logs the watcher fetches with each block's own. Cloning
/// shares it: the consumer changes the addresses, the watcher reads them at each block.
#[derive(Debug, Clone, Default)]
pub struct LogTap(Arc<Mutex<TapFilter>>);

#[derive(Debug, Default)]
struct TapFilter {
    addresses: Vec<Address>,
    topics: Vec<B256>,
}

/// The tapped logs of one block.
#[derive(Debug, Clone, Default)]
pub struct TappedLogs {
    /// The addresses asked for: the logs below are every log of theirs in the block with one of the
    /// tap's signatures (an address not listed had none asked for).
    pub addresses: Vec<Address>,
    /// Their logs, in block order.
    pub logs: Vec<Log>,
}

impl LogTap {
    /// A tap for events with these signatures, on no address yet.
    pub fn new(topics: Vec<B256>) -> Self {
        Self(Arc::new(Mutex::new(TapFilter {
            addresses: Vec::new(),
            topics,
        })))
    }

    /// The addresses to fetch logs of from the next block on.
    pub fn set_addresses(&self, mut addresses: Vec<Address>) {
        addresses.sort_unstable();
        addresses.dedup();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .addresses = addresses;
    }

    /// The addresses and signatures now, or `None` when no address is tapped.
    pub(crate) fn filter(&self) -> Option<(Vec<Address>, Vec<B256>)> {
        let f = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (!f.addresses.is_empty()).then(|| (f.addresses.clone(), f.topics.clone()))
    }
}
