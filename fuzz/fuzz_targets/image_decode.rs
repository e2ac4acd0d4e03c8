//! Arbitrary bytes through `server::fuzzing::image` (see there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::image(data));
