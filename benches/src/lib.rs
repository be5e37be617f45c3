//! Shared fixtures for mate's benchmarks.
//!
//! Two things are measured, each against the floor it cannot beat:
//!
//! - **Codec** (`benches/codec.rs`): encoding and decoding one frame of each message kind, with
//!   sample values from [`samples`] sized like real traffic.
//! - **IPC round trip** (`benches/ipc.rs` with criterion, `src/bin/ipc-latency.rs` for p50/p99):
//!   a heartbeat and its answer over mate's framed local socket ([`ipc::MateLoop`]) against the
//!   very same bytes ping-ponged over a bare `UnixStream` ([`ipc::RawLoop`]). The kernel path is
//!   identical, so the ratio of the two is what mate's framing (encode, allocate, two reads per
//!   frame, decode) costs on top of the socket itself.
//!
//! Both are benchmarks, not tests: they report figures and never fail on a slow machine.

pub mod samples;

#[cfg(unix)]
pub mod ipc;
