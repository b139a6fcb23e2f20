//! After a snapshot restore: fresh randomness from the host and the host's time.
//!
//! Every guest restored from one snapshot starts with the same kernel RNG state and the clock
//! of the moment it was saved. Mixing host entropy into the input pool is not enough on its
//! own: once the CRNG is initialised the kernel reseeds it on a schedule (every minute), so
//! until then every restored guest would draw the same numbers. `RNDRESEEDCRNG` forces the
//! reseed at once.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// `_IOW('R', 0x03, int[2])`: add entropy to the input pool and credit it.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`: reseed the CRNG from the input pool now (Linux 4.17+).
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// The `struct rand_pool_info` RNDADDENTROPY reads: entropy credited in bits, buffer size in
/// bytes, then the bytes (native endian).
pub fn pool_info(entropy: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8 + entropy.len());
    let bits = i32::try_from(entropy.len() * 8).unwrap_or(i32::MAX);
    buf.extend_from_slice(&bits.to_ne_bytes());
    buf.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    buf.extend_from_slice(entropy);
    buf
}

/// Mixes `entropy` into the RNG behind `random_dev` (/dev/urandom) and reseeds the CRNG.
pub fn reseed(random_dev: &Path, entropy: &[u8]) -> io::Result<()> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(random_dev)?;
    // rand_pool_info holds ints; keep the buffer int-aligned.
    let info = pool_info(entropy);
    let mut aligned = vec![0u32; info.len().div_ceil(4)];
    // SAFETY: `aligned` has at least info.len() bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(info.as_ptr(), aligned.as_mut_ptr().cast(), info.len())
    };
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of the size its header states, which is
    // what `aligned` holds.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDADDENTROPY, aligned.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `realtime_ns` (nanoseconds since the epoch) as a timespec.
pub fn timespec(realtime_ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (realtime_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (realtime_ns % 1_000_000_000) as libc::c_long,
    }
}

/// Sets CLOCK_REALTIME.
pub fn set_clock(realtime_ns: u64) -> io::Result<()> {
    let ts = timespec(realtime_ns);
    // SAFETY: clock_settime reads the timespec we own.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_info_credits_every_bit_it_carries() {
        let info = pool_info(&[0xaa; 32]);
        assert_eq!(info.len(), 8 + 32);
        assert_eq!(i32::from_ne_bytes(info[0..4].try_into().unwrap()), 256);
        assert_eq!(i32::from_ne_bytes(info[4..8].try_into().unwrap()), 32);
        assert!(info[8..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
        let iow = |nr: u64, size: u64| (1u64 << 30) | (size << 16) | ((b'R' as u64) << 8) | nr;
        assert_eq!(RNDADDENTROPY, iow(3, 8));
        assert_eq!(RNDRESEEDCRNG, ((b'R' as u64) << 8) | 7);
    }

    #[test]
    fn timespec_splits_seconds_and_nanoseconds() {
        let ts = timespec(1_700_000_000_123_456_789);
        assert_eq!(ts.tv_sec, 1_700_000_000);
        assert_eq!(ts.tv_nsec, 123_456_789);
    }

    #[test]
    fn reseeding_something_that_is_not_the_rng_says_so() {
        let err = reseed(Path::new("/dev/null"), &[1; 16]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
    }
}
