//! Kernel log classification: which reports in an iteration's dmesg are findings.
//!
//! Input is either /dev/kmsg records (what the guest helper collects) or raw console text (the
//! serial log, `dmesg` output), both reduced to the same stream of lines. A report starts at a header
//! line ("WARNING: CPU:", "BUG: KASAN:", "INFO: task ... blocked", "XFS (vdb): log I/O error", ...) and
//! runs through its body (registers, "Call Trace:" and frames, module list) to an explicit end
//! ("---[ end trace", the closing "====" of KASAN/UBSAN, the end of lockdep's stack backtrace), a
//! blank line, a crashrig marker, the next header or the first line that plainly belongs to
//! something else. Everything here is pure and synchronous.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use crashrig_guest::KmsgRecord;
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::signature::{normalize_text, signature};

/// What kind of kernel report a finding is. Serialized in kebab-case (`hung-task`, `fs-error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    Warning,
    Bug,
    Oops,
    Panic,
    Kasan,
    Lockdep,
    HungTask,
    RcuStall,
    SoftLockup,
    FsCorruption,
    FsError,
}

impl FindingKind {
    pub const ALL: [FindingKind; 11] = [
        FindingKind::Warning,
        FindingKind::Bug,
        FindingKind::Oops,
        FindingKind::Panic,
        FindingKind::Kasan,
        FindingKind::Lockdep,
        FindingKind::HungTask,
        FindingKind::RcuStall,
        FindingKind::SoftLockup,
        FindingKind::FsCorruption,
        FindingKind::FsError,
    ];

    /// The kebab-case name used in YAML, JSON and signatures.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Warning => "warning",
            FindingKind::Bug => "bug",
            FindingKind::Oops => "oops",
            FindingKind::Panic => "panic",
            FindingKind::Kasan => "kasan",
            FindingKind::Lockdep => "lockdep",
            FindingKind::HungTask => "hung-task",
            FindingKind::RcuStall => "rcu-stall",
            FindingKind::SoftLockup => "soft-lockup",
            FindingKind::FsCorruption => "fs-corruption",
            FindingKind::FsError => "fs-error",
        }
    }

    fn is_fs(self) -> bool {
        matches!(self, FindingKind::FsCorruption | FindingKind::FsError)
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FindingKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        FindingKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::UnknownKind(s.to_string()))
    }
}

/// One kernel report found in a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Finding {
    pub kind: FindingKind,
    /// The header line, without its timestamp.
    pub title: String,
    /// The whole report, header through the end of its trace, without timestamps.
    pub report: String,
    /// Reliable stack frames, innermost first: the faulting function (RIP/pc) when the report has
    /// one, then the first "Call Trace:" section; `? ` frames and `[inline]` entries are left out.
    /// For stalls, lockups and hung tasks only the task's own context counts: frames of an
    /// interrupt that ran on top of it are dropped and the interrupted RIP is used instead.
    pub frames: Vec<String>,
    /// Groups the same bug across builds and kernels; see [`signature`].
    pub signature: String,
    /// Caused by the scenario's own step (a shutdown, dm-error, power cut, sysrq panic), so not a
    /// kernel bug by itself.
    pub expected: bool,
    /// Microseconds since boot of the report's first line, when the log carried a timestamp.
    pub ts_us: Option<u64>,
    /// /dev/kmsg sequence number of the report's first line (None for console text).
    pub seq: Option<u64>,
}

/// What the scenario did to the kernel, so its own consequences are not reported as bugs.
#[derive(Debug, Clone, Default)]
pub struct ClassifyContext {
    /// The iteration shut the filesystem down, swapped in dm-error/dm-flakey, cut power or unplugged
    /// the disk: fs-error findings are kept but marked expected. Corruption never is. Default: false.
    pub expected_fs_errors: bool,
    /// The iteration panicked the guest on purpose (sysrq `c`): panic findings are marked expected.
    /// Default: false.
    pub expected_panic: bool,
    /// A line matching any of these never starts a finding.
    pub ignore: Vec<Regex>,
}

impl ClassifyContext {
    /// A context with the scenario's `dmesg.ignore` patterns compiled; flags default to false.
    pub fn with_ignore_patterns(patterns: &[String]) -> Result<ClassifyContext, Error> {
        let ignore = patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|source| Error::IgnorePattern {
                    pattern: p.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClassifyContext {
            ignore,
            ..ClassifyContext::default()
        })
    }
}

/// Classify /dev/kmsg records (multi-line records are split on '\n'; kmsg dictionary lines such as
/// " SUBSYSTEM=block" are dropped).
pub fn classify_records(records: &[KmsgRecord], ctx: &ClassifyContext) -> Vec<Finding> {
    let mut lines = Vec::new();
    for r in records {
        for (i, part) in r.text.split('\n').enumerate() {
            if i > 0 && DICT_LINE.is_match(part) {
                continue;
            }
            lines.push(Line {
                text: part.trim_end_matches('\r').to_string(),
                ts_us: Some(r.ts_us),
                seq: Some(r.seq),
            });
        }
    }
    classify_lines(&lines, ctx)
}

/// Classify raw console or `dmesg` text: `[    3.141593] ` timestamps (and `[ T123]` caller ids,
/// `<4>` level prefixes) are stripped, `\r` from serial consoles is ignored.
pub fn classify_console(text: &str, ctx: &ClassifyContext) -> Vec<Finding> {
    let lines: Vec<Line> = text.split('\n').map(console_line).collect();
    classify_lines(&lines, ctx)
}

/// Parse the stack frames of a report of `kind` (see [`Finding::frames`]). Exposed so a symbolized
/// report can be re-parsed.
pub fn parse_frames(report: &str, kind: FindingKind) -> Vec<String> {
    let lines: Vec<&str> = report.lines().collect();
    frames_of(&lines, kind)
}

#[derive(Debug, Clone)]
struct Line {
    text: String,
    ts_us: Option<u64>,
    seq: Option<u64>,
}

static DICT_LINE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^ [A-Z_]+=").unwrap());
static CONSOLE_TS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:<\d+>)?\[\s*(\d+)\.(\d+)\](?:\[\s*[A-Z]?\d+\])? ?").unwrap());

fn console_line(raw: &str) -> Line {
    let cleaned: String;
    let raw = if raw.contains('\r') {
        cleaned = raw.replace('\r', "");
        cleaned.as_str()
    } else {
        raw
    };
    if let Some(c) = CONSOLE_TS.captures(raw) {
        let secs: u64 = c[1].parse().unwrap_or(0);
        // The fraction is printed with 6 digits; normalize others to microseconds anyway.
        let frac = &c[2];
        let micros: u64 = format!("{frac:0<6}")[..6].parse().unwrap_or(0);
        return Line {
            text: raw[c.get(0).map_or(0, |m| m.end())..].to_string(),
            ts_us: Some(secs.saturating_mul(1_000_000).saturating_add(micros)),
            seq: None,
        };
    }
    Line {
        text: raw.to_string(),
        ts_us: None,
        seq: None,
    }
}

/// The console lines of a boot that came after its kernel log was last read: those stamped
/// later than `read_to` (microseconds since boot; every line when nothing was read), with the
/// unstamped lines that follow a kept one. What a guest printed between the last read of
/// /dev/kmsg and a power cut, reboot or panic reached only the console.
pub fn console_after(lines: &[String], read_to: Option<u64>) -> Vec<String> {
    let Some(read_to) = read_to else {
        return lines.to_vec();
    };
    let mut keep = false;
    lines
        .iter()
        .filter(|raw| {
            if let Some(ts) = console_line(raw).ts_us {
                keep = ts > read_to;
            }
            keep
        })
        .cloned()
        .collect()
}

/// How a report's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    /// Registers, traces and known report lines; a blank or unrelated line ends it.
    Plain,
    /// Free text with blank lines (KASAN, UBSAN, lockdep) until a closing `====` line (or, for
    /// lockdep, the end of its "stack backtrace:").
    Delimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Starts a report of its own.
    Lead,
    /// "Oops: ...", "invalid opcode": part of a preceding BUG report when one is open.
    OopsFollowup,
    /// "list_add corruption.": the WARNING or kernel BUG that follows belongs to it.
    Prelude,
}

struct Rule {
    re: Regex,
    kind: FindingKind,
    body: Body,
    role: Role,
}

fn rule(pattern: &str, kind: FindingKind, body: Body, role: Role) -> Rule {
    Rule {
        re: Regex::new(pattern).unwrap(),
        kind,
        body,
        role,
    }
}

/// Header rules, first match wins: specific lockdep and KASAN headers come before the generic
/// WARNING/BUG ones, I/O-flavoured fs messages before corruption ones.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    use Body::*;
    use FindingKind::*;
    use Role::*;
    vec![
        // lockdep (its headers say WARNING but it is not a WARN())
        rule(
            r"^WARNING: possible (?:circular locking dependency|recursive locking|irq lock inversion dependency) detected",
            Lockdep,
            Delimited,
            Lead,
        ),
        rule(
            r"^WARNING: (?:inconsistent lock state|bad unlock balance detected|held lock freed|lock held when returning to user space|suspicious RCU usage|Nested lock was not taken|possible irq lock inversion)",
            Lockdep,
            Delimited,
            Lead,
        ),
        rule(
            r"^WARNING: (?:HARD|SOFT)IRQ-(?:safe|READ-safe) -> (?:HARD|SOFT)IRQ-(?:unsafe|READ-unsafe) lock order detected",
            Lockdep,
            Delimited,
            Lead,
        ),
        rule(
            r"^\[ INFO: (?:possible (?:circular|recursive) locking|inconsistent lock state)",
            Lockdep,
            Delimited,
            Lead,
        ),
        // memory-safety detectors
        rule(r"^BUG: KASAN: ", Kasan, Delimited, Lead),
        rule(r"^UBSAN: ", Bug, Delimited, Lead),
        // stalls and lockups
        rule(
            r"^INFO: task .+ blocked for more than \d+ seconds",
            HungTask,
            Plain,
            Lead,
        ),
        rule(
            r"^(?:rcu: )?INFO: rcu_\w+ (?:self-detected stall|detected (?:expedited )?stalls?)",
            RcuStall,
            Plain,
            Lead,
        ),
        rule(
            r"^(?:NMI )?watchdog: (?:BUG: soft lockup|Watchdog detected hard LOCKUP)",
            SoftLockup,
            Plain,
            Lead,
        ),
        rule(r"^BUG: soft lockup", SoftLockup, Plain, Lead),
        rule(r"^Kernel panic - not syncing", Panic, Plain, Lead),
        // BUGs and oopses
        rule(r"^list_\w+ corruption", Bug, Plain, Prelude),
        rule(r"^BUG: ", Bug, Plain, Lead),
        rule(r"^kernel BUG at ", Bug, Plain, Lead),
        rule(
            r"^Unable to handle kernel (?:NULL pointer dereference|paging request)",
            Bug,
            Plain,
            Lead,
        ),
        rule(
            r"^(?:Oops|Internal error: Oops)\b",
            Oops,
            Plain,
            OopsFollowup,
        ),
        rule(
            r"^(?:general protection fault|invalid opcode|stack segment|double fault): ",
            Oops,
            Plain,
            OopsFollowup,
        ),
        rule(r"^general protection fault, ", Oops, Plain, OopsFollowup),
        // WARN()
        rule(
            r"^WARNING: (?:CPU: \d+ |at |[\w./-]+:\d+ at )",
            Warning,
            Plain,
            Lead,
        ),
        // corruption that the I/O rules below would otherwise take: XFS reports a failed metadata
        // verifier as a "metadata I/O error" with EFSCORRUPTED (117) or EFSBADCRC (74), and shuts
        // down for corruption with the same "Shutting down filesystem" tail as for an I/O error;
        // btrfs names EUCLEAN "Filesystem corrupted" in its generic error line.
        rule(
            r"^XFS \([^)]*\): (?:metadata I/O error.* error (?:117|74)\b|Corruption of (?:in-memory data|on-disk metadata))",
            FsCorruption,
            Plain,
            Lead,
        ),
        rule(
            r"^BTRFS: error \(device [^)]*\).*errno=-117\b",
            FsCorruption,
            Plain,
            Lead,
        ),
        // filesystem I/O errors and shutdowns (before corruption: "error -5" beats "EXT4-fs error")
        rule(
            r"^XFS \([^)]*\): (?:log I/O error|Log I/O [Ee]rror|Filesystem has been shut down|xfs_do_force_shutdown|Please u[n]?mount the filesystem|metadata I/O error.* error 5\b|metadata I/O error in|I/O Error Detected|User initiated shutdown|writeback error|page discard|xfs_log_force: error|Failing async write|log mount/recovery failed: error -5\b)",
            FsError,
            Plain,
            Lead,
        ),
        rule(
            r"^XFS \([^)]*\): .*Shutting down filesystem",
            FsError,
            Plain,
            Lead,
        ),
        rule(
            r"^EXT4-fs (?:error \(device [^)]*\)(?: in \S+)?|warning \(device [^)]*\)|\([^)]*\)): .*(?:shut down|shutdown|I/O error|Remounting filesystem read-only|Delayed block allocation failed|failed to convert unwritten extents|previous I/O error|This should not happen!! Data will be lost|Detected aborted journal|reading directory lblock|error -5\b|errno=-5|Couldn't clean up the journal|\bIO failure$|\bJournal has aborted$|Cannot read (?:block|inode) bitmap|unable to read itable block|IO error syncing inode)",
            FsError,
            Plain,
            Lead,
        ),
        rule(
            r"^(?:JBD2: .*(?:[Ee]rror|I/O|abort)|Aborting journal on device)",
            FsError,
            Plain,
            Lead,
        ),
        rule(
            r"^BTRFS (?:error|warning|info) \(device [^)]*\): (?:bdev .* errs:|.*forced readonly|.*Skipping commit of aborted transaction|.*IO failure|.*errno=-5)",
            FsError,
            Plain,
            Lead,
        ),
        rule(r"^BTRFS: error \(device [^)]*\)", FsError, Plain, Lead),
        rule(
            r"^(?:Buffer I/O error on (?:dev|device) |lost page write due to I/O error)",
            FsError,
            Plain,
            Lead,
        ),
        rule(r"^(?:[\w-]+: )?I/O error, dev \S+", FsError, Plain, Lead),
        rule(
            r"^(?:blk_update_request|print_req_error|blk_print_req_error): .*I/O error",
            FsError,
            Plain,
            Lead,
        ),
        // filesystem corruption
        rule(
            r"^XFS(?: \([^)]*\))?: (?:Corruption detected|Metadata corruption detected|Corruption of in-memory data|Internal error|Corruption warning|Metadata CRC error detected|metadata I/O error.* error 117\b|.*Structure needs cleaning)",
            FsCorruption,
            Plain,
            Lead,
        ),
        rule(
            r"^EXT4-fs error \(device [^)]*\)",
            FsCorruption,
            Plain,
            Lead,
        ),
        rule(r"^BTRFS critical", FsCorruption, Plain, Lead),
        rule(
            r"^BTRFS (?:error|warning) \(device [^)]*\): .*(?:corrupt|bad tree block|csum mismatch|checksum verify failed|level verify failed|parent transid verify failed|csum failed)",
            FsCorruption,
            Plain,
            Lead,
        ),
        rule(r"^BTRFS error \(device [^)]*\)", FsError, Plain, Lead),
        rule(r"Structure needs cleaning", FsCorruption, Plain, Lead),
    ]
});

/// Lines that belong to an open report's body (registers, trace markers, report boilerplate).
static BODY_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:\s",
        r"|Modules linked in|CPU: |CPU#|Hardware name:|Workqueue:|Call [Tt]race:|Tainted: |Not tainted",
        r"|(?:E?RIP|IP|RSP|EFLAGS|ORIG_RAX|Code|FS|GS|CS|DS|ES|PKRU|CR\d|DR\d|R[A-Z0-9]{1,2}|E[A-Z]{2}|PC|NIP|LR|MSR)[: ]",
        r"|---\[ end |Kernel Offset:|irq event stamp:|hardirqs last|softirqs last|#PF: |PGD |P4D |PUD |PMD ",
        r"|task:|Pid: |task: |.echo 0 > /proc/sys/kernel/hung_task_timeout_secs|\S+ +D +(?:[0-9a-f]{8,16} +)?\d+ +\d+",
        r"|in_atomic\(\)|preempt_count:|RCU nest depth|Preemption disabled at:|INFO: lockdep is turned off",
        r"|\d+ locks? held by|Showing all locks held|no locks held by|</?(?:TASK|IRQ|NMI|EOI|SOFTIRQ)>",
        r"|Sending NMI from CPU|NMI backtrace for cpu|INFO: NMI handler|rcu: |\(t=\d+ jiffies|Task dump for CPU",
        r"|pstate: |pc : |lr : |sp : |x\d+ *: |Internal error: |Mem abort info:|Data abort info:|ESR = ",
        r"|user pgtable:|\[[0-9a-f]{16}\] pgd=|Stack:|Process \S+ \(pid|KASAN: |caller is |stack backtrace:",
        r"|Disabling lock debugging|turning off the locking correctness validator|Dumping ftrace",
        r"|\[<[0-9a-f]+>\]",
        r")"
    ))
    .unwrap()
});

static CUT_HERE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-+\[ cut here \]-+\s*$").unwrap());
static SEPARATOR: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^={20,}\s*$").unwrap());
static END_TRACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-+\[ end (?:trace|Kernel panic)").unwrap());
static HEX_DUMP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9a-f]{8}: [0-9a-f]{2} ").unwrap());
static FS_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(XFS) \(([^)]+)\)|(EXT4)-fs (?:error |warning )?\((?:device )?([^)]+)\)|(BTRFS) \w+ \(device ([^)]+)\)|(BTRFS): error \(device ([^)]+)\))").unwrap()
});
static MARKER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^crashrig:").unwrap());

/// At most this many lines after a "cut here" may precede its header (WARN() messages print there).
const CUT_WINDOW: usize = 4;
/// An "Oops:" line this close to a BUG header belongs to it.
const OOPS_WINDOW: usize = 12;
/// Free-text reports without their closing line stop here rather than swallow the rest of the log.
const MAX_DELIMITED_LINES: usize = 400;

static ABORTING_JOURNAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^Aborting journal on device (\S+)-\d+").unwrap());

/// Which filesystem and device a message is about ("XFS/vdb"), to tell one fs event from another.
fn fs_key(text: &str) -> Option<String> {
    // jbd2 names the journal "<dev>-<inode>"; it aborts as part of an ext4 shutdown or error.
    if let Some(c) = ABORTING_JOURNAL.captures(text) {
        return Some(format!("EXT4/{}", &c[1]));
    }
    let c = FS_PREFIX.captures(text)?;
    let mut parts = c.iter().skip(1).flatten().map(|m| m.as_str());
    let fs = parts.next()?;
    let dev = parts.next()?;
    Some(format!("{fs}/{dev}"))
}

fn match_header(text: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.re.is_match(text))
}

/// A line that introduces the report after it.
#[derive(Debug, Clone, Copy)]
enum Opener {
    /// `------------[ cut here ]------------`: WARN() messages may sit between it and the header.
    CutHere(usize),
    /// A `====` line right before a KASAN, UBSAN or lockdep header.
    Separator(usize),
}

struct Open {
    kind: FindingKind,
    body: Body,
    role: Role,
    start: usize,
    header: usize,
    end: usize,
    fs_key: Option<String>,
    /// The header normalized for grouping, to merge bursts of one fs message.
    header_norm: String,
}

fn classify_lines(lines: &[Line], ctx: &ClassifyContext) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut open: Option<Open> = None;
    let mut pending: Option<Opener> = None;

    for (i, line) in lines.iter().enumerate() {
        let text = line.text.as_str();

        if MARKER.is_match(text) {
            close(&mut open, lines, ctx, &mut out);
            pending = None;
            continue;
        }

        if CUT_HERE.is_match(text) {
            if let Some(o) = open.as_mut() {
                if o.role == Role::Prelude && i - o.header <= 2 {
                    o.end = i;
                    continue;
                }
            }
            close(&mut open, lines, ctx, &mut out);
            pending = Some(Opener::CutHere(i));
            continue;
        }

        let ignored = ctx.ignore.iter().any(|re| re.is_match(text));
        let header = if ignored { None } else { match_header(text) };

        if let Some(rule) = header {
            if let Some(o) = open.as_mut() {
                if absorbs(o, rule, i, text) {
                    o.end = i;
                    continue;
                }
            }
            close(&mut open, lines, ctx, &mut out);
            let start = match pending.take() {
                Some(Opener::CutHere(p)) if i - p <= CUT_WINDOW => p,
                Some(Opener::Separator(p)) if i - p == 1 => p,
                _ => i,
            };
            open = Some(Open {
                kind: rule.kind,
                body: rule.body,
                role: rule.role,
                start,
                header: i,
                end: i,
                fs_key: fs_key(text),
                header_norm: if rule.kind.is_fs() {
                    normalize_text(text)
                } else {
                    String::new()
                },
            });
            continue;
        }

        let Some(o) = open.as_mut() else {
            if SEPARATOR.is_match(text) {
                pending = Some(Opener::Separator(i));
            } else if matches!(pending, Some(Opener::Separator(_))) {
                pending = None;
            }
            continue;
        };

        match continues(o, lines, i) {
            Continue::Yes => o.end = i,
            Continue::Last => {
                o.end = i;
                close(&mut open, lines, ctx, &mut out);
            }
            Continue::No => {
                close(&mut open, lines, ctx, &mut out);
                if SEPARATOR.is_match(text) {
                    pending = Some(Opener::Separator(i));
                }
            }
        }
    }
    close(&mut open, lines, ctx, &mut out);
    out
}

/// Whether header `h` on line `i` is part of the open report rather than a new one.
fn absorbs(o: &Open, rule: &Rule, i: usize, text: &str) -> bool {
    match (o.role, rule.role) {
        // list corruption message, then the WARNING or kernel BUG it triggers
        (Role::Prelude, _) if i - o.header <= CUT_WINDOW + 2 => {
            matches!(
                rule.kind,
                FindingKind::Warning | FindingKind::Bug | FindingKind::Oops
            )
        }
        // "BUG: kernel NULL pointer dereference" ... "Oops: 0000 [#1] SMP"
        (_, Role::OopsFollowup) => {
            matches!(o.kind, FindingKind::Bug) && i - o.header <= OOPS_WINDOW
        }
        _ if o.kind.is_fs() && rule.kind == o.kind => {
            // Consecutive messages of one fs event (same device, same kind) are one finding, and so
            // is a burst of the same message ("Buffer I/O error on dev ..." per block).
            (o.fs_key.is_some() && o.fs_key == fs_key(text))
                || normalize_text(text) == o.header_norm
        }
        _ => false,
    }
}

enum Continue {
    Yes,
    /// Part of the report and its last line.
    Last,
    No,
}

fn continues(o: &mut Open, lines: &[Line], i: usize) -> Continue {
    let text = lines[i].text.as_str();
    if END_TRACE.is_match(text) {
        return Continue::Last;
    }
    if SEPARATOR.is_match(text) {
        return if o.body == Body::Delimited {
            Continue::Last
        } else {
            Continue::No
        };
    }
    if o.body == Body::Delimited {
        if i - o.start >= MAX_DELIMITED_LINES || fs_key(text).is_some() {
            return Continue::No;
        }
        // lockdep ends with an ordinary stack dump; from there on it reads like any other report.
        if o.kind == FindingKind::Lockdep && text.trim() == "stack backtrace:" {
            o.body = Body::Plain;
        }
        return Continue::Yes;
    }
    if text.trim().is_empty() {
        // A blank line inside a report (old kernels print one after the module list) is kept only
        // when the report visibly goes on after it.
        let next = lines[i + 1..].iter().find(|l| !l.text.trim().is_empty());
        return match next {
            Some(n) if match_header(&n.text).is_none() && body_line(o, &n.text) => Continue::Yes,
            _ => Continue::No,
        };
    }
    if body_line(o, text) {
        Continue::Yes
    } else {
        Continue::No
    }
}

fn body_line(o: &Open, text: &str) -> bool {
    if o.kind.is_fs() {
        if HEX_DUMP.is_match(text) {
            return true;
        }
        if let Some(k) = fs_key(text) {
            return o.fs_key.as_deref() == Some(k.as_str());
        }
    } else if fs_key(text).is_some() {
        return false;
    }
    BODY_LINE.is_match(text)
}

fn close(open: &mut Option<Open>, lines: &[Line], ctx: &ClassifyContext, out: &mut Vec<Finding>) {
    let Some(o) = open.take() else { return };
    let mut end = o.end;
    while end > o.header && lines[end].text.trim().is_empty() {
        end -= 1;
    }
    let span = &lines[o.start..=end];
    let texts: Vec<&str> = span.iter().map(|l| l.text.as_str()).collect();
    let title = lines[o.header].text.trim().to_string();
    let frames = frames_of(&texts, o.kind);
    let expected = match o.kind {
        FindingKind::FsError => ctx.expected_fs_errors,
        FindingKind::Panic => ctx.expected_panic,
        _ => false,
    };
    out.push(Finding {
        kind: o.kind,
        signature: signature(o.kind, &title, &frames),
        title,
        report: texts.join("\n"),
        frames,
        expected,
        ts_us: span[0].ts_us,
        seq: span[0].seq,
    });
}

static CALL_TRACE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\s*Call [Tt]race:").unwrap());
static FAULT_IP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(?:RIP|EIP|IP|pc|NIP)\s*:").unwrap());
static SYMBOL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+").unwrap());
static TRACE_MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^</?(?:TASK|IRQ|NMI|EOI|SOFTIRQ)>\s*").unwrap());
static FRAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:\[<[0-9a-f]+>\]\s*)?(\?\s+)?([A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+(?:/0x[0-9a-f]+)?",
    )
    .unwrap()
});
static INLINE_FRAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:\?\s+)?[A-Za-z_][\w.]*\s+\S+:\d+\s+\[inline\]").unwrap());
static BARE_ADDRESS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:\?\s+)?(?:\[<[0-9a-f]+>\]|0x[0-9a-f]+)\s*(?:\?\s*)?$").unwrap()
});
static REGISTER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:[A-Z][A-Z0-9]{1,4}|Code):\s").unwrap());
static CLONE_SUFFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:\.(?:part|isra|constprop|cold|llvm|lto_priv|localalias|specialized)(?:\.\d+)?)+$",
    )
    .unwrap()
});

/// Strip compiler clone suffixes (`.part.0`, `.isra.0`, `.constprop.0`, `.cold`): the same function
/// gets different ones from build to build.
pub(crate) fn normalize_function(name: &str) -> String {
    CLONE_SUFFIX.replace(name, "").into_owned()
}

const MAX_FRAMES: usize = 64;

fn frames_of(lines: &[&str], kind: FindingKind) -> Vec<String> {
    // Stalls and lockups are about what the task was doing; a timer or backtrace interrupt that
    // happened to run on top of it is noise. Everything else may well be a bug in an interrupt.
    let task_only = matches!(
        kind,
        FindingKind::RcuStall | FindingKind::SoftLockup | FindingKind::HungTask
    );

    // The faulting function: the first kernel RIP/pc line before the trace (old kernels print it
    // after). User-space RIPs have no symbol.
    let fault_ip = |lines: &mut dyn Iterator<Item = &&str>| {
        lines
            .filter(|l| FAULT_IP.is_match(l))
            .find_map(|l| SYMBOL.captures(l))
            .map(|c| normalize_function(&c[1]))
    };
    let fault = fault_ip(&mut lines.iter().take_while(|l| !CALL_TRACE.is_match(l)))
        .or_else(|| fault_ip(&mut lines.iter()));

    let mut entries: Vec<(String, bool)> = Vec::new();
    if let Some(at) = lines.iter().position(|l| CALL_TRACE.is_match(l)) {
        let mut in_irq = false;
        for raw in &lines[at + 1..] {
            let mut l = raw.trim_start();
            if let Some(m) = TRACE_MARKER.find(l) {
                let marker = m.as_str().trim_end();
                if marker == "</TASK>" {
                    break;
                }
                in_irq = matches!(marker, "<IRQ>" | "<NMI>" | "<SOFTIRQ>");
                l = &l[m.end()..];
                if l.is_empty() {
                    continue;
                }
            }
            if l.is_empty() {
                break;
            }
            if REGISTER.is_match(l) {
                // An interrupted context's registers: its RIP is where the task was.
                if task_only && !in_irq && FAULT_IP.is_match(l) {
                    if let Some(c) = SYMBOL.captures(l) {
                        entries.push((normalize_function(&c[1]), false));
                    }
                }
                continue;
            }
            if INLINE_FRAME.is_match(l) || BARE_ADDRESS.is_match(l) {
                continue;
            }
            let Some(c) = FRAME.captures(l) else { break };
            if c.get(1).is_none() {
                entries.push((normalize_function(&c[2]), in_irq));
            }
            if entries.len() >= MAX_FRAMES {
                break;
            }
        }
    }

    let fault_in_irq = entries.iter().any(|(_, irq)| *irq);
    let mut frames: Vec<String> = Vec::new();
    if let Some(f) = fault.filter(|_| !(task_only && fault_in_irq)) {
        frames.push(f);
    }
    for (i, (name, irq)) in entries.into_iter().enumerate() {
        if task_only && irq {
            continue;
        }
        // arm64 prints the faulting pc again as the first frame of its trace.
        if i == 0 && frames.len() == 1 && frames[0] == name {
            continue;
        }
        frames.push(name);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/dmesg/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    fn ctx() -> ClassifyContext {
        ClassifyContext::default()
    }

    fn summary(f: &[Finding]) -> Vec<(FindingKind, &str, bool)> {
        f.iter()
            .map(|f| (f.kind, f.signature.as_str(), f.expected))
            .collect()
    }

    #[test]
    fn console_after_keeps_what_the_last_read_missed() {
        let lines: Vec<String> = [
            "[    4.223534] WARNING: CPU: 0 PID: 1 at fs/ext4/gap.c:4 gap_probe_4+0x1/0x2",
            "[    4.241439] crashrig: iteration 2 step 3 dmesg",
            "[    4.250022] WARNING: CPU: 0 PID: 1 at fs/ext4/gap.c:6 gap_probe_6+0x1/0x2",
            "  continuation of the line before",
            "[    4.3] sysrq: Resetting",
        ]
        .map(String::from)
        .to_vec();
        // The read reached the marker: the warning before it was read, the one after was not.
        assert_eq!(console_after(&lines, Some(4_241_439)), lines[2..].to_vec());
        // A record stamped exactly like a console line was read with it.
        assert_eq!(console_after(&lines, Some(4_250_022)), lines[4..].to_vec());
        assert_eq!(console_after(&lines, Some(9_000_000)), Vec::<String>::new());
        // Nothing read from this boot: all of it.
        assert_eq!(console_after(&lines, None), lines);
    }

    #[test]
    fn warning_trace_x86_console() {
        let f = classify_console(&fixture("xfs-warning-delalloc-x86.log"), &ctx());
        assert_eq!(f.len(), 1, "{f:#?}");
        let w = &f[0];
        assert_eq!(w.kind, FindingKind::Warning);
        assert_eq!(
            w.title,
            "WARNING: CPU: 14 PID: 21913 at fs/xfs/libxfs/xfs_bmap.c:4510 xfs_bmapi_convert_delalloc+0x221/0x4e0"
        );
        assert_eq!(
            w.signature,
            "warning: xfs_bmapi_convert_delalloc (fs/xfs/libxfs/xfs_bmap.c)"
        );
        // The report starts at "cut here", carries that line's time, and ends at "end trace".
        assert_eq!(w.ts_us, Some(647_356_969));
        assert_eq!(w.seq, None);
        assert!(w
            .report
            .starts_with("------------[ cut here ]------------\nWARNING: CPU: 14"));
        assert!(w.report.ends_with("---[ end trace 0000000000000000 ]---"));
        assert!(!w.report.contains("[  647."), "timestamps stripped");
        assert_eq!(
            &w.frames[..5],
            [
                "xfs_bmapi_convert_delalloc",
                "xfs_map_blocks",
                "iomap_do_writepage",
                "write_cache_pages",
                "iomap_writepages"
            ]
        );
        assert!(
            !w.frames.iter().any(|f| f == "_raw_spin_unlock_irqrestore"),
            "? frames dropped"
        );
        assert_eq!(w.frames.last().unwrap(), "entry_SYSCALL_64_after_hwframe");
        assert!(!w.expected);
    }

    #[test]
    fn warning_trace_arm64_syzbot_with_fs_messages_after() {
        let f = classify_console(&fixture("xfs-warning-delalloc-arm64-syzbot.log"), &ctx());
        assert_eq!(
            summary(&f),
            [
                (
                    FindingKind::Warning,
                    "warning: xfs_bmapi_convert_delalloc (fs/xfs/libxfs/xfs_bmap.c)",
                    false
                ),
                (
                    FindingKind::FsError,
                    "fs-error: XFS (DEV): page discard on page X, inode 0xX, pos N.",
                    false
                ),
            ]
        );
        let w = &f[0];
        // pc, then the trace without its repeated first frame and without [inline] entries.
        assert_eq!(
            &w.frames[..3],
            [
                "xfs_bmapi_convert_delalloc",
                "xfs_map_blocks",
                "iomap_writepage_map"
            ]
        );
        assert!(!w.frames.iter().any(|f| f == "xfs_convert_blocks"));
        assert!(w.report.contains("hardirqs last  enabled"));
        assert!(w.report.ends_with("---[ end trace 0000000000000000 ]---"));
        // Both page-discard lines are one fs event.
        assert_eq!(f[1].report.lines().count(), 2);
    }

    #[test]
    fn null_deref_oops_is_one_bug() {
        let f = classify_console(&fixture("ntfs3-null-deref-mount.log"), &ctx());
        assert_eq!(
            summary(&f),
            [(FindingKind::Bug, "bug: ni_find_attr", false)]
        );
        let b = &f[0];
        assert_eq!(
            b.title,
            "BUG: kernel NULL pointer dereference, address: 0000000000000158"
        );
        assert!(b.report.contains("Oops: 0000 [#1] PREEMPT SMP NOPTI"));
        assert_eq!(
            &b.frames[..4],
            [
                "ni_find_attr",
                "attr_load_runs_vcn",
                "mi_read",
                "ntfs_iget5"
            ]
        );
        assert!(!b.frames.contains(&"ntfs_alloc_inode".to_string()));
        assert_eq!(b.ts_us, Some(318_675_159));
        // The register dump repeated after "end trace" and the stack-depth note are not part of it.
        assert!(b.report.ends_with("---[ end trace 0000000000000000 ]---"));
    }

    #[test]
    fn page_fault_then_panic_with_fstests_output_interleaved() {
        let text = fixture("f2fs-page-fault-panic-fstests.log");
        let f = classify_console(&text, &ctx());
        assert_eq!(
            summary(&f),
            [
                (FindingKind::Bug, "bug: f2fs_free_filename", false),
                (FindingKind::Panic, "panic: Fatal exception", false),
            ]
        );
        assert_eq!(f[0].frames[0], "kmem_cache_free");
        assert_eq!(f[1].title, "Kernel panic - not syncing: Fatal exception");
        assert!(f[1].report.contains("Kernel Offset: 0x2a00000"));

        let expected_panic = ClassifyContext {
            expected_panic: true,
            ..ctx()
        };
        let f = classify_console(&text, &expected_panic);
        assert_eq!(
            f.iter().map(|f| f.expected).collect::<Vec<_>>(),
            [false, true],
            "only the panic is expected, never the BUG"
        );
    }

    #[test]
    fn xfs_shutdown_sequence_then_kasan() {
        let text = fixture("xfs-generic475-shutdown-kasan.log");
        let f = classify_console(&text, &ctx());
        assert_eq!(
            summary(&f),
            [
                (
                    FindingKind::FsError,
                    "fs-error: Buffer I/O error on dev DEV, logical block N, async page read",
                    false
                ),
                (
                    FindingKind::FsError,
                    "fs-error: XFS (DEV): log I/O error -N",
                    false
                ),
                (
                    FindingKind::Kasan,
                    "kasan: xlog_force_shutdown (use-after-free)",
                    false
                ),
            ]
        );
        // Two identical buffer errors in a row are one finding; the shutdown messages are one event.
        assert_eq!(f[0].report.lines().count(), 2);
        assert_eq!(
            f[1].report,
            "XFS (dm-0): log I/O error -5\n\
             XFS (dm-0): Filesystem has been shut down due to log error (0x2).\n\
             XFS (dm-0): Unmounting Filesystem\n\
             XFS (dm-0): Please unmount the filesystem and rectify the problem(s)."
        );
        // KASAN keeps its blank lines and allocation/free stacks, starts at its "====" line.
        let k = &f[2];
        assert!(k.report.starts_with("=====") && k.report.contains("\nFreed by task 154151:\n"));
        assert_eq!(
            &k.frames[..5],
            [
                "dump_stack_lvl",
                "print_report",
                "kasan_report",
                "do_raw_spin_lock",
                "xlog_force_shutdown"
            ]
        );
        assert!(!k.frames.contains(&"kasan_save_stack".to_string()));

        let shutdown = ClassifyContext {
            expected_fs_errors: true,
            ..ctx()
        };
        let f = classify_console(&text, &shutdown);
        assert_eq!(
            f.iter().map(|f| (f.kind, f.expected)).collect::<Vec<_>>(),
            [
                (FindingKind::FsError, true),
                (FindingKind::FsError, true),
                (FindingKind::Kasan, false)
            ]
        );
    }

    #[test]
    fn xfs_recovery_corruption_is_not_expected_even_after_a_shutdown() {
        let text = fixture("xfs-generic388-recovery-corruption.log");
        let shutdown = ClassifyContext {
            expected_fs_errors: true,
            ..ctx()
        };
        let f = classify_console(&text, &shutdown);
        assert_eq!(
            summary(&f),
            [
                (
                    FindingKind::FsCorruption,
                    "fs-corruption: XFS (DEV): Internal error Bad dinode after recovery at line N of file fs/xfs/xfs_inode_item_recover.c. Caller xlog_recover_items_pass2",
                    false
                ),
                (
                    FindingKind::FsError,
                    "fs-error: XFS (DEV): Filesystem has been shut down due to log error (0xX).",
                    true
                ),
            ]
        );
        let c = &f[0];
        // The stack dump and the two corruption messages after it belong to the internal error.
        assert_eq!(c.frames[1], "xfs_corruption_error");
        assert!(c.report.ends_with("inode 0x427b2d1"));
        assert!(f[1].report.ends_with("XFS (sda4): log mount failed"));
    }

    #[test]
    fn hung_tasks_are_separate_findings() {
        let f = classify_console(&fixture("xfs-hung-task-syzbot.log"), &ctx());
        assert_eq!(
            summary(&f),
            [
                (FindingKind::HungTask, "hung-task: xfs_buf_lock", false),
                (
                    FindingKind::HungTask,
                    "hung-task: xlog_wait_on_iclog",
                    false
                ),
            ]
        );
        assert_eq!(
            f[0].title,
            "INFO: task kworker/0:1H:43 blocked for more than 143 seconds."
        );
        assert!(f[0].report.ends_with(" </TASK>"));
        assert!(f[1]
            .report
            .contains("Showing all locks held in the system:"));
        assert!(!f[1].report.contains("====="));
    }

    #[test]
    fn lockdep_splat_is_one_finding() {
        let f = classify_console(&fixture("xfs-lockdep-circular-syzbot.log"), &ctx());
        assert_eq!(
            summary(&f),
            [(
                FindingKind::Lockdep,
                "lockdep: xfs_icwalk_ag (circular locking dependency)",
                false
            )]
        );
        let l = &f[0];
        assert_eq!(
            l.title,
            "WARNING: possible circular locking dependency detected"
        );
        assert!(l
            .report
            .starts_with("======================================================\n"));
        assert!(l.report.contains("\n *** DEADLOCK ***\n"));
        assert!(l.report.ends_with(" </TASK>"));
        // Frames come from the final stack backtrace, not from the dependency chain listings.
        assert_eq!(&l.frames[..2], ["dump_stack_lvl", "check_noncircular"]);
    }

    #[test]
    fn rcu_stall_then_soft_lockup_use_the_task_context() {
        let f = classify_console(&fixture("rcu-stall-soft-lockup-syzbot.log"), &ctx());
        assert_eq!(
            summary(&f),
            [
                (FindingKind::RcuStall, "rcu-stall: kauditd_hold_skb", false),
                (
                    FindingKind::SoftLockup,
                    "soft-lockup: smp_call_function_many_cond",
                    false
                ),
            ]
        );
        let stall = &f[0];
        // The NMI backtrace ran in an interrupt on top of kauditd: its frames are not the stall's;
        // the interrupted RIP (printk flushing the console) is.
        assert_eq!(
            &stall.frames[..3],
            [
                "asm_sysvec_apic_timer_interrupt",
                "console_flush_all",
                "console_unlock"
            ]
        );
        assert!(!stall.frames.iter().any(|f| f == "advance_sched"));
        // The whole stall report, including the starved kthread's stack, is one finding.
        assert!(stall
            .report
            .contains("\nrcu: RCU grace-period kthread stack dump:\n"));
        assert!(stall.report.ends_with(" </TASK>"));
        let lockup = &f[1];
        assert_eq!(
            &lockup.frames[..3],
            [
                "write_comp_data",
                "smp_call_function_many_cond",
                "on_each_cpu_cond_mask"
            ]
        );
        // The same trace parsed as an oops keeps interrupt frames.
        let as_oops = parse_frames(&stall.report, FindingKind::Oops);
        assert_eq!(&as_oops[..2], ["write_comp_data", "advance_sched"]);
    }

    #[test]
    fn kmsg_records_give_seq_and_time_and_drop_dictionary_lines() {
        let text = fixture("xfs-warning-delalloc-x86.log");
        let records: Vec<KmsgRecord> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                let line = console_line(l);
                KmsgRecord {
                    seq: 1000 + i as u64,
                    ts_us: line.ts_us.unwrap(),
                    level: 4,
                    text: line.text,
                }
            })
            .collect();
        let f = classify_records(&records, &ctx());
        let console = classify_console(&text, &ctx());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].seq, Some(1000));
        assert_eq!(f[0].ts_us, Some(647_356_969));
        assert_eq!(f[0].report, console[0].report);
        assert_eq!(f[0].signature, console[0].signature);

        // A multi-line record with kmsg dictionary lines after the message.
        let rec = KmsgRecord {
            seq: 7,
            ts_us: 5,
            level: 3,
            text: "Buffer I/O error on dev vdb, logical block 3, async page read\n SUBSYSTEM=block\n DEVICE=b254:16".into(),
        };
        let f = classify_records(&[rec], &ctx());
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].report,
            "Buffer I/O error on dev vdb, logical block 3, async page read"
        );
    }

    #[test]
    fn console_lines_with_carriage_returns_and_caller_ids() {
        let text = "[   51.512345][ T5021] ------------[ cut here ]------------\r\n\
                    [   51.512400][ T5021] WARNING: CPU: 1 PID: 5021 at fs/namespace.c:1309 cleanup_mnt+0x133/0x140\r\n\
                    [   51.512500][ T5021] Modules linked in:\r\n\
                    [   51.512600][ T5021] ---[ end trace 0000000000000000 ]---\r\n";
        let f = classify_console(text, &ctx());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].signature, "warning: cleanup_mnt (fs/namespace.c)");
        assert_eq!(f[0].ts_us, Some(51_512_345));
        assert!(!f[0].report.contains('\r'));
        assert_eq!(f[0].report.lines().count(), 4);
    }

    #[test]
    fn ignore_patterns_and_markers_never_produce_findings() {
        let text = "crashrig: step 3 umount WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2\n\
                    XFS (vdb): log I/O error -5\n\
                    crashrig: step 4 mount\n\
                    XFS (vdb): Please unmount the filesystem and rectify the problem(s).\n\
                    INFO: task umount:99 blocked for more than 120 seconds.\n";
        let f = classify_console(text, &ctx());
        assert_eq!(
            f.iter().map(|f| f.title.as_str()).collect::<Vec<_>>(),
            [
                "XFS (vdb): log I/O error -5",
                "XFS (vdb): Please unmount the filesystem and rectify the problem(s).",
                "INFO: task umount:99 blocked for more than 120 seconds."
            ],
            "a marker ends the report before it"
        );
        let ctx = ClassifyContext::with_ignore_patterns(&["blocked for more than".into()]).unwrap();
        let f = classify_console(text, &ctx);
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|f| f.kind == FindingKind::FsError));
    }

    #[test]
    fn bad_ignore_pattern_is_an_error() {
        let err = ClassifyContext::with_ignore_patterns(&["ok".into(), "(".into()]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("compile dmesg ignore pattern `(`"),
            "{err}"
        );
    }

    #[test]
    fn header_table() {
        // (line, kind): one line of each recognized report header.
        let table = [
            ("WARNING: CPU: 1 PID: 42 at fs/xfs/xfs_log.c:1234 xlog_foo+0x12/0x40 [xfs]", FindingKind::Warning),
            ("WARNING: fs/xfs/xfs_log.c:1234 at xlog_foo+0x12/0x40, CPU#1: kworker/1:1/42", FindingKind::Warning),
            ("BUG: kernel NULL pointer dereference, address: 0000000000000008", FindingKind::Bug),
            ("BUG: unable to handle page fault for address: ffffed1000000000", FindingKind::Bug),
            ("BUG: unable to handle kernel NULL pointer dereference at (null)", FindingKind::Bug),
            ("kernel BUG at fs/xfs/xfs_message.c:102!", FindingKind::Bug),
            ("BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580", FindingKind::Bug),
            ("UBSAN: array-index-out-of-bounds in fs/xfs/libxfs/xfs_dir2.c:12:3", FindingKind::Bug),
            ("list_add corruption. prev->next should be next (ffff888012345678), but was 0000000000000000.", FindingKind::Bug),
            ("BUG: KASAN: slab-use-after-free in xfs_inode_item_push+0x2a/0x60", FindingKind::Kasan),
            ("Oops: general protection fault, probably for non-canonical address 0xdffffc0000000002: 0000 [#1] PREEMPT SMP KASAN NOPTI", FindingKind::Oops),
            ("general protection fault, probably for non-canonical address 0xdffffc0000000002: 0000 [#1] PREEMPT SMP KASAN", FindingKind::Oops),
            ("Kernel panic - not syncing: sysrq triggered crash", FindingKind::Panic),
            ("WARNING: possible circular locking dependency detected", FindingKind::Lockdep),
            ("WARNING: possible recursive locking detected", FindingKind::Lockdep),
            ("WARNING: inconsistent lock state", FindingKind::Lockdep),
            ("INFO: task umount:1234 blocked for more than 120 seconds.", FindingKind::HungTask),
            ("rcu: INFO: rcu_sched self-detected stall on CPU", FindingKind::RcuStall),
            ("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", FindingKind::RcuStall),
            ("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [fio:1234]", FindingKind::SoftLockup),
            ("XFS (vdb): Corruption detected. Unmount and run xfs_repair", FindingKind::FsCorruption),
            ("XFS (vdb): Metadata corruption detected at xfs_dinode_verify+0xa0/0x5c0 [xfs], inode 0x83", FindingKind::FsCorruption),
            ("EXT4-fs error (device vdb): ext4_lookup:1855: inode #2: comm ls: deleted inode referenced: 12", FindingKind::FsCorruption),
            ("BTRFS critical (device vdb): corrupt leaf: root=5 block=30408704 slot=4", FindingKind::FsCorruption),
            ("BTRFS error (device vdb): bad tree block start, mirror 1 want 30408704 have 0", FindingKind::FsCorruption),
            ("mount: /mnt: mount(2) system call failed: Structure needs cleaning.", FindingKind::FsCorruption),
            ("XFS (vdb): log I/O error -5", FindingKind::FsError),
            ("XFS (vdb): Filesystem has been shut down due to log error (0x2).", FindingKind::FsError),
            ("XFS (vdb): xfs_do_force_shutdown(0x2) called from line 1196 of file fs/xfs/xfs_log.c. Return address = ffffffffa0393a6d", FindingKind::FsError),
            ("XFS (vdb): Please umount the filesystem and rectify the problem(s)", FindingKind::FsError),
            ("XFS (vdb): User initiated shutdown received.", FindingKind::FsError),
            ("EXT4-fs (vdb): shut down requested (2)", FindingKind::FsError),
            ("EXT4-fs error (device vdb): ext4_journal_check_start:83: comm fio: Detected aborted journal", FindingKind::FsError),
            ("BTRFS error (device vdb): bdev /dev/vdb errs: wr 1, rd 0, flush 0, corrupt 0, gen 0", FindingKind::FsError),
            ("Buffer I/O error on dev vdb, logical block 0, lost async page write", FindingKind::FsError),
            ("blk_update_request: I/O error, dev vdb, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0", FindingKind::FsError),
            ("I/O error, dev vdb, sector 2048 op 0x1:(WRITE) flags 0x9800 phys_seg 1 prio class 2", FindingKind::FsError),
        ];
        for (line, kind) in table {
            let f = classify_console(line, &ctx());
            assert_eq!(f.len(), 1, "{line}: {f:#?}");
            assert_eq!(f[0].kind, kind, "{line}");
        }
        // Lines that look alarming but are not reports.
        for line in [
            "XFS (vdb): Mounting V5 Filesystem 435fe39b-82b6-46ef-be56-819499585130",
            "XFS (vdb): Ending clean mount",
            "EXT4-fs (vdb): mounted filesystem with ordered data mode. Quota mode: none.",
            "WARNING: The mand mount option has been deprecated and",
            "systemd[1]: Reached target Shutdown.",
            "  dump_stack_lvl+0x34/0x44",
        ] {
            assert_eq!(classify_console(line, &ctx()), [], "{line}");
        }
    }

    #[test]
    fn list_corruption_with_kernel_bug_is_one_finding() {
        // The order CHECK_DATA_CORRUPTION prints with CONFIG_BUG_ON_DATA_CORRUPTION.
        let text = "list_add corruption. next->prev should be prev (ffff88801a0c2d48), but was ffff88801f3e0d48. (next=ffff88801f3e0d48).\n\
                    ------------[ cut here ]------------\n\
                    kernel BUG at lib/list_debug.c:29!\n\
                    invalid opcode: 0000 [#1] PREEMPT SMP KASAN\n\
                    RIP: 0010:__list_add_valid_or_report+0xa4/0x100\n\
                    Call Trace:\n \
                    <TASK>\n \
                    xfs_buf_item_unpin+0x1dd/0x710\n \
                    </TASK>\n\
                    ---[ end trace 0000000000000000 ]---\n";
        let f = classify_console(text, &ctx());
        assert_eq!(
            summary(&f),
            [(
                FindingKind::Bug,
                "bug: xfs_buf_item_unpin (list_add corruption)",
                false
            )]
        );
    }

    #[test]
    fn ext4_couldnt_clean_up_the_journal_under_dm_error_is_an_io_error_not_corruption() {
        let text = fixture("debian-6.1-ext4-dm-error-umount.log");
        let injected = ClassifyContext {
            expected_fs_errors: true,
            ..ctx()
        };
        let f = classify_console(&text, &injected);
        assert!(!f.is_empty());
        assert!(
            f.iter()
                .all(|f| f.kind == FindingKind::FsError && f.expected),
            "{:#?}",
            summary(&f)
        );
        assert!(f
            .iter()
            .any(|f| f.report.contains("Couldn't clean up the journal")));
    }

    /// One line each, as the 6.1 sources print them (fs/ext4/super.c, fs/xfs, fs/btrfs).
    #[test]
    fn fs_messages_caused_by_io_errors_are_fs_errors_and_corruption_stays_corruption() {
        let cases: &[(&str, FindingKind)] = &[
            (
                "EXT4-fs error (device dm-0): ext4_put_super:1305: comm umount: Couldn't clean up the journal",
                FindingKind::FsError,
            ),
            (
                "EXT4-fs error (device vdb) in ext4_reserve_inode_write:5800: IO failure",
                FindingKind::FsError,
            ),
            (
                "EXT4-fs error (device vdb) in ext4_dirty_inode:6020: Journal has aborted",
                FindingKind::FsError,
            ),
            (
                "EXT4-fs error (device vdb): ext4_journal_check_start:83: comm kworker/u4:2: Detected aborted journal",
                FindingKind::FsError,
            ),
            (
                "EXT4-fs (vdb): I/O error while writing superblock",
                FindingKind::FsError,
            ),
            (
                "EXT4-fs error (device vdb): ext4_wait_block_bitmap:570: comm dd: Cannot read block bitmap - block_group = 0, block_bitmap = 18",
                FindingKind::FsError,
            ),
            (
                "EXT4-fs error (device vdb): __ext4_get_inode_loc_noinmem:4646: inode #12: block 1060: comm ls: unable to read itable block",
                FindingKind::FsError,
            ),
            (
                "EXT4-fs error (device vdb) in ext4_reserve_inode_write:5800: Corrupt filesystem",
                FindingKind::FsCorruption,
            ),
            (
                "EXT4-fs error (device vdb): ext4_lookup:1851: inode #2: comm ls: deleted inode referenced: 12",
                FindingKind::FsCorruption,
            ),
            (
                "XFS (dm-0): metadata I/O error in \"xfs_buf_ioend+0x1a3/0x480 [xfs]\" at daddr 0x2 len 1 error 5",
                FindingKind::FsError,
            ),
            ("XFS (dm-0): log I/O error -5", FindingKind::FsError),
            (
                "XFS (dm-0): Log I/O Error (0x2) detected at xlog_ioend_work+0x6e/0x70 [xfs] (fs/xfs/xfs_log.c:1378).  Shutting down filesystem.",
                FindingKind::FsError,
            ),
            (
                "XFS (dm-0): metadata I/O error in \"xfs_trans_read_buf_map+0x2a0/0x5b0 [xfs]\" at daddr 0x40 len 8 error 117",
                FindingKind::FsCorruption,
            ),
            (
                "XFS (dm-0): metadata I/O error in \"xfs_da_read_buf+0xe5/0x140 [xfs]\" at daddr 0x78 len 8 error 74",
                FindingKind::FsCorruption,
            ),
            (
                "XFS (dm-0): Corruption of on-disk metadata (0x4) detected at xfs_trans_cancel+0x15c/0x190 [xfs] (fs/xfs/xfs_trans.c:1097).  Shutting down filesystem.",
                FindingKind::FsCorruption,
            ),
            (
                "BTRFS error (device dm-0): bdev /dev/mapper/crashrig-scratch errs: wr 1, rd 0, flush 0, corrupt 0, gen 0",
                FindingKind::FsError,
            ),
            (
                "BTRFS: error (device dm-0: state A) in btrfs_commit_transaction:2466: errno=-5 IO failure (Error while writing out transaction)",
                FindingKind::FsError,
            ),
            (
                "BTRFS: error (device dm-0: state A) in __btrfs_free_extent:3072: errno=-117 Filesystem corrupted",
                FindingKind::FsCorruption,
            ),
            (
                "BTRFS critical (device dm-0): corrupt leaf: root=2 block=30408704 slot=4, invalid key type",
                FindingKind::FsCorruption,
            ),
        ];
        for (line, kind) in cases {
            let f = classify_console(line, &ctx());
            assert_eq!(
                f.iter().map(|f| f.kind).collect::<Vec<_>>(),
                [*kind],
                "{line}"
            );
        }
    }

    #[test]
    fn real_debian_6_1_ext4_shutdowns() {
        let text = fixture("debian-6.1-tcg-ext4-shutdown.console.log");
        let f = classify_console(&text, &ctx());
        assert_eq!(
            summary(&f),
            [
                (
                    FindingKind::FsError,
                    "fs-error: EXT4-fs (DEV): shut down requested (N)",
                    false
                ),
                (
                    FindingKind::FsError,
                    "fs-error: EXT4-fs (DEV): shut down requested (N)",
                    false
                ),
            ]
        );
        // The journal abort of a no-flush shutdown is part of that shutdown, and so is whatever the
        // same device says next until another step's marker.
        assert_eq!(
            f[1].report,
            "EXT4-fs (vda): shut down requested (2)\n\
             Aborting journal on device vda-8.\n\
             EXT4-fs (vda): unmounting filesystem."
        );
        assert_eq!(f[1].ts_us, Some(4_623_665));
        let shutdown = ClassifyContext {
            expected_fs_errors: true,
            ..ctx()
        };
        assert!(classify_console(&text, &shutdown)
            .iter()
            .all(|f| f.expected));
    }

    /// /dev/kmsg's wire format as the guest helper reads it: `level,seq,ts_us,flags;text` with
    /// `\xNN` escapes; dictionary lines (leading space) join the record with '\n'.
    fn parse_kmsg(raw: &str) -> Vec<KmsgRecord> {
        let mut out: Vec<KmsgRecord> = Vec::new();
        for line in raw.lines() {
            if line.starts_with(' ') {
                out.last_mut().unwrap().text.push_str(&format!("\n{line}"));
                continue;
            }
            let (prefix, text) = line.split_once(';').unwrap();
            let f: Vec<&str> = prefix.split(',').collect();
            let mut unescaped = String::new();
            let mut rest = text;
            while let Some(i) = rest.find("\\x") {
                unescaped.push_str(&rest[..i]);
                let byte = u8::from_str_radix(&rest[i + 2..i + 4], 16).unwrap();
                unescaped.push(byte as char);
                rest = &rest[i + 4..];
            }
            unescaped.push_str(rest);
            out.push(KmsgRecord {
                seq: f[1].parse().unwrap(),
                ts_us: f[2].parse().unwrap(),
                level: (f[0].parse::<u32>().unwrap() & 7) as u8,
                text: unescaped,
            });
        }
        out
    }

    #[test]
    fn real_debian_6_1_console_shutdown_and_sysrq_panic() {
        let text = fixture("debian-6.1-tcg-xfs-shutdown-sysrq.console.log");
        assert!(text.contains("\r\n") && text.lines().count() > 400);
        let f = classify_console(&text, &ctx());
        // ~350 boot lines ("tsc: Fast TSC calibration failed", "... and report a bug") say nothing.
        assert_eq!(
            summary(&f),
            [
                (
                    FindingKind::FsError,
                    "fs-error: XFS (DEV): User initiated shutdown received.",
                    false
                ),
                (FindingKind::Panic, "panic: sysrq_handle_crash", false),
            ]
        );
        assert_eq!(
            f[0].report,
            "XFS (vda): User initiated shutdown received.\n\
             XFS (vda): Metadata I/O Error (0x4) detected at xfs_fs_goingdown+0x8e/0xb0 [xfs] (fs/xfs/xfs_fsops.c:489).  Shutting down filesystem.\n\
             XFS (vda): Please unmount the filesystem and rectify the problem(s)"
        );
        let p = &f[1];
        assert_eq!(p.title, "Kernel panic - not syncing: sysrq triggered crash");
        assert_eq!(
            &p.frames[..5],
            [
                "dump_stack_lvl",
                "panic",
                "sysrq_handle_crash",
                "__handle_sysrq",
                "write_sysrq_trigger"
            ]
        );
        assert!(p.report.ends_with("Kernel Offset: 0xf000000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)"));
        assert!(!p.report.contains("Rebooting"));

        // What the lead passes for an iteration with a shutdown step and a panic step.
        let scenario = ClassifyContext {
            expected_fs_errors: true,
            expected_panic: true,
            ..ctx()
        };
        assert!(classify_console(&text, &scenario)
            .iter()
            .all(|f| f.expected));
    }

    #[test]
    fn real_debian_6_1_kmsg_records_match_the_console() {
        let records = parse_kmsg(&fixture("debian-6.1-tcg-xfs-shutdown.kmsg"));
        assert!(records.len() > 370);
        assert!(records.iter().any(|r| r.text.contains("\n SUBSYSTEM=")));
        let f = classify_records(&records, &ctx());
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].seq, Some(366));
        assert_eq!(f[0].ts_us, Some(5_432_817));
        assert_eq!(
            f[0].signature,
            "fs-error: XFS (DEV): User initiated shutdown received."
        );
        assert_eq!(f[0].report.lines().count(), 3);
    }

    fn fixture_line_pool() -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dmesg");
        let mut pool = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap();
                pool.extend(text.lines().map(str::to_string));
            }
        }
        pool
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Shuffled real report lines mixed with arbitrary text never panic, and every finding is a
        /// contiguous run of input lines that starts at or before its title.
        #[test]
        fn arbitrary_logs_give_well_formed_findings(
            picks in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::sample::select(fixture_line_pool()),
                    1 => "\\PC{0,40}",
                    1 => proptest::strategy::Just(String::new()),
                ],
                0..120,
            )
        ) {
            let text = picks.join("\n");
            let lines: Vec<String> = text.split('\n').map(|l| console_line(l).text).collect();
            let mut from = 0;
            for f in classify_console(&text, &ClassifyContext::default()) {
                let report: Vec<&str> = f.report.split('\n').collect();
                let start = (from..lines.len())
                    .find(|&i| lines[i..].iter().zip(&report).all(|(a, b)| a == b) && lines.len() - i >= report.len());
                proptest::prop_assert!(start.is_some(), "report not in input order: {:?}", f.report);
                from = start.unwrap_or(from) + report.len();
                proptest::prop_assert!(report.iter().any(|l| l.trim() == f.title));
                proptest::prop_assert!(f.signature.starts_with(f.kind.as_str()));
            }
            let records: Vec<KmsgRecord> = picks
                .iter()
                .enumerate()
                .map(|(i, t)| KmsgRecord { seq: i as u64, ts_us: i as u64, level: 4, text: t.clone() })
                .collect();
            for f in classify_records(&records, &ClassifyContext::default()) {
                proptest::prop_assert!(f.seq.is_some_and(|s| (s as usize) < picks.len()));
            }
        }
    }

    #[test]
    fn finding_kind_names_round_trip() {
        for k in FindingKind::ALL {
            assert_eq!(k.as_str().parse::<FindingKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(
            serde_json::to_string(&FindingKind::HungTask).unwrap(),
            "\"hung-task\""
        );
        assert!("hung_task".parse::<FindingKind>().is_err());
    }
}
