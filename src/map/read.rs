//! What a map starts from, read at one block: the market and positions a watcher holds, and every
//! venue of every pair those positions can be liquidated on, in one batched read.

use super::Snapshot;
use crate::{
    chain::ChainError,
    planner::{
        SizingCosts,
        venues::{Venue, book::VenueBook},
    },
    protocol::{BlockRef, aave_v3::AaveV3},
    store::StoredPosition,
};
use alloy::primitives::Address;
use alloy::primitives::map::{AddressHashMap, HashMap};

/// The snapshot of `market` (refreshed at `block`) and `positions`, with their venues read through
/// `book` at `block`, and gas at `costs`.
pub async fn snapshot(
    market: &AaveV3,
    positions: Vec<(Address, StoredPosition)>,
    book: &VenueBook,
    block: BlockRef,
    costs: SizingCosts,
) -> Result<Snapshot, ChainError> {
    let mut pairs: Vec<(Address, Address)> = positions
        .iter()
        .flat_map(|(_, p)| crate::planner::liquidation_pairs(market, p))
        .map(|(_, cr, _, dr)| crate::planner::venues::book::pair_key(cr.asset, dr.asset))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    book.read_pairs(&pairs, block).await?;
    let mut venues: AddressHashMap<Venue> = AddressHashMap::default();
    let mut venues_by_pair = HashMap::default();
    for (a, b) in pairs {
        let found = book.venues(a, b, block).await?;
        venues_by_pair.insert((a, b), found.iter().map(Venue::address).collect());
        for v in found {
            venues.insert(v.address(), v);
        }
    }
    Ok(Snapshot::new(
        market.clone(),
        positions,
        venues,
        venues_by_pair,
        costs,
    ))
}
