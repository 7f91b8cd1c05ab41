//! Storage: arrays in world units.

mod chunk_grid;

pub use chunk_grid::ChunkGrid;
