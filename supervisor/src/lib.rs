//! The `mate` composition root: supervisor, CLI, configuration and model management.
pub mod model;
