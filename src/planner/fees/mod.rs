//! What a liquidation costs besides the swap: gas at the EIP-1559 price, the L1 blob base fee that
//! drives L2 data fees, and on OP-stack chains the L1 data fee of the exact transaction.

pub mod blob;
pub mod eip1559;
pub mod op_stack;
