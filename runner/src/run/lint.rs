//! `crashrig lint`: scenario and matrix files checked the way `run` and `matrix` check them
//! before booting anything (the same loaders, every problem at `file:line:column`), without
//! a kernel, an image or a VM. A matrix's scenarios are loaded with each cell's parameters,
//! and its own baseline is read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::matrix_run::{baseline_to_check, load_cells};
use super::session::load_scenario;
use crate::matrix;
use crate::scenario::Setting;

/// What a file was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scenario,
    Matrix,
}

/// One file's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linted {
    pub path: PathBuf,
    pub kind: Kind,
    /// What was checked (`scenario `seed`: ...`), or every problem found.
    pub outcome: Result<String, String>,
    /// Warnings of the file (and of a matrix's scenarios), rendered.
    pub warnings: Vec<String>,
}

/// A matrix names `kernels` and `scenarios`; anything else is read as a scenario, whose
/// loader says what is wrong with it.
fn kind_of(text: &str) -> Kind {
    let keys = crate::yaml::top_level_keys(text);
    if keys.iter().any(|k| k == "kernels" || k == "scenarios") && !keys.iter().any(|k| k == "steps")
    {
        Kind::Matrix
    } else {
        Kind::Scenario
    }
}

/// Checks `path` as a scenario or a matrix (by its top-level keys).
pub fn lint_file(path: &Path) -> Linted {
    let kind = match crate::yaml::read_text(path) {
        Ok(text) => kind_of(&text),
        // The scenario loader reports the file that cannot be read, as `run` would.
        Err(_) => Kind::Scenario,
    };
    let mut warnings = Vec::new();
    let outcome = match kind {
        Kind::Scenario => scenario(path, &mut warnings),
        Kind::Matrix => matrix_file(path, &mut warnings),
    };
    Linted {
        path: path.to_path_buf(),
        kind,
        outcome,
        warnings,
    }
}

fn scenario(path: &Path, warnings: &mut Vec<String>) -> Result<String, String> {
    let (loaded, warned) =
        load_scenario(path, &Setting::new()).map_err(|e| crate::report::error_chain(&e))?;
    if !warned.is_empty() {
        warnings.push(warned);
    }
    let s = &loaded.scenario;
    Ok(format!(
        "scenario `{}`: {}, {}, {}",
        s.name,
        crate::report::plural(s.setup.len() as u64, "setup step"),
        crate::report::plural(s.steps.len() as u64, "step"),
        crate::report::plural(u64::from(s.iterations), "iteration")
    ))
}

fn matrix_file(path: &Path, warnings: &mut Vec<String>) -> Result<String, String> {
    let m = matrix::load(path).map_err(|e| crate::report::error_chain(&e))?;
    let cells = m.cells();
    let mut problems: Vec<String> = Vec::new();
    let paths: BTreeSet<&Path> = cells.iter().map(|c| c.scenario.path.as_path()).collect();
    // Each cell's scenario is loaded once; its warnings are kept once, not once per cell.
    if let Err(mut cell_problems) = load_cells(&cells, &Setting::new(), &mut |p, s| {
        load_scenario(p, s).map(|(loaded, warned)| {
            if !warned.is_empty() && !warnings.contains(&warned) {
                warnings.push(warned);
            }
            loaded
        })
    }) {
        problems.append(&mut cell_problems);
    }
    if let Err(e) = baseline_to_check(None, &m) {
        problems.push(crate::report::error_chain(&e));
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    Ok(format!(
        "matrix `{}`: {}, {}, {}",
        m.name,
        crate::report::plural(cells.len() as u64, "cell"),
        crate::report::plural(m.kernels.len() as u64, "kernel"),
        crate::report::plural(paths.len() as u64, "scenario")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_good_scenario_and_matrix_pass_and_say_what_they_hold() {
        let d = tempfile::tempdir().unwrap();
        let s = write(
            d.path(),
            "s.yaml",
            "name: t\niterations: 3\nsteps: [sync]\n",
        );
        let l = lint_file(&s);
        assert_eq!(l.kind, Kind::Scenario);
        assert_eq!(
            l.outcome,
            Ok("scenario `t`: 0 setup steps, 1 step, 3 iterations".into())
        );
        let m = write(
            d.path(),
            "m.yaml",
            "name: m\nkernels: [debian:6.1, debian:6.12]\nscenarios: [s.yaml]\n",
        );
        let l = lint_file(&m);
        assert_eq!(l.kind, Kind::Matrix);
        assert_eq!(
            l.outcome,
            Ok("matrix `m`: 2 cells, 2 kernels, 1 scenario".into())
        );
    }

    #[test]
    fn problems_are_named_at_their_place() {
        let d = tempfile::tempdir().unwrap();
        let s = write(d.path(), "s.yaml", "name: t\nsteps:\n  - sleep: often\n");
        let err = lint_file(&s).outcome.unwrap_err();
        assert!(err.contains("s.yaml:3:"), "{err}");
        // A matrix whose scenario does not fit one of the matrix's values: the cells with
        // that value are named, once.
        write(
            d.path(),
            "p.yaml",
            "name: p\nparameters:\n  n: { default: 1, values: [1, 2] }\nvm:\n  cpus: ${n}\n\
             steps: [sync]\n",
        );
        let m = write(
            d.path(),
            "m.yaml",
            "name: m\nkernels: [debian:6.1, debian:6.12]\nscenarios: [p.yaml]\n\
             parameters: { n: [1, 0] }\n",
        );
        let l = lint_file(&m);
        assert_eq!(l.kind, Kind::Matrix);
        let err = l.outcome.unwrap_err();
        assert!(err.starts_with("cells with n=0: "), "{err}");
        assert!(err.contains("p.yaml:5:9: `vm.cpus` is 0"), "{err}");
        assert_eq!(err.matches("cells with").count(), 1, "{err}");
        // The matrix's own baseline is read: a missing one is named in the matrix file.
        let m = write(
            d.path(),
            "b.yaml",
            "name: b\nkernels: [debian:6.1]\nscenarios: [s2.yaml]\nbaseline: nope.json\n",
        );
        write(d.path(), "s2.yaml", "name: t\nsteps: [sync]\n");
        let err = lint_file(&m).outcome.unwrap_err();
        assert!(
            err.contains("b.yaml:4:") && err.contains("nope.json"),
            "{err}"
        );
        // A file that is not there.
        let err = lint_file(&d.path().join("missing.yaml"))
            .outcome
            .unwrap_err();
        assert!(err.contains("missing.yaml"), "{err}");
    }
}
