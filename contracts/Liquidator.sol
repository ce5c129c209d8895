// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

interface IERC20Minimal {
    function balanceOf(address account) external view returns (uint256);
    function transfer(address to, uint256 amount) external returns (bool);
    function approve(address spender, uint256 amount) external returns (bool);
}

interface IAavePool {
    function flashLoanSimple(address receiver, address asset, uint256 amount, bytes calldata params, uint16 referralCode)
        external;
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

/// @title cascade's flash-loan liquidator for Aave V3
/// @notice Borrows the debt asset from the Aave Pool with `flashLoanSimple`, liquidates the borrower,
///         sells all the seized collateral on the planned pool, repays the loan and its premium, and
///         reverts unless the debt asset it holds grew by at least the plan's minimum profit. A
///         liquidation can fail; it cannot lose the contract's money.
/// @dev Callbacks are accepted only while this contract is inside a call it made itself: the flash-loan
///      callback only from the Pool for a loan it started, a swap callback only from the pool it is
///      swapping with at that moment.
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
        Venue venue;
        address swapPool;
        uint256 minProfit;
    }

    address public immutable owner;
    IAavePool public immutable aavePool;
    mapping(address => bool) public operators;

    /// The swap pool allowed to call back right now (zero outside a swap).
    address private activeSwapPool;
    /// Set while this contract waits for the Pool's flash-loan callback.
    bool private awaitingFlashLoan;

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
    error NothingSeized();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    modifier onlyOperator() {
        if (msg.sender != owner && !operators[msg.sender]) revert NotOperator();
        _;
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

    /// @notice One liquidation; returns the profit in the debt asset.
    function liquidate(Liquidation calldata l) external onlyOperator returns (uint256 profit) {
        return _liquidate(l);
    }

    /// @notice Several liquidations in one transaction; all succeed or the transaction reverts.
    function liquidateBatch(Liquidation[] calldata ls) external onlyOperator returns (uint256[] memory profits) {
        profits = new uint256[](ls.length);
        for (uint256 i = 0; i < ls.length; ++i) {
            profits[i] = _liquidate(ls[i]);
        }
    }

    function _liquidate(Liquidation calldata l) internal returns (uint256 profit) {
        uint256 before = IERC20Minimal(l.debt).balanceOf(address(this));
        awaitingFlashLoan = true;
        aavePool.flashLoanSimple(address(this), l.debt, l.debtToCover, abi.encode(l), 0);
        awaitingFlashLoan = false;
        uint256 afterwards = IERC20Minimal(l.debt).balanceOf(address(this));
        profit = afterwards > before ? afterwards - before : 0;
        if (afterwards < before || profit < l.minProfit) revert InsufficientProfit(profit, l.minProfit);
    }

    /// @notice Aave's flash-loan callback.
    function executeOperation(address asset, uint256 amount, uint256 premium, address initiator, bytes calldata params)
        external
        returns (bool)
    {
        if (msg.sender != address(aavePool) || initiator != address(this) || !awaitingFlashLoan) {
            revert UnexpectedCallback();
        }
        awaitingFlashLoan = false;
        Liquidation memory l = abi.decode(params, (Liquidation));
        if (asset != l.debt) revert UnexpectedCallback();

        uint256 debtBefore = IERC20Minimal(l.debt).balanceOf(address(this));
        uint256 collateralBefore = IERC20Minimal(l.collateral).balanceOf(address(this));
        IERC20Minimal(l.debt).approve(address(aavePool), amount);
        aavePool.liquidationCall(l.collateral, l.debt, l.borrower, amount, false);
        uint256 seized = IERC20Minimal(l.collateral).balanceOf(address(this)) - collateralBefore;
        if (seized == 0) revert NothingSeized();
        uint256 repaid = debtBefore - IERC20Minimal(l.debt).balanceOf(address(this));

        if (l.venue == Venue.UniswapV3) {
            _sellV3(l.swapPool, l.collateral, seized);
        } else {
            _sellV2(l.swapPool, l.collateral, seized);
        }
        // The Pool pulls the loan and its premium after this returns.
        IERC20Minimal(l.debt).approve(address(aavePool), amount + premium);
        // Profit against the balance before the loan (debtBefore includes the loan). Short of the loan
        // plus premium, the Pool's transferFrom fails and everything reverts.
        uint256 held = IERC20Minimal(l.debt).balanceOf(address(this));
        uint256 profit = held > debtBefore + premium ? held - debtBefore - premium : 0;
        emit Liquidated(l.borrower, l.collateral, l.debt, repaid, seized, profit);
        return true;
    }

    function _sellV3(address pool, address tokenIn, uint256 amountIn) internal {
        bool zeroForOne = IUniswapV3PoolMinimal(pool).token0() == tokenIn;
        activeSwapPool = pool;
        IUniswapV3PoolMinimal(pool).swap(
            address(this),
            zeroForOne,
            int256(amountIn),
            zeroForOne ? 4295128740 : 1461446703485210103287273052203988822378723970341,
            abi.encode(tokenIn)
        );
        activeSwapPool = address(0);
    }

    /// @notice Uniswap V3's swap callback: pays the pool what the swap owes it.
    function uniswapV3SwapCallback(int256 amount0Delta, int256 amount1Delta, bytes calldata data) external {
        if (msg.sender != activeSwapPool || activeSwapPool == address(0)) revert UnexpectedCallback();
        address tokenIn = abi.decode(data, (address));
        uint256 owed = uint256(amount0Delta > 0 ? amount0Delta : amount1Delta);
        IERC20Minimal(tokenIn).transfer(msg.sender, owed);
    }

    function _sellV2(address pair, address tokenIn, uint256 amountIn) internal {
        (uint112 r0, uint112 r1,) = IUniswapV2PairMinimal(pair).getReserves();
        bool zeroForOne = IUniswapV2PairMinimal(pair).token0() == tokenIn;
        (uint256 reserveIn, uint256 reserveOut) = zeroForOne ? (uint256(r0), uint256(r1)) : (uint256(r1), uint256(r0));
        uint256 inWithFee = amountIn * 997;
        uint256 out = (inWithFee * reserveOut) / (reserveIn * 1000 + inWithFee);
        IERC20Minimal(tokenIn).transfer(pair, amountIn);
        (uint256 out0, uint256 out1) = zeroForOne ? (uint256(0), out) : (out, uint256(0));
        IUniswapV2PairMinimal(pair).swap(out0, out1, address(this), "");
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
