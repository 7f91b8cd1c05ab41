//! Integration tests: one binary, one module per area. Tests that need other processes start
//! this binary again (workers, crash children: see `support`).

// Shared helpers: scratch directories, worker runners, block markers, `child_main!`.
mod support;

// The failure budget: abandoned tasks, their downstream tasks, on threads and processes.
mod abandon;
// Invalid tasks are errors naming the task and the values, never panics.
mod bad_input;
// The `blockwise` command line.
mod cli;
// A real SLURM cluster (when `BLOCKWISE_SLURM=1`).
mod cluster;
// Differential tests against recorded daisy 1.x answers (tests/fixtures).
mod daisy_oracle;
// daisy's own scheduler and dependency-graph tests, ported.
mod daisy_ported;
// The explicit worker entry, `worker_main`.
mod entry;
// The executor on worker processes, against the same calls on threads.
mod executor;
// The worker fleet across tasks: idle workers released and started again.
mod fleet;
// Where daisy 1.x is wrong, blockwise is right.
mod guardrails;
// Reading and writing zarr arrays with zarr-python.
#[cfg(feature = "zarr")]
mod interop;
// Batch launchers against fake sbatch/bsub/qsub.
mod launchers;
// Connected components across blocks against whole-volume labelling.
#[cfg(feature = "zarr")]
mod ops;
// OME-Zarr images (NGFF 0.4 and 0.5): creation, opening, pyramids' metadata, bad metadata.
#[cfg(feature = "zarr")]
mod ome;
// Masks that skip empty space: skipped blocks, reruns with a changed mask, coarse masks.
#[cfg(feature = "zarr")]
mod mask;
// Block outputs and typed block failures.
mod outputs;
// Resolution pyramids against a naive reference, level after level.
#[cfg(feature = "zarr")]
mod pyramid;
// The process runner: chained tasks, retries, killed and frozen workers, tokens.
mod processes;
// Resource budgets and devices, on worker threads and processes.
mod resources;
// Crash tests: a killed pipeline resumed until it finishes, bit-identical.
#[cfg(feature = "zarr")]
mod resume;
// Bad inputs around run directories and arrays: clear errors, nothing lost.
mod robustness;
// The threaded runner: results, failures, panics, set-up, timeouts, chaining.
mod runner;
// Hardening of the worker transport: hostile peers, descriptors, the token, TLS.
mod security;
// Arrays in world units: zarr, atomic and partial chunk writes, HDF5.
#[cfg(feature = "zarr")]
mod store;
// Following HDF5 files written in SWMR mode.
#[cfg(feature = "hdf5")]
mod swmr;
