//! /dev/kmsg: step markers in, new records out.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crashrig_guest::KmsgRecord;

/// One record as read(2) returns it: `prefix,seq,ts_us,flags[,...];text\n` followed by
/// ` KEY=value` dictionary lines. Non-printable bytes in the text are `\xNN` escapes.
pub fn parse_record(raw: &[u8]) -> Option<KmsgRecord> {
    let raw = String::from_utf8_lossy(raw);
    let mut lines = raw.split('\n');
    // Only the first line is the message; the others are the dictionary (SUBSYSTEM=, DEVICE=).
    let first = lines.next()?;
    let (header, text) = first.split_once(';')?;
    let mut fields = header.split(',');
    let prefix: u32 = fields.next()?.trim().parse().ok()?;
    let seq: u64 = fields.next()?.parse().ok()?;
    let ts_us: u64 = fields.next()?.parse().ok()?;
    Some(KmsgRecord {
        seq,
        ts_us,
        level: (prefix & 7) as u8,
        text: unescape(text),
    })
}

/// Undo the kernel's `\xNN` escaping (it escapes '\\' itself too), so multi-line messages
/// come back with their newlines.
pub fn unescape(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read every record with a sequence number above `after`, to the end of the buffer.
pub fn read_since(dev: &Path, after: Option<u64>) -> std::io::Result<Vec<KmsgRecord>> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(dev)?;
    // A record is at most 8 KiB (PRINTK_MESSAGE_MAX plus the header); read(2) fails with
    // EINVAL on a smaller buffer.
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(rec) = parse_record(&buf[..n]) {
                    if !matches!(after, Some(a) if rec.seq <= a) {
                        out.push(rec);
                    }
                }
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) => break,
                // Records were overwritten while we read; the next read continues after the gap.
                Some(libc::EPIPE) | Some(libc::EINTR) => continue,
                _ => return Err(e),
            },
        }
    }
    Ok(out)
}

/// Read the records after the sequence number saved in `seq_file`, and save the last one.
pub fn read_new(dev: &Path, seq_file: &Path) -> std::io::Result<Vec<KmsgRecord>> {
    let after = std::fs::read_to_string(seq_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let records = read_since(dev, after)?;
    if let Some(last) = records.last() {
        if let Some(parent) = seq_file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(seq_file, format!("{}\n", last.seq))?;
    }
    Ok(records)
}

/// Write a marker line into the kernel log; best effort (a guest without /dev/kmsg still runs).
pub fn mark(dev: &Path, text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(dev) {
        let _ = f.write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_with_level_and_dictionary_dropped() {
        let raw = b"4,1234,5678901,-;XFS (vdb): Unmounting Filesystem\n SUBSYSTEM=block\n DEVICE=b253:16\n";
        let rec = parse_record(raw).unwrap();
        assert_eq!(
            rec,
            KmsgRecord {
                seq: 1234,
                ts_us: 5678901,
                level: 4,
                text: "XFS (vdb): Unmounting Filesystem".into()
            }
        );
        // Facility user (1 << 3) at level info (6): the level is the low three bits.
        let rec = parse_record(b"14,7,100,-;crashrig: it 1 step 3 umount\n").unwrap();
        assert_eq!(
            (rec.level, rec.seq, rec.text.as_str()),
            (6, 7, "crashrig: it 1 step 3 umount")
        );
        // Newer kernels append caller info to the header.
        let rec = parse_record(b"6,8,200,c,caller=T42;hello\n").unwrap();
        assert_eq!((rec.seq, rec.ts_us, rec.text.as_str()), (8, 200, "hello"));
    }

    #[test]
    fn escapes_are_undone_and_garbage_is_rejected() {
        assert_eq!(unescape(r"a\x0ab\x5cc"), "a\nb\\c");
        assert_eq!(unescape(r"trailing \x"), r"trailing \x");
        assert_eq!(unescape(r"bad \xzz"), r"bad \xzz");
        assert_eq!(parse_record(b"no header here"), None);
        assert_eq!(parse_record(b"x,1,2,-;text"), None);
    }
}
