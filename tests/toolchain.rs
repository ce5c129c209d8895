//! The pinned toolchain: the solc front answers foundry-compilers as solc would, and `contracts/`
//! compiles through it, from the cache the second time.

use cascade::{contracts::Contracts, toolchain};
use foundry_compilers::solc::Solc;

#[test]
fn solc_front_reports_its_version() {
    let front = toolchain::solc().unwrap_or_else(|e| panic!("{e}"));
    let solc = Solc::new(&front)
        .unwrap_or_else(|e| panic!("foundry-compilers could not run {}: {e}", front.display()));
    assert_eq!(
        (solc.version.major, solc.version.minor, solc.version.patch),
        (0, 8, 37)
    );

    let old = toolchain::solc_for_package("solc-0.8.19").unwrap_or_else(|e| panic!("{e}"));
    let solc = Solc::new(&old).unwrap();
    assert_eq!((solc.version.minor, solc.version.patch), (8, 19));
}

#[test]
fn standard_json_round_trip_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    // An import, to exercise the front's file resolution.
    std::fs::write(src.join("lib/Base.sol"), "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\ncontract Base { function one() public pure returns (uint256) { return 1; } }\n").unwrap();
    std::fs::write(src.join("Two.sol"), "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\nimport {Base} from \"./lib/Base.sol\";\ncontract Two is Base { function two() external pure returns (uint256) { return one() + 1; } }\n").unwrap();
    let build = dir.path().join("build");

    let first = Contracts::compile_dir(&src, &build).unwrap_or_else(|e| panic!("{e}"));
    let two = first.get("Two").unwrap();
    assert!(!two.bytecode.is_empty() && !two.deployed_bytecode.is_empty());
    assert!(two.abi.function("two").is_some());
    assert!(!first.from_cache);

    let second = Contracts::compile_dir(&src, &build).unwrap();
    assert!(
        second.from_cache,
        "unchanged sources must not be recompiled"
    );
    assert_eq!(second.get("Two").unwrap().bytecode, two.bytecode);

    // A broken source is reported with solc's message, not swallowed.
    std::fs::write(
        src.join("Two.sol"),
        "pragma solidity ^0.8.20; contract Two { function f( }",
    )
    .unwrap();
    let err = Contracts::compile_dir(&src, &build)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Two.sol"), "{err}");
}

#[test]
fn project_contracts_compile() {
    let contracts = Contracts::compile().unwrap_or_else(|e| panic!("{e}"));
    let multicall = contracts.get("Multicall3").unwrap();
    assert!(multicall.abi.function("aggregate3").is_some());
}
