#![no_main]
// See layerfs::fuzz::hash_list for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| layerfs::fuzz::hash_list(data));
