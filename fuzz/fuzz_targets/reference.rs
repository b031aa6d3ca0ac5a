#![no_main]
//! cargo-fuzz target: see berth_fuzz::reference.
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::reference(data));
