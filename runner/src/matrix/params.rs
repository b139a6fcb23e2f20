//! Turning a scenario into a cell's scenario. The cell's parameter values are a
//! [`Setting`](crate::scenario::Setting) the scenario loader substitutes and checks (one
//! mechanism for `--param` and matrices, see `scenario/params.rs`); what is left here is the
//! matrix's own `iterations`.

use crate::scenario::Scenario;

use super::model::Cell;

/// The scenario a cell runs, loaded with the cell's parameters: the matrix's iterations
/// (when set) replace the scenario's.
pub fn cell_scenario(mut scenario: Scenario, cell: &Cell) -> Scenario {
    if let Some(n) = cell.iterations {
        scenario.iterations = n;
    }
    scenario
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{load_str_with, Step};

    const SEED: &str = "\
name: seed
kconfig: [fs-xfs, debug]
devices: [{ name: scratch, size: 2G }]
filesystem: { type: xfs, device: scratch, mkfs-options: [-f, -m, reflink=1] }
iterations: 20
setup:
  - mkfs: {}
  - mkfs: { type: xfs, options: [-f, -K] }
steps:
  - spawn: { name: load, command: 'fio --numjobs=${threads} --directory=/mnt' }
  - run: { command: 'echo ${threads} threads' }
  - kill: { name: load }
  - umount: {}
";

    fn load(cell: &Cell) -> Result<Scenario, String> {
        load_str_with(SEED, "seed.yaml", &cell.params)
            .map(|l| cell_scenario(l.scenario, cell))
            .map_err(|e| e.to_string())
    }

    fn command(s: &Scenario, i: usize) -> &str {
        match &s.steps[i] {
            Step::Spawn(x) => &x.command,
            Step::Run(x) => &x.command,
            other => panic!("step {i} is {}", other.kind()),
        }
    }

    fn cell(params: &str) -> Cell {
        let m = crate::matrix::testutil::matrix(&format!(
            "name: p\niterations: 3\nkernels: [debian:6.1]\nscenarios: [seed.yaml]\n\
             parameters: {{ {params} }}\n"
        ));
        m.cells()[0].clone()
    }

    #[test]
    fn filesystem_replaces_type_and_mkfs_options() {
        let s = load(&cell("filesystem: [ext4], threads: [4]")).unwrap();
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
        assert_eq!(s.setting["threads"], "4");
        // The scenario's own type keeps its tuned options.
        let same = load(&cell("filesystem: [xfs], threads: [1]")).unwrap();
        assert_eq!(
            same.filesystem.unwrap().mkfs_options,
            ["-f", "-m", "reflink=1"]
        );
        assert_eq!(crate::scenario::mkfs_overwrite_options("btrfs"), ["-f"]);
        assert!(crate::scenario::mkfs_overwrite_options("vfat").is_empty());
    }

    #[test]
    fn unusable_parameters_are_errors() {
        assert_eq!(
            load(&cell("depth: [8], threads: [1]")).unwrap_err(),
            "seed.yaml:1:1: a value is given for parameter `depth`, but the scenario neither \
             declares nor uses it (it declares no parameters)\n  |\n1 | name: seed\n  | ^\n\n\
             error: 1 problem in seed.yaml"
        );
        let no_fs = crate::matrix::testutil::matrix(
            "name: p\nkernels: [debian:6.1]\nscenarios: [seed.yaml]\nparameters: { filesystem: [ext4] }\n",
        );
        let err = load_str_with(
            "name: t\nsteps: [sync]\n",
            "t.yaml",
            &no_fs.cells()[0].params,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "t.yaml:1:1: parameter `filesystem` = `ext4` sets the filesystem type, but the \
                 scenario declares no `filesystem`"
            ),
            "{err}"
        );
    }

    #[test]
    fn cell_scenario_applies_params_and_iterations() {
        let c = cell("filesystem: [btrfs], threads: [2]");
        let s = load(&c).unwrap();
        assert_eq!(s.iterations, 3);
        assert_eq!(s.filesystem.as_ref().unwrap().fstype, "btrfs");
        assert_eq!(command(&s, 0), "fio --numjobs=2 --directory=/mnt");
        // Without the matrix's `iterations`, the scenario's own count stays.
        let mut own = c.clone();
        own.iterations = None;
        assert_eq!(load(&own).unwrap().iterations, 20);
    }
}
