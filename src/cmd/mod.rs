pub mod helper;
pub mod mount;
pub mod rootless;
pub mod run;
pub mod umount;
