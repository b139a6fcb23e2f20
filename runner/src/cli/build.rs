//! `crashrig build`: a kernel built (or found in the build cache), its paths printed.

use std::path::PathBuf;

use clap::Args;

use super::common::BuildOpts;
use super::CliError;
use crate::kernel::KernelSpec;
use crate::run::session::{Session, SessionError, VmOptions};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// A kernel spec crashrig builds: PATH or PATH@REF of a git tree, or debian-source:6.1 /
    /// debian-source:6.12.
    #[arg(value_name = "SPEC")]
    pub spec: String,
    #[command(flatten)]
    pub build: BuildOpts,
    /// Also merge the `kconfig:` fragments these scenarios declare.
    #[arg(long = "scenario", value_name = "SCENARIO.yaml")]
    pub scenarios: Vec<PathBuf>,
}

pub async fn build(args: BuildArgs) -> Result<i32, CliError> {
    let mut session = Session::new(VmOptions {
        verbose: true,
        ..VmOptions::default()
    });
    let mut scenario_kconfig = Vec::new();
    for path in &args.scenarios {
        scenario_kconfig.extend(session.load_scenario(path)?.scenario.kconfig);
    }
    if !KernelSpec::parse(&args.spec)
        .map_err(SessionError::from)?
        .is_built()
    {
        return Err(CliError::NotBuilt {
            spec: args.spec.clone(),
        });
    }
    session.sweep();
    let t = std::time::Instant::now();
    let kernel = session
        .resolve_kernel(&args.spec, &args.build.request(), &scenario_kconfig)
        .await?;
    outln!("image:     {}", kernel.image.display());
    outln!("version:   {}", kernel.version);
    if let Some(r) = &kernel.release {
        outln!("release:   {r}");
    }
    outln!("cache key: {}", kernel.build_key.as_deref().unwrap_or("-"));
    if let Some(v) = &kernel.vmlinux {
        outln!("vmlinux:   {}", v.display());
    }
    outln!("took:      {:.1} s", t.elapsed().as_secs_f64());
    Ok(crate::exit::OK)
}
