//! Opening a done-marker array (zarr.json, the chunk, the page checksums).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| blockwise::fuzzing::marker_array(data));
