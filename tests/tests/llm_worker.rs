//! The LLM worker as a real process, spoken to over the real protocol (the supervisor's side
//! played by `mate::direct`): a real reply from the default model streams in, heartbeats are
//! answered while it generates, cancel stops it, a missing model fails once and clearly, and a
//! restarted worker picks the conversation up from its snapshot.

use std::{path::Path, time::Duration};

use mate::direct::DirectWorker;
use mate_protocol::{
    ChatMessage, ChatRole, Coalesce, FromWorker, GenerationStats, LlmOptions, LoadReport, Profile,
    Sampling, StopReason, ToWorker, WorkerKind,
};
use mate_tests::{default_model, mate_bin, tiny_model, StateDir};

const LONG: Duration = Duration::from_secs(120);

fn profile() -> Profile {
    Profile::cpu(2048)
}

fn spawn(state: &StateDir) -> DirectWorker {
    DirectWorker::spawn(
        mate_bin(),
        WorkerKind::Llm,
        state.path(),
        &state.path().join("worker.stderr.log"),
    )
    .expect("spawn llm worker")
}

fn ready(w: &mut DirectWorker) {
    w.recv_until(LONG, |m| matches!(m, FromWorker::Ready).then_some(()))
        .expect("ready");
}

fn load(w: &mut DirectWorker, model: &Path, options: LlmOptions) -> LoadReport {
    ready(w);
    w.send(&ToWorker::Load {
        model_path: model.to_string_lossy().into_owned(),
        profile: profile(),
        options,
    })
    .expect("send load");
    w.recv_until(LONG, |m| match m {
        FromWorker::Loaded(r) => Some(r),
        FromWorker::Fatal { reason } => panic!("load failed: {reason}"),
        _ => None,
    })
    .expect("loaded")
}

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: ChatRole::User,
        text: text.into(),
    }
}

/// Collects a reply's chunks until its `Done`.
fn collect(w: &mut DirectWorker, request_id: u64) -> (Vec<String>, GenerationStats) {
    let mut chunks = Vec::new();
    let stats = w
        .recv_until(LONG, |m| match m {
            FromWorker::Chunk {
                request_id: id,
                text,
            } if id == request_id => {
                chunks.push(text);
                None
            }
            FromWorker::Done {
                request_id: id,
                stats,
            } if id == request_id => Some(stats),
            FromWorker::Failed { reason, .. } => panic!("generation failed: {reason}"),
            _ => None,
        })
        .expect("done");
    (chunks, stats)
}

#[test]
fn a_real_reply_from_the_default_model_streams_in_with_sane_stats() {
    let state = StateDir::new();
    let mut w = spawn(&state);
    let report = load(&mut w, default_model(), LlmOptions::default());
    assert_eq!(
        report.n_layers, 18,
        "Gemma 3 270M has 18 layers: {report:?}"
    );
    assert!(report.model_bytes > 100_000_000);
    assert!(report.n_threads >= 1);
    w.send(&ToWorker::Generate {
        request_id: 1,
        messages: vec![user("Write one sentence about the sea.")],
        sampling: Sampling::greedy(32),
        snapshot: true,
    })
    .expect("send");
    // Asked while it generates: the reader thread answers at once.
    w.send(&ToWorker::Heartbeat { seq: 9 }).expect("heartbeat");
    let mut heartbeat = None;
    let mut chunks = Vec::new();
    let stats = w
        .recv_until(LONG, |m| match m {
            FromWorker::Heartbeat { seq: 9, vitals } => {
                heartbeat = Some(vitals);
                None
            }
            FromWorker::Chunk { text, .. } => {
                chunks.push(text);
                None
            }
            FromWorker::Done { stats, .. } => Some(stats),
            FromWorker::Failed { reason, .. } => panic!("{reason}"),
            _ => None,
        })
        .expect("done");
    let vitals = heartbeat.expect("heartbeat answered before the reply was done");
    assert!(vitals.rss_bytes > 0);
    let llm = vitals.llm.expect("llm vitals");
    assert_eq!(llm.n_ctx, 2048);
    assert!(llm.model_bytes > 100_000_000);

    let text: String = chunks.concat();
    assert!(chunks.len() >= 2, "streamed in pieces: {chunks:?}");
    assert!(
        !text.trim().is_empty() && !text.contains('\u{FFFD}'),
        "{text:?}"
    );
    assert!(stats.prompt_tokens > 5, "{stats:?}");
    assert!((1..=32).contains(&stats.generated_tokens), "{stats:?}");
    assert!(stats.ttft_ms > 0.0 && stats.ttft_ms < 60_000.0, "{stats:?}");
    assert!(stats.gen_tokens_per_s > 0.5, "{stats:?}");
    assert!(stats.prompt_tokens_per_s > 0.5, "{stats:?}");
    assert!(
        matches!(
            stats.stop,
            StopReason::MaxTokens | StopReason::EndOfText | StopReason::StopString(_)
        ),
        "{stats:?}"
    );
}

#[test]
fn cancel_stops_a_long_generation_at_once() {
    let state = StateDir::new();
    let mut w = spawn(&state);
    load(
        &mut w,
        default_model(),
        LlmOptions {
            coalesce: Coalesce::OFF,
            ..LlmOptions::default()
        },
    );
    w.send(&ToWorker::Generate {
        request_id: 7,
        messages: vec![user("Tell me a very long story about a lighthouse keeper.")],
        sampling: Sampling::greedy(400),
        snapshot: true,
    })
    .expect("send");
    let mut seen = 0;
    w.recv_until(LONG, |m| match m {
        FromWorker::Chunk { .. } => {
            seen += 1;
            (seen == 3).then_some(())
        }
        FromWorker::Done { stats, .. } => panic!("ended before the cancel: {stats:?}"),
        _ => None,
    })
    .expect("first chunks");
    w.send(&ToWorker::Cancel { request_id: 7 }).expect("cancel");
    let (late, stats) = collect(&mut w, 7);
    assert_eq!(stats.stop, StopReason::Cancelled);
    // Tokens already on the wire when the cancel was sent, plus at most one.
    assert!(
        stats.generated_tokens as usize <= seen + late.len() + 1 && late.len() <= 3,
        "{} late chunks, {stats:?}",
        late.len()
    );
    // The worker lives on and answers the next request.
    w.send(&ToWorker::Generate {
        request_id: 8,
        messages: vec![user("Hi")],
        sampling: Sampling::greedy(4),
        snapshot: true,
    })
    .expect("send");
    collect(&mut w, 8);
}

#[test]
fn a_missing_model_fails_once_with_what_to_do_and_the_worker_stays_up() {
    let state = StateDir::new();
    let mut w = spawn(&state);
    ready(&mut w);
    w.send(&ToWorker::Load {
        model_path: state
            .path()
            .join("nope.gguf")
            .to_string_lossy()
            .into_owned(),
        profile: profile(),
        options: LlmOptions::default(),
    })
    .expect("send");
    let reason = w
        .recv_until(LONG, |m| match m {
            FromWorker::Fatal { reason } => Some(reason),
            _ => None,
        })
        .expect("fatal");
    assert!(
        reason.contains("nope.gguf") && reason.contains("mate model fetch"),
        "{reason}"
    );
    // No crash: it still answers, and refuses generation with a reason.
    w.send(&ToWorker::Generate {
        request_id: 1,
        messages: vec![user("hi")],
        sampling: Sampling::greedy(4),
        snapshot: true,
    })
    .expect("send");
    let why = w
        .recv_until(LONG, |m| match m {
            FromWorker::Failed { reason, .. } => Some(reason),
            _ => None,
        })
        .expect("failed");
    assert!(why.contains("no model"), "{why}");
}

#[test]
fn a_killed_worker_is_replaced_by_one_that_restores_the_conversation_snapshot() {
    let state = StateDir::new();
    let snapshots = state.path().join("session");
    let options = LlmOptions {
        snapshot_dir: Some(snapshots.to_string_lossy().into_owned()),
        ..LlmOptions::default()
    };
    let mut conversation = vec![user("hello mate, is the sea a you?")];
    let mut a = spawn(&state);
    let first = load(&mut a, tiny_model(), options.clone());
    assert_eq!(first.restored_tokens, 0);
    a.send(&ToWorker::Generate {
        request_id: 1,
        messages: conversation.clone(),
        sampling: Sampling::greedy(16),
        snapshot: true,
    })
    .expect("send");
    let (chunks, stats) = collect(&mut a, 1);
    // The snapshot is written after `Done`; wait for it before the kill.
    mate_tests::wait_until(Duration::from_secs(10), "snapshot written", || {
        snapshots.join("conversation.json").is_file()
    });
    a.kill();

    conversation.push(ChatMessage {
        role: ChatRole::Assistant,
        text: chunks.concat(),
    });
    conversation.push(user("and then?"));
    let mut b = spawn(&state);
    let report = load(&mut b, tiny_model(), options);
    assert!(
        report.restored_tokens as usize >= stats.prompt_tokens as usize,
        "{report:?} after {stats:?}"
    );
    b.send(&ToWorker::Ingest {
        request_id: 2,
        messages: conversation.clone(),
    })
    .expect("send");
    let (prompt, cached) = b
        .recv_until(LONG, |m| match m {
            FromWorker::Ingested {
                prompt_tokens,
                cached_tokens,
                ..
            } => Some((prompt_tokens, cached_tokens)),
            _ => None,
        })
        .expect("ingested");
    assert!(cached >= stats.prompt_tokens, "{cached} of {prompt}");
}
