//! Integration tests: one binary, one module per area.

mod daisy_oracle;
mod daisy_ported;
