#![no_main]
//! cargo-fuzz target: see berth_fuzz::manifest.
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::manifest(data));
