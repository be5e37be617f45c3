//! Wire-format tests: round trips of every message, golden bytes of every variant, and random
//! input that must only ever produce errors.

use proptest::prelude::*;
use serde::{de::DeserializeOwned, Serialize};

use crate::{frame, handshake::*, message::*, ApiCall, ApiEvent, ApiInput, ApiOptions, Limit};

/// Encodes, decodes and re-encodes; the bytes must match (floats may be NaN, so the bytes,
/// not `PartialEq`, are the judge).
fn round_trip<T: Serialize + DeserializeOwned>(msg: &T, limit: Limit) {
    let bytes = frame::encode_frame(msg, limit).expect("encode");
    let back: T = frame::read_frame(&mut &bytes[..], limit).expect("decode");
    let again = frame::encode_frame(&back, limit).expect("re-encode");
    assert_eq!(bytes, again);
}

proptest! {
    #[test]
    fn to_worker_round_trips(msg: ToWorker) { round_trip(&msg, Limit::Data) }
    #[test]
    fn from_worker_round_trips(msg: FromWorker) { round_trip(&msg, Limit::Data) }
    #[test]
    fn request_round_trips(msg: Request) { round_trip(&msg, Limit::Control) }
    #[test]
    fn reply_round_trips(msg: Reply) { round_trip(&msg, Limit::Data) }
    #[test]
    fn hello_round_trips(msg: Hello) { round_trip(&msg, Limit::Control) }
    #[test]
    fn hello_reply_round_trips(msg: HelloReply) { round_trip(&msg, Limit::Control) }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for limit in [Limit::Control, Limit::Data] {
            let _ = frame::read_frame::<_, ToWorker>(&mut &bytes[..], limit);
            let _ = frame::read_frame::<_, FromWorker>(&mut &bytes[..], limit);
            let _ = frame::read_frame::<_, Request>(&mut &bytes[..], limit);
            let _ = frame::read_frame::<_, Reply>(&mut &bytes[..], limit);
            let _ = frame::read_frame::<_, Hello>(&mut &bytes[..], limit);
            let _ = judge(&bytes, |_| Ok(()));
        }
    }

    #[test]
    fn random_payload_behind_a_valid_header_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let mut framed = (bytes.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        let _ = frame::read_frame::<_, ToWorker>(&mut &framed[..], Limit::Data);
        let _ = frame::read_frame::<_, FromWorker>(&mut &framed[..], Limit::Data);
        let _ = frame::read_frame::<_, Request>(&mut &framed[..], Limit::Control);
        let _ = frame::read_frame::<_, Reply>(&mut &framed[..], Limit::Data);
    }
}

// Exhaustive matches: a new variant does not compile until it gets a tag here, and the
// coverage test below then fails until it also gets a golden sample.
fn to_worker_tag(m: &ToWorker) -> usize {
    match m {
        ToWorker::Heartbeat { .. } => 0,
        ToWorker::Shutdown { .. } => 1,
        ToWorker::Inject(_) => 2,
        ToWorker::Load { .. } => 3,
        ToWorker::Generate { .. } => 4,
        ToWorker::Cancel { .. } => 5,
        ToWorker::Avatar(_) => 6,
        ToWorker::Ingest { .. } => 7,
        ToWorker::Unity { .. } => 8,
        ToWorker::Complete { .. } => 9,
        ToWorker::ApiStart(_) => 10,
        ToWorker::Api { .. } => 11,
    }
}
fn from_worker_tag(m: &FromWorker) -> usize {
    match m {
        FromWorker::Ready => 0,
        FromWorker::Heartbeat { .. } => 1,
        FromWorker::Fatal { .. } => 2,
        FromWorker::Loaded { .. } => 3,
        FromWorker::Chunk { .. } => 4,
        FromWorker::Done { .. } => 5,
        FromWorker::Failed { .. } => 6,
        FromWorker::Notice { .. } => 7,
        FromWorker::BridgeStatus(_) => 8,
        FromWorker::Ingested { .. } => 9,
        FromWorker::ContextTrimmed { .. } => 10,
        FromWorker::Api(_) => 11,
    }
}
fn request_tag(m: &Request) -> usize {
    match m {
        Request::Status => 0,
        Request::Restart { .. } => 1,
        Request::Stop { .. } => 2,
        Request::Start { .. } => 3,
        Request::SetProfile { .. } => 4,
        Request::Chat { .. } => 5,
        Request::Cancel => 6,
        Request::Events { .. } => 7,
        Request::Shutdown => 8,
        Request::Inject { .. } => 9,
        Request::Avatar(_) => 10,
        Request::ClearSession => 11,
    }
}
fn reply_tag(m: &Reply) -> usize {
    match m {
        Reply::Ok => 0,
        Reply::Error { .. } => 1,
        Reply::Status(_) => 2,
        Reply::Chunk { .. } => 3,
        Reply::ChatDone { .. } => 4,
        Reply::Event(_) => 5,
    }
}
fn hello_reply_tag(m: &HelloReply) -> usize {
    match m {
        HelloReply::Accepted { .. } => 0,
        HelloReply::Rejected(_) => 1,
    }
}

fn profile() -> Profile {
    Profile {
        name: "balanced".into(),
        n_gpu_layers: 24,
        n_ctx: 4096,
        n_batch: 512,
        n_ubatch: 512,
        kv_type: KvType::Q8_0,
        flash_attention: true,
        mmap: true,
        mlock: false,
        n_threads: 0,
    }
}

fn stats() -> GenerationStats {
    GenerationStats {
        prompt_tokens: 12,
        generated_tokens: 34,
        ttft_ms: 56.5,
        prompt_tokens_per_s: 700.25,
        gen_tokens_per_s: 42.0,
        stop: StopReason::StopString("\nUser:".into()),
        cached_tokens: 8,
    }
}

fn to_worker_samples() -> Vec<ToWorker> {
    vec![
        ToWorker::Heartbeat { seq: 7 },
        ToWorker::Shutdown { grace_ms: 5000 },
        ToWorker::Inject(Fault::Hang),
        ToWorker::Load {
            model_path: "/m/gemma.gguf".into(),
            profile: profile(),
            options: LlmOptions {
                snapshot_dir: Some("/s/session".into()),
                ..LlmOptions::default()
            },
        },
        ToWorker::Generate {
            request_id: 3,
            messages: vec![
                ChatMessage {
                    role: ChatRole::System,
                    text: "Be kind.".into(),
                },
                ChatMessage {
                    role: ChatRole::User,
                    text: "héllo".into(),
                },
            ],
            sampling: Sampling::default(),
            snapshot: true,
        },
        ToWorker::Cancel { request_id: 3 },
        ToWorker::Avatar(AvatarCommand::SetExpression {
            expression: "happy".into(),
            intensity: 0.75,
            transition_ms: 200,
        }),
        ToWorker::Ingest {
            request_id: 9,
            messages: vec![ChatMessage {
                role: ChatRole::Assistant,
                text: "Hi!".into(),
            }],
        },
        ToWorker::Unity {
            options: UnityOptions::default(),
            avatar: vec![
                AvatarCommand::LoadVrm {
                    path: "/models/mate.vrm".into(),
                },
                AvatarCommand::Blink { enabled: true },
            ],
        },
        ToWorker::Complete {
            request_id: 11,
            prompt: "Once upon a time".into(),
            sampling: Sampling::greedy(8),
        },
        ToWorker::ApiStart(Box::new(ApiOptions {
            address: "127.0.0.1:6283".into(),
            api_key: Some("k".into()),
            max_body_bytes: 4 << 20,
            cors_origins: vec!["http://localhost:3000".into()],
            model: "gemma".into(),
            max_connections: 256,
            request_timeout_ms: 30_000,
            sampling: Sampling::default(),
        })),
        ToWorker::Api {
            id: 5,
            event: ApiEvent::Chunk { text: "Hel".into() },
        },
    ]
}

fn from_worker_samples() -> Vec<FromWorker> {
    vec![
        FromWorker::Ready,
        FromWorker::Heartbeat {
            seq: 7,
            vitals: WorkerVitals {
                rss_bytes: 123_456_789,
                cpu_percent: 12.5,
                llm: Some(LlmVitals {
                    phase: LlmPhase::Generating,
                    stalled_ms: 3,
                    model_bytes: 253_113_024,
                    kv_bytes: 1 << 20,
                    n_ctx: 4096,
                    ctx_used: 321,
                    last: Some(stats()),
                }),
                bridge: None,
                api: None,
            },
        },
        FromWorker::Fatal {
            reason: "model file not found".into(),
        },
        FromWorker::Loaded(LoadReport {
            profile: "cpu".into(),
            n_layers: 18,
            model_bytes: 253_113_024,
            load_ms: 120,
            warmup_ms: 30,
            n_threads: 2,
            model_template: false,
            restored_tokens: 1500,
        }),
        FromWorker::Chunk {
            request_id: 3,
            text: "Hi there, ".into(),
        },
        FromWorker::Done {
            request_id: 3,
            stats: stats(),
        },
        FromWorker::Failed {
            request_id: 4,
            reason: "context full".into(),
            client_error: true,
        },
        FromWorker::Notice {
            level: Level::Warn,
            message: "dropped 2 oldest turns".into(),
        },
        FromWorker::BridgeStatus(Box::new(BridgeStatus {
            connected: true,
            peer: "127.0.0.1:5555".into(),
            queue_depth: 2,
            acks_pending: 1,
            commands_per_s: 30.0,
            last_error: Some("no reply from Unity to batch within 2000 ms".into()),
            connects: 2,
            sent: 120,
            lines: 40,
            acked: 117,
            errors: 1,
            timeouts: 1,
            malformed: 3,
            dropped: 4,
            expression: Some("happy".into()),
        })),
        FromWorker::Ingested {
            request_id: 9,
            prompt_tokens: 1600,
            cached_tokens: 1500,
            elapsed_ms: 80,
        },
        FromWorker::ContextTrimmed {
            request_id: 10,
            dropped_messages: 4,
            prompt_tokens: 2000,
            n_ctx: 4096,
        },
        FromWorker::Api(ApiCall::Generate {
            id: 5,
            input: ApiInput::Chat(vec![ChatMessage {
                role: ChatRole::User,
                text: "Hi".into(),
            }]),
            sampling: Sampling::greedy(16),
        }),
    ]
}

fn request_samples() -> Vec<Request> {
    vec![
        Request::Status,
        Request::Restart {
            worker: WorkerKind::Llm,
            profile: Some("low_memory".into()),
        },
        Request::Stop {
            worker: WorkerKind::Bridge,
        },
        Request::Start {
            worker: WorkerKind::Bridge,
        },
        Request::SetProfile { name: "cpu".into() },
        Request::Chat {
            text: "How are you?".into(),
        },
        Request::Cancel,
        Request::Events { follow: true },
        Request::Shutdown,
        Request::Inject {
            worker: WorkerKind::Llm,
            fault: Fault::Crash,
        },
        Request::Avatar(AvatarCommand::PlayAnimation {
            name: "wave".into(),
            looped: false,
        }),
        Request::ClearSession,
    ]
}

fn reply_samples() -> Vec<Reply> {
    vec![
        Reply::Ok,
        Reply::Error {
            message: "no such profile".into(),
        },
        Reply::Status(Box::new(StatusReport {
            supervisor_pid: 4242,
            uptime_ms: 60_000,
            workers: vec![WorkerReport {
                kind: WorkerKind::Llm,
                state: WorkerState::Running,
                pid: Some(4243),
                uptime_ms: 59_000,
                restarts: 1,
                profile: Some("cpu".into()),
                last_exit: Some(ExitStatus::Signal(9)),
                last_error: None,
                vitals: WorkerVitals::default(),
            }],
            turns: 10,
            tokens: 999,
            profile: "balanced".into(),
            ceiling: "performance".into(),
            ladder: vec![Rung {
                profile: profile(),
                estimated_vram_bytes: 3 << 30,
            }],
            gpu: GpuReport {
                name: Some("NVIDIA GeForce RTX 3060".into()),
                simulated: false,
                note: None,
                reading: Some(VramReading {
                    total_bytes: 6 << 30,
                    used_bytes: 5 << 30,
                    llm_bytes: Some(3 << 30),
                    temperature_c: Some(61),
                    utilization_percent: Some(87),
                }),
                alert_percent: 90.0,
                upgrade_below_percent: 80.0,
                critical_percent: 95.0,
                auto_downgrade: true,
                auto_upgrade: true,
            },
            last_decision: None,
            queued: 2,
        })),
        Reply::Chunk {
            text: "Fine, ".into(),
        },
        Reply::ChatDone { stats: stats() },
        Reply::Event(Event {
            at_ms: 1_700_000_000_000,
            level: Level::Info,
            worker: Some(WorkerKind::Llm),
            kind: EventKind::Restarting {
                delay_ms: 200,
                attempt: 2,
            },
            message: "restarting in 200 ms".into(),
        }),
        Reply::Event(Event {
            at_ms: 1_700_000_000_000,
            level: Level::Error,
            worker: None,
            kind: EventKind::TurnNotSaved {
                turn: 7,
                unsaved: 2,
            },
            message: "turn 7 is not saved yet".into(),
        }),
    ]
}

fn hello_reply_samples() -> Vec<HelloReply> {
    vec![
        HelloReply::Accepted {
            version: 1,
            pid: 77,
        },
        HelloReply::Rejected(Rejection::VersionMismatch { ours: 1, theirs: 2 }),
        HelloReply::Rejected(Rejection::Busy { limit: 128 }),
    ]
}

fn hello_sample() -> Hello {
    Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        role: Role::LlmWorker,
        pid: 4243,
        token: AuthToken::from_bytes([0xab; 32]),
    }
}

fn covers<T>(samples: &[T], tag: fn(&T) -> usize) {
    let mut seen: Vec<usize> = samples.iter().map(tag).collect();
    seen.sort_unstable();
    seen.dedup();
    let expected: Vec<usize> = (0..seen.len()).collect();
    assert_eq!(seen, expected, "every variant needs a golden sample");
}

#[test]
fn golden_samples_cover_every_variant() {
    covers(&to_worker_samples(), to_worker_tag);
    covers(&from_worker_samples(), from_worker_tag);
    covers(&request_samples(), request_tag);
    covers(&reply_samples(), reply_tag);
    covers(&hello_reply_samples(), hello_reply_tag);
    // The last tag of each enum must have a sample too.
    assert_eq!(to_worker_samples().len(), 12);
    assert_eq!(from_worker_samples().len(), 12);
    assert_eq!(request_samples().len(), 12);
    assert_eq!(reply_samples().len(), 7);
}

fn golden_line<T: Serialize + std::fmt::Debug>(ty: &str, msg: &T) -> String {
    let bytes = frame::encode_frame(msg, Limit::Data).expect("encode");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let debug = format!("{msg:?}");
    let name = debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default();
    format!("{ty}::{name}: {hex}")
}

/// The wire bytes of every variant. A change here is a protocol change: bump
/// `PROTOCOL_VERSION` unless only new variants were appended.
#[test]
fn golden_bytes() {
    let mut lines = vec![format!("version {PROTOCOL_VERSION}")];
    lines.push(golden_line("Hello", &hello_sample()));
    lines.extend(
        hello_reply_samples()
            .iter()
            .map(|m| golden_line("HelloReply", m)),
    );
    lines.extend(
        to_worker_samples()
            .iter()
            .map(|m| golden_line("ToWorker", m)),
    );
    lines.extend(
        from_worker_samples()
            .iter()
            .map(|m| golden_line("FromWorker", m)),
    );
    lines.extend(request_samples().iter().map(|m| golden_line("Request", m)));
    lines.extend(reply_samples().iter().map(|m| golden_line("Reply", m)));
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn golden_samples_round_trip() {
    for m in to_worker_samples() {
        round_trip(&m, Limit::Data);
    }
    for m in from_worker_samples() {
        round_trip(&m, Limit::Data);
    }
    for m in request_samples() {
        round_trip(&m, Limit::Control);
    }
    for m in reply_samples() {
        round_trip(&m, Limit::Data);
    }
}

#[test]
fn handshake_judges_magic_version_and_verifier() {
    let encode = |h: &Hello| frame::encode_frame(h, Limit::Control).expect("encode")[4..].to_vec();
    let good = hello_sample();
    assert!(judge(&encode(&good), |_| Ok(())).is_ok());

    let bad_magic = Hello {
        magic: *b"NOPE",
        ..good.clone()
    };
    assert_eq!(
        judge(&encode(&bad_magic), |_| Ok(())),
        Err(Rejection::BadMagic)
    );

    let future = Hello {
        version: PROTOCOL_VERSION + 1,
        ..good.clone()
    };
    assert_eq!(
        judge(&encode(&future), |_| Ok(())),
        Err(Rejection::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: PROTOCOL_VERSION + 1
        })
    );

    // A future peer whose Hello no longer parses is still told it is a version mismatch.
    let mut alien = encode(&future);
    alien.truncate(8);
    alien.push(250);
    assert!(matches!(
        judge(&alien, |_| Ok(())),
        Err(Rejection::VersionMismatch { .. })
    ));

    let expected = AuthToken::from_bytes([1; 32]);
    let verdict = judge(&encode(&good), |h| {
        if h.token.matches(&expected) {
            Ok(())
        } else {
            Err(Rejection::BadToken)
        }
    });
    assert_eq!(verdict, Err(Rejection::BadToken));
    assert_eq!(judge(b"", |_| Ok(())), Err(Rejection::Malformed));
}

#[test]
fn token_hex_round_trips_and_rejects_garbage() {
    let token = AuthToken::generate().expect("random");
    let back = AuthToken::from_hex(&token.to_hex()).expect("hex");
    assert!(token.matches(&back));
    assert!(!token.matches(&AuthToken::generate().expect("random")));
    assert!(AuthToken::from_hex("abc").is_err());
    assert!(AuthToken::from_hex(&"zz".repeat(32)).is_err());
    assert!(AuthToken::from_hex(&"é".repeat(32)).is_err());
    assert_eq!(format!("{token:?}"), "AuthToken(<redacted>)");
}

#[test]
fn oversized_messages_are_refused_at_the_sender() {
    let big = Request::Chat {
        text: "x".repeat(crate::CONTROL_MAX_FRAME as usize),
    };
    assert!(matches!(
        frame::encode_frame(&big, Limit::Control),
        Err(crate::Error::FrameTooLarge { .. })
    ));
    assert!(frame::encode_frame(&big, Limit::Data).is_ok());
}

#[test]
fn exit_statuses_are_told_in_the_terms_of_their_platform() {
    let abort = ExitStatus::Code(0xC000_0409_u32 as i32);
    assert_eq!(
        abort.describe(),
        "crashed with 0xC0000409 (STATUS_STACK_BUFFER_OVERRUN: an abort or a fast fail)"
    );
    assert_eq!(abort.short(), "0xC0000409");
    assert!(!abort.is_out_of_memory());
    for oom in [0xC000_0017_u32, 0xC000_012D] {
        assert!(ExitStatus::Code(oom as i32).is_out_of_memory(), "{oom:#x}");
    }
    assert_eq!(ExitStatus::Code(1).describe(), "exited with code 1");
    assert_eq!(ExitStatus::Code(-1).describe(), "exited with code -1");
    assert!(!ExitStatus::Code(-1).is_out_of_memory());
    assert_eq!(
        ExitStatus::Signal(9).describe(),
        "was killed by signal 9 (SIGKILL)"
    );
    assert_eq!(ExitStatus::Terminated.describe(), "was terminated by mate");
    assert_eq!(ExitStatus::Terminated.short(), "terminated");
}
