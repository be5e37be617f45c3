//! The `mate` composition root: command line, configuration, model management, the supervisor
//! loop and the `mate ctl` client. The only crate that depends on several others.

#[cfg(feature = "llm")]
pub mod bench;
pub mod config;
pub mod ctl;
pub mod cues;
pub mod direct;
pub mod event;
pub mod gpu;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod platform;
pub mod policy;
pub mod server;
pub mod statedir;
pub mod store;
pub mod supervisor;
