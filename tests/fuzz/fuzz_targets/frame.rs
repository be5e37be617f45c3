//! Any bytes on a mate socket: every message type, both frame caps. Decoding must return an
//! error, never panic, and never allocate past the cap (the sanitizer's RSS limit watches).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mate_protocol::{
    frame::read_frame,
    handshake::{Hello, HelloReply},
    FromWorker, Limit, Reply, Request, ToWorker,
};

fuzz_target!(|data: &[u8]| {
    for limit in [Limit::Control, Limit::Data] {
        let _ = read_frame::<_, ToWorker>(&mut &data[..], limit);
        let _ = read_frame::<_, FromWorker>(&mut &data[..], limit);
        let _ = read_frame::<_, Request>(&mut &data[..], limit);
        let _ = read_frame::<_, Reply>(&mut &data[..], limit);
        let _ = read_frame::<_, Hello>(&mut &data[..], limit);
        let _ = read_frame::<_, HelloReply>(&mut &data[..], limit);
    }
});
