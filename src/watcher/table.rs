//! The positions a watcher follows, in one dense table.
//!
//! Re-pricing walks every position after a price move, and at 10,000 positions its time went to
//! memory, not arithmetic: a hash map hands its entries out in hash order, so each position's holdings
//! (a separate allocation) were fetched from a random place. Here positions sit in a vector in the
//! order they were loaded, which is the order their holdings were allocated in, and the walk reads
//! memory front to back; the map only finds a user's row.

use crate::{protocol::Health, store::StoredPosition};
use alloy::primitives::Address;
use std::collections::HashMap;

/// Positions with their health at the last block, by user.
#[derive(Debug, Default)]
pub struct PositionTable {
    row_of: HashMap<Address, usize>,
    users: Vec<Address>,
    rows: Vec<(StoredPosition, Health)>,
}

impl PositionTable {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No positions held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether `user` has a row.
    pub fn contains(&self, user: &Address) -> bool {
        self.row_of.contains_key(user)
    }

    /// `user`'s position and health.
    pub fn get(&self, user: &Address) -> Option<&(StoredPosition, Health)> {
        self.row_of.get(user).map(|&i| &self.rows[i])
    }

    /// Sets `user`'s row, in place when it has one.
    pub fn insert(&mut self, user: Address, position: StoredPosition, health: Health) {
        match self.row_of.get(&user) {
            Some(&i) => self.rows[i] = (position, health),
            None => {
                self.row_of.insert(user, self.rows.len());
                self.users.push(user);
                self.rows.push((position, health));
            }
        }
    }

    /// Drops `user`'s row; the last row takes its place.
    pub fn remove(&mut self, user: &Address) {
        let Some(i) = self.row_of.remove(user) else {
            return;
        };
        self.users.swap_remove(i);
        self.rows.swap_remove(i);
        if let Some(moved) = self.users.get(i) {
            self.row_of.insert(*moved, i);
        }
    }

    /// Every user, in table order.
    pub fn users(&self) -> &[Address] {
        &self.users
    }

    /// Every row, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (Address, &StoredPosition, &Health)> {
        self.users
            .iter()
            .zip(&self.rows)
            .map(|(user, (position, health))| (*user, position, health))
    }

    /// The table in `parts` runs of rows of about equal length, each with its users and its rows'
    /// health writable, to re-price side by side.
    pub fn chunks_mut(
        &mut self,
        parts: usize,
    ) -> impl Iterator<Item = impl Iterator<Item = (Address, &StoredPosition, &mut Health)>> {
        let size = self.rows.len().div_ceil(parts.max(1)).max(1);
        self.users
            .chunks(size)
            .zip(self.rows.chunks_mut(size))
            .map(|(users, rows)| {
                users
                    .iter()
                    .zip(rows)
                    .map(|(user, (position, health))| (*user, &*position, health))
            })
    }

    /// Every row with its health writable, in table order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Address, &StoredPosition, &mut Health)> {
        self.users
            .iter()
            .zip(&mut self.rows)
            .map(|(user, (position, health))| (*user, &*position, health))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(emode: u8) -> StoredPosition {
        StoredPosition {
            holdings: Vec::new(),
            emode,
            health_factor: Default::default(),
            collateral_base: Default::default(),
            debt_base: Default::default(),
            loaded_block: 0,
            block: 0,
        }
    }

    #[test]
    fn rows_are_found_replaced_and_removed() {
        let mut t = PositionTable::default();
        let [a, b, c] = [1u8, 2, 3].map(Address::repeat_byte);
        for (i, user) in [a, b, c].into_iter().enumerate() {
            t.insert(user, position(i as u8), Health::default());
        }
        t.insert(b, position(9), Health::default());
        assert_eq!(t.len(), 3, "a second insert replaces");
        assert_eq!(t.get(&b).unwrap().0.emode, 9);

        t.remove(&a);
        assert!(!t.contains(&a) && t.get(&a).is_none());
        assert_eq!(
            t.users(),
            &[c, b],
            "the last row took the removed one's place"
        );
        assert_eq!(t.get(&c).unwrap().0.emode, 2, "and is still found");
        t.remove(&a);
        t.remove(&b);
        t.remove(&c);
        assert!(t.is_empty() && t.users().is_empty());

        t.insert(a, position(1), Health::default());
        for (_, _, health) in t.iter_mut() {
            health.debt_base = alloy::primitives::U256::from(7u8);
        }
        let rows: Vec<_> = t
            .iter()
            .map(|(u, p, h)| (u, p.emode, h.debt_base))
            .collect();
        assert_eq!(rows, vec![(a, 1, alloy::primitives::U256::from(7u8))]);

        // Split for re-pricing side by side: every row once, in order.
        for (i, user) in [b, c].into_iter().enumerate() {
            t.insert(user, position(i as u8 + 2), Health::default());
        }
        for parts in 1..=4 {
            let seen: Vec<Address> = t
                .chunks_mut(parts)
                .flat_map(|chunk| chunk.map(|(u, _, _)| u).collect::<Vec<_>>())
                .collect();
            assert_eq!(seen, vec![a, b, c], "{parts} parts");
        }
    }
}
