//! Options several subcommands share, and their conversion to the plain types of the engine.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::run::restore::RestoreMode;
use crate::run::session::{BuildRequest, VmOptions};
use crate::vm::AccelChoice;

/// `-n/--iterations`: 1 to a million, the bound of a scenario's own `iterations`.
pub fn iterations_parser() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=i64::from(crate::scenario::MAX_ITERATIONS))
}

/// Most VMs at once (`-j`): far more than any host here runs.
pub const MAX_JOBS: u64 = 256;

/// `-j/--jobs`: 1 to [`MAX_JOBS`].
pub fn jobs_parser() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_JOBS)
}

/// `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum AccelArg {
    /// KVM when the kernel boots under it within 15 s, else TCG.
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl From<AccelArg> for AccelChoice {
    fn from(a: AccelArg) -> AccelChoice {
        match a {
            AccelArg::Auto => AccelChoice::Auto,
            AccelArg::Kvm => AccelChoice::Kvm,
            AccelArg::Tcg => AccelChoice::Tcg,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct CommonVmArgs {
    /// Kernel to boot (repeatable): debian:6.1, debian:6.12 (Debian's prebuilt cloud
    /// kernels), debian-source:6.1, debian-source:6.12, a git tree PATH or PATH@REF (built),
    /// or a bzImage path (optionally `,modules=DIR`). Default: debian:6.1.
    #[arg(long = "kernel", value_name = "SPEC")]
    pub kernels: Vec<String>,
    /// Accelerator: auto uses KVM when the kernel under test boots under KVM within 15 s,
    /// else TCG (results say which, and why).
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// Directory for the results: every run's console log and dmesg; results.json and
    /// junit.xml (run, matrix, bisect, amplify); bisect.json and its journal (bisect);
    /// amplify.json (amplify). `check` writes each call's runs into DIR/check, DIR/check-2, ...
    /// and its verdict to stderr. Locked while this command runs: another crashrig is refused
    /// it. Default: ./crashrig-results/<date-time>.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Guest image recipe. Default: images/default.yaml of this crashrig.
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Print every iteration (on a terminal, passing ones otherwise only move the progress
    /// bar; into a file or pipe every iteration is printed anyway) and more detail.
    #[arg(short, long)]
    pub verbose: bool,
    /// Restore a saved guest instead of booting. `auto` (default): the first boot restores
    /// the booted guest saved in the cache by an earlier run of the same kernel and VM shape
    /// (else boots and saves it), boots after a power cut, panic, reboot or hang restore it on
    /// the disks as they are, and each iteration of a scenario with such steps starts from a
    /// restore of the set-up guest on fresh disks (saved in the cache too: a later run of the
    /// same scenario, setup and kernel neither boots nor runs setup). `always`: also every
    /// iteration of other scenarios. Neither restores iterations of a scenario that says
    /// `iterations-share-state: true`. `never`: boot every time; iterations reuse one guest.
    /// Except with `never`, guests run on RAM crashrig holds, so a save writes only device
    /// state and a restore maps the saved RAM copy-on-write instead of reading it.
    #[arg(long, value_enum, default_value = "auto")]
    pub restore: RestoreArg,
    /// Set a scenario parameter (repeatable): the scenario's `${NAME}` becomes VALUE instead
    /// of the declared default. `cpus`, `memory` and `filesystem` set the VM's CPUs and memory
    /// and the filesystem type. See docs/scenario-format.md.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
}

/// `--restore`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RestoreArg {
    Auto,
    Always,
    Never,
}

impl From<RestoreArg> for RestoreMode {
    fn from(a: RestoreArg) -> Self {
        match a {
            RestoreArg::Auto => RestoreMode::Auto,
            RestoreArg::Always => RestoreMode::Always,
            RestoreArg::Never => RestoreMode::Never,
        }
    }
}

/// `--param NAME=VALUE`.
pub fn parse_param(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    if !crate::scenario::is_parameter_name(name) {
        return Err(format!(
            "`{name}` is not a parameter name (lowercase letters, digits, `-`, `_`, starting \
             with a letter)"
        ));
    }
    crate::scenario::check_parameter_value(value)
        .map_err(|why| format!("the value of `{name}` {why}"))?;
    Ok((name.to_string(), value.to_string()))
}

impl CommonVmArgs {
    pub fn options(&self) -> VmOptions {
        VmOptions {
            kernels: self.kernels.clone(),
            accel: self.accel.into(),
            out: self.out.clone(),
            recipe: self.recipe.clone(),
            verbose: self.verbose,
            restore: self.restore.into(),
            params: self.params.clone(),
        }
    }
}

/// Options of kernels crashrig builds (git trees, debian-source:X).
#[derive(Args, Debug, Clone, Default)]
pub struct BuildOpts {
    /// Kernel config fragment (repeatable): a name in kconfigs/ (base, fs-xfs, fs-ext4,
    /// fs-btrfs, debug, kasan) or a file. `base` and the scenarios' `kconfig:` are always
    /// merged first.
    #[arg(long = "kconfig", value_name = "FRAGMENT")]
    pub kconfig: Vec<String>,
    /// Patches on top of the source (repeatable, applied in order): an mbox (`git am`,
    /// `b4 am`), a quilt `series` file, a directory of `*.patch` (natural order, as `ls -v`;
    /// a cover letter is skipped), or one patch.
    #[arg(long = "patches", value_name = "PATH")]
    pub patches: Vec<PathBuf>,
}

impl BuildOpts {
    pub fn request(&self) -> BuildRequest {
        BuildRequest {
            kconfig: self.kconfig.clone(),
            patches: self.patches.clone(),
        }
    }
}
