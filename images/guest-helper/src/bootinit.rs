//! `crashrig-guest boot-init`: the guest's start-up, from /init to /run/crashrig/ready, in one
//! process. busybox init runs it as its only `sysinit` action: it is the one boot path.
//!
//! Under TCG every fork+exec costs tens of milliseconds, and the shell script this replaced
//! spawned about thirty processes on the path to SSH. Here the only child is dropbear. The
//! order is the one the host relies on:
//!
//! 1. mount proc, sysfs, devtmpfs, devpts, /run, /tmp, cgroup2, debugfs, then enable the
//!    memory and io cgroup controllers (see [`enable_controllers`]: before any guest is
//!    saved, and before anything else runs);
//! 2. write the host's key to /root/.ssh/authorized_keys and start dropbear;
//! 3. a second thread loads virtio_net, virtio_blk, then (once virtio_pci is in its init) the
//!    other modules of `crashrig_modules` (filesystems, device-mapper: xfs alone takes ~0.8 s
//!    under TCG), while the first loads virtio_pci, whose init probes the devices;
//! 4. the network (10.0.2.15/24 via 10.0.2.2, QEMU's user network), then
//!    `crashrig: sshd started` on /dev/kmsg: the host starts connecting when it sees that
//!    line on the console;
//! 5. the tools disk at /tools, sysrq, the end of the module thread (virtio_console is its
//!    first module after virtio_pci), the agent on the virtio-serial port (see [`crate::agent`];
//!    announced as `crashrig: agent started`, or `crashrig: no agent channel`), then
//!    `crashrig: init done` and /run/crashrig/ready, which the host's first command waits for.
//!
//! A failure up to the network is written to the console (`crashrig: boot-init failed: ...`)
//! and the command fails: the guest never announces sshd, and the host's wait for it ends
//! with the console tail. After that point failures are reported and the boot goes on.

use std::ffi::CStr;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::{device, kmsg, util};

/// Exit status when a step before sshd failed (the guest cannot be reached).
pub const EXIT_FAILED: i32 = 1;

const KMSG: &str = "/dev/kmsg";
/// One load-order file per module: paths below [`MODULE_DIR`], dependencies first.
const LOAD_ORDERS: &str = "/etc/crashrig/modules";
const MODULE_DIR: &str = "/lib/modules";
/// The virtio-blk serial of the read-only tools disk (the runner's `image::TOOLS_SERIAL`).
const TOOLS_SERIAL: &str = "crashrig-tools";
const DROPBEAR: &str = "/usr/sbin/dropbear";
/// dropbear (2022.83 and later) re-executes itself for every connection, from the file its
/// `argv[0]` names, so that each connection's process gets fresh address-space randomization.
/// Under TCG that exec, the dynamic linking of its six libraries and its start-up cost 0.07 s
/// of every connection, and 0.1-0.2 s of the first one after a restore, when QEMU has not
/// translated that code yet (measured: packet timestamps and host timestamps per SSH stage).
/// A bare name that is no file in the working directory (`/`) makes dropbear fall back to a
/// plain fork, as dropbear did before: the connection's process is then a copy of the
/// listener, which is all a throwaway test guest needs.
const DROPBEAR_ARG0: &str = "dropbear";
const DROPBEAR_ARGS: &[&str] = &["-s", "-r", "/etc/dropbear/host_key", "-p", "22"];

/// QEMU user networking: the guest's fixed address, its mask and the gateway.
const GUEST_ADDR: [u8; 4] = [10, 0, 2, 15];
const GUEST_MASK: [u8; 4] = [255, 255, 255, 0];
const GATEWAY: [u8; 4] = [10, 0, 2, 2];

/// How long eth0 may take to appear after virtio_net loads (default: 2 s). Probing is
/// synchronous in module init, so this only matters if a kernel defers it.
const NETDEV_WAIT_MS: f64 = 2000.0;

/// How long the module thread waits for virtio_pci to reach its init before it loads the
/// other modules anyway (default: 2 s).
const PCI_WAIT_MS: f64 = 2000.0;

/// What the host passes on the kernel command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BootConfig {
    /// The base64 ed25519 public key blob the host logs in with.
    pub key: Option<String>,
    /// `crashrig_modules`, comma-separated module names.
    pub modules: String,
}

impl BootConfig {
    /// From init's environment (the kernel hands unknown `name=value` words to init), with
    /// `cmdline` as the fallback for what the environment lacks.
    pub fn resolve(
        env_key: Option<String>,
        env_modules: Option<String>,
        cmdline: impl FnOnce() -> String,
    ) -> BootConfig {
        let env_key = env_key.filter(|k| !k.is_empty());
        if let (Some(key), Some(modules)) = (&env_key, &env_modules) {
            return BootConfig {
                key: Some(key.clone()),
                modules: modules.clone(),
            };
        }
        let line = cmdline();
        BootConfig {
            key: env_key.or_else(|| cmdline_value(&line, "crashrig_key").map(str::to_owned)),
            modules: env_modules
                .or_else(|| cmdline_value(&line, "crashrig_modules").map(str::to_owned))
                .unwrap_or_default(),
        }
    }
}

/// The value of the last `name=value` word of a kernel command line (the kernel, too, lets a
/// later word win), without the double quotes the kernel allows around it.
pub fn cmdline_value<'a>(cmdline: &'a str, name: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .next_back()
}

/// The modules of `crashrig_modules` that are not virtio drivers, in order: those the boot
/// does not wait for. Names that could leave the load-order directory are dropped.
pub fn background_modules(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|m| is_module_name(m) && !m.starts_with("virtio_"))
        .collect()
}

fn is_module_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/')
}

/// The module files of a load-order file, dependencies first.
pub fn load_order(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// A `sockaddr` holding an IPv4 address (port 0), as the interface and route ioctls take it.
pub fn sockaddr_v4(addr: [u8; 4]) -> libc::sockaddr {
    let mut data = [0 as libc::c_char; 14];
    // sockaddr_in: the port (network order) in the first two bytes, then the address.
    for (d, b) in data[2..6].iter_mut().zip(addr) {
        *d = b as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data: data,
    }
}

/// An `ifreq` naming `name` (at most 15 bytes), its union zeroed.
pub fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain C data (a name array and a union of integers, sockaddrs and a
    // pointer), for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = b as libc::c_char;
    }
    Ok(req)
}

/// The `rtentry` for a default route through `gateway` (the kernel picks the device).
pub fn default_route(gateway: [u8; 4]) -> libc::rtentry {
    // SAFETY: rtentry is plain C data; all-zero is a valid value (rt_dev null: any device).
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr_v4([0; 4]);
    rt.rt_genmask = sockaddr_v4([0; 4]);
    rt.rt_gateway = sockaddr_v4(gateway);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt
}

/// Run the start-up; the exit status for `main`.
pub fn run() -> i32 {
    let mut timeline = Timeline::new();
    let outcome = boot(&mut timeline);
    eprintln!("crashrig-guest boot-init: {}", timeline.summary());
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            let line = format!("crashrig: boot-init failed: {e}\n");
            eprint!("{line}");
            kmsg::mark(Path::new(KMSG), &line);
            EXIT_FAILED
        }
    }
}

fn boot(timeline: &mut Timeline) -> Result<(), String> {
    mount_filesystems();
    timeline.mark("mounts");
    // First, while nothing else runs in the guest: no module loading, no SSH connection
    // (see `enable_controllers`).
    warn_all(&enable_controllers(Path::new(CGROUP_ROOT)));
    timeline.mark("cgroup controllers");
    let config = BootConfig::resolve(
        std::env::var("crashrig_key").ok(),
        std::env::var("crashrig_modules").ok(),
        || std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
    );
    let key = config
        .key
        .as_deref()
        .ok_or("no crashrig_key in the environment or on the kernel command line")?;
    // The kernel serializes much of a module load: under TCG a 20 KiB virtio_net dependency
    // took 0.25-0.45 s instead of 10 ms while xfs loaded beside it. What it does not
    // serialize is a module's init: virtio_pci's probes the devices (~0.3 s: ACPI interrupt
    // links, virtio set-up). So a second thread loads the small virtio drivers (virtio_pci
    // binds them as it finds the devices), waits until virtio_pci is past its load and in its
    // init, then loads xfs and the rest; this thread starts dropbear, loads virtio_pci, then
    // configures the network.
    let small = ["virtio_net", "virtio_blk"].map(String::from);
    let rest: Vec<String> = background_modules(&config.modules)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let pci_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pci_seen = pci_done.clone();
    let (loaded, wait) = std::sync::mpsc::channel();
    let started = util::monotonic_ms();
    let loader = std::thread::spawn(move || {
        let mut failures = Vec::new();
        for m in small {
            failures.extend(load_module(&m));
            let _ = loaded.send(m);
        }
        let deadline = util::monotonic_ms() + PCI_WAIT_MS;
        while !pci_seen.load(std::sync::atomic::Ordering::Acquire)
            && !Path::new("/sys/module/virtio_pci/initstate").exists()
            && util::monotonic_ms() < deadline
        {
            util::sleep_ms(2);
        }
        // Only a VM that may be saved or is restored has the agent's port.
        if has_agent_device(Path::new(PCI_DEVICES)) {
            failures.extend(load_module("virtio_console"));
        }
        for m in rest {
            failures.extend(load_module(&m));
        }
        (failures, util::monotonic_ms() - started)
    });
    let mut loaded = Loaded {
        wait,
        seen: Vec::new(),
    };

    // dropbear listens on the wildcard address, so it can start before eth0 exists: its
    // exec, dynamic linking and key loading (0.1-0.2 s under TCG) then run on the other vCPU
    // while this one waits in virtio_pci's probe. The host connects only after the marker.
    let dropbear = authorize(key).and_then(|()| start_dropbear());
    timeline.mark("start dropbear");
    warn_all(&load_module("virtio_pci"));
    pci_done.store(true, std::sync::atomic::Ordering::Release);
    timeline.mark("virtio_pci");
    let sshd = dropbear.and_then(wait_dropbear);
    let result = sshd
        .and_then(|()| up_to_sshd(&mut loaded, timeline))
        .map(|()| after_sshd(&mut loaded, timeline));

    // Whatever happened, the module thread finishes before the host goes on.
    match loader.join() {
        Ok((failures, ms)) => {
            warn_all(&failures);
            timeline.mark("rest of the modules");
            timeline.push("module thread", ms);
        }
        Err(_) => warn("the module loading thread panicked"),
    }
    result?;
    start_agent();
    timeline.mark("agent");
    kmsg::mark(Path::new(KMSG), "crashrig: init done\n");
    if let Err(e) = std::fs::write("/run/crashrig/ready", b"") {
        // sshd runs, so this is only reported (the host gives up waiting and shows the
        // console).
        warn(&format!(
            "create /run/crashrig/ready: {}",
            util::io_error_name(&e)
        ));
    }
    Ok(())
}

/// The network, then the marker the host waits for before it connects.
fn up_to_sshd(loaded: &mut Loaded, timeline: &mut Timeline) -> Result<(), String> {
    loaded.wait_for("virtio_net");
    timeline.mark("wait for virtio_net");
    configure_network()?;
    kmsg::mark(Path::new(KMSG), "crashrig: sshd started\n");
    timeline.mark("network");
    Ok(())
}

/// The steps after sshd: failures are reported and the boot goes on (the guest can be
/// reached, and what failed is on the console).
fn after_sshd(loaded: &mut Loaded, timeline: &mut Timeline) {
    loaded.wait_for("virtio_blk");
    timeline.mark("wait for virtio_blk");
    if let Err(e) = mount_tools() {
        warn(&e);
        kmsg::mark(Path::new(KMSG), "crashrig: cannot mount tools disk\n");
    }
    timeline.mark("tools disk");
    if let Err(e) = util::write_once(Path::new("/proc/sys/kernel/sysrq"), b"1") {
        warn(&format!("enable sysrq: {}", util::io_error_name(&e)));
    }
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

const VIRTIO_PORTS: &str = "/sys/class/virtio-ports";
const PCI_DEVICES: &str = "/sys/bus/pci/devices";

/// Whether the VM has a virtio console device (virtio-serial-pci: vendor 0x1af4, device
/// 0x1003 transitional or 0x1043 modern), which carries the agent's port. The PCI core has
/// enumerated the bus before init runs.
pub fn has_agent_device(pci_devices: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(pci_devices) else {
        return false;
    };
    entries.flatten().any(|e| {
        let read = |name: &str| std::fs::read_to_string(e.path().join(name)).unwrap_or_default();
        read("vendor").trim() == "0x1af4" && matches!(read("device").trim(), "0x1003" | "0x1043")
    })
}
/// How long the agent's port may take to appear once virtio_console is in: the driver adds
/// ports as QEMU announces them, after its probe.
const PORT_WAIT_MS: f64 = 2000.0;

/// Starts the agent on its virtio-serial port and says so on the console, where the host
/// learns whether this guest has the channel (a kernel without virtio_console has not; the
/// host then keeps to SSH).
fn start_agent() {
    if !has_agent_device(Path::new(PCI_DEVICES)) {
        kmsg::mark(
            Path::new(KMSG),
            "crashrig: no agent channel: no virtio-serial device (a VM never saved)\n",
        );
        return;
    }
    let deadline = util::monotonic_ms() + PORT_WAIT_MS;
    let port = loop {
        let found =
            crate::agent::find_port(Path::new(VIRTIO_PORTS), crashrig_guest::channel::PORT_NAME);
        if found.is_some() || !Path::new(VIRTIO_PORTS).exists() || util::monotonic_ms() > deadline {
            break found;
        }
        util::sleep_ms(10);
    };
    let started = match &port {
        Some(p) if p.exists() => crate::agent::start(p).map_err(|e| util::io_error_name(&e)),
        Some(p) => Err(format!("{} does not exist", p.display())),
        None => Err("no virtio console port (virtio_console missing?)".into()),
    };
    match started {
        Ok(()) => kmsg::mark(Path::new(KMSG), "crashrig: agent started\n"),
        Err(why) => kmsg::mark(
            Path::new(KMSG),
            &format!("crashrig: no agent channel: {why}\n"),
        ),
    }
}

/// The controllers a systemd-based distribution enables at boot and that a scenario is likely
/// to use (io for io.max; io brings memory with it), enabled at the root over our own subtree
/// `crashrig/`, which lives as long as the guest.
///
/// The kernel patches its own code the first time a memory cgroup other than the root comes
/// to life (the static keys `memcg_kmem_enabled_key`, `memcg_sockets_enabled_key`). Under
/// TCG, a guest restored from a saved state starts with no translated code, and QEMU 7.2 can
/// keep executing a stale translation of a patched site (an int3 the kernel has already
/// replaced): the vCPU traps on it forever, a soft lockup in `kmem_cache_alloc`. Done here, at
/// boot, the patching happens once, before any guest is saved, and never in a restored one;
/// and first thing, before dropbear and the module thread start, so that the other vCPU runs
/// no newly loaded or newly translated code while the kernel patches its own.
/// With `crashrig/` alive, later cgroups never take the count of memory cgroups back to zero
/// (which would patch the code back). A kernel without a controller or without cgroup2 is
/// reported and goes on without it.
fn enable_controllers(root: &Path) -> Vec<String> {
    if !crate::cgroup::is_cgroup2(root) {
        return Vec::new();
    }
    let mut failures = Vec::new();
    if let Err(e) = std::fs::create_dir_all(root.join("crashrig")) {
        failures.push(format!(
            "create cgroup crashrig: {}",
            util::io_error_name(&e)
        ));
    }
    for controller in ["+memory", "+io"] {
        if let Err(e) =
            util::write_once(&root.join("cgroup.subtree_control"), controller.as_bytes())
        {
            failures.push(format!(
                "enable the cgroup controller {}: {}",
                &controller[1..],
                util::io_error_name(&e)
            ));
        }
    }
    failures
}

/// The modules the loading thread is done with, as it reports them.
struct Loaded {
    wait: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Loaded {
    /// Block until the thread is past `name` (loaded or failed), or gone.
    fn wait_for(&mut self, name: &str) {
        while !self.seen.iter().any(|m| m == name) {
            match self.wait.recv() {
                Ok(m) => self.seen.push(m),
                // The thread ended (or panicked): go on, and let the next step say what
                // is missing.
                Err(_) => return,
            }
        }
    }
}

fn warn(message: &str) {
    eprintln!("crashrig-guest boot-init: {message}");
}

fn warn_all(messages: &[String]) {
    for m in messages {
        warn(m);
    }
}

/// Checkpoints on the monotonic clock, printed once at the end for boot-time work.
struct Timeline {
    last: f64,
    spans: Vec<(&'static str, f64)>,
}

impl Timeline {
    fn new() -> Timeline {
        Timeline {
            last: util::monotonic_ms(),
            spans: Vec::new(),
        }
    }

    /// Close the span since the previous checkpoint under `name`.
    fn mark(&mut self, name: &'static str) {
        let now = util::monotonic_ms();
        self.spans.push((name, now - self.last));
        self.last = now;
    }

    fn push(&mut self, name: &'static str, ms: f64) {
        self.spans.push((name, ms));
    }

    fn summary(&self) -> String {
        let spans: Vec<String> = self
            .spans
            .iter()
            .map(|(name, ms)| format!("{name} {ms:.0} ms"))
            .collect();
        spans.join(", ")
    }
}

fn mount_fs(
    fstype: &str,
    source: &str,
    target: &str,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), String> {
    let (c_source, c_target, c_fstype) = (
        util::cstring(source).map_err(|e| e.to_string())?,
        util::cstring(target).map_err(|e| e.to_string())?,
        util::cstring(fstype).map_err(|e| e.to_string())?,
    );
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr() as *const libc::c_void);
    // SAFETY: every pointer is a NUL-terminated string (or null data) that outlives the call.
    let rc = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_fstype.as_ptr(),
            flags,
            data,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "mount {fstype} at {target}: {}",
            crashrig_guest::errno_name(util::last_errno())
        ))
    }
}

/// The pseudo filesystems the guest needs, with some tolerance: devtmpfs, cgroup2 and debugfs
/// may be missing from a kernel; the others are reported but do not stop the boot.
fn mount_filesystems() {
    let required = |fstype: &str, source: &str, target: &str| {
        if let Err(e) = mount_fs(fstype, source, target, 0, None) {
            warn(&e);
        }
    };
    required("proc", "proc", "/proc");
    required("sysfs", "sys", "/sys");
    let _ = mount_fs("devtmpfs", "dev", "/dev", 0, None);
    for dir in ["/dev/pts", "/run", "/tmp", "/tools", "/mnt"] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            warn(&format!("create {dir}: {}", util::io_error_name(&e)));
        }
    }
    required("devpts", "devpts", "/dev/pts");
    required("tmpfs", "run", "/run");
    required("tmpfs", "tmp", "/tmp");
    let _ = mount_fs("cgroup2", "cgroup2", "/sys/fs/cgroup", 0, None);
    let _ = mount_fs("debugfs", "debugfs", "/sys/kernel/debug", 0, None);
}

/// Load `name` and its dependencies from its load-order file. A module without one is built
/// in (or absent from this kernel): nothing to do. Returns what failed, as insmod would have
/// said it; EEXIST (already loaded) is success.
fn load_module(name: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(Path::new(LOAD_ORDERS).join(name)) else {
        return Vec::new();
    };
    load_order(&text)
        .into_iter()
        // virtio and virtio_ring come with each virtio driver: the kernel would read and
        // check the signature of the whole file again before it answers EEXIST.
        .filter(|rel| !is_live(&module_name(rel)))
        .filter_map(|rel| {
            let path = Path::new(MODULE_DIR).join(rel);
            finit_module(&path)
                .err()
                .map(|e| format!("load {}: {}", path.display(), util::io_error_name(&e)))
        })
        .collect()
}

/// The name the kernel gives the module in `path` (`kernel/drivers/md/dm-mod.ko`: dm_mod).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// Is the module loaded and initialized? One still coming up is loaded again: the kernel
/// then waits for it.
fn is_live(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/module/{name}/initstate"))
        .is_ok_and(|state| state.trim() == "live")
}

fn finit_module(path: &Path) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: finit_module reads the open file descriptor and the empty parameter string,
    // both valid for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            0 as libc::c_int,
        )
    };
    if rc == 0 || util::last_errno() == libc::EEXIST {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A datagram socket for the interface and route ioctls.
struct Socket(std::os::fd::OwnedFd);

impl Socket {
    fn new() -> Result<Socket, String> {
        // SAFETY: socket(2) takes no pointers; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(format!(
                "open a socket for the network ioctls: {}",
                crashrig_guest::errno_name(util::last_errno())
            ));
        }
        // SAFETY: fd is a descriptor we just opened and own.
        Ok(Socket(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
        }))
    }

    /// One ioctl taking a pointer to `arg`; the errno on failure.
    fn ioctl<T>(&self, request: libc::c_ulong, arg: &mut T) -> Result<(), i32> {
        // SAFETY: every request used here takes a pointer to exactly this structure, which
        // lives for the call.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), request, arg as *mut T) };
        if rc == 0 {
            Ok(())
        } else {
            Err(util::last_errno())
        }
    }

    fn set_up(&self, name: &str) -> Result<(), i32> {
        let mut req = ifreq(name).map_err(|_| libc::EINVAL)?;
        self.ioctl(libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        self.ioctl(libc::SIOCSIFFLAGS, &mut req)
    }

    fn set_addr(&self, name: &str, request: libc::c_ulong, addr: [u8; 4]) -> Result<(), i32> {
        let mut req = ifreq(name).map_err(|_| libc::EINVAL)?;
        req.ifr_ifru.ifru_addr = sockaddr_v4(addr);
        self.ioctl(request, &mut req)
    }
}

/// `ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0;
/// ip route add default via 10.0.2.2`, as ioctls.
fn configure_network() -> Result<(), String> {
    let sock = Socket::new()?;
    let failed = |what: &str, errno: i32| format!("{what}: {}", crashrig_guest::errno_name(errno));
    sock.set_up("lo").map_err(|e| failed("bring lo up", e))?;
    let deadline = util::monotonic_ms() + NETDEV_WAIT_MS;
    loop {
        match sock.set_up("eth0") {
            Ok(()) => break,
            Err(libc::ENODEV) if util::monotonic_ms() < deadline => util::sleep_ms(5),
            Err(e) => return Err(failed("bring eth0 up", e)),
        }
    }
    sock.set_addr("eth0", libc::SIOCSIFADDR, GUEST_ADDR)
        .map_err(|e| failed("set the address of eth0", e))?;
    sock.set_addr("eth0", libc::SIOCSIFNETMASK, GUEST_MASK)
        .map_err(|e| failed("set the netmask of eth0", e))?;
    let mut route = default_route(GATEWAY);
    match sock.ioctl(libc::SIOCADDRT, &mut route) {
        // A second run (boot-init run again by hand) finds the route in place.
        Ok(()) | Err(libc::EEXIST) => Ok(()),
        Err(e) => Err(failed("add the default route", e)),
    }
}

/// The line of /root/.ssh/authorized_keys for the host's key.
pub fn authorized_key_line(key: &str) -> String {
    format!("ssh-ed25519 {key} crashrig\n")
}

fn authorize(key: &str) -> Result<(), String> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: io::Error| format!("{what}: {}", util::io_error_name(&e))
    };
    std::fs::create_dir_all("/root/.ssh").map_err(io("create /root/.ssh"))?;
    std::fs::create_dir_all("/run/crashrig").map_err(io("create /run/crashrig"))?;
    for dir in ["/root", "/root/.ssh"] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod /root"))?;
    }
    let keys = "/root/.ssh/authorized_keys";
    std::fs::write(keys, authorized_key_line(key)).map_err(io("write authorized_keys"))?;
    std::fs::set_permissions(keys, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod authorized_keys"))
}

/// Start dropbear; [`wait_dropbear`] collects its foreground process.
fn start_dropbear() -> Result<std::process::Child, String> {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(DROPBEAR)
        .arg0(DROPBEAR_ARG0)
        .current_dir("/")
        .args(DROPBEAR_ARGS)
        .spawn()
        .map_err(|e| format!("start {DROPBEAR}: {}", util::io_error_name(&e)))
}

/// dropbear forks into the background and its foreground process exits: waiting for that
/// leaves no zombie and catches a dropbear that fails at once (bad options or host key).
fn wait_dropbear(mut child: std::process::Child) -> Result<(), String> {
    let status = child
        .wait()
        .map_err(|e| format!("wait for {DROPBEAR}: {}", util::io_error_name(&e)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{DROPBEAR} exited with {status}"))
    }
}

/// Mount the tools disk (found by its virtio-blk serial) read-only at /tools. `noload`: it has
/// no journal, and a read-only device must not be replayed into.
fn mount_tools() -> Result<(), String> {
    let roots = device::real();
    let dev = device::resolve(&roots, TOOLS_SERIAL)?;
    mount_fs(
        "ext4",
        &dev.display().to_string(),
        "/tools",
        libc::MS_RDONLY,
        Some(c"noload"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMDLINE: &str = "console=ttyS0 panic=-1 printk.devkmsg=on crashrig_key=AAAAC3Nz+/0= \
                           crashrig_modules=virtio_pci,virtio_blk,xfs quiet\n";

    #[test]
    fn command_line_words_give_their_values() {
        assert_eq!(cmdline_value(CMDLINE, "crashrig_key"), Some("AAAAC3Nz+/0="));
        assert_eq!(
            cmdline_value(CMDLINE, "crashrig_modules"),
            Some("virtio_pci,virtio_blk,xfs")
        );
        assert_eq!(cmdline_value(CMDLINE, "quiet"), None, "a flag has no value");
        assert_eq!(cmdline_value(CMDLINE, "crashrig"), None, "whole names only");
        assert_eq!(
            cmdline_value("a=1 a=\"2\"", "a"),
            Some("2"),
            "the last one wins"
        );
    }

    #[test]
    fn environment_wins_and_the_command_line_fills_gaps() {
        let never = || -> String { panic!("the command line is not needed") };
        assert_eq!(
            BootConfig::resolve(Some("K".into()), Some("xfs".into()), never),
            BootConfig {
                key: Some("K".into()),
                modules: "xfs".into()
            }
        );
        assert_eq!(
            BootConfig::resolve(None, Some(String::new()), || CMDLINE.into()),
            BootConfig {
                key: Some("AAAAC3Nz+/0=".into()),
                modules: String::new()
            }
        );
        assert_eq!(
            BootConfig::resolve(Some(String::new()), None, || CMDLINE.into()),
            BootConfig {
                key: Some("AAAAC3Nz+/0=".into()),
                modules: "virtio_pci,virtio_blk,xfs".into()
            }
        );
        assert_eq!(
            BootConfig::resolve(None, None, || "console=ttyS0".into()),
            BootConfig::default()
        );
    }

    #[test]
    fn only_non_virtio_modules_load_in_the_background() {
        assert_eq!(
            background_modules("virtio_pci,virtio_blk,virtio_net,xfs,dm_mod, dm_flakey"),
            ["xfs", "dm_mod", "dm_flakey"]
        );
        assert_eq!(background_modules(""), Vec::<&str>::new());
        assert_eq!(background_modules("xfs,,../x,.hidden,a/b"), ["xfs"]);
    }

    #[test]
    fn load_orders_keep_their_order_and_skip_blank_lines() {
        assert_eq!(
            load_order("kernel/lib/libcrc32c.ko\n\nkernel/fs/xfs/xfs.ko\n"),
            ["kernel/lib/libcrc32c.ko", "kernel/fs/xfs/xfs.ko"]
        );
        assert_eq!(load_order(""), Vec::<&str>::new());
    }

    #[test]
    fn only_a_virtio_console_device_counts_as_the_agents() {
        let sys = tempfile::tempdir().unwrap();
        let device = |slot: &str, vendor: &str, device: &str| {
            let dir = sys.path().join(slot);
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
            std::fs::write(dir.join("device"), format!("{device}\n")).unwrap();
        };
        device("0000:00:03.0", "0x1af4", "0x1001");
        device("0000:00:02.0", "0x8086", "0x1003");
        assert!(
            !has_agent_device(sys.path()),
            "virtio-blk, and 0x1003 of another vendor"
        );
        device("0000:00:05.0", "0x1af4", "0x1003");
        assert!(has_agent_device(sys.path()));
        assert!(!has_agent_device(&sys.path().join("missing")));
    }

    #[test]
    fn module_names_come_from_file_names() {
        assert_eq!(module_name("kernel/drivers/md/dm-mod.ko"), "dm_mod");
        assert_eq!(module_name("kernel/fs/xfs/xfs.ko"), "xfs");
        assert_eq!(module_name("virtio_ring.ko"), "virtio_ring");
    }

    #[test]
    fn ipv4_sockaddrs_carry_family_zero_port_and_address() {
        let sa = sockaddr_v4([10, 0, 2, 15]);
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        let bytes: Vec<u8> = sa.sa_data.iter().map(|&b| b as u8).collect();
        assert_eq!(bytes, [0, 0, 10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 0, 0]);
        // The layout the kernel reads: the same bytes as a sockaddr_in.
        // SAFETY: sockaddr and sockaddr_in are both 16 bytes of plain data.
        let sin: libc::sockaddr_in = unsafe { std::mem::transmute(sa) };
        assert_eq!(sin.sin_port, 0);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [10, 0, 2, 15]);
    }

    #[test]
    fn ifreqs_name_the_interface_and_reject_bad_names() {
        let req = ifreq("eth0").unwrap();
        let name: Vec<u8> = req.ifr_name.iter().map(|&b| b as u8).collect();
        assert_eq!(&name[..5], b"eth0\0");
        assert!(ifreq("").is_err());
        assert!(ifreq("a-very-long-name").is_err(), "16 bytes leave no NUL");
        assert!(ifreq("fifteen-bytes-x").is_ok());
    }

    #[test]
    fn default_route_goes_through_the_gateway() {
        let rt = default_route([10, 0, 2, 2]);
        assert_eq!(rt.rt_flags, libc::RTF_UP | libc::RTF_GATEWAY);
        assert_eq!(rt.rt_gateway.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(
            rt.rt_gateway.sa_data[2..6],
            sockaddr_v4([10, 0, 2, 2]).sa_data[2..6]
        );
        assert_eq!(rt.rt_dst.sa_family, libc::AF_INET as libc::sa_family_t);
        assert!(
            rt.rt_dst.sa_data.iter().all(|&b| b == 0),
            "destination 0.0.0.0"
        );
        assert!(
            rt.rt_genmask.sa_data.iter().all(|&b| b == 0),
            "mask 0.0.0.0"
        );
        assert!(rt.rt_dev.is_null(), "the kernel picks the device");
    }

    #[test]
    fn authorized_key_line_names_the_key_type() {
        assert_eq!(authorized_key_line("AAAA"), "ssh-ed25519 AAAA crashrig\n");
    }
}
