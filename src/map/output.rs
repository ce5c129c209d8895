//! The map for people and programs: a table, CSV rows, and an SVG chart readable on its own.
//!
//! The chart is written by hand: an SVG's text is drawn by whatever shows it, so a chart needs no
//! font at all, where a plotting crate lays text out with one (a system font through fontconfig, or
//! a font file embedded) that a fresh machine may not have.

use super::{CascadeMap, StepResult};
use alloy::primitives::Address;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use std::fmt::Write;

fn usd(x: f64) -> String {
    if x.abs() >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x.abs() >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// What a chain did at one step of a fall, beside which the map's prediction is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Positions that had been below 1 by the end of the step.
    pub fallen: usize,
    /// Liquidations made by then.
    pub liquidations: usize,
    /// Debt they repaid, USD.
    pub repaid_usd: f64,
}

/// The map's prediction beside what the chain did, step by step (`map`'s steps and `observed` in
/// the same order).
pub fn prediction_table(map: &CascadeMap, observed: &[Observed]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "fall",
        "fallen: map",
        "chain",
        "liquidations: map",
        "keeper",
        "repaid: map",
        "keeper",
    ]);
    let right = |x: String| Cell::new(x).set_alignment(CellAlignment::Right);
    for (s, o) in map.steps.iter().zip(observed) {
        t.add_row(vec![
            right(format!("{:.1}%", s.drop_pct)),
            right(s.fallen.len().to_string()),
            right(o.fallen.to_string()),
            right(s.liquidations.to_string()),
            right(o.liquidations.to_string()),
            right(usd(s.debt_repaid_usd)),
            right(usd(o.repaid_usd)),
        ]);
    }
    t
}

/// The map as a terminal table: a row per step.
pub fn table(map: &CascadeMap) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "fall",
        "round 0 debt",
        "cascade debt",
        "rounds",
        "ampl.",
        "sold",
        "repaid",
        "keepers keep",
        "stuck",
        "bad debt",
        "induced",
    ]);
    for s in &map.steps {
        let induced = s.fallen.iter().filter(|p| p.round > 0).count();
        let right = |x: String| Cell::new(x).set_alignment(CellAlignment::Right);
        t.add_row(vec![
            right(format!("{:.1}%", s.drop_pct)),
            right(usd(s.round0_debt_usd)),
            right(usd(s.cascade_debt_usd)),
            right(s.rounds.to_string()),
            right(s.amplification.map_or("-".into(), |a| format!("{a:.2}×"))),
            right(usd(s.collateral_sold_usd)),
            right(usd(s.debt_repaid_usd)),
            right(usd(s.keeper_profit_usd)),
            right(usd(s.stuck_debt_usd)),
            right(usd(s.bad_debt_usd)),
            right(induced.to_string()),
        ]);
    }
    t
}

/// `map.csv`: a row per step.
pub fn steps_csv(map: &CascadeMap) -> String {
    let mut out = String::from(
        "drop_pct,round0_debt_usd,cascade_debt_usd,rounds,amplification,collateral_seized_usd,collateral_sold_usd,debt_repaid_usd,keeper_profit_usd,stuck_debt_usd,bad_debt_usd,liquidations,positions_fallen,positions_induced\n",
    );
    for s in &map.steps {
        let induced = s.fallen.iter().filter(|p| p.round > 0).count();
        let _ = writeln!(
            out,
            "{},{:.2},{:.2},{},{},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{},{},{}",
            s.drop_pct,
            s.round0_debt_usd,
            s.cascade_debt_usd,
            s.rounds,
            s.amplification.map_or(String::new(), |a| format!("{a:.4}")),
            s.collateral_seized_usd,
            s.collateral_sold_usd,
            s.debt_repaid_usd,
            s.keeper_profit_usd,
            s.stuck_debt_usd,
            s.bad_debt_usd,
            s.liquidations,
            s.fallen.len(),
            induced
        );
    }
    out
}

/// `positions.csv`: each position that falls, at the first step it does, with the round.
pub fn positions_csv(map: &CascadeMap) -> String {
    let mut seen = std::collections::HashSet::<Address>::new();
    let mut out = String::from("borrower,drop_pct,round,debt_usd,collateral_usd\n");
    for s in &map.steps {
        for p in &s.fallen {
            if seen.insert(p.borrower) {
                let _ = writeln!(
                    out,
                    "{},{},{},{:.2},{:.2}",
                    p.borrower, s.drop_pct, p.round, p.debt_usd, p.collateral_usd
                );
            }
        }
    }
    out
}

/// The round step for an axis reaching `highest` in about `ticks` steps: 1, 2 or 5 × 10ⁿ.
fn nice_step(highest: f64, ticks: f64) -> f64 {
    let raw = (highest / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// `map.svg`: both curves (round 0 and cascade) against the fall, collateral sold as bars, bad debt
/// as a dashed curve.
pub fn chart_svg(map: &CascadeMap) -> String {
    let (w, h) = (900.0, 560.0);
    let (left, right, top, bottom) = (90.0, 30.0, 110.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let steps: &[StepResult] = &map.steps;
    let deepest = steps.iter().map(|s| -s.drop_pct).fold(1.0f64, f64::max);
    let largest = steps
        .iter()
        .map(|s| {
            s.cascade_debt_usd
                .max(s.round0_debt_usd)
                .max(s.collateral_sold_usd)
                .max(s.bad_debt_usd)
        })
        .fold(1.0f64, f64::max);
    let y_step = nice_step(largest, 5.0);
    let highest = (largest / y_step).ceil() * y_step;
    // Bars are centred on their step: half a bar of room at both ends.
    let bar = (pw / (steps.len().max(1) as f64) * 0.6).clamp(1.0, 40.0);
    let x = |drop: f64| left + bar / 2.0 + (pw - bar) * (-drop) / deepest;
    let y = |v: f64| top + ph * (1.0 - v / highest);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let title = format!(
        "Cascade map: {} falling, block {}, oracle pass-through {:.2}",
        map.assets.join(" + "),
        map.block,
        map.pass_through
    );
    let _ = writeln!(
        svg,
        r#"<text x="{left}" y="28" font-size="16" font-weight="bold">{}</text>"#,
        escape(&title)
    );
    // Legend, in two columns between the title and the plot.
    let legend = [
        (
            "#636363",
            "round 0: debt liquidatable at the fallen price alone",
            false,
        ),
        (
            "#d62728",
            "cascade: after forced sales move pools and oracle",
            false,
        ),
        ("#9ecae1", "collateral sold into the pools", false),
        ("black", "bad debt: debt left without collateral", true),
    ];
    for (k, (color, text, dashed)) in legend.iter().enumerate() {
        let (cx, cy) = (left + 390.0 * (k % 2) as f64, 52.0 + 20.0 * (k / 2) as f64);
        let mark = if *dashed {
            format!(
                r#"<line x1="{cx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="5,3"/>"#,
                cy - 4.0,
                cx + 16.0,
                cy - 4.0
            )
        } else {
            format!(
                r#"<rect x="{cx:.1}" y="{:.1}" width="16" height="10" fill="{color}"/>"#,
                cy - 9.0
            )
        };
        let _ = writeln!(
            svg,
            r#"{mark}<text x="{:.1}" y="{cy:.1}">{}</text>"#,
            cx + 22.0,
            escape(text)
        );
    }
    // Grid and axes.
    let mut v = 0.0;
    while v <= highest + y_step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">${}</text>"##,
            left + pw,
            left - 8.0,
            yy + 4.0,
            usd(v)
        );
        v += y_step;
    }
    let x_step = nice_step(deepest, 10.0);
    let mut d = 0.0;
    while d <= deepest + x_step / 2.0 {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}%</text>"#,
            x(-d),
            top + ph + 18.0,
            if d == 0.0 {
                "0".into()
            } else {
                format!("−{d}")
            }
        );
        d += x_step;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="#333"/>"##,
        top + ph,
        left + pw,
        top + ph,
        top + ph
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">price fall of {}</text>"#,
        left + pw / 2.0,
        h - 16.0,
        escape(&map.assets.join(" + "))
    );
    // Collateral sold, as bars.
    for s in steps {
        let (xx, yy) = (x(s.drop_pct), y(s.collateral_sold_usd));
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{yy:.1}" width="{bar:.1}" height="{:.1}" fill="#9ecae1"><title>{:.1}%: ${} of collateral sold</title></rect>"##,
            xx - bar / 2.0,
            (top + ph - yy).max(0.0),
            s.drop_pct,
            usd(s.collateral_sold_usd)
        );
    }
    // The curves.
    /// A curve: its colour, its stroke pattern, its name, and the figure it draws.
    type Curve<'a> = (&'a str, &'a str, &'a str, fn(&StepResult) -> f64);
    let curves: [Curve; 3] = [
        ("#636363", "", "round 0", |s| s.round0_debt_usd),
        ("#d62728", "", "cascade", |s| s.cascade_debt_usd),
        ("black", r#" stroke-dasharray="5,3""#, "bad debt", |s| {
            s.bad_debt_usd
        }),
    ];
    for (color, dash, name, value) in curves {
        let points: Vec<String> = steps
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.drop_pct), y(value(s))))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"{dash}><title>{name}</title></polyline>"#,
            points.join(" ")
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
