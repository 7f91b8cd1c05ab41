//! A task's `layout.json`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| blockwise::fuzzing::layout(data));
