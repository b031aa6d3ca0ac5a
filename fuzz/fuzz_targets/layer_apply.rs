#![no_main]
//! cargo-fuzz target: see berth_fuzz::layer_apply.
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::layer_apply(data));
