#![no_main]
// See layerfs_base::fuzz::idmap for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| layerfs_base::fuzz::idmap(data));
