//! `cascade bench` at a small size, so the harness cannot rot: it runs end to end and writes every
//! figure the issue names, and the figures that do not depend on the machine hold (requests per block,
//! the sweep's batching). Timing targets are for the full run, read by people, never asserted here.

use std::process::Command;

#[test]
fn a_small_bench_writes_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_cascade"))
        .args([
            "bench",
            "--borrowers",
            "200",
            "--shocks",
            "2",
            "--blocks",
            "3",
            // Larger moves than the default 0.5% so that few shocks reach the first liquidations.
            "--shock-pct",
            "-2",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("cascade runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in [
        "borrowers",
        "discovery_ms",
        "restart_catchup_ms",
        "rpc_requests_per_block_idle",
        "rpc_requests_per_block_price_change",
        "reprice_cpu_ms",
        "ours_ms_per_block",
        "sweep_ms_per_block",
        "sweep_requests_per_block",
        "sweep_ratio",
        "rpc_rtt_ms",
        "detect_to_send_ms_p50",
        "detect_to_send_ms_p99",
        "detect_to_send_ms_max",
        "first_block_inclusion_pct",
        "liquidations_later_rounds",
        "liquidations_paying_later",
        "peak_rss_mb",
        "store_bytes",
    ] {
        assert!(figures[key].is_number(), "{key} missing: {figures}");
    }
    let f = |k: &str| figures[k].as_f64().unwrap();
    assert_eq!(f("borrowers"), 200.0);
    assert_eq!(figures["positions"], 200);
    assert!(f("rpc_requests_per_block_idle") <= 4.0, "{figures}");
    assert!(f("rpc_requests_per_block_price_change") <= 5.0, "{figures}");
    assert_eq!(
        f("sweep_requests_per_block"),
        3.0,
        "the poll for the head, then 200 borrowers in batches of 100"
    );
    assert!(
        f("liquidations") >= 1.0,
        "the shocks made something liquidatable: {figures}"
    );
    assert!(
        f("shocks_sent") >= 2.0,
        "shocks go on until two made positions liquidatable: {figures}"
    );
    assert!(
        f("detect_to_send_ms_p50") > 0.0
            && f("detect_to_send_ms_max") >= f("detect_to_send_ms_p99")
    );
    assert!(f("peak_rss_mb") > 0.0 && f("store_bytes") > 0.0);
    // Our liquidations' receipts were found on the chain: one costs a few hundred thousand gas.
    let gas = f("liquidation_gas_p50");
    assert!((300_000.0..800_000.0).contains(&gas), "{figures}");
    assert_eq!(f("block_gas_limit"), 30_000_000.0, "anvil's default");
    // Counting the blocks that had no room for them, at least as many made it as made the first.
    let with_room = f("first_block_with_room_pct");
    assert!(
        (f("first_block_inclusion_pct")..=100.0).contains(&with_room),
        "{figures}"
    );
}
