#![no_main]
//! cargo-fuzz target: see berth_fuzz::registry_request.
libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::registry_request(data));
