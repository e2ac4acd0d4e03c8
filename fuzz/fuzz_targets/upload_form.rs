//! Arbitrary bytes through `server::fuzzing::upload_form` (see there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::upload_form(data));
