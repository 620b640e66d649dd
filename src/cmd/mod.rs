pub mod mount;
pub mod umount;
