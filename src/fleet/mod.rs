//! The worker fleet: what starts, feeds and retires workers, shared by the runners and the
//! executor.
//!
//! * [`budget`]: the run's resource budget (`Runner::resources`, `Runner::devices`) and the
//!   grants of units and device ids it hands to workers; a pure allocator.
pub(crate) mod budget;
