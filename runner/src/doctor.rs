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
    if missing.is_empty() {
        outln!("\neverything crashrig needs is installed");
        0
    } else {
        outln!(
            "\ninstall what is missing with:\n  apt-get install {}",
            missing.join(" ")
        );
        2
    }
}
