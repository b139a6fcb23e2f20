//! The agent channel: how the host runs commands in a guest over a virtio-serial port
//! instead of SSH (`crashrig-guest agent`, started by init). A restored guest is reached
//! through it at once: no TCP connection through QEMU's user network, no key exchange, no
//! process fork in dropbear, which under TCG took 150-200 ms of every restore's 250.
//!
//! The port is a private byte stream between QEMU and crashrig (a Unix socket in a 0700
//! directory on the host): nothing else can write to it, so there is nothing to authenticate.
//!
//! Both directions carry frames: one kind byte, the payload length (u32, little-endian), the
//! payload. One command at a time:
//! - host to guest: [`EXEC`], payload = command length (u32 LE), the command (UTF-8, run by
//!   `/bin/sh -c` as SSH would), then everything the command gets on standard input;
//! - guest to host: [`STDOUT`] and [`STDERR`] chunks as they come, then one [`EXIT`] (i32 LE:
//!   the exit status, or 128 + the signal that ended the command) once the command has exited
//!   and both its outputs are closed, or one [`FAILED`] (UTF-8 reason) when it could not start.

use std::io::{self, Read, Write};

/// The virtio-serial port's name (QEMU `virtserialport,name=`, guest
/// `/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "org.crashrig.agent";

pub const EXEC: u8 = b'X';
/// Host to guest: start the command of the payload (UTF-8) ahead of its request, as a spare
/// that waits for its input; answered with [`EXIT`] 0 once it waits, or [`FAILED`].
pub const PREPARE: u8 = b'P';
pub const STDOUT: u8 = b'O';
pub const STDERR: u8 = b'E';
pub const EXIT: u8 = b'S';
pub const FAILED: u8 = b'F';

/// Largest payload either side accepts: a plan with its data is far smaller.
pub const MAX_FRAME: usize = 64 << 20;

const HEADER: usize = 5;

/// One frame, header and payload, as bytes (written with one `write_all`).
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    w.write_all(&frame(kind, payload))?;
    w.flush()
}

/// An [`EXEC`] payload.
pub fn exec_payload(command: &str, stdin: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + command.len() + stdin.len());
    out.extend_from_slice(&(command.len() as u32).to_le_bytes());
    out.extend_from_slice(command.as_bytes());
    out.extend_from_slice(stdin);
    out
}

/// The command and standard input of an [`EXEC`] payload.
pub fn parse_exec(payload: &[u8]) -> Result<(String, &[u8]), String> {
    let len = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("exec request shorter than its header")?;
    let command = payload
        .get(4..4 + len)
        .ok_or("exec request shorter than its command")?;
    let command = String::from_utf8(command.to_vec()).map_err(|_| "command is not UTF-8")?;
    Ok((command, &payload[4 + len..]))
}

/// Reads one whole frame; `None` at a clean end of stream (nothing of a frame read).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((header[0], payload)))
}

/// Collects frames from bytes that arrive in pieces (the host reads with a timeout, so a
/// frame may end up split across reads).
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived; an error for a frame over [`MAX_FRAME`].
    pub fn next_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
            ));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some((kind, payload)))
    }

    /// Bytes held that are not a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_request_carries_command_and_stdin_through_a_frame() {
        let payload = exec_payload("echo hi", b"{\"plan\":1}");
        let bytes = frame(EXEC, &payload);
        let (kind, got) = read_frame(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(kind, EXEC);
        let (command, stdin) = parse_exec(&got).unwrap();
        assert_eq!((command.as_str(), stdin), ("echo hi", &b"{\"plan\":1}"[..]));
        assert!(parse_exec(&[1, 0]).is_err());
        assert!(parse_exec(&[9, 0, 0, 0, b'x']).is_err());
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let mut bytes = frame(STDOUT, b"line one\n");
        bytes.extend(frame(STDERR, b""));
        bytes.extend(frame(EXIT, &3i32.to_le_bytes()));
        for split in 0..bytes.len() {
            let mut buf = FrameBuf::default();
            let mut got = Vec::new();
            for part in [&bytes[..split], &bytes[split..]] {
                buf.push(part);
                while let Some(f) = buf.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(buf.pending(), 0);
            assert_eq!(
                got,
                vec![
                    (STDOUT, b"line one\n".to_vec()),
                    (STDERR, vec![]),
                    (EXIT, 3i32.to_le_bytes().to_vec())
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_cut_or_oversized_frame_is_an_error_and_a_clean_end_is_none() {
        assert!(read_frame(&mut &[][..]).unwrap().is_none());
        let bytes = frame(STDOUT, b"abc");
        assert!(read_frame(&mut &bytes[..6]).is_err());
        assert!(read_frame(&mut &bytes[..3]).is_err());
        let huge = [STDOUT, 0xff, 0xff, 0xff, 0xff];
        assert!(read_frame(&mut &huge[..]).is_err());
        let mut buf = FrameBuf::default();
        buf.push(&huge);
        assert!(buf.next_frame().is_err());
    }
}
