#![no_main]
// See layerfs_image::fuzz::lazy_toc for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| layerfs_image::fuzz::lazy_toc(data));
