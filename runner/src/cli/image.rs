//! `crashrig image`: the guest image built (or found in the cache), its paths printed.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use crate::run::session::{BuildRequest, Session, VmOptions};

#[derive(Args, Debug)]
pub struct ImageArgs {
    /// Guest image recipe. Default: images/default.yaml of this crashrig.
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Also build the per-kernel initrd for this kernel spec.
    #[arg(long = "kernel", value_name = "SPEC")]
    pub kernel: Option<String>,
}

pub async fn image(args: ImageArgs) -> Result<i32, CliError> {
    let mut session = Session::new(VmOptions {
        recipe: args.recipe,
        ..VmOptions::default()
    });
    // A kernel that cannot be resolved is refused before anything is printed.
    let kernel = match &args.kernel {
        Some(spec) => Some(
            session
                .resolve_kernel(spec, &BuildRequest::default(), &[])
                .await?,
        ),
        None => None,
    };
    let image = session.image().await?;
    outln!("key:        {}", image.key);
    outln!("initramfs:  {}", image.initramfs.display());
    outln!("tools disk: {}", image.tools_disk.display());
    outln!("host key:   {}", image.host_key);
    if let Some(kernel) = kernel {
        let initrd = crate::image::initrd_for(&image, &kernel, &session.cache)
            .map_err(crate::run::session::SessionError::from)?;
        outln!(
            "kernel:     {} ({})",
            kernel.image.display(),
            kernel.version
        );
        outln!("initrd:     {}", initrd.display());
    }
    Ok(crate::exit::OK)
}
