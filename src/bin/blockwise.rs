//! The `blockwise` command line (being written).
fn main() {}
