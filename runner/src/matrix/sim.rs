//! The baseline check on simulated matrices with known rates (`crashrig bench baseline`): how
//! often a matrix in which nothing changed shows a regression (a red CI run for nothing), and
//! how often one cell's real rise is found, by crashrig's rule ([`rate_verdicts`]:
//! Tarone-Holm over the cells) beside plain Holm and the rule it replaced (each cell alone at
//! [`ALPHA`]), on the same simulated counts. No VM.

use std::io::{self, Write};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution};

use super::baseline::{rate_verdicts, RateCounts, RateVerdict};
use super::compare::ALPHA;
use super::significance::holm;

/// What to simulate; the defaults are `crashrig bench baseline`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct SimParams {
    /// Matrix sizes, one row each.
    pub cells: Vec<usize>,
    /// Every cell's failure rate in the baseline and now, but the one that rises.
    pub rate: f64,
    /// The rising cell's rate now.
    pub rise_to: f64,
    /// Iterations per cell, in the baseline and now.
    pub iterations: u32,
    /// Simulated matrices per row and question.
    pub runs: u32,
    pub seed: u64,
}

impl Default for SimParams {
    fn default() -> SimParams {
        SimParams {
            cells: vec![1, 5, 10, 20, 40],
            rate: 0.1,
            rise_to: 0.6,
            iterations: 20,
            runs: 2000,
            seed: 1,
        }
    }
}

/// Of `runs` simulated matrices: how many had any regression, and how many had one in cell 0,
/// by crashrig's rule, by plain Holm, and cell by cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub any: u32,
    pub any_holm: u32,
    pub any_cell_by_cell: u32,
    pub first: u32,
    pub first_holm: u32,
    pub first_cell_by_cell: u32,
}

/// `runs` matrices of one cell per entry of `rates`, each measured over `iterations` in the
/// baseline and `iterations` now at that rate, except cell 0 now at `rise_to` when given.
pub fn count(rates: &[f64], rise_to: Option<f64>, iterations: u32, runs: u32, seed: u64) -> Counts {
    let mut rng = SmallRng::seed_from_u64(seed);
    let draw = |rate: f64, rng: &mut SmallRng| {
        Binomial::new(u64::from(iterations), rate.clamp(0.0, 1.0))
            .map_or(0, |b| b.sample(rng) as u32)
    };
    let mut c = Counts::default();
    for _ in 0..runs {
        let cells: Vec<RateCounts> = rates
            .iter()
            .enumerate()
            .map(|(i, &rate)| {
                let now = match (i, rise_to) {
                    (0, Some(r)) => r,
                    _ => rate,
                };
                RateCounts {
                    baseline_failed: draw(rate, &mut rng),
                    baseline_iterations: iterations,
                    failed: draw(now, &mut rng),
                    judged: iterations,
                }
            })
            .collect();
        let v = rate_verdicts(&cells);
        let rises: Vec<f64> = v.iter().map(|v| v.rise).collect();
        let by_holm: Vec<bool> = holm(&rises).iter().map(|&p| p < ALPHA).collect();
        let alone = |v: &RateVerdict| v.rise < ALPHA;
        c.any += u32::from(v.iter().any(RateVerdict::regressed));
        c.any_holm += u32::from(by_holm.contains(&true));
        c.any_cell_by_cell += u32::from(v.iter().any(alone));
        c.first += u32::from(v.first().is_some_and(RateVerdict::regressed));
        c.first_holm += u32::from(by_holm.first() == Some(&true));
        c.first_cell_by_cell += u32::from(v.first().is_some_and(alone));
    }
    c
}

/// One matrix size: nothing changed, and one cell rose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub cells: usize,
    pub unchanged: Counts,
    pub risen: Counts,
}

pub fn simulate(p: &SimParams) -> Vec<Row> {
    p.cells
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let rates = vec![p.rate; n];
            let seed = p.seed.wrapping_add(i as u64);
            Row {
                cells: n,
                unchanged: count(&rates, None, p.iterations, p.runs, seed),
                risen: count(&rates, Some(p.rise_to), p.iterations, p.runs, seed),
            }
        })
        .collect()
}

pub fn print_summary(p: &SimParams, rows: &[Row], out: &mut dyn Write) -> io::Result<()> {
    let pct = |k: u32| format!("{:.1}%", 100.0 * f64::from(k) / f64::from(p.runs.max(1)));
    writeln!(
        out,
        "crashrig bench baseline: {} simulated matrices per figure (seed {}); every cell {} \
         baseline and {} new iterations at {:.0}%",
        p.runs,
        p.seed,
        p.iterations,
        p.iterations,
        100.0 * p.rate
    )?;
    writeln!(
        out,
        "cell by cell: each cell's one-sided Fisher p < {ALPHA} alone (the rule before); Holm: \
         Holm-adjusted over the matrix's cells; crashrig: Holm counting only the cells whose \
         counts could be significant (Tarone)"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:>6}  {:<36}  one cell {:.0}% -> {:.0}%: it regressed",
        "",
        "nothing changed: any regression",
        100.0 * p.rate,
        100.0 * p.rise_to
    )?;
    let columns = ["cell by cell", "Holm", "crashrig"];
    writeln!(
        out,
        "{:>6}  {:>12} {:>10} {:>12}  {:>12} {:>10} {:>12}",
        "cells", columns[0], columns[1], columns[2], columns[0], columns[1], columns[2]
    )?;
    for r in rows {
        writeln!(
            out,
            "{:>6}  {:>12} {:>10} {:>12}  {:>12} {:>10} {:>12}",
            r.cells,
            pct(r.unchanged.any_cell_by_cell),
            pct(r.unchanged.any_holm),
            pct(r.unchanged.any),
            pct(r.risen.first_cell_by_cell),
            pct(r.risen.first_holm),
            pct(r.risen.first)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CI matrix of cells that fail sometimes, none of which changed, must stay green at
    /// least 95% of the time however many cells it has. Tested one by one, 40 such cells
    /// showed a "regression" in most runs.
    #[test]
    fn unchanged_cells_raise_a_regression_in_at_most_alpha_of_matrices() {
        let rates: Vec<f64> = (0..40).map(|i| [0.0, 0.05, 0.1, 0.3, 0.5][i % 5]).collect();
        let c = count(&rates, None, 20, 1000, 9);
        assert!(c.any <= 50, "{c:?}");
        assert!(c.any_cell_by_cell >= 300, "{c:?}");
        // One cell alone: the correction changes nothing.
        let one = count(&[0.3], None, 20, 1000, 9);
        assert_eq!(one.any, one.any_cell_by_cell);
    }

    /// The correction keeps real rises: 10% to 80% in one cell of 40 is found in most
    /// matrices, and a rise among cells that never fail as often as alone. Plain Holm, which
    /// counts cells that could never be significant, finds fewer.
    #[test]
    fn a_real_rise_among_many_unchanged_cells_is_still_a_regression() {
        let big = count(&[0.1; 40], Some(0.8), 20, 500, 9);
        assert!(big.first >= 450, "{big:?}");
        let among = count(&[0.1; 40], Some(0.6), 20, 500, 9);
        let alone = count(&[0.1], Some(0.6), 20, 500, 9);
        assert!(
            alone.first > among.first,
            "{alone:?} alone, {among:?} among 40"
        );
        assert!(among.first > among.first_holm, "{among:?}");
        assert!(among.first <= among.first_cell_by_cell, "{among:?}");
        let mut clean = vec![0.0; 40];
        clean[0] = 0.1;
        let among_clean = count(&clean, Some(0.6), 20, 500, 9);
        assert_eq!(among_clean.first, alone.first, "{among_clean:?}");
    }

    #[test]
    fn the_summary_has_a_row_per_size_under_both_questions() {
        let p = SimParams {
            cells: vec![1, 3],
            runs: 50,
            ..SimParams::default()
        };
        let rows = simulate(&p);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].unchanged.any, rows[0].unchanged.any_cell_by_cell);
        let mut out = Vec::new();
        print_summary(&p, &rows, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(
            lines[3].contains("one cell 10% -> 60%: it regressed"),
            "{text}"
        );
        assert!(lines[5].trim_start().starts_with("1 "), "{text}");
        assert!(lines[6].trim_start().starts_with("3 "), "{text}");
    }
}
