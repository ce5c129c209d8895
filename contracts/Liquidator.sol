// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IERC20Minimal {
    function balanceOf(address account) external view returns (uint256);
    function transfer(address to, uint256 amount) external returns (bool);
    function approve(address spender, uint256 amount) external returns (bool);
}

interface IAavePool {
    function liquidationCall(address collateral, address debt, address user, uint256 debtToCover, bool receiveAToken)
        external;
}

interface IUniswapV3PoolMinimal {
    function token0() external view returns (address);
    function swap(address recipient, bool zeroForOne, int256 amountSpecified, uint160 sqrtPriceLimitX96, bytes calldata data)
        external
        returns (int256 amount0, int256 amount1);
}

interface IUniswapV2PairMinimal {
    function token0() external view returns (address);
    function getReserves() external view returns (uint112 reserve0, uint112 reserve1, uint32 blockTimestampLast);
    function swap(uint256 amount0Out, uint256 amount1Out, address to, bytes calldata data) external;
}

/// @title cascade's flash-swap liquidator for Aave V3
/// @notice Sells the collateral a liquidation will seize before it has it: the planned Uniswap pool pays
///         out the debt asset first (a flash swap), the contract repays the borrower's debt with it,
///         receives the collateral and pays the pool with it, in one call. What is left of the debt asset
///         is the profit; the liquidation reverts unless it reaches the plan's minimum, and unless the
///         collateral seized covers the sale. A liquidation can fail; it cannot lose the contract's money.
/// @dev The pool is the flash lender, so there is no Aave flash loan: no premium, and none of the
///      loan's bookkeeping gas (a transfer out and back, the reserve's index and rate updates). Swap
///      callbacks are accepted only from the pool this contract is swapping with at that moment, once.
///      In a batch, consecutive liquidations that sell the same collateral for the same debt on the
///      same pool share one swap (a sale): the pool's swap, transfers and callback are paid once.
contract Liquidator {
    enum Venue {
        UniswapV3,
        UniswapV2
    }

    struct Liquidation {
        address collateral;
        address debt;
        address borrower;
        uint256 debtToCover;
        /// The collateral sold to the pool: what the liquidation is planned to seize (any more is kept).
        uint256 collateralToSell;
        Venue venue;
        address swapPool;
        uint256 minProfit;
    }

    /// Sqrt-price limits one step inside Uniswap V3's bounds: the sale fills as far as liquidity allows.
    uint160 private constant MIN_SQRT_PRICE_LIMIT = 4295128740;
    uint160 private constant MAX_SQRT_PRICE_LIMIT = 1461446703485210103287273052203988822378723970341;

    /// The interface this contract speaks (4: liquidations return each one's profit and the gas they
    /// used, so that one `eth_call` simulates them; 3: one swap per sale in a batch; 2: one swap per
    /// liquidation; the flash-loan contract before had no `VERSION`). The keeper refuses to start
    /// against another.
    uint16 public constant VERSION = 4;

    /// Where each liquidation of the running call leaves its profit for the call's return value: the
    /// liquidations run inside the pool's callback, a call frame of their own. Transient slots from
    /// here (a hash, apart from the contract's transient variables), gone with the transaction.
    uint256 private constant PROFITS_SLOT = uint256(keccak256("cascade.Liquidator.profits"));

    address public immutable owner;
    IAavePool public immutable aavePool;
    mapping(address => bool) public operators;

    /// The swap pool allowed to call back right now (zero outside a swap, and once it has called).
    address private transient activeSwapPool;
    /// Liquidations of the running call that have recorded their profit.
    uint256 private transient profitsRecorded;

    /// One per liquidation. `profit` is its share of its sale's: the sale's proceeds credited in
    /// proportion to the collateral each liquidation sold, less what it repaid.
    event Liquidated(
        address indexed borrower,
        address indexed collateral,
        address indexed debt,
        uint256 debtRepaid,
        uint256 collateralSold,
        uint256 profit
    );
    event OperatorSet(address indexed operator, bool allowed);

    error NotOwner();
    error NotOperator();
    error UnexpectedCallback();
    error InsufficientProfit(uint256 profit, uint256 minProfit);
    error SeizedTooLittle(uint256 seized, uint256 owed);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    function _onlyOperator() private view {
        if (msg.sender != owner && !operators[msg.sender]) revert NotOperator();
    }

    constructor(address aavePool_, address owner_) {
        aavePool = IAavePool(aavePool_);
        owner = owner_;
    }

    /// @notice Allows or disallows an address to run liquidations (not to move funds).
    function setOperator(address operator, bool allowed) external onlyOwner {
        operators[operator] = allowed;
        emit OperatorSet(operator, allowed);
    }

    /// @notice One liquidation; returns its profit in the debt asset and the gas the call used from its
    ///         first statement to its last (what a simulation by `eth_call` needs, with the
    ///         transaction's intrinsic gas, to price it).
    function liquidate(Liquidation calldata l) external returns (uint256 profit, uint256 gasUsed) {
        uint256 gasAtStart = gasleft();
        _onlyOperator();
        Liquidation[] memory sale = new Liquidation[](1);
        sale[0] = l;
        _sell(sale);
        profit = _takeProfits(1)[0];
        gasUsed = gasAtStart - gasleft();
    }

    /// @notice Several liquidations in one transaction; all succeed or the transaction reverts.
    ///         Consecutive liquidations of the same collateral, debt and pool are one sale: one swap of
    ///         their collateral together, whose profit must reach the sum of their minimum profits.
    ///         Returns each liquidation's profit (its share of its sale's, as its `Liquidated` event
    ///         says) and the gas the call used, as `liquidate` does.
    function liquidateBatch(Liquidation[] calldata ls)
        external
        returns (uint256[] memory profits, uint256 gasUsed)
    {
        uint256 gasAtStart = gasleft();
        _onlyOperator();
        uint256 start = 0;
        while (start < ls.length) {
            uint256 end = start + 1;
            while (end < ls.length && _sameSale(ls[start], ls[end])) {
                ++end;
            }
            Liquidation[] memory sale = new Liquidation[](end - start);
            for (uint256 k = 0; k < sale.length; ++k) {
                sale[k] = ls[start + k];
            }
            _sell(sale);
            start = end;
        }
        profits = _takeProfits(ls.length);
        gasUsed = gasAtStart - gasleft();
    }

    /// Keeps a liquidation's profit for the call's return value.
    function _recordProfit(uint256 profit) private {
        uint256 slot = PROFITS_SLOT + profitsRecorded;
        assembly {
            tstore(slot, profit)
        }
        profitsRecorded += 1;
    }

    /// The profits the call's `count` liquidations recorded, in order.
    function _takeProfits(uint256 count) private returns (uint256[] memory profits) {
        profits = new uint256[](count);
        for (uint256 k = 0; k < count; ++k) {
            uint256 slot = PROFITS_SLOT + k;
            uint256 profit;
            assembly {
                profit := tload(slot)
            }
            profits[k] = profit;
        }
        profitsRecorded = 0;
    }

    function _sameSale(Liquidation calldata a, Liquidation calldata b) private pure returns (bool) {
        return a.swapPool == b.swapPool && a.venue == b.venue && a.collateral == b.collateral && a.debt == b.debt;
    }

    /// One swap of the sale's collateral, its liquidations inside the pool's callback (each recording its
    /// profit); reverts unless the sale's profit in the debt asset reaches their minimum profits.
    function _sell(Liquidation[] memory sale) internal {
        Liquidation memory first = sale[0];
        (uint256 toSell, uint256 minProfit) = (0, 0);
        for (uint256 k = 0; k < sale.length; ++k) {
            toSell += sale[k].collateralToSell;
            minProfit += sale[k].minProfit;
        }
        uint256 before = IERC20Minimal(first.debt).balanceOf(address(this));
        activeSwapPool = first.swapPool;
        if (first.venue == Venue.UniswapV3) {
            _flashSwapV3(first, toSell, abi.encode(sale));
        } else {
            _flashSwapV2(first, toSell, abi.encode(sale));
        }
        // A pool that never called back left the swap pool set: nothing was liquidated.
        if (activeSwapPool != address(0)) revert UnexpectedCallback();
        uint256 afterwards = IERC20Minimal(first.debt).balanceOf(address(this));
        uint256 profit = afterwards > before ? afterwards - before : 0;
        if (afterwards < before || profit < minProfit) revert InsufficientProfit(profit, minProfit);
    }

    /// Sells `toSell` of the collateral for the debt asset, exact in: the pool pays out first, then
    /// calls back.
    function _flashSwapV3(Liquidation memory l, uint256 toSell, bytes memory sale) private {
        bool zeroForOne = IUniswapV3PoolMinimal(l.swapPool).token0() == l.collateral;
        IUniswapV3PoolMinimal(l.swapPool).swap(
            address(this), zeroForOne, int256(toSell), zeroForOne ? MIN_SQRT_PRICE_LIMIT : MAX_SQRT_PRICE_LIMIT, sale
        );
    }

    /// The same on a V2 pair: asks for what `toSell` buys at the pair's reserves.
    function _flashSwapV2(Liquidation memory l, uint256 toSell, bytes memory sale) private {
        (uint112 r0, uint112 r1,) = IUniswapV2PairMinimal(l.swapPool).getReserves();
        bool zeroForOne = IUniswapV2PairMinimal(l.swapPool).token0() == l.collateral;
        (uint256 reserveIn, uint256 reserveOut) = zeroForOne ? (uint256(r0), uint256(r1)) : (uint256(r1), uint256(r0));
        uint256 inWithFee = toSell * 997;
        uint256 out = (inWithFee * reserveOut) / (reserveIn * 1000 + inWithFee);
        (uint256 out0, uint256 out1) = zeroForOne ? (uint256(0), out) : (out, uint256(0));
        IUniswapV2PairMinimal(l.swapPool).swap(out0, out1, address(this), sale);
    }

    /// @notice Uniswap V3's swap callback: the pool has paid out the debt asset and is owed collateral.
    function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta, bytes calldata data) external {
        _enterCallback();
        (uint256 owed, uint256 received) = amount0Delta > 0
            ? (uint256(amount0Delta), uint256(-amount1Delta))
            : (uint256(amount1Delta), uint256(-amount0Delta));
        _liquidateAndPay(abi.decode(data, (Liquidation[])), received, owed);
    }

    /// @notice Uniswap V2's flash-swap callback: the pair has paid out the debt asset and is owed the
    ///         collateral the sale sells.
    function uniswapV2Call(address sender, uint256 amount0, uint256 amount1, bytes calldata data) external {
        _enterCallback();
        if (sender != address(this)) revert UnexpectedCallback();
        Liquidation[] memory sale = abi.decode(data, (Liquidation[]));
        uint256 owed = 0;
        for (uint256 k = 0; k < sale.length; ++k) {
            owed += sale[k].collateralToSell;
        }
        _liquidateAndPay(sale, amount0 + amount1, owed);
    }

    /// Admits one callback, from the pool being swapped with.
    function _enterCallback() private {
        if (msg.sender != activeSwapPool || msg.sender == address(0)) revert UnexpectedCallback();
        activeSwapPool = address(0);
    }

    /// Inside the swap: repays each borrower's debt from what the pool paid out, and pays the pool the
    /// collateral it is owed from what the liquidations seized (never from the contract's own
    /// holdings: each must seize at least the collateral it sells).
    function _liquidateAndPay(Liquidation[] memory sale, uint256 received, uint256 owed) private {
        (uint256 toSell, uint256 toRepay) = (0, 0);
        for (uint256 k = 0; k < sale.length; ++k) {
            toSell += sale[k].collateralToSell;
            toRepay += sale[k].debtToCover;
        }
        IERC20Minimal(sale[0].debt).approve(address(aavePool), toRepay);
        uint256 debtHeld = IERC20Minimal(sale[0].debt).balanceOf(address(this));
        uint256 collateralHeld = IERC20Minimal(sale[0].collateral).balanceOf(address(this));
        for (uint256 k = 0; k < sale.length; ++k) {
            // The sale's proceeds are credited in proportion to the collateral each liquidation sold.
            uint256 proceeds = received * sale[k].collateralToSell / toSell;
            (debtHeld, collateralHeld) = _liquidateOne(sale[k], debtHeld, collateralHeld, proceeds);
        }
        IERC20Minimal(sale[0].collateral).transfer(msg.sender, owed);
    }

    /// One liquidation of a sale, given the contract's balances before it; returns them after it.
    function _liquidateOne(Liquidation memory l, uint256 debtHeld, uint256 collateralHeld, uint256 proceeds)
        private
        returns (uint256 debtNow, uint256 collateralNow)
    {
        aavePool.liquidationCall(l.collateral, l.debt, l.borrower, l.debtToCover, false);
        debtNow = IERC20Minimal(l.debt).balanceOf(address(this));
        collateralNow = IERC20Minimal(l.collateral).balanceOf(address(this));
        uint256 seized = collateralNow - collateralHeld;
        if (seized < l.collateralToSell) revert SeizedTooLittle(seized, l.collateralToSell);
        uint256 repaid = debtHeld - debtNow;
        uint256 profit = proceeds > repaid ? proceeds - repaid : 0;
        _recordProfit(profit);
        emit Liquidated(l.borrower, l.collateral, l.debt, repaid, l.collateralToSell, profit);
    }

    /// @notice Moves tokens out; only the owner.
    function sweep(address token, address to, uint256 amount) external onlyOwner {
        IERC20Minimal(token).transfer(to, amount);
    }

    /// @notice Moves ETH out; only the owner.
    function sweepEth(address payable to, uint256 amount) external onlyOwner {
        (bool ok,) = to.call{value: amount}("");
        require(ok, "ETH transfer failed");
    }

    receive() external payable {}
}
