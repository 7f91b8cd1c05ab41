//! A worker's `BLOCKWISE_CONTEXT`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| blockwise::fuzzing::worker_context(data));
