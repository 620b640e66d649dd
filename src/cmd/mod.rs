pub mod commit;
pub mod imagecmd;
pub mod images;
pub mod mount;
pub mod rmi;
pub mod rootless;
pub mod run;
pub mod umount;
