#![no_main]
// See layerfs::fuzz::mount_options for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| layerfs::fuzz::mount_options(data));
