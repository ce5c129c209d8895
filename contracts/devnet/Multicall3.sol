// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Devnet batch caller with Multicall3's interface
/// @notice Installed by `cascade devnet` at Multicall3's canonical address
///         (0xcA11bde05977b3631167028862bE2a173976CA11) so the keeper batches reads on the devnet exactly as it
///         does on a live chain. Only the calls the keeper uses are implemented.
contract Multicall3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// @notice Runs each call in order; reverts with the failing call's data unless that call allows failure.
    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory results) {
        require(msg.value == 0, "Multicall3: value not accepted");
        results = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; ++i) {
            (bool ok, bytes memory data) = calls[i].target.call(calls[i].callData);
            if (!ok && !calls[i].allowFailure) {
                assembly {
                    revert(add(data, 32), mload(data))
                }
            }
            results[i] = Result(ok, data);
        }
    }

    /// @notice The block a batch was read at, to add to a batch.
    function getBlockNumber() external view returns (uint256) {
        return block.number;
    }

    function getCurrentBlockTimestamp() external view returns (uint256) {
        return block.timestamp;
    }

    function getBasefee() external view returns (uint256) {
        return block.basefee;
    }

    function getEthBalance(address account) external view returns (uint256) {
        return account.balance;
    }
}
