//! Integration tests: one binary, one module per area.

mod abandon;
mod bad_input;
mod cli;
mod cluster;
mod daisy_oracle;
mod daisy_ported;
mod entry;
mod executor;
mod guardrails;
#[cfg(feature = "zarr")]
mod interop;
mod launchers;
#[cfg(feature = "zarr")]
mod ops;
mod outputs;
mod processes;
// Resource budgets and devices on worker threads (issue 15).
mod resources;
#[cfg(feature = "zarr")]
mod resume;
mod robustness;
mod runner;
mod security;
#[cfg(feature = "zarr")]
mod store;
#[cfg(feature = "hdf5")]
mod swmr;
