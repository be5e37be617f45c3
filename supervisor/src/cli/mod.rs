//! The commands of the `mate` binary, one module per command family. Each module holds its
//! clap arguments, turns them into calls on the `mate` library and prints the outcome; errors
//! go back to `main` as a `Failure`, which carries the exit code.

#[cfg(feature = "llm")]
pub mod bench;
pub mod config;
pub mod ctl;
pub mod doctor;
pub mod model;
pub mod unity_sim;
pub mod up;
pub mod worker;
