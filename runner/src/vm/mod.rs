//! The VM: QEMU process, console capture, accelerator choice, QMP control.

pub mod qemu;
pub mod qmp;
pub mod ram;
pub mod scratch;
pub mod snapshot;

pub use qemu::{
    choose_accel, create_disk, free_port, Accel, AccelChoice, Disk, DiskFormat, Health, Vm,
    VmConfig, VmError,
};
pub use qmp::{Qmp, QmpError};
pub use scratch::ScratchDisks;
