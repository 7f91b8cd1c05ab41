//! Write-ahead-log replay: decoding a batch and the task directories it names.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| blockwise::fuzzing::wal(data));
