//! Heartbeat round trip over mate's framed local socket versus the same bytes over a bare
//! `UnixStream`, in the same run.
//!
//! Criterion reports means with confidence intervals; the target (p50 ratio ≤ 1.5) is
//! checked by `cargo run --release -p mate-benches --bin ipc-latency`, which records every
//! round trip. Both use the loops in `mate_benches::ipc`, so they measure the same thing.
//!
//! Run: `cargo bench -p mate-benches --bench ipc`. Unix only; elsewhere this does nothing.

#[cfg(unix)]
mod unix {
    use criterion::{criterion_group, Criterion, Throughput};
    use mate_benches::ipc::{heartbeat_frames, MateLoop, RawLoop};

    fn round_trip(c: &mut Criterion) {
        let (Ok(mut mate), Ok(mut raw), Ok((request, reply))) =
            (MateLoop::start(), RawLoop::start(), heartbeat_frames())
        else {
            panic!("could not set up the two socket loops");
        };
        let mut group = c.benchmark_group("round_trip");
        group.throughput(Throughput::Bytes((request.len() + reply.len()) as u64));
        group.bench_function("mate_framed", |b| {
            b.iter(|| mate.round_trip().expect("mate round trip"))
        });
        group.bench_function("raw_unix_stream", |b| {
            b.iter(|| raw.round_trip().expect("raw round trip"))
        });
        group.finish();
    }

    criterion_group!(benches, round_trip);
}

#[cfg(unix)]
criterion::criterion_main!(unix::benches);

#[cfg(not(unix))]
fn main() {}
