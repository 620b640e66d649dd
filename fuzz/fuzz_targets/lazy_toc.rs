#![no_main]
// See layerfs::fuzz::lazy_toc for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| layerfs::fuzz::lazy_toc(data));
