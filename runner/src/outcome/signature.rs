//! Finding signatures: one string per bug, stable across builds, kernels and architectures.
//!
//! A signature is `kind: function` where the function is the first frame that says something about
//! the bug (not `dump_stack`, `__warn`, `kasan_report`, a lock primitive or the scheduler), with a
//! short qualifier in parentheses when the kind alone is ambiguous: the source file of a WARNING or
//! `kernel BUG at`, the KASAN bug type, the lockdep report type. Filesystem messages have no useful
//! stack, so theirs is the message itself with devices, numbers and addresses normalized. Offsets,
//! addresses, line numbers, CPUs, PIDs and compiler clone suffixes never reach a signature.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::dmesg::{normalize_function, Finding, FindingKind};

/// Findings that share a signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FindingGroup {
    pub signature: String,
    pub kind: FindingKind,
    pub count: usize,
    /// How many of them were expected (caused by the scenario's own step).
    pub expected: usize,
    /// The first occurrence, with its full report.
    pub first: Finding,
}

/// Group findings by signature, in order of first appearance.
pub fn group<'a, I>(findings: I) -> Vec<FindingGroup>
where
    I: IntoIterator<Item = &'a Finding>,
{
    let mut groups: Vec<FindingGroup> = Vec::new();
    let mut index: HashMap<&'a str, usize> = HashMap::new();
    for f in findings {
        match index.get(f.signature.as_str()) {
            Some(&i) => {
                groups[i].count += 1;
                groups[i].expected += usize::from(f.expected);
            }
            None => {
                index.insert(f.signature.as_str(), groups.len());
                groups.push(FindingGroup {
                    signature: f.signature.clone(),
                    kind: f.kind,
                    count: 1,
                    expected: usize::from(f.expected),
                    first: f.clone(),
                });
            }
        }
    }
    groups
}

/// The signature of a report of `kind` with header line `title` and parsed `frames` (innermost
/// first, as in [`Finding::frames`]).
pub fn signature(kind: FindingKind, title: &str, frames: &[String]) -> String {
    let title = title.trim();
    if matches!(kind, FindingKind::FsCorruption | FindingKind::FsError) {
        return format!("{kind}: {}", normalize_text(title));
    }
    let func = match kind {
        // The header names the function that warned; use it unless it is a generic checker.
        FindingKind::Warning => header_function(title)
            .filter(|f| !is_generic(f))
            .or_else(|| first_meaningful(frames)),
        _ => first_meaningful(frames),
    };
    let Some(func) = func else {
        return format!("{kind}: {}", normalize_text(title_core(kind, title)));
    };
    match qualifier(kind, title) {
        Some(q) => format!("{kind}: {func} ({q})"),
        None => format!("{kind}: {func}"),
    }
}

/// The first frame that is not reporting machinery, a lock or wait primitive, or an allocator.
pub fn first_meaningful(frames: &[String]) -> Option<String> {
    frames
        .iter()
        .map(|f| normalize_function(f))
        .find(|f| !is_generic(f))
}

static HEADER_FILE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\bat |^WARNING: |^kernel BUG at )([\w./-]+\.[chS]):\d+").unwrap()
});
static HEADER_FUNC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z_][\w.]*)\+0x[0-9a-f]+").unwrap());
static KASAN_TYPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"KASAN: ([\w-]+)").unwrap());
static UBSAN_TYPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"UBSAN: ([\w-]+)").unwrap());
static LIST_CORRUPTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(list_\w+ corruption)").unwrap());

fn header_function(title: &str) -> Option<String> {
    HEADER_FUNC
        .captures(title)
        .map(|c| normalize_function(&c[1]))
}

fn header_file(title: &str) -> Option<&str> {
    HEADER_FILE
        .captures(title)
        .map(|c| c.get(1).map_or("", |m| m.as_str()))
}

fn qualifier(kind: FindingKind, title: &str) -> Option<String> {
    match kind {
        FindingKind::Warning => header_file(title).map(str::to_string),
        FindingKind::Bug => {
            if let Some(c) = LIST_CORRUPTION.captures(title) {
                Some(c[1].to_string())
            } else if title.starts_with("kernel BUG at ") {
                header_file(title).map(str::to_string)
            } else if title.contains("sleeping function called from invalid context") {
                Some("sleeping function called from invalid context".into())
            } else if title.starts_with("BUG: scheduling while atomic") {
                Some("scheduling while atomic".into())
            } else {
                UBSAN_TYPE
                    .captures(title)
                    .map(|c| format!("UBSAN {}", &c[1]))
            }
        }
        FindingKind::Kasan => KASAN_TYPE.captures(title).map(|c| c[1].to_string()),
        FindingKind::Lockdep => Some(
            if title.contains("circular locking") {
                "circular locking dependency"
            } else if title.contains("recursive locking") {
                "recursive locking"
            } else if title.contains("inconsistent lock state") {
                "inconsistent lock state"
            } else {
                return Some(normalize_text(
                    title.trim_start_matches("WARNING: ").trim_end_matches('!'),
                ));
            }
            .to_string(),
        ),
        _ => None,
    }
}

/// The part of a frameless report's title that identifies it.
fn title_core(kind: FindingKind, title: &str) -> &str {
    match kind {
        FindingKind::Panic => title
            .split_once("not syncing:")
            .map_or(title, |(_, rest)| rest.trim()),
        _ => title,
    }
}

/// Frames that every report of a kind shares, so they say nothing about which bug it is.
const GENERIC_EXACT: &[&str] = &[
    // reporting machinery
    "dump_stack",
    "dump_stack_lvl",
    "__dump_stack",
    "show_stack",
    "show_trace_log_lvl",
    "show_regs",
    "__show_regs",
    "__warn",
    "__warn_printk",
    "warn_slowpath_fmt",
    "warn_slowpath_null",
    "warn_slowpath_common",
    "report_bug",
    "handle_bug",
    "exc_invalid_op",
    "do_invalid_op",
    "die",
    "die_body",
    "__die",
    "__die_body",
    "oops_end",
    "do_trap",
    "do_error_trap",
    "do_general_protection",
    "exc_general_protection",
    "page_fault_oops",
    "no_context",
    "__bad_area_nosemaphore",
    "bad_area_nosemaphore",
    "do_user_addr_fault",
    "do_kern_addr_fault",
    "exc_page_fault",
    "do_page_fault",
    "fixup_exception",
    "kernelmode_fixup_or_oops",
    "bug_handler",
    "panic",
    "vpanic",
    "nmi_panic",
    "print_report",
    "print_address_description",
    "check_memory_region",
    "check_region_inline",
    "usercopy_abort",
    "fortify_panic",
    "__fortify_report",
    "__stack_chk_fail",
    "srso_return_thunk",
    "srso_alias_return_thunk",
    "__x86_return_thunk",
    // checkers: the caller is the bug
    "refcount_warn_saturate",
    "__list_add_valid",
    "__list_add_valid_or_report",
    "__list_del_entry_valid",
    "__list_del_entry_valid_or_report",
    "__might_sleep",
    "___might_sleep",
    "__might_resched",
    "__might_fault",
    "__cant_sleep",
    // scheduler and waits (hung tasks all sit here)
    "__schedule",
    "schedule",
    "__schedule_loop",
    "context_switch",
    "schedule_timeout",
    "schedule_timeout_uninterruptible",
    "schedule_timeout_killable",
    "schedule_timeout_interruptible",
    "schedule_hrtimeout",
    "schedule_hrtimeout_range",
    "schedule_preempt_disabled",
    "preempt_schedule",
    "preempt_schedule_common",
    "io_schedule",
    "io_schedule_timeout",
    "wait_for_completion",
    "wait_for_completion_io",
    "wait_for_completion_timeout",
    "wait_for_completion_killable",
    "wait_for_completion_interruptible",
    "wait_for_completion_io_timeout",
    "__wait_for_common",
    "wait_for_common",
    "wait_for_common_io",
    "do_wait_for_common",
    "__wait_on_bit",
    "__wait_on_bit_lock",
    "out_of_line_wait_on_bit",
    "out_of_line_wait_on_bit_lock",
    "bit_wait",
    "bit_wait_io",
    "__folio_lock",
    "folio_wait_bit_common",
    "folio_wait_bit",
    "folio_wait_writeback",
    "wait_on_page_bit_common",
    "__lock_page",
    // locks
    "lock_acquire",
    "__lock_acquire",
    "lock_acquired",
    "lock_release",
    "lock_contended",
    "lock_is_held_type",
    "validate_chain",
    "check_prev_add",
    "check_prevs_add",
    "check_noncircular",
    "check_deadlock",
    "print_circular_bug",
    "print_deadlock_bug",
    "print_usage_bug",
    "mark_lock",
    "mark_lock_irq",
    "mark_usage",
    "valid_state",
    "__mutex_lock",
    "__mutex_lock_common",
    "__mutex_lock_slowpath",
    "mutex_lock",
    "mutex_lock_nested",
    "mutex_lock_io",
    "mutex_lock_killable",
    "mutex_lock_killable_nested",
    "mutex_lock_interruptible",
    "mutex_lock_interruptible_nested",
    "down",
    "__down",
    "__down_common",
    "___down_common",
    "down_read",
    "down_write",
    "down_read_nested",
    "down_write_nested",
    "down_read_killable",
    "down_write_killable",
    "down_read_interruptible",
    "__down_read",
    "__down_write",
    "__down_read_common",
    "__down_write_common",
    "rwsem_down_read_slowpath",
    "rwsem_down_write_slowpath",
    "rwsem_down_read_failed",
    "rwsem_down_write_failed",
    "rwsem_down_failed_common",
    "call_rwsem_down_read_failed",
    "call_rwsem_down_write_failed",
    "do_raw_spin_lock",
    "queued_spin_lock_slowpath",
    "native_queued_spin_lock_slowpath",
    "__pv_queued_spin_lock_slowpath",
    // allocators and string helpers: a fault inside them is the caller's bug
    "kfree",
    "kvfree",
    "kmem_cache_free",
    "kmem_cache_alloc",
    "kmem_cache_alloc_lru",
    "kmem_cache_alloc_node",
    "__kmalloc",
    "__kmalloc_node",
    "kmalloc_trace",
    "krealloc",
    "memcpy",
    "memmove",
    "memset",
    "memcmp",
    "__memcpy",
    "__memmove",
    "__memset",
    "strlen",
    "strcmp",
    "strncmp",
    "strcpy",
    "strncpy",
    "strscpy",
    // printk and coverage instrumentation: stalls often catch a CPU in them
    "console_flush_all",
    "console_unlock",
    "vprintk_emit",
    "vprintk",
    "vprintk_default",
    "_printk",
    "printk",
    "write_comp_data",
    "check_kcov_mode",
    // timer interrupts and backtrace IPIs (stall and lockup reports)
    "nmi_cpu_backtrace",
    "nmi_trigger_cpumask_backtrace",
    "arch_trigger_cpumask_backtrace",
    "trigger_single_cpu_backtrace",
    "trigger_all_cpu_backtrace",
    "print_cpu_stall",
    "check_cpu_stall",
    "rcu_pending",
    "rcu_sched_clock_irq",
    "update_process_times",
    "tick_sched_handle",
    "tick_sched_timer",
    "tick_nohz_handler",
    "watchdog_timer_fn",
    "__hrtimer_run_queues",
    "hrtimer_interrupt",
    "smp_apic_timer_interrupt",
    "apic_timer_interrupt",
    "irq_exit_rcu",
    "__irq_exit_rcu",
    // thread and syscall entry: never the bug
    "ret_from_fork",
    "ret_from_fork_asm",
    "kthread",
    "worker_thread",
    "process_one_work",
    "process_scheduled_works",
    "do_syscall_64",
    "do_syscall_x64",
    "x64_sys_call",
    "entry_SYSCALL_64",
    "entry_SYSCALL_64_after_hwframe",
];

const GENERIC_PREFIX: &[&str] = &[
    "kasan_",
    "__kasan_",
    "____kasan_",
    "__asan_",
    "asan_",
    "kmsan_",
    "__msan_",
    "__ubsan_handle_",
    "ubsan_",
    "lockdep_",
    "__lockdep_",
    "asm_exc_",
    "asm_sysvec_",
    "sysvec_",
    "__sysvec_",
    "_raw_spin_",
    "_raw_read_",
    "_raw_write_",
    "raw_spin_rq_lock",
    "dump_stack",
    "warn_slowpath",
    "rcu_dump_",
    "__pfx_",
    "__sanitizer_cov_",
];

fn is_generic(func: &str) -> bool {
    GENERIC_EXACT.contains(&func) || GENERIC_PREFIX.iter().any(|p| func.starts_with(p))
}

static OFFSET: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+0x[0-9a-f]+(?:/0x[0-9a-f]+)?").unwrap());
static MODULE_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r" \[\w+(?: [0-9a-f]{16,})?\]").unwrap());
static ADDRESS_FRAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[<[0-9a-f]+>\]").unwrap());
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b").unwrap()
});
static DEVICE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:vd[a-z]+|sd[a-z]+|hd[a-z]+|xvd[a-z]+|nvme\d+n\d+|mmcblk\d+|loop\d+|dm-\d+|md\d+|nbd\d+|pmem\d+|ram\d+|zram\d+|sr\d+)(?:p?\d+)?\b",
    )
    .unwrap()
});
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\b\d+\b").unwrap());
static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").unwrap());

/// Normalize a log line for grouping: drop `+0x12/0x40` offsets, module tags and `[<addr>]`; UUIDs,
/// block devices (vdb -> DEV), hex values (0xX, X) and decimal numbers (N) are replaced; runs of
/// whitespace become one space.
pub fn normalize_text(text: &str) -> String {
    let s = OFFSET.replace_all(text, "");
    let s = MODULE_TAG.replace_all(&s, "");
    let s = ADDRESS_FRAME.replace_all(&s, "");
    let s = UUID.replace_all(&s, "UUID");
    let s = DEVICE.replace_all(&s, "DEV");
    let s = NUMBER.replace_all(&s, |c: &regex::Captures| {
        let m = &c[0];
        // Pointers and hashed addresses are long; counters and block numbers vary in length, so a
        // decimal of any length below pointer size is one token.
        if m.starts_with("0x") {
            "0xX"
        } else if m.len() < 12 && m.bytes().all(|b| b.is_ascii_digit()) {
            "N"
        } else {
            "X"
        }
    });
    SPACES.replace_all(s.trim(), " ").into_owned()
}

#[cfg(test)]
mod tests {
    use super::super::dmesg::{classify_console, ClassifyContext};
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/dmesg/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    fn frames(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn same_warning_from_two_builds_groups() {
        // x86-64 6.2.0-rc7 console vs arm64 6.1.0-rc8 syzbot: different CPU, PID, line number,
        // offsets, arch register dumps and symbolization.
        let ctx = ClassifyContext::default();
        let x86 = classify_console(&fixture("xfs-warning-delalloc-x86.log"), &ctx);
        let arm = classify_console(&fixture("xfs-warning-delalloc-arm64-syzbot.log"), &ctx);
        assert_ne!(x86[0].title, arm[0].title);
        let groups = group(x86.iter().chain(arm.iter().take(1)));
        assert_eq!(groups.len(), 1, "{groups:#?}");
        assert_eq!(groups[0].count, 2);
        assert_eq!(
            groups[0].signature,
            "warning: xfs_bmapi_convert_delalloc (fs/xfs/libxfs/xfs_bmap.c)"
        );
        assert_eq!(groups[0].first.title, x86[0].title);
    }

    #[test]
    fn same_shutdown_and_panic_on_debian_6_1_and_6_12_group() {
        // Real captures of one scenario on the two default kernels (see the fixtures' .source.md).
        let ctx = ClassifyContext::default();
        let old = classify_console(
            &fixture("debian-6.1-tcg-xfs-shutdown-sysrq.console.log"),
            &ctx,
        );
        let new = classify_console(
            &fixture("debian-6.12-tcg-xfs-shutdown-sysrq.console.log"),
            &ctx,
        );
        assert_eq!(old.len(), 2);
        assert_eq!(new.len(), 2);
        assert_ne!(old[0].report, new[0].report);
        assert_ne!(old[1].frames, new[1].frames);
        let groups = group(old.iter().chain(&new));
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.signature.as_str(), g.count))
                .collect::<Vec<_>>(),
            [
                ("fs-error: XFS (DEV): User initiated shutdown received.", 2),
                ("panic: sysrq_handle_crash", 2),
            ]
        );
    }

    #[test]
    fn unplug_on_6_1_and_dm_error_on_5_19_are_one_signature() {
        let ctx = ClassifyContext {
            expected_fs_errors: true,
            ..ClassifyContext::default()
        };
        let unplug = classify_console(&fixture("debian-6.1-tcg-xfs-unplug.console.log"), &ctx);
        assert_eq!(unplug.len(), 1, "{unplug:#?}");
        assert!(unplug[0].expected);
        assert_eq!(unplug[0].report.lines().count(), 3);
        let dm_error = classify_console(&fixture("xfs-generic475-shutdown-kasan.log"), &ctx);
        let groups = group(unplug.iter().chain(&dm_error));
        let shutdown = groups
            .iter()
            .find(|g| g.signature == "fs-error: XFS (DEV): log I/O error -N")
            .unwrap();
        assert_eq!((shutdown.count, shutdown.expected), (2, 2));
    }

    #[test]
    fn different_bugs_do_not_group() {
        let ctx = ClassifyContext::default();
        let mut all = Vec::new();
        for name in [
            "xfs-warning-delalloc-x86.log",
            "xfs-warning-delalloc-arm64-syzbot.log",
            "ntfs3-null-deref-mount.log",
            "f2fs-page-fault-panic-fstests.log",
            "xfs-generic475-shutdown-kasan.log",
            "xfs-generic388-recovery-corruption.log",
            "xfs-hung-task-syzbot.log",
            "xfs-lockdep-circular-syzbot.log",
        ] {
            all.extend(classify_console(&fixture(name), &ctx));
        }
        let groups = group(&all);
        let sigs: Vec<(&str, usize)> = groups
            .iter()
            .map(|g| (g.signature.as_str(), g.count))
            .collect();
        assert_eq!(
            sigs,
            [
                ("warning: xfs_bmapi_convert_delalloc (fs/xfs/libxfs/xfs_bmap.c)", 2),
                ("fs-error: XFS (DEV): page discard on page X, inode 0xX, pos N.", 1),
                ("bug: ni_find_attr", 1),
                ("bug: f2fs_free_filename", 1),
                ("panic: Fatal exception", 1),
                ("fs-error: Buffer I/O error on dev DEV, logical block N, async page read", 1),
                ("fs-error: XFS (DEV): log I/O error -N", 1),
                ("kasan: xlog_force_shutdown (use-after-free)", 1),
                (
                    "fs-corruption: XFS (DEV): Internal error Bad dinode after recovery at line N of file fs/xfs/xfs_inode_item_recover.c. Caller xlog_recover_items_pass2",
                    1
                ),
                ("fs-error: XFS (DEV): Filesystem has been shut down due to log error (0xX).", 1),
                ("hung-task: xfs_buf_lock", 1),
                ("hung-task: xlog_wait_on_iclog", 1),
                ("lockdep: xfs_icwalk_ag (circular locking dependency)", 1),
            ]
        );
    }

    #[test]
    fn signature_table() {
        // (kind, title, frames, signature)
        let table: &[(FindingKind, &str, &[&str], &str)] = &[
            (
                FindingKind::Warning,
                "WARNING: CPU: 1 PID: 42 at fs/xfs/xfs_log.c:1234 xlog_foo+0x12/0x40 [xfs]",
                &["xlog_foo", "xlog_bar"],
                "warning: xlog_foo (fs/xfs/xfs_log.c)",
            ),
            (
                // new-style header; the checker function in the header is skipped for its caller
                FindingKind::Warning,
                "WARNING: lib/refcount.c:28 at refcount_warn_saturate+0x13e/0x1a0, CPU#0: umount/77",
                &["refcount_warn_saturate", "mntput_no_expire", "cleanup_mnt"],
                "warning: mntput_no_expire (lib/refcount.c)",
            ),
            (
                FindingKind::Bug,
                "kernel BUG at fs/xfs/xfs_message.c:102!",
                &["assfail.isra.0", "xfs_trans_cancel", "xfs_create"],
                "bug: assfail (fs/xfs/xfs_message.c)",
            ),
            (
                FindingKind::Bug,
                "BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580",
                &["dump_stack_lvl", "__might_resched", "mutex_lock_nested", "io_uring_cancel_generic"],
                "bug: io_uring_cancel_generic (sleeping function called from invalid context)",
            ),
            (
                FindingKind::Kasan,
                "BUG: KASAN: slab-use-after-free in xfs_inode_item_push+0x2a/0x60",
                &["dump_stack_lvl", "print_report", "kasan_report", "xfs_inode_item_push.cold"],
                "kasan: xfs_inode_item_push (slab-use-after-free)",
            ),
            (
                FindingKind::Panic,
                "Kernel panic - not syncing: sysrq triggered crash",
                &["dump_stack_lvl", "panic", "sysrq_handle_crash", "__handle_sysrq"],
                "panic: sysrq_handle_crash",
            ),
            (
                FindingKind::Panic,
                "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)",
                &[],
                "panic: VFS: Unable to mount root fs on unknown-block(N,N)",
            ),
            (
                FindingKind::HungTask,
                "INFO: task umount:1234 blocked for more than 120 seconds.",
                &["__schedule", "schedule", "rwsem_down_write_slowpath", "down_write", "deactivate_super", "cleanup_mnt"],
                "hung-task: deactivate_super",
            ),
            (
                FindingKind::SoftLockup,
                "watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [fio:212]",
                &["io_uring_try_cancel_requests", "io_ring_exit_work"],
                "soft-lockup: io_uring_try_cancel_requests",
            ),
            (
                FindingKind::FsError,
                "EXT4-fs error (device vdb): ext4_journal_check_start:83: comm fio: Detected aborted journal",
                &[],
                "fs-error: EXT4-fs error (device DEV): ext4_journal_check_start:N: comm fio: Detected aborted journal",
            ),
            (
                FindingKind::FsError,
                "XFS (nvme0n1p2): metadata I/O error in \"xfs_imap_to_bp+0x5c/0x80 [xfs]\" at daddr 0x8a66c0 len 32 error 5",
                &[],
                "fs-error: XFS (DEV): metadata I/O error in \"xfs_imap_to_bp\" at daddr 0xX len N error N",
            ),
        ];
        for (kind, title, fr, want) in table {
            assert_eq!(signature(*kind, title, &frames(fr)), *want, "{title}");
        }
    }

    #[test]
    fn signature_ignores_build_noise() {
        let a = signature(
            FindingKind::Warning,
            "WARNING: CPU: 3 PID: 7 at fs/iomap/buffered-io.c:1810 iomap_foo+0x1a/0x90",
            &frames(&["iomap_foo"]),
        );
        let b = signature(
            FindingKind::Warning,
            "WARNING: CPU: 0 PID: 19876 at fs/iomap/buffered-io.c:1799 iomap_foo.constprop.0+0x3c/0xa0 [iomap]",
            &frames(&["iomap_foo.constprop.0"]),
        );
        assert_eq!(a, b);
        let c = signature(
            FindingKind::Warning,
            "WARNING: CPU: 0 PID: 19876 at fs/iomap/direct-io.c:1799 iomap_foo+0x3c/0xa0",
            &frames(&["iomap_foo"]),
        );
        assert_ne!(a, c, "same function in another file is another WARN_ON");
    }

    #[test]
    fn fallback_without_frames_uses_the_normalized_title() {
        assert_eq!(
            signature(
                FindingKind::HungTask,
                "INFO: task kworker/u4:2:113 blocked for more than 122 seconds.",
                &frames(&["__schedule", "schedule"])
            ),
            "hung-task: INFO: task kworker/u4:N:N blocked for more than N seconds."
        );
    }

    #[test]
    fn normalize_text_table() {
        let table = [
            ("XFS (vdb): log I/O error -5", "XFS (DEV): log I/O error -N"),
            (
                "XFS (sda4): Mounting V5 Filesystem 435fe39b-82b6-46ef-be56-819499585130",
                "XFS (DEV): Mounting V5 Filesystem UUID",
            ),
            (
                "Buffer I/O error on dev dm-0, logical block 20639616",
                "Buffer I/O error on dev DEV, logical block N",
            ),
            (
                "I/O error, dev nvme0n1, sector 2048 op 0x1:(WRITE)",
                "I/O error, dev DEV, sector N op 0xX:(WRITE)",
            ),
            (
                "page discard on page 000000006c24b16e,  inode 0x50b",
                "page discard on page X, inode 0xX",
            ),
            (
                "at xfs_dinode_verify.part.0+0x739/0x920 [xfs], inode",
                "at xfs_dinode_verify.part.N, inode",
            ),
            ("EXT4-fs (loop0): ext4 md5sum", "EXT4-fs (DEV): ext4 md5sum"),
        ];
        for (input, want) in table {
            assert_eq!(normalize_text(input), want, "{input}");
        }
    }

    #[test]
    fn groups_count_expected_separately() {
        let text = "XFS (vdb): log I/O error -5\nsomething else\nXFS (vdc): log I/O error -5\n";
        let mut f = classify_console(text, &ClassifyContext::default());
        f[1].expected = true;
        let g = group(&f);
        assert_eq!(g.len(), 1);
        assert_eq!(
            (g[0].count, g[0].expected, g[0].kind),
            (2, 1, FindingKind::FsError)
        );
        assert!(!g[0].first.expected);
        assert!(group(&[]).is_empty());
    }
}
