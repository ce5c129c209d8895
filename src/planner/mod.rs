//! The planner: turns a liquidatable position into a sized, priced liquidation or a reasoned refusal.

pub mod fees;
pub mod sizing;
pub mod venues;
