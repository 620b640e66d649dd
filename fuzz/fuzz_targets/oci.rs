#![no_main]
// See layerfs::fuzz::oci for what is checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| layerfs::fuzz::oci(data));
