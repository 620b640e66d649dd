#![no_main]
// See layerfs::fuzz::idmap for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| layerfs::fuzz::idmap(data));
