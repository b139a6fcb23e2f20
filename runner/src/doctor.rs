//! `crashrig doctor`: what this host has, what it lacks, and what to install.

use crate::host;

/// Prints a report; returns 0 when everything needed to run is there, else 2.
pub async fn run() -> i32 {
    let mut missing: Vec<&str> = Vec::new();
    outln!("host tools:");
    for (tool, package) in host::TOOLS {
        match host::find(tool) {
            Some(path) => outln!("  ok       {tool:<20} {}", path.display()),
            None => {
                outln!("  MISSING  {tool:<20} apt-get install {package}");
                if !missing.contains(package) {
                    missing.push(package);
                }
            }
        }
    }
    outln!("kernel build headers:");
    for (options, need) in crate::kernel::build::CONFIG_NEEDS {
        if let crate::kernel::build::Need::Header(file, package) = *need {
            let path = std::path::Path::new(crate::kernel::build::INCLUDE_DIR).join(file);
            if path.exists() {
                outln!("  ok       {:<20} {}", file, path.display());
            } else {
                outln!(
                    "  MISSING  {file:<20} apt-get install {package} (for CONFIG_{}=y)",
                    options.join("/CONFIG_")
                );
                if !missing.contains(&package) {
                    missing.push(package);
                }
            }
        }
    }
    // Every run puts the guest helper in the guest image: a missing one fails every run.
    let helper_ok = match helper_status() {
        Ok(what) => {
            outln!("guest helper:\n  ok       {what}");
            true
        }
        Err(why) => {
            outln!("guest helper:\n  MISSING  {why}");
            false
        }
    };
    match crate::vm::qemu::qemu_version().await {
        Some(v) => outln!("qemu: {v}"),
        None => outln!("qemu: not runnable"),
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
    {
        outln!("kvm: /dev/kvm opens; each run proves KVM with a 15 s probe boot of its kernel and falls back to TCG if it hangs");
    } else {
        outln!("kvm: /dev/kvm is not usable; runs use TCG (slower, but works)");
    }
    let apt_lists = std::fs::read_dir("/var/lib/apt/lists")
        .map(|d| d.count())
        .unwrap_or(0);
    if apt_lists <= 2 {
        outln!("apt: package lists look empty; run `apt-get update` so debian:6.x kernels can be found");
    } else {
        outln!("apt: package lists present");
    }
    let cache = crate::cache::Cache::from_env();
    outln!("cache: {}", cache.root().display());
    if missing.is_empty() && helper_ok {
        outln!("\neverything crashrig needs is installed");
        0
    } else {
        if !missing.is_empty() {
            outln!(
                "\ninstall what is missing with:\n  apt-get install {}",
                missing.join(" ")
            );
        }
        if !helper_ok {
            outln!("\nthe guest helper is missing (see above): no run can start without it");
        }
        2
    }
}

/// Where the guest helper (`crashrig-guest`, put into every guest image) will come from, or
/// why there is none. Nothing is built here: `crate::image::guest_helper` builds it with cargo
/// on first use when crashrig runs from its source tree.
fn helper_status() -> Result<String, String> {
    helper_status_with(
        std::env::var_os("CRASHRIG_GUEST_HELPER").map(std::path::PathBuf::from),
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        host::find("cargo").is_some(),
    )
}

fn helper_status_with(
    env: Option<std::path::PathBuf>,
    workspace: &std::path::Path,
    cargo: bool,
) -> Result<String, String> {
    if let Some(path) = env {
        return if path.is_file() {
            Ok(format!("CRASHRIG_GUEST_HELPER={}", path.display()))
        } else {
            Err(format!(
                "CRASHRIG_GUEST_HELPER={} is not a file: point it at a statically linked \
                 crashrig-guest binary, or unset it to build one from crashrig's source tree",
                path.display()
            ))
        };
    }
    let source = workspace.join("images/guest-helper/Cargo.toml");
    match (source.exists(), cargo) {
        (true, true) => Ok(format!(
            "crashrig-guest, built with cargo from {} on first use",
            source.parent().unwrap_or(workspace).display()
        )),
        (true, false) => Err(format!(
            "cargo, to build crashrig-guest from {} (install Rust), or set \
             CRASHRIG_GUEST_HELPER to a statically linked crashrig-guest binary",
            source.parent().unwrap_or(workspace).display()
        )),
        (false, _) => Err(
            "set CRASHRIG_GUEST_HELPER to a statically linked crashrig-guest \
                           binary (crashrig's source tree is not where it was built)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_helper_is_checked_not_built() {
        let d = tempfile::tempdir().unwrap();
        let helper = d.path().join("crashrig-guest");
        std::fs::write(&helper, b"elf").unwrap();
        assert!(helper_status_with(Some(helper), d.path(), false).is_ok());
        let err = helper_status_with(Some(d.path().join("nope")), d.path(), true).unwrap_err();
        assert!(err.contains("nope is not a file"), "{err}");
        assert!(helper_status_with(None, d.path(), true).is_err());
        std::fs::create_dir_all(d.path().join("images/guest-helper")).unwrap();
        std::fs::write(d.path().join("images/guest-helper/Cargo.toml"), "").unwrap();
        assert!(helper_status_with(None, d.path(), true).is_ok());
        let err = helper_status_with(None, d.path(), false).unwrap_err();
        assert!(err.starts_with("cargo, to build crashrig-guest"), "{err}");
    }
}
