//! The search's prices from what this bisection measured: a build and a boot in iterations.
//!
//! The engine weighs a batch's information against its cost, with an iteration as the unit
//! ([`Config::build_cost`](super::Config), `boot_cost`). The defaults (a build is worth 10
//! iterations, a boot 2) suit a simulation; a real bisection here built an incremental
//! candidate in about 50 s and ran an iteration in under a second, so a build was worth about
//! 60 iterations, and a full-config tree's build hundreds. The driver feeds every build, boot
//! and iteration it timed into a [`CostMeter`] and hands the engine its prices after each
//! batch ([`Bisector::set_prices`](super::Bisector::set_prices)).
//!
//! Measured with `crashrig bench bisect --no-peers --case 0.3:0.05 --runs 100` at
//! `--build-cost 10` and at `--build-cost 300`: both simulate the same seeded histories (seed
//! 1), so the two runs compare exactly. Priced at 10 the engine spent 228.1 iterations and 9.9
//! builds, priced at 300 313.7 and 8.1. Where a build really takes 300 iterations, pricing it
//! right costs 313.7 + 300 x 8.1 = 2744 iterations' time against 228.1 + 300 x 9.9 = 3198: 14%
//! less. In one run, the engine test `a_dear_build_buys_iterations_on_built_candidates_instead`
//! builds 281 candidates on 40 histories priced at 300 against 370 priced at 1.

use serde::Serialize;

use crate::outcome::stats::median;

/// Seconds measured in one bisection: builds, boots and iterations.
#[derive(Clone, Debug, Default)]
pub struct CostMeter {
    builds: Vec<f64>,
    boots: Vec<f64>,
    iterations: Vec<f64>,
}

/// The prices the engine used, and what they came from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Prices {
    /// A build in iterations.
    pub build_cost: f64,
    /// A boot in iterations.
    pub boot_cost: f64,
    /// Median seconds of the builds priced (`None`: none measured yet, the default price).
    pub build_seconds: Option<f64>,
    /// Median seconds of a boot or a restore of a saved guest.
    pub boot_seconds: Option<f64>,
    /// Median seconds of an iteration.
    pub iteration_seconds: f64,
}

/// The largest price either cost may take (the engine's own bound on a cost).
const MAX_PRICE: f64 = 1e6;

impl CostMeter {
    /// A candidate's build (or its lookup in the build cache), the first time this run asked.
    pub fn build(&mut self, seconds: f64) {
        self.builds.push(seconds);
    }

    /// A boot to the guest's first command, or a restore of a saved guest.
    pub fn boot(&mut self, seconds: f64) {
        self.boots.push(seconds);
    }

    /// One iteration of the scenario.
    pub fn iteration(&mut self, seconds: f64) {
        self.iterations.push(seconds);
    }

    /// The prices from what was measured, `defaults` (build, boot) for what was not; `None`
    /// until an iteration was timed (it is the unit). The first build of a bisection compiles
    /// the tree from scratch or comes from the cache, the later ones are incremental and are
    /// what the next build costs: once there are two, the first is left out.
    pub fn prices(&self, defaults: (f64, f64)) -> Option<Prices> {
        let iteration = median(&self.iterations)?.max(1e-3);
        let later = if self.builds.len() >= 2 {
            &self.builds[1..]
        } else {
            &self.builds[..]
        };
        let (build_seconds, boot_seconds) = (median(later), median(&self.boots));
        let price = |seconds: Option<f64>, default: f64| {
            seconds.map_or(default, |s| (s / iteration).clamp(0.0, MAX_PRICE))
        };
        Some(Prices {
            build_cost: price(build_seconds, defaults.0),
            boot_cost: price(boot_seconds, defaults.1),
            build_seconds,
            boot_seconds,
            iteration_seconds: iteration,
        })
    }
}

impl std::fmt::Display for Prices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = |s: Option<f64>| match s {
            Some(s) => format!("{s:.1} s"),
            None => "not measured, the default".into(),
        };
        write!(
            f,
            "a build priced at {:.0} iterations ({}), a boot at {:.1} ({}), an iteration {:.2} s",
            self.build_cost,
            seconds(self.build_seconds),
            self.boot_cost,
            seconds(self.boot_seconds),
            self.iteration_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_priced_before_an_iteration_is_timed() {
        let mut m = CostMeter::default();
        m.build(60.0);
        m.boot(5.0);
        assert_eq!(m.prices((10.0, 2.0)), None);
    }

    #[test]
    fn prices_are_medians_in_iterations_and_defaults_stand_for_what_was_not_measured() {
        let mut m = CostMeter::default();
        for s in [0.5, 1.0, 30.0] {
            m.iteration(s); // median 1.0: one slow iteration does not move it
        }
        let p = m.prices((10.0, 2.0)).unwrap();
        assert_eq!((p.build_cost, p.boot_cost), (10.0, 2.0));
        assert_eq!((p.build_seconds, p.boot_seconds), (None, None));
        m.boot(0.2);
        m.boot(6.0);
        m.boot(0.4);
        m.build(1200.0); // from scratch: priced only while it is the only build
        assert_eq!(m.prices((10.0, 2.0)).unwrap().build_cost, 1200.0);
        m.build(50.0);
        m.build(70.0);
        let p = m.prices((10.0, 2.0)).unwrap();
        assert_eq!(p.build_cost, 60.0);
        assert_eq!(p.boot_cost, 0.4);
        assert_eq!(p.iteration_seconds, 1.0);
        let text = p.to_string();
        assert!(
            text.contains("a build priced at 60 iterations (60.0 s)"),
            "{text}"
        );
    }

    #[test]
    fn prices_stay_within_the_engines_bounds() {
        let mut m = CostMeter::default();
        m.iteration(0.0); // an instant iteration: the unit is floored, never 0
        m.build(1e9);
        m.boot(f64::NAN); // ignored
        let p = m.prices((10.0, 2.0)).unwrap();
        assert_eq!(p.build_cost, MAX_PRICE);
        assert_eq!(p.boot_cost, 2.0);
        assert!(p.iteration_seconds > 0.0);
    }
}
