pub mod mount;
pub mod run;
pub mod umount;
