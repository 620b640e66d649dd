#![no_main]
// See layerfs::fuzz::tar for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| layerfs::fuzz::tar(data));
