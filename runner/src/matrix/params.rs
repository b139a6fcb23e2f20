//! Turning a scenario into a cell's scenario: parameter values and the matrix's iterations.
//!
//! `filesystem` is known: it replaces the scenario's filesystem type (and, when the type
//! changes, the mkfs options by the new type's "overwrite quietly" flags, and a kconfig
//! fragment `fs-<old type>` by `fs-<new type>`). Every parameter,
//! known or not, is also substituted as `${name}` into guest commands, the description, mkfs
//! and mount options and the kernel command line; a parameter that is neither known nor used
//! is an error, since it would only multiply identical cells.

use std::collections::BTreeMap;

use thiserror::Error;

use super::model::Cell;
use crate::scenario::{Scenario, Step};

/// Parameters with a meaning of their own (besides `${name}` substitution).
pub const KNOWN_PARAMETERS: &[&str] = &["filesystem"];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("set filesystem `{value}` in scenario `{scenario}`: it declares no `filesystem`")]
    NoFilesystem { scenario: String, value: String },
    #[error(
        "apply parameter `{name}` to scenario `{scenario}`: the scenario never uses `${{{name}}}`"
    )]
    Unused { scenario: String, name: String },
}

/// mkfs flags that overwrite an existing filesystem without asking, per type.
pub fn mkfs_overwrite_options(fstype: &str) -> Vec<String> {
    let flags: &[&str] = match fstype {
        "xfs" | "btrfs" | "f2fs" => &["-f"],
        "ext2" | "ext3" | "ext4" => &["-F", "-q"],
        _ => &[],
    };
    flags.iter().map(|f| f.to_string()).collect()
}

/// The scenario a cell runs: its parameters applied and the matrix's iterations (when set).
pub fn cell_scenario(scenario: &Scenario, cell: &Cell) -> Result<Scenario, ParamError> {
    let mut s = apply_params(scenario, &cell.params)?;
    if let Some(n) = cell.iterations {
        s.iterations = n;
    }
    Ok(s)
}

/// Applies parameter values to a scenario (see the module documentation).
pub fn apply_params(
    scenario: &Scenario,
    params: &BTreeMap<String, String>,
) -> Result<Scenario, ParamError> {
    let mut s = scenario.clone();
    for (name, value) in params {
        if name == "filesystem" {
            set_filesystem(&mut s, value).map_err(|()| ParamError::NoFilesystem {
                scenario: scenario.name.clone(),
                value: value.clone(),
            })?;
        }
        let used = substitute(&mut s, &format!("${{{name}}}"), value);
        if used == 0 && !KNOWN_PARAMETERS.contains(&name.as_str()) {
            return Err(ParamError::Unused {
                scenario: scenario.name.clone(),
                name: name.clone(),
            });
        }
    }
    Ok(s)
}

fn set_filesystem(s: &mut Scenario, fstype: &str) -> Result<(), ()> {
    let fs = s.filesystem.as_mut().ok_or(())?;
    // The scenario's own type keeps its own (possibly tuned) mkfs options.
    if fs.fstype == fstype {
        return Ok(());
    }
    let old = std::mem::replace(&mut fs.fstype, fstype.to_string());
    fs.mkfs_options = mkfs_overwrite_options(fstype);
    // Scenarios name the fragment that enables their filesystem `fs-<type>`.
    let old_fragment = format!("fs-{old}");
    for fragment in s.kconfig.iter_mut().filter(|k| **k == old_fragment) {
        *fragment = format!("fs-{fstype}");
    }
    for step in all_steps(s) {
        if let Step::Mkfs(m) = step {
            if m.fstype.as_deref() == Some(old.as_str()) {
                m.fstype = Some(fstype.to_string());
                if m.options.is_some() {
                    m.options = Some(mkfs_overwrite_options(fstype));
                }
            }
        }
    }
    Ok(())
}

fn all_steps(s: &mut Scenario) -> impl Iterator<Item = &mut Step> {
    s.setup
        .iter_mut()
        .chain(s.steps.iter_mut())
        .chain(s.cleanup.iter_mut())
}

/// Replaces `pattern` by `value` wherever a parameter may appear; returns how many strings
/// changed.
fn substitute(s: &mut Scenario, pattern: &str, value: &str) -> usize {
    let mut count = 0;
    let mut sub = |text: &mut String| {
        if text.contains(pattern) {
            *text = text.replace(pattern, value);
            count += 1;
        }
    };
    sub(&mut s.description);
    s.vm.cmdline.iter_mut().for_each(&mut sub);
    if let Some(fs) = s.filesystem.as_mut() {
        fs.mkfs_options.iter_mut().for_each(&mut sub);
        fs.mount_options.iter_mut().for_each(&mut sub);
    }
    for step in all_steps(s) {
        match step {
            Step::Spawn(x) => sub(&mut x.command),
            Step::Run(x) => sub(&mut x.command),
            Step::Mkfs(x) => x.options.iter_mut().flatten().for_each(&mut sub),
            Step::Mount(x) => x.options.iter_mut().flatten().for_each(&mut sub),
            _ => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    // JSON, as the model alone (without the scenario loader) reads steps in serde's
    // externally tagged form.
    pub(crate) fn scenario() -> Scenario {
        serde_json::from_str(
            r#"{
              "name": "seed",
              "kconfig": ["fs-xfs", "debug"],
              "devices": [{ "name": "scratch", "size": "2G" }],
              "filesystem": { "type": "xfs", "device": "scratch", "mkfs-options": ["-f", "-m", "reflink=1"] },
              "iterations": 20,
              "setup": [{ "mkfs": {} }, { "mkfs": { "type": "xfs", "options": ["-f", "-K"] } }],
              "steps": [
                { "spawn": { "name": "load", "command": "fio --numjobs=${threads} --directory=/mnt" } },
                { "run": { "command": "echo ${threads} threads" } },
                { "umount": {} }
              ]
            }"#,
        )
        .unwrap()
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn command(s: &Scenario, i: usize) -> &str {
        match &s.steps[i] {
            Step::Spawn(x) => &x.command,
            Step::Run(x) => &x.command,
            other => panic!("step {i} is {}", other.kind()),
        }
    }

    #[test]
    fn filesystem_replaces_type_and_mkfs_options() {
        let s = apply_params(
            &scenario(),
            &params(&[("filesystem", "ext4"), ("threads", "4")]),
        )
        .unwrap();
        let fs = s.filesystem.as_ref().unwrap();
        assert_eq!(fs.fstype, "ext4");
        assert_eq!(fs.mkfs_options, ["-F", "-q"]);
        assert_eq!(s.kconfig, ["fs-ext4", "debug"]);
        match &s.setup[1] {
            Step::Mkfs(m) => {
                assert_eq!(m.fstype.as_deref(), Some("ext4"));
                assert_eq!(
                    m.options.as_deref(),
                    Some(&["-F".to_string(), "-q".to_string()][..])
                );
            }
            other => panic!("setup[1] is {}", other.kind()),
        }
        assert_eq!(command(&s, 0), "fio --numjobs=4 --directory=/mnt");
        assert_eq!(command(&s, 1), "echo 4 threads");
        // The scenario's own type keeps its tuned options.
        let same = apply_params(
            &scenario(),
            &params(&[("filesystem", "xfs"), ("threads", "1")]),
        )
        .unwrap();
        assert_eq!(
            same.filesystem.unwrap().mkfs_options,
            ["-f", "-m", "reflink=1"]
        );
        assert_eq!(mkfs_overwrite_options("btrfs"), ["-f"]);
        assert!(mkfs_overwrite_options("vfat").is_empty());
    }

    #[test]
    fn unusable_parameters_are_errors() {
        assert_eq!(
            apply_params(&scenario(), &params(&[("depth", "8")])),
            Err(ParamError::Unused {
                scenario: "seed".into(),
                name: "depth".into()
            })
        );
        let mut no_fs = scenario();
        no_fs.filesystem = None;
        assert_eq!(
            apply_params(&no_fs, &params(&[("filesystem", "ext4")])),
            Err(ParamError::NoFilesystem {
                scenario: "seed".into(),
                value: "ext4".into()
            })
        );
        assert_eq!(
            ParamError::Unused {
                scenario: "seed".into(),
                name: "depth".into()
            }
            .to_string(),
            "apply parameter `depth` to scenario `seed`: the scenario never uses `${depth}`"
        );
    }

    #[test]
    fn cell_scenario_applies_params_and_iterations() {
        let m = crate::matrix::testutil::matrix(
            "name: p\niterations: 3\nkernels: [debian:6.1]\nscenarios: [seed.yaml]\n\
             parameters: { filesystem: [btrfs], threads: [2] }\n",
        );
        let cell = &m.cells()[0];
        let s = cell_scenario(&scenario(), cell).unwrap();
        assert_eq!(s.iterations, 3);
        assert_eq!(s.filesystem.as_ref().unwrap().fstype, "btrfs");
        assert_eq!(command(&s, 0), "fio --numjobs=2 --directory=/mnt");
        // Without the matrix's `iterations`, the scenario's own count stays.
        let mut own = cell.clone();
        own.iterations = None;
        assert_eq!(cell_scenario(&scenario(), &own).unwrap().iterations, 20);
    }
}
