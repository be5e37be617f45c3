//! Hostile bytes against the decoder, with a counting allocator that proves no input makes it
//! allocate more than the frame cap (bincode without a limit would try, and abort).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use mate_protocol::{frame, Error, FromWorker, Limit, Reply, Request, ToWorker, CONTROL_MAX_FRAME};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only recording the largest request.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns the largest single allocation it (or a concurrent test) made. Tests
/// run in parallel, so a bound is only meaningful when it is far below what an unguarded
/// decoder would ask for.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.store(0, Ordering::SeqCst);
    f();
    LARGEST.load(Ordering::SeqCst)
}

fn framed(payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

#[test]
fn length_prefixes_up_to_u32_max_are_refused_before_allocating() {
    for len in [CONTROL_MAX_FRAME + 1, 1 << 24, 1 << 31, u32::MAX] {
        let bytes = len.to_le_bytes();
        let peak = largest_allocation(|| {
            let r = frame::read_frame::<_, Request>(&mut &bytes[..], Limit::Control);
            assert!(
                matches!(r, Err(Error::FrameTooLarge { len: l, max }) if l == u64::from(len) && max == CONTROL_MAX_FRAME),
                "{r:?}"
            );
        });
        assert!(peak < 1 << 20, "allocated {peak} bytes for a refused frame");
    }
    let r = frame::read_frame::<_, ToWorker>(&mut &u32::MAX.to_le_bytes()[..], Limit::Data);
    assert!(matches!(r, Err(Error::FrameTooLarge { .. })), "{r:?}");
}

#[test]
fn nested_lengths_that_lie_give_errors_not_allocations() {
    // Request::Chat (tag 5) whose string claims u64::MAX, 2^40 and 60 KiB bytes but carries 3.
    let claims: [&[u8]; 3] = [
        &[
            5, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'a', b'b', b'c',
        ],
        &[5, 0xfd, 0, 0, 0, 0, 0, 1, 0, 0, b'a', b'b', b'c'],
        &[5, 0xfb, 0x00, 0xf0, b'a', b'b', b'c'],
    ];
    for payload in claims {
        let bytes = framed(payload);
        let peak = largest_allocation(|| {
            let r = frame::read_frame::<_, Request>(&mut &bytes[..], Limit::Control);
            assert!(matches!(r, Err(Error::Decode(_))), "{r:?}");
        });
        assert!(
            peak <= CONTROL_MAX_FRAME as usize,
            "allocated {peak} bytes for a lying length"
        );
    }
    // ToWorker::Generate (tag 4) whose message list claims 2^60 entries.
    let bytes = framed(&[4, 1, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10, 0]);
    let peak = largest_allocation(|| {
        let r = frame::read_frame::<_, ToWorker>(&mut &bytes[..], Limit::Data);
        assert!(matches!(r, Err(Error::Decode(_))), "{r:?}");
    });
    assert!(peak <= mate_protocol::DATA_MAX_FRAME as usize);
}

#[test]
fn truncated_frames_say_how_much_was_missing() {
    let full = frame::encode_frame(
        &Request::Chat {
            text: "hello".into(),
        },
        Limit::Control,
    )
    .expect("encode");
    assert!(matches!(
        frame::read_frame::<_, Request>(&mut &full[..0], Limit::Control),
        Err(Error::Closed)
    ));
    for cut in 1..full.len() {
        let r = frame::read_frame::<_, Request>(&mut &full[..cut], Limit::Control);
        assert!(
            matches!(r, Err(Error::Truncated { .. })),
            "cut {cut}: {r:?}"
        );
        assert!(r.is_err_and(|e| e.is_disconnect()));
    }
}

#[test]
fn garbage_payloads_are_decode_errors() {
    let cases: [&[u8]; 5] = [
        &[],                       // empty payload
        &[200],                    // unknown variant
        &[5, 3, 0xff, 0xfe, 0xfd], // invalid UTF-8
        &[0, 0],                   // trailing byte after Request::Status
        &[9, 7, 0],                // WorkerKind out of range
    ];
    for payload in cases {
        let r = frame::read_frame::<_, Request>(&mut &framed(payload)[..], Limit::Control);
        assert!(matches!(r, Err(Error::Decode(_))), "{payload:?}: {r:?}");
    }
    let r = frame::read_frame::<_, FromWorker>(&mut &framed(&[4, 1, 2, 0xc3])[..], Limit::Data);
    assert!(r.is_err());
    let r = frame::read_frame::<_, Reply>(&mut &framed(&[2; 40])[..], Limit::Data);
    assert!(r.is_err());
}
