//! The positions a watcher follows, in one dense table.
//!
//! Re-pricing walks every position after a price move, and at 10,000 positions its time went to
//! memory, not arithmetic: a hash map hands its entries out in hash order, so each position's holdings
//! (a separate allocation) were fetched from a random place. Here positions sit in a vector in the
//! order they were loaded and the walk reads it front to back; the map only finds a user's row. The
//! holdings are still allocations of their own, placed wherever the allocator had room while the
//! node's answers were decoded, so the walks that re-price ask the CPU for each position's holdings
//! a few rows ahead of reaching it (`prefetch_holdings`).

use crate::{protocol::Health, store::StoredPosition};
use alloy::primitives::Address;
use std::collections::HashMap;

/// How many rows ahead of the one being re-priced its holdings are asked for: a position's pricing
/// (~250 ns) is about a memory fetch, so a few rows give each fetch the time it needs. In a throwaway
/// probe of 10,000 devnet positions whose holdings were spread among other allocations, any distance
/// from 2 to 16 took a pass from 4.7–5.0 ms to 2.4–2.6 (2.3 with the holdings side by side).
const PREFETCH_ROWS: usize = 4;

/// Positions with their health at the last block, by user. Positions and healths are separate
/// vectors, row for row, so a walk can write one row's health while it reads positions ahead.
#[derive(Debug, Default)]
pub struct PositionTable {
    row_of: HashMap<Address, usize>,
    users: Vec<Address>,
    positions: Vec<StoredPosition>,
    healths: Vec<Health>,
}

impl PositionTable {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// No positions held.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Whether `user` has a row.
    pub fn contains(&self, user: &Address) -> bool {
        self.row_of.contains_key(user)
    }

    /// `user`'s position and health.
    pub fn get(&self, user: &Address) -> Option<(&StoredPosition, &Health)> {
        self.row_of
            .get(user)
            .map(|&i| (&self.positions[i], &self.healths[i]))
    }

    /// Sets `user`'s row, in place when it has one.
    pub fn insert(&mut self, user: Address, position: StoredPosition, health: Health) {
        match self.row_of.get(&user) {
            Some(&i) => (self.positions[i], self.healths[i]) = (position, health),
            None => {
                self.row_of.insert(user, self.positions.len());
                self.users.push(user);
                self.positions.push(position);
                self.healths.push(health);
            }
        }
    }

    /// Drops `user`'s row; the last row takes its place.
    pub fn remove(&mut self, user: &Address) {
        let Some(i) = self.row_of.remove(user) else {
            return;
        };
        self.users.swap_remove(i);
        self.positions.swap_remove(i);
        self.healths.swap_remove(i);
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
            .zip(&self.positions)
            .zip(&self.healths)
            .map(|((user, position), health)| (*user, position, health))
    }

    /// The table in `parts` runs of rows of about equal length, each with its users and its rows'
    /// health writable, to re-price side by side.
    pub fn chunks_mut(
        &mut self,
        parts: usize,
    ) -> impl Iterator<Item = impl Iterator<Item = (Address, &StoredPosition, &mut Health)>> {
        let size = self.positions.len().div_ceil(parts.max(1)).max(1);
        self.users
            .chunks(size)
            .zip(self.positions.chunks(size))
            .zip(self.healths.chunks_mut(size))
            .map(|((users, positions), healths)| walk(users, positions, healths))
    }

    /// Every row with its health writable, in table order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Address, &StoredPosition, &mut Health)> {
        walk(&self.users, &self.positions, &mut self.healths)
    }

    /// The rows whose health is due for a new figure at `now` (`Health::recheck_at`), found from the
    /// healths alone: a block that moved nothing reads no position.
    pub fn due_at(&self, now: u64) -> Vec<usize> {
        self.healths
            .iter()
            .enumerate()
            .filter(|(_, h)| now >= h.recheck_at)
            .map(|(i, _)| i)
            .collect()
    }

    /// `user`'s row.
    pub fn row(&self, user: &Address) -> Option<usize> {
        self.row_of.get(user).copied()
    }

    /// The rows `rows` (ascending, each once) with their healths writable, in table order; the
    /// others are passed over without being read.
    pub fn rows_mut<'a>(
        &'a mut self,
        rows: &'a [usize],
    ) -> impl Iterator<Item = (Address, &'a StoredPosition, &'a mut Health)> + 'a {
        let mut wanted = rows.iter().copied().peekable();
        self.users
            .iter()
            .zip(&self.positions)
            .zip(self.healths.iter_mut())
            .enumerate()
            .filter_map(move |(i, ((user, position), health))| {
                wanted.next_if_eq(&i).map(|_| (*user, position, health))
            })
    }
}

/// Rows in order, each position's holdings asked for [`PREFETCH_ROWS`] rows before it is yielded.
fn walk<'a>(
    users: &'a [Address],
    positions: &'a [StoredPosition],
    healths: &'a mut [Health],
) -> impl Iterator<Item = (Address, &'a StoredPosition, &'a mut Health)> {
    positions[..PREFETCH_ROWS.min(positions.len())]
        .iter()
        .for_each(prefetch_holdings);
    users.iter().zip(positions).zip(healths).enumerate().map(
        move |(i, ((user, position), health))| {
            if let Some(ahead) = positions.get(i + PREFETCH_ROWS) {
                prefetch_holdings(ahead);
            }
            (*user, position, health)
        },
    )
}

/// Asks the CPU to bring `position`'s holdings into its caches, without waiting for them: a hint,
/// which changes no result (and is nothing on targets other than x86-64).
fn prefetch_holdings(position: &StoredPosition) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = position.holdings.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(position.holdings.as_slice());
        // A line's worth apart, and the last byte's line, which the steps can fall short of.
        for offset in (0..bytes).step_by(64).chain(bytes.checked_sub(1)) {
            // SAFETY: a prefetch never faults and reads nothing into the program; the addresses are
            // inside the holdings' own allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = position;
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
    fn due_rows_are_found_from_the_healths_and_walked_alone() {
        let mut t = PositionTable::default();
        for i in 0..6u8 {
            let health = Health {
                recheck_at: u64::from(i) * 10,
                ..Default::default()
            };
            t.insert(Address::repeat_byte(i), position(i), health);
        }
        assert_eq!(t.due_at(25), vec![0, 1, 2], "due once their time has come");
        let mut rows = t.due_at(25);
        rows.extend(t.row(&Address::repeat_byte(4)));
        rows.sort_unstable();
        rows.dedup();
        let mut walked = Vec::new();
        for (user, position, health) in t.rows_mut(&rows) {
            assert_eq!(
                user,
                Address::repeat_byte(position.emode),
                "each row's own position"
            );
            health.recheck_at = 1_000;
            walked.push(position.emode);
        }
        assert_eq!(walked, vec![0, 1, 2, 4]);
        assert_eq!(
            t.due_at(25),
            Vec::<usize>::new(),
            "their healths were written"
        );
        assert_eq!(t.get(&Address::repeat_byte(3)).unwrap().1.recheck_at, 30);
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

    /// With more rows than the walks read ahead, and holdings of one to three reserves (the
    /// prefetch's last-line step differs by length), each row's health is written through its
    /// own row, whole or split.
    #[test]
    fn walks_reading_ahead_pair_each_health_with_its_row() {
        use crate::protocol::aave_v3::math::UserReserve;
        use alloy::primitives::U256;
        let rows = 3 * PREFETCH_ROWS + 1;
        let mut t = PositionTable::default();
        for i in 0..rows {
            let mut p = position(i as u8);
            p.holdings = (0..=i % 3)
                .map(|r| UserReserve {
                    reserve_id: r as u16,
                    scaled_a_token: U256::from(i),
                    ..Default::default()
                })
                .collect();
            t.insert(Address::with_last_byte(i as u8), p, Health::default());
        }
        for (user, position, health) in t.iter_mut() {
            assert_eq!(user, Address::with_last_byte(position.emode));
            health.debt_base = position.holdings[0].scaled_a_token;
        }
        for parts in 1..=4 {
            for chunk in t.chunks_mut(parts) {
                for (_, position, health) in chunk {
                    health.collateral_base = U256::from(position.holdings.len() * parts);
                }
            }
            let written: Vec<_> = t
                .iter()
                .map(|(u, _, h)| (u, h.debt_base, h.collateral_base))
                .collect();
            let expected: Vec<_> = (0..rows)
                .map(|i| {
                    let user = Address::with_last_byte(i as u8);
                    (user, U256::from(i), U256::from((i % 3 + 1) * parts))
                })
                .collect();
            assert_eq!(written, expected, "{parts} parts");
        }
    }
}
