//! Encode and decode of one frame of each message kind.
//!
//! Every message mate sends goes through `encode_frame` on one side and `decode_payload` on the
//! other, so these are the per-message CPU costs of the protocol, apart from the socket. One
//! criterion group per message enum (`ToWorker`, `FromWorker`, `Request`, `Reply`, `Hello`),
//! one benchmark per sample and direction (`encode/Generate20`, `decode/Generate20`, …), with
//! throughput in frame bytes so small and large messages can be compared per byte too.
//!
//! Run: `cargo bench -p mate-benches --bench codec`.

use std::{fmt::Debug, hint::black_box};

use criterion::{
    criterion_group, criterion_main, measurement::WallTime, BenchmarkGroup, Criterion, Throughput,
};
use mate_benches::samples;
use mate_protocol::{
    frame::{decode_payload, encode_frame, HEADER_LEN},
    Hello, Limit,
};
use serde::{de::DeserializeOwned, Serialize};

/// Adds `encode/NAME` and `decode/NAME` for each sample to `group`.
fn bench_samples<T>(group: &mut BenchmarkGroup<'_, WallTime>, samples: &[(&str, T)], limit: Limit)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    for (name, msg) in samples {
        let Ok(frame) = encode_frame(msg, limit) else {
            panic!("sample {name} does not encode");
        };
        // The decode benchmark is only meaningful if the bytes decode back to the sample.
        let decoded: Option<T> = decode_payload(&frame[HEADER_LEN..], limit).ok();
        assert_eq!(
            decoded.as_ref(),
            Some(msg),
            "sample {name} does not round-trip"
        );

        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode_frame(black_box(msg), limit))
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_payload::<T>(black_box(&frame[HEADER_LEN..]), limit))
        });
    }
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("ToWorker");
    bench_samples(&mut group, &samples::to_worker(), Limit::Data);
    group.finish();

    let mut group = c.benchmark_group("FromWorker");
    bench_samples(&mut group, &samples::from_worker(), Limit::Data);
    group.finish();

    // Requests arrive on control connections (`mate ctl`), replies go back on data ones.
    let mut group = c.benchmark_group("Request");
    bench_samples(&mut group, &samples::request(), Limit::Control);
    group.finish();

    let mut group = c.benchmark_group("Reply");
    bench_samples(&mut group, &samples::reply(), Limit::Data);
    group.finish();

    let mut group = c.benchmark_group("Hello");
    bench_samples::<Hello>(&mut group, &[("Hello", samples::hello())], Limit::Control);
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
