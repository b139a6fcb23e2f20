//! A hang that is QEMU's, not the kernel's: a TCG vCPU executing a stale translation of code
//! the kernel has patched. Pure: reads a console.
//!
//! Linux changes its own code when a static key flips (`text_poke_bp`: an int3 over the site,
//! the new bytes, then the int3 removed). Under TCG, QEMU translates guest code into host code
//! and relies on seeing the guest's writes to drop translations of the written page; a guest
//! restored from a saved state starts with nothing translated, and QEMU 7.2 was seen here
//! keeping a translation made while the int3 was in place. The vCPU then traps on an int3
//! that is no longer in memory: the kernel's handler finds the original instruction, backs up
//! and returns into the same translation, forever. The guest reports a soft lockup (or an RCU
//! stall) whose RIP is a static-key site: the instruction bytes at the marker of the `Code:`
//! line are the no-op a patched site holds, not a loop a CPU could be stuck in.

/// The kernel's no-ops at static-key sites (x86-64): `nopl 0x0(%rax,%rax,1)`, `xchg %ax,%ax`.
const SITE_NOPS: [&[u8]; 2] = [&[0x0f, 0x1f, 0x44, 0x00, 0x00], &[0x66, 0x90]];

/// Lines after a lockup or stall header within which its `RIP:`/`Code:` lines are looked for.
const REPORT_LINES: usize = 60;

/// When `console` shows a vCPU trapping forever on a patched static-key site (see the module
/// documentation): where, in words for the iteration's record. Needs two reports at one such
/// site, or one and an NMI backtrace caught in the int3 entry.
pub fn stale_translation(console: &str) -> Option<String> {
    let lines: Vec<&str> = console.lines().map(strip_timestamp).collect();
    let mut sites: Vec<(String, usize)> = Vec::new();
    let mut in_int3 = false;
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("RIP: 0010:asm_exc_int3") {
            in_int3 = true;
        }
        if !is_lockup_header(line) {
            continue;
        }
        let report = &lines[i + 1..lines.len().min(i + 1 + REPORT_LINES)];
        let Some(at) = report.iter().position(|l| l.starts_with("RIP: 0010:")) else {
            continue;
        };
        let rip = report[at]["RIP: 0010:".len()..].trim().to_string();
        let Some(code) = report.get(at + 1).and_then(|l| l.strip_prefix("Code: ")) else {
            continue;
        };
        if !marked_bytes(code).is_some_and(|b| SITE_NOPS.iter().any(|nop| b.starts_with(nop))) {
            continue;
        }
        match sites.iter_mut().find(|(r, _)| *r == rip) {
            Some((_, n)) => *n += 1,
            None => sites.push((rip, 1)),
        }
    }
    let (rip, n) = sites.into_iter().max_by_key(|(_, n)| *n)?;
    (n >= 2 || in_int3).then(|| {
        format!(
            "a vCPU stayed at {rip}, a static-key site the kernel had patched ({n} lockup \
             report{}): QEMU's TCG kept running a stale translation of it after the restore \
             (a QEMU problem, not the kernel's)",
            if n == 1 { "" } else { "s" }
        )
    })
}

fn strip_timestamp(line: &str) -> &str {
    let line = line.trim_start();
    match line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest.trim_start(),
        _ => line,
    }
}

fn is_lockup_header(line: &str) -> bool {
    line.contains("BUG: soft lockup") || line.contains("self-detected stall on CPU")
}

/// The bytes from the `<xx>` marker of a `Code:` line on (the instruction at RIP).
fn marked_bytes(code: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut marked = false;
    for token in code.split_whitespace() {
        if let Some(b) = token.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
            marked = true;
            bytes.push(u8::from_str_radix(b, 16).ok()?);
        } else if marked {
            bytes.push(u8::from_str_radix(token, 16).ok()?);
        }
    }
    marked.then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A soft lockup as the restored guests printed it (6.1.0-57-cloud-amd64 under TCG).
    fn lockup(seconds: u32, cpu: u32, rip: &str, code: &str) -> String {
        format!(
            "[   {seconds}.516571] watchdog: BUG: soft lockup - CPU#{cpu} stuck for 26s! [sh:142]\n\
             [   {seconds}.518113] Modules linked in: xfs libcrc32c virtio_blk\n\
             [   {seconds}.521935] RIP: 0010:{rip}\n\
             [   {seconds}.522046] Code: {code}\n\
             [   {seconds}.522424] RAX: 0000000000000000 RBX: 0000000000000cc0\n\
             [   {seconds}.525553]  <TASK>\n\
             [   {seconds}.525724]  getname_flags.part.0+0x2b/0x1c0\n\
             [   {seconds}.525893]  do_syscall_64+0x5d/0x90\n"
        )
    }

    const NOP5: &str =
        "89 de 48 89 ef e8 6b 12 f9 ff 85 c0 0f 85 06 02 00 00 <0f> 1f 44 00 00 f7 c3";
    const NOP2: &str = "41 39 df 0f 84 98 03 00 00 <66> 90 f7 04 24 00 00 40 00 0f 85";
    /// `pause` in a spin loop: a CPU that is really stuck.
    const PAUSE: &str = "8b 07 85 c0 74 0a <f3> 90 8b 07 85 c0 75 f6";

    #[test]
    fn two_lockups_at_one_patched_site_are_a_stale_translation() {
        let rip = "kmem_cache_alloc+0x5d/0x300";
        let console = lockup(32, 0, rip, NOP5) + &lockup(60, 0, rip, NOP5);
        let why = stale_translation(&console).expect("a stale translation");
        assert!(why.contains(rip), "{why}");
        assert!(why.contains("2 lockup reports"), "{why}");
        let two_byte = lockup(52, 1, "__alloc_pages_bulk+0x8d/0x680", NOP2)
            + &lockup(80, 1, "__alloc_pages_bulk+0x8d/0x680", NOP2);
        assert!(stale_translation(&two_byte).is_some());
    }

    #[test]
    fn one_lockup_at_a_site_counts_with_an_nmi_backtrace_caught_in_the_int3_entry() {
        let one = lockup(52, 1, "__alloc_pages_bulk+0x8d/0x680", NOP2);
        assert_eq!(stale_translation(&one), None, "one report is not enough");
        let nmi = "[  280.144639] NMI backtrace for cpu 1\n\
                   [  280.144667] RIP: 0010:asm_exc_int3+0x0/0x40\n";
        assert!(stale_translation(&format!("{one}{nmi}")).is_some());
    }

    #[test]
    fn a_cpu_really_stuck_or_at_two_places_is_the_kernels_hang() {
        let spin = lockup(32, 0, "native_queued_spin_lock_slowpath+0x6a/0x2e0", PAUSE);
        assert_eq!(stale_translation(&format!("{spin}{spin}")), None);
        // Two sites, one report each: no site where a vCPU stayed.
        let moving = lockup(32, 0, "kmem_cache_alloc+0x5d/0x300", NOP5)
            + &lockup(60, 0, "kmem_cache_free+0x22/0x300", NOP5);
        assert_eq!(stale_translation(&moving), None);
        // A lockup without registers (another architecture's format) proves nothing.
        let bare = "[ 32.5] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [sh:1]\n".repeat(3);
        assert_eq!(stale_translation(&bare), None);
        assert_eq!(stale_translation(""), None);
    }

    #[test]
    fn the_real_consoles_of_restored_guests_that_hung_are_recognised() {
        for name in ["tcg-stale-int3-nop5.log", "tcg-stale-int3-nop2.log"] {
            let path = format!("{}/tests/fixtures/dmesg/{name}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(stale_translation(&text).is_some(), "{name}");
        }
        let syzbot = format!(
            "{}/tests/fixtures/dmesg/rcu-stall-soft-lockup-syzbot.log",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(syzbot).unwrap();
        assert_eq!(stale_translation(&text), None, "a kernel's own lockup");
    }

    #[test]
    fn code_lines_give_the_bytes_from_the_marker() {
        assert_eq!(marked_bytes("aa <0f> 1f"), Some(vec![0x0f, 0x1f]));
        assert_eq!(marked_bytes("aa bb"), None);
        assert_eq!(marked_bytes("<zz> 1f"), None);
        assert_eq!(strip_timestamp("[   32.516571] RIP: x"), "RIP: x");
        assert_eq!(strip_timestamp("RIP: x"), "RIP: x");
    }
}
