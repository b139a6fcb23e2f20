//! Turning bare addresses in kernel traces into `function+0xoffset`.
//!
//! Kernels built without kallsyms print frames as `[<ffffffff8123abcd>]` or `0xffffffff8123abcd`.
//! With the build's System.map (or a running guest's /proc/kallsyms) those become readable again, and
//! the frames can be parsed and signed like any other report.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use super::dmesg::{parse_frames, Finding};
use super::error::Error;
use super::signature::signature;

/// Text symbols of one kernel, sorted by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemMap {
    symbols: Vec<(u64, String)>,
    /// First address past the kernel text (`_etext`), when the map has it.
    text_end: Option<u64>,
    /// Addresses are runtime ones (from /proc/kallsyms), so a KASLR offset must not be applied.
    relocated: bool,
}

/// A frame more than this far past its symbol is not in it (a module address, say, looked up in
/// the core kernel's map).
const MAX_OFFSET: u64 = 0x10_0000;

impl SystemMap {
    /// Load a System.map (`ffffffff81000000 T _stext`); `/proc/kallsyms` (same format, optional
    /// `[module]` column, runtime addresses) is recognized by its name.
    pub fn load(path: &Path) -> Result<SystemMap, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadSymbolMap {
            path: path.to_path_buf(),
            source,
        })?;
        let relocated = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("kallsyms"));
        let map = if relocated {
            SystemMap::parse_kallsyms(&text)
        } else {
            SystemMap::parse(&text)
        };
        if map.is_empty() {
            return Err(Error::NoTextSymbols {
                path: path.to_path_buf(),
            });
        }
        Ok(map)
    }

    /// Parse System.map text; malformed lines and non-text symbols are skipped.
    pub fn parse(text: &str) -> SystemMap {
        let mut symbols = Vec::new();
        let mut text_end = None;
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            // Unprivileged /proc/kallsyms shows every address as zero.
            if addr == 0 || addr == u64::MAX {
                continue;
            }
            if name == "_etext" {
                text_end = Some(addr);
                continue;
            }
            if matches!(kind, "t" | "T" | "w" | "W") {
                symbols.push((addr, name.to_string()));
            }
        }
        // Several names can share an address (_stext and startup_64); prefer the one a trace would
        // show, with the fewest leading underscores.
        symbols.sort_by(|a, b| {
            let underscores = |n: &str| n.len() - n.trim_start_matches('_').len();
            (a.0, underscores(&a.1), &a.1).cmp(&(b.0, underscores(&b.1), &b.1))
        });
        symbols.dedup_by_key(|s| s.0);
        SystemMap {
            symbols,
            text_end,
            relocated: false,
        }
    }

    /// Parse /proc/kallsyms text: runtime addresses, so KASLR offsets in reports are not applied.
    pub fn parse_kallsyms(text: &str) -> SystemMap {
        SystemMap {
            relocated: true,
            ..SystemMap::parse(text)
        }
    }

    /// Number of text symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol containing `addr` and the offset into it.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        if self.text_end.is_some_and(|end| addr >= end) {
            return None;
        }
        let i = self.symbols.partition_point(|(a, _)| *a <= addr);
        let (start, name) = self.symbols.get(i.checked_sub(1)?)?;
        let offset = addr - start;
        (offset < MAX_OFFSET).then_some((name.as_str(), offset))
    }
}

static KASLR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"Kernel Offset: 0x([0-9a-f]+) from 0x[0-9a-f]+").unwrap());
static BRACKETED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[<([0-9a-f]{8,16})>\](\s*(?:\?\s+)?[A-Za-z_.$][\w.$]*\+0x)?").unwrap()
});
static BARE_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\s*(?:\?\s+)?)0x([0-9a-f]{8,16})\s*$").unwrap());
static RIP_BARE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\s*RIP: [0-9a-f]{4}:)0x([0-9a-f]{16})\b").unwrap());

/// Rewrite bare frame addresses in `text` as `function+0xoffset`: `[<ffffffff8123abcd>]` not already
/// followed by a symbol, a frame line that is only `0xffffffff8123abcd`, and `RIP: 0010:0x...`.
/// A "Kernel Offset: 0x... from ..." line in the text (KASLR) is subtracted before lookup unless the
/// map came from /proc/kallsyms. Addresses the map does not cover are left as they are.
pub fn symbolize_report(text: &str, map: &SystemMap) -> String {
    let kaslr = if map.relocated {
        0
    } else {
        KASLR
            .captures(text)
            .and_then(|c| u64::from_str_radix(&c[1], 16).ok())
            .unwrap_or(0)
    };
    let resolve = |hex: &str| -> Option<String> {
        let addr = u64::from_str_radix(hex, 16).ok()?.checked_sub(kaslr)?;
        map.lookup(addr)
            .map(|(name, off)| format!("{name}+0x{off:x}"))
    };
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if let Some(c) = BARE_LINE.captures(body) {
            if let Some(sym) = resolve(&c[2]) {
                out.push_str(&c[1]);
                out.push_str(&sym);
                out.push_str(nl);
                continue;
            }
        }
        if let Some(c) = RIP_BARE.captures(body) {
            if let Some(sym) = resolve(&c[2]) {
                out.push_str(&c[1]);
                out.push_str(&sym);
                out.push_str(&body[c.get(0).map_or(0, |m| m.end())..]);
                out.push_str(nl);
                continue;
            }
        }
        let replaced = BRACKETED.replace_all(body, |c: &regex::Captures| {
            if c.get(2).is_some() {
                return c[0].to_string();
            }
            resolve(&c[1]).unwrap_or_else(|| c[0].to_string())
        });
        out.push_str(&replaced);
        out.push_str(nl);
    }
    out
}

/// Symbolize a finding's report in place, then re-derive its frames and signature from it.
pub fn symbolize_finding(finding: &mut Finding, map: &SystemMap) {
    let report = symbolize_report(&finding.report, map);
    if report == finding.report {
        return;
    }
    finding.report = report;
    finding.frames = parse_frames(&finding.report, finding.kind);
    finding.signature = signature(finding.kind, &finding.title, &finding.frames);
}

#[cfg(test)]
mod tests {
    use super::super::dmesg::{classify_console, ClassifyContext};
    use super::*;

    fn fixture_path(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dmesg")
            .join(name)
    }

    // A slice of an x86-64 System.map (addresses and types as nm prints them), with data symbols
    // and _etext mixed in to check they are not used for text lookups.
    const MAP: &str = "\
ffffffff81000000 T _stext
ffffffff81000000 T startup_64
ffffffff8123a000 T xfs_log_force
ffffffff8123a9c0 t xlog_state_do_callback
ffffffff8123ab40 T xlog_force_shutdown
ffffffff8123ae90 T xlog_ioend_work
ffffffff8123b000 W weak_helper
ffffffff82000000 D init_task
ffffffff82200000 B some_bss
ffffffff81e00000 T _etext
garbage line
ffffffff8123zzzz T not_hex
";

    #[test]
    fn lookup_by_binary_search() {
        let map = SystemMap::parse(MAP);
        assert_eq!(map.len(), 6);
        let table = [
            (0xffffffff8123a000, Some(("xfs_log_force", 0))),
            (0xffffffff8123a9bf, Some(("xfs_log_force", 0x9bf))),
            (0xffffffff8123a9c0, Some(("xlog_state_do_callback", 0))),
            (0xffffffff8123abcd, Some(("xlog_force_shutdown", 0x8d))),
            (0xffffffff8123b010, Some(("weak_helper", 0x10))),
            (0xffffffff80ffffff, None),
            // past _etext (data) and far away (a module address)
            (0xffffffff82000010, None),
            (0xffffffffc0a01234, None),
        ];
        for (addr, want) in table {
            assert_eq!(map.lookup(addr), want, "{addr:x}");
        }
    }

    #[test]
    fn rewrites_only_bare_frames() {
        let map = SystemMap::parse(MAP);
        let text = "Call Trace:\n [<ffffffff8123abcd>]\n [<ffffffff8123ae95>] ? \n \
                    [<ffffffff8123a010>] xfs_log_force+0x10/0x9c0\n 0xffffffff8123ae90\n \
                    [<ffffffffc0a01234>]\nRIP: 0010:0xffffffff8123a9c4 Code: 0f 0b";
        let got = symbolize_report(text, &map);
        assert_eq!(
            got,
            "Call Trace:\n xlog_force_shutdown+0x8d\n xlog_ioend_work+0x5 ? \n \
             [<ffffffff8123a010>] xfs_log_force+0x10/0x9c0\n xlog_ioend_work+0x0\n \
             [<ffffffffc0a01234>]\nRIP: 0010:xlog_state_do_callback+0x4 Code: 0f 0b"
        );
        assert_eq!(
            parse_frames(&got, super::super::dmesg::FindingKind::Bug),
            [
                "xlog_state_do_callback",
                "xlog_force_shutdown",
                "xlog_ioend_work",
                "xfs_log_force",
                "xlog_ioend_work"
            ]
        );
    }

    #[test]
    fn kaslr_offset_is_applied_for_system_map_not_kallsyms() {
        let text = "Call Trace:\n [<ffffffff8323abcd>]\nKernel Offset: 0x2000000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)\n";
        let map = SystemMap::parse(MAP);
        assert!(symbolize_report(text, &map).contains(" xlog_force_shutdown+0x8d\n"));
        let kallsyms = SystemMap::parse_kallsyms(MAP);
        assert!(symbolize_report(text, &kallsyms).contains(" [<ffffffff8323abcd>]\n"));
    }

    #[test]
    fn symbolized_finding_gets_frames_and_signature() {
        let map = SystemMap::parse(MAP);
        let text = "BUG: unable to handle page fault for address: 0000000000001234\n\
                    Oops: 0000 [#1] SMP\n\
                    RIP: 0010:0xffffffff8123abcd\n\
                    Call Trace:\n \
                    [<ffffffff8123ae95>]\n \
                    [<ffffffff81000123>]\n\
                    ---[ end trace 0000000000000000 ]---";
        let mut f = classify_console(text, &ClassifyContext::default());
        assert_eq!(f.len(), 1);
        assert!(f[0].frames.is_empty());
        assert_eq!(
            f[0].signature,
            "bug: BUG: unable to handle page fault for address: X"
        );
        symbolize_finding(&mut f[0], &map);
        assert_eq!(
            f[0].frames,
            ["xlog_force_shutdown", "xlog_ioend_work", "startup_64"]
        );
        assert_eq!(f[0].signature, "bug: xlog_force_shutdown");
    }

    proptest::proptest! {
        /// Any text survives symbolization: unchanged with an empty map, same line count with a
        /// real one.
        #[test]
        fn arbitrary_text_is_safe(text in "(\\PC|\\[<ffffffff8123a[0-9a-f]{3}>\\]|\n| 0x[0-9a-f]{16}|Kernel Offset: 0x[0-9a-f]{1,9} from 0x1){0,60}") {
            proptest::prop_assert_eq!(symbolize_report(&text, &SystemMap::default()), text.clone());
            let out = symbolize_report(&text, &SystemMap::parse(MAP));
            proptest::prop_assert_eq!(out.matches('\n').count(), text.matches('\n').count());
        }
    }

    #[test]
    fn load_rejects_debians_placeholder_map() {
        let path = fixture_path("debian-6.1-cloud-System.map");
        let err = SystemMap::load(&path).unwrap_err();
        assert!(matches!(err, Error::NoTextSymbols { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("find any text symbols in "),
            "{err}"
        );
    }

    #[test]
    fn load_reads_a_file_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("System.map-test");
        std::fs::write(&path, MAP).unwrap();
        let map = SystemMap::load(&path).unwrap();
        assert_eq!(map.lookup(0xffffffff8123ae90), Some(("xlog_ioend_work", 0)));

        let kallsyms = dir.path().join("kallsyms");
        std::fs::write(
            &kallsyms,
            "ffffffffc0a01000 t xfs_foo\t[xfs]\n0000000000000000 T hidden\n",
        )
        .unwrap();
        let map = SystemMap::load(&kallsyms).unwrap();
        assert_eq!(map.lookup(0xffffffffc0a01010), Some(("xfs_foo", 0x10)));

        let err = SystemMap::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, Error::ReadSymbolMap { .. }));
    }
}
