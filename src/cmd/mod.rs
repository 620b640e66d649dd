pub mod image_source;
pub mod inspect;
pub mod mount;
pub mod rootless;
pub mod run;
pub mod umount;
