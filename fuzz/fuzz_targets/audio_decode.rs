//! Arbitrary bytes through `server::fuzzing::audio` (see there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::audio(data));
