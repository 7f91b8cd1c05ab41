//! The wire protocol's frame decoder and both message types, through every reader.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| blockwise::fuzzing::frames(data));
