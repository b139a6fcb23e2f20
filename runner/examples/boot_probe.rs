use crashrig::*;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let cache = cache::Cache::from_env();
    let t = std::time::Instant::now();
    let k = kernel::debian::resolve("6.1", &cache).unwrap();
    eprintln!("kernel {:?} in {:?}", k.version, t.elapsed());
    let helper = std::path::PathBuf::from(std::env::var("HELPER").unwrap());
    let t = std::time::Instant::now();
    let img = image::prepare(&image::default_recipe(), &helper, &cache).unwrap();
    eprintln!("image {} in {:?}", img.key, t.elapsed());
    let initrd = image::initrd_for(&img, &k, &cache).unwrap();
    let key = guest::RunKey::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let b = run::boot::boot(run::boot::BootSpec {
        kernel: &k.image,
        initrd: &initrd,
        image: &img,
        key: &key,
        memory_mib: 2048,
        cpus: 2,
        disks: vec![],
        modules: image::boot_modules(&["xfs"], false),
        extra_cmdline: vec![],
        accel: vm::Accel::Tcg,
        console_log: "/tmp/console.log".into(),
        qmp_socket: dir.path().join("qmp"),
        ready_timeout: Duration::from_secs(60),
    })
    .await;
    match b {
        Ok(mut b) => {
            eprintln!("ready after {:?}", b.ready_after);
            let out = b
                .guest
                .exec(
                    "uname -r; ls /tools/bin; cat /proc/filesystems | grep xfs".into(),
                    vec![],
                    Duration::from_secs(10),
                    |_| {},
                )
                .await
                .unwrap();
            eprintln!("first command at {:?}: {:?}", t.elapsed(), out);
            b.vm.stop().await;
        }
        Err(e) => eprintln!("boot failed: {}", report::error_chain(&e)),
    }
}
