#![no_main]
// See layerfs_image::fuzz::tar for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| layerfs_image::fuzz::tar(data));
