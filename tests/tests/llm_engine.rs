//! The LLM engine on the tiny random-weight GGUF: real llama.cpp, real decoding, in
//! milliseconds. What a user relies on: long prompts are decoded in n_batch chunks, long
//! conversations are trimmed instead of crashing, cancel stops within a token, text never
//! splits a character, a restored snapshot continues exactly as if nothing happened, and a
//! reply cut short by a crash goes on where it stopped.

use std::path::Path;

use mate_protocol::{
    ChatMessage, ChatRole, ChatTemplate, Coalesce, GenerationStats, KvType, Profile, Sampling,
};
use mate_tests::tiny_model;
use mate_worker_llm::{
    engine::{Listener, Model, Restore, Session, Threads},
    prompt::render_fallback,
    stream::Utf8Stream,
    LlmError,
};

fn profile(n_ctx: u32, n_batch: u32) -> Profile {
    Profile {
        name: "test".into(),
        n_gpu_layers: 0,
        n_ctx,
        n_batch,
        n_ubatch: n_batch,
        kv_type: KvType::F16,
        flash_attention: false,
        mmap: true,
        mlock: false,
        n_threads: 1,
    }
}

const THREADS: Threads = Threads {
    generation: 1,
    batch: 1,
};

fn load() -> Model {
    Model::load(tiny_model(), &profile(512, 512)).expect("tiny model loads")
}

fn msg(role: ChatRole, text: &str) -> ChatMessage {
    ChatMessage {
        role,
        text: text.into(),
    }
}

fn conversation(turns: usize) -> Vec<ChatMessage> {
    let mut m = vec![msg(ChatRole::System, "You are mate.")];
    for i in 0..turns {
        m.push(msg(ChatRole::User, &format!("hello mate, is the {i} a?")));
        m.push(msg(ChatRole::Assistant, &format!("the {i} is a you.")));
    }
    m.push(msg(ChatRole::User, "hello?"));
    m
}

/// Records what the session reports.
#[derive(Default)]
struct Record {
    text: String,
    chunks: usize,
    trimmed: Vec<(usize, usize)>,
    decoded_batches: usize,
    generated: usize,
    cancel_after_tokens: Option<usize>,
}

impl Listener for Record {
    fn cancelled(&self) -> bool {
        self.cancel_after_tokens
            .is_some_and(|n| self.generated >= n)
    }
    fn progress(&mut self, phase: mate_protocol::LlmPhase, _ctx_used: usize) {
        match phase {
            mate_protocol::LlmPhase::Generating => self.generated += 1,
            _ => self.decoded_batches += 1,
        }
    }
    fn text(&mut self, chunk: &str) {
        self.text.push_str(chunk);
        self.chunks += 1;
    }
    fn trimmed(&mut self, dropped: usize, prompt_tokens: usize) {
        self.trimmed.push((dropped, prompt_tokens));
    }
}

fn reply(session: &mut Session<'_>, messages: &[ChatMessage], max_tokens: u32) -> Record {
    reply_recorded(session, messages, max_tokens).0
}

/// A greedy reply, with what the session reported and its figures.
fn reply_recorded(
    session: &mut Session<'_>,
    messages: &[ChatMessage],
    max_tokens: u32,
) -> (Record, mate_protocol::GenerationStats) {
    let mut rec = Record::default();
    let stats = session
        .generate(
            messages,
            &Sampling::greedy(max_tokens),
            &ChatTemplate::default(),
            Coalesce::OFF,
            &mut rec,
        )
        .expect("generate");
    (rec, stats)
}

#[test]
fn loads_the_tiny_model_without_a_template_and_uses_the_fallback() {
    let model = load();
    assert_eq!(model.n_layers(), 2);
    assert!(!model.has_template());
    let messages = conversation(1);
    let (text, special) = model
        .render(&messages, &ChatTemplate::default())
        .expect("render");
    assert!(!special);
    assert_eq!(text, render_fallback(&ChatTemplate::default(), &messages));
    assert!(text.ends_with("User: hello?\nMate:"));

    let mut session = model.session(&profile(512, 512), THREADS).expect("session");
    reply(&mut session, &messages, 8);
    let prompt = model.tokenize(&text, false);
    assert_eq!(&session.cached()[..prompt.len()], &prompt[..]);
}

#[test]
fn a_prompt_longer_than_n_batch_is_decoded_in_chunks() {
    let model = load();
    let n_batch = 16;
    let mut session = model
        .session(&profile(1024, n_batch), THREADS)
        .expect("session");
    let messages = conversation(12);
    let mut rec = Record::default();
    let report = session
        .ingest_conversation(&messages, &ChatTemplate::default(), &mut rec)
        .expect("a prompt many times n_batch decodes");
    assert!(report.prompt_tokens > 10 * n_batch as usize, "{report:?}");
    assert_eq!(session.cached().len(), report.prompt_tokens);
    assert_eq!(
        rec.decoded_batches,
        report.prompt_tokens.div_ceil(n_batch as usize)
    );
    // And the reply after it works, reusing all but the last prompt token.
    let mut rec = Record::default();
    let stats = session
        .generate(
            &messages,
            &Sampling::greedy(4),
            &ChatTemplate::default(),
            Coalesce::OFF,
            &mut rec,
        )
        .expect("generate");
    assert_eq!(stats.cached_tokens as usize, report.prompt_tokens - 1);
}

#[test]
fn a_conversation_that_outgrows_the_context_drops_old_turns_and_keeps_the_system_prompt() {
    let model = load();
    let n_ctx = 256;
    let mut session = model
        .session(&profile(n_ctx, 64), THREADS)
        .expect("session");
    let messages = conversation(60);
    let rec = reply(&mut session, &messages, 16);
    let (dropped, prompt_tokens) = *rec.trimmed.first().expect("a trim was reported");
    assert!(dropped > 0 && dropped % 2 == 0, "whole turns: {dropped}");
    assert!(prompt_tokens < n_ctx as usize);
    assert!(session.cached().len() < n_ctx as usize);
    let system = model.tokenize("You are mate.\n\nUser:", false);
    assert_eq!(
        &session.cached()[..system.len() - 1],
        &system[..system.len() - 1]
    );

    // The next turn keeps the same start (no new trim while it fits): the cache is reused.
    let mut longer = messages.clone();
    longer.push(msg(ChatRole::Assistant, "a"));
    longer.push(msg(ChatRole::User, "and?"));
    let mut rec = Record::default();
    let stats = session
        .generate(
            &longer,
            &Sampling::greedy(4),
            &ChatTemplate::default(),
            Coalesce::OFF,
            &mut rec,
        )
        .expect("generate");
    assert!(rec.trimmed.is_empty());
    assert!(
        stats.cached_tokens as usize > prompt_tokens / 2,
        "{stats:?}"
    );
}

#[test]
fn a_message_that_can_never_fit_is_a_clear_error() {
    let model = load();
    let mut session = model.session(&profile(128, 64), THREADS).expect("session");
    let mut messages = conversation(0);
    messages.push(msg(ChatRole::User, &"hello ".repeat(200)));
    let err = session
        .generate(
            &messages,
            &Sampling::greedy(4),
            &ChatTemplate::default(),
            Coalesce::OFF,
            &mut Record::default(),
        )
        .expect_err("too long");
    assert!(matches!(err, LlmError::PromptTooLong { .. }), "{err}");
    assert!(err.to_string().contains("n_ctx"));
    // The session is still usable.
    reply(&mut session, &conversation(0), 2);
}

#[test]
fn cancel_stops_within_one_token() {
    let model = load();
    let mut session = model.session(&profile(512, 64), THREADS).expect("session");
    for after in [0, 1, 5] {
        let mut rec = Record {
            cancel_after_tokens: Some(after),
            ..Record::default()
        };
        session.reset();
        let stats = session
            .generate(
                &conversation(1),
                &Sampling::greedy(100),
                &ChatTemplate::default(),
                Coalesce::OFF,
                &mut rec,
            )
            .expect("generate");
        assert_eq!(stats.stop, mate_protocol::StopReason::Cancelled);
        // Cancel is seen after `after` decoded tokens; at most one more is sampled.
        assert!(
            stats.generated_tokens as usize <= after + 1,
            "cancel after {after}: {stats:?}"
        );
    }
}

#[test]
fn multibyte_characters_split_across_tokens_stream_whole() {
    let model = load();
    let text = "hé 😀 ok";
    let tokens = model.tokenize(text, false);
    let pieces: Vec<Vec<u8>> = tokens.iter().map(|t| model.piece(*t)).collect();
    assert!(
        pieces
            .iter()
            .any(|p| !p.is_empty() && std::str::from_utf8(p).is_err()),
        "the byte-fallback vocab must split a character for this test to mean anything"
    );
    let mut stream = Utf8Stream::default();
    let mut out = String::new();
    for p in &pieces {
        let before = out.len();
        stream.push(p, &mut out);
        assert!(!out[before..].contains('\u{FFFD}'));
    }
    stream.finish(&mut out);
    assert_eq!(out.trim_start(), text);
}

#[test]
fn a_restored_snapshot_continues_exactly_like_the_uninterrupted_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = load();
    let p = profile(512, 64);
    let first = conversation(2);

    // Uninterrupted: two turns in one session.
    let mut a = model.session(&p, THREADS).expect("session");
    let r1 = reply(&mut a, &first, 12).text;
    a.save_snapshot(dir.path()).expect("save snapshot");
    let mut second = first.clone();
    second.push(msg(ChatRole::Assistant, &r1));
    second.push(msg(ChatRole::User, "is it?"));
    let r2 = reply(&mut a, &second, 12).text;
    assert!(!r1.is_empty() && !r2.is_empty(), "{r1:?} {r2:?}");
    println!("turn 1: {r1:?}\nturn 2: {r2:?}");

    // Restarted: a new model and session, restored from the snapshot.
    let model_b = load();
    let mut b = model_b.session(&p, THREADS).expect("session");
    let restored = b.restore_snapshot(dir.path());
    let Restore::Restored(n) = restored else {
        panic!("snapshot not restored: {restored:?}");
    };
    assert!(n > 50);
    let mut rec = Record::default();
    let stats = b
        .generate(
            &second,
            &Sampling::greedy(12),
            &ChatTemplate::default(),
            Coalesce::OFF,
            &mut rec,
        )
        .expect("generate");
    assert_eq!(rec.text, r2, "restored and uninterrupted runs diverged");
    assert!(stats.cached_tokens as usize >= n / 2, "{stats:?} after {n}");

    // Other context settings: the snapshot is not used, and nothing breaks.
    let mut c = model_b
        .session(&profile(1024, 64), THREADS)
        .expect("session");
    assert!(matches!(
        c.restore_snapshot(dir.path()),
        Restore::Skipped(_)
    ));
    assert!(c.cached().is_empty());
    assert_eq!(c.restore_snapshot(&dir.path().join("none")), Restore::None);
}

#[test]
fn a_damaged_snapshot_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = load();
    let p = profile(512, 64);
    let mut a = model.session(&p, THREADS).expect("session");
    reply(&mut a, &conversation(1), 4);
    assert!(a.save_snapshot(dir.path()).expect("save"));
    // The same state again is not written twice.
    assert!(!a.save_snapshot(dir.path()).expect("save"));
    let kv = std::fs::read_dir(dir.path())
        .expect("snapshot dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "kv"))
        .expect("a kv file");
    let len = std::fs::metadata(&kv).expect("kv file").len();
    let bytes = std::fs::read(&kv).expect("read");
    std::fs::write(&kv, &bytes[..(len / 2) as usize]).expect("truncate");
    let mut b = model.session(&p, THREADS).expect("session");
    assert!(matches!(
        b.restore_snapshot(dir.path()),
        Restore::Skipped(_)
    ));
    reply(&mut b, &conversation(1), 4);
}

#[test]
fn greedy_generation_is_deterministic() {
    let model = load();
    let p = profile(512, 64);
    let mut a = model.session(&p, THREADS).expect("session");
    let mut b = model.session(&p, THREADS).expect("session");
    let one = reply(&mut a, &conversation(1), 16);
    let two = reply(&mut b, &conversation(1), 16);
    assert_eq!(one.text, two.text);
    assert!(one.generated > 0);
}

#[test]
fn bad_model_files_give_one_clear_error_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = profile(512, 64);
    let check = |path: &Path, expect: &str| {
        let err = Model::load(path, &p).expect_err("must not load");
        let text = err.to_string();
        assert!(text.contains(expect), "{text}");
        assert!(err.is_permanent(), "{text}");
    };
    check(&dir.path().join("missing.gguf"), "mate model fetch");
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"<html>not a model</html>").expect("write");
    check(&garbage, "not a GGUF model");
    let truncated = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(tiny_model()).expect("read tiny");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write");
    check(&truncated, "truncated");
    check(dir.path(), "not a regular file");
}

#[test]
fn quantized_kv_without_flash_attention_is_refused_with_the_fix() {
    let model = load();
    let mut p = profile(512, 64);
    p.kv_type = KvType::Q8_0;
    let err = model.session(&p, THREADS).expect_err("refused");
    assert!(err.to_string().contains("flash_attention = true"), "{err}");
}

/// A greedy reply with `template`, and its stats.
fn reply_with(
    session: &mut Session<'_>,
    messages: &[ChatMessage],
    max_tokens: u32,
    template: &ChatTemplate,
) -> (Record, GenerationStats) {
    let mut rec = Record::default();
    let stats = session
        .generate(
            messages,
            &Sampling::greedy(max_tokens),
            template,
            Coalesce::OFF,
            &mut rec,
        )
        .expect("generate");
    (rec, stats)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("a small count")
}

fn continuing(messages: &[ChatMessage], partial: &str) -> Vec<ChatMessage> {
    let mut m = messages.to_vec();
    m.push(msg(ChatRole::Assistant, partial));
    m
}

#[test]
fn a_reply_cut_short_continues_exactly_where_it_stopped() {
    let model = load();
    let p = profile(512, 64);
    // The default template writes "Mate: {text}" for a past reply but prompts with "Mate:", a
    // space the model may not have generated; this one renders a reply as it was generated.
    let template = ChatTemplate {
        assistant: "Mate:{text}\n".into(),
        ..ChatTemplate::default()
    };
    let messages = conversation(1);
    let n = 24;
    let mut whole = model.session(&p, THREADS).expect("session");
    let (full, _) = reply_with(&mut whole, &messages, n, &template);
    let uninterrupted = whole.cached().to_vec();
    assert!(full.generated > 8, "{:?}", full.text);

    let mut session = model.session(&p, THREADS).expect("session");
    let mut exact = 0;
    for k in 1..n {
        // The worker streamed k tokens, then died.
        session.reset();
        let (head, _) = reply_with(&mut session, &messages, k, &template);
        let head = head.text;
        assert!(
            full.text.starts_with(head.trim_end_matches('\u{FFFD}')),
            "after {k} tokens: {head:?} is not how {:?} starts (the last token streamed twice?)",
            full.text
        );
        let cont = continuing(&messages, &head);
        let (prompt, _) = model.render(&cont, &template).expect("render");
        assert!(prompt.ends_with(&format!("\nMate:{head}")), "{prompt:?}");
        let prompt = model.tokenize(&prompt, false);
        // The next worker continues, here with the head still in its cache.
        let (rest, stats) = reply_with(&mut session, &cont, n - k, &template);
        // The byte-fallback vocab has two spellings of most characters (a piece and its byte),
        // so the streamed text gives the model the same context only where it tokenizes back
        // to the very tokens generated. There, the continuation must be the same reply.
        if uninterrupted.get(..prompt.len()) == Some(&prompt[..]) {
            exact += 1;
            assert_eq!(
                format!("{head}{}", rest.text),
                full.text,
                "continued after {k} tokens"
            );
            assert_eq!(stats.cached_tokens as usize, prompt.len() - 1, "{stats:?}");
        }
    }
    assert!(
        exact > 0,
        "no cut point tokenizes back to the generated tokens: this test checks nothing"
    );
}

#[test]
fn a_continuation_that_starts_with_whitespace_keeps_it() {
    let model = load();
    let p = profile(512, 64);
    let template = ChatTemplate {
        assistant: "Mate:{text}\n".into(),
        ..ChatTemplate::default()
    };
    let mut session = model.session(&p, THREADS).expect("session");
    // The random weights seldom pick whitespace: look for replies that do, going on from
    // every prefix of a sentence in a few conversations, and cut them just before it.
    let sentence = "hello mate, is the a you? I is the mate!";
    let mut checked = 0;
    for turns in 0..3 {
        let messages = conversation(turns);
        for end in 1..=sentence.len() {
            let base = continuing(&messages, &sentence[..end]);
            let (prompt, _) = model.render(&base, &template).expect("render");
            let start = model.tokenize(&prompt, false).len();
            let (full, _) = reply_with(&mut session, &base, 16, &template);
            let uninterrupted = session.cached().to_vec();
            for cut in start..uninterrupted.len() {
                let piece = model.piece(uninterrupted[cut]);
                if !String::from_utf8_lossy(&piece).starts_with(char::is_whitespace) {
                    continue;
                }
                let head: Vec<u8> = uninterrupted[start..cut]
                    .iter()
                    .flat_map(|t| model.piece(*t))
                    .collect();
                let Ok(head) = String::from_utf8(head) else {
                    continue;
                };
                let cont = continuing(&messages, &format!("{}{head}", &sentence[..end]));
                let (prompt, _) = model.render(&cont, &template).expect("render");
                let prompt = model.tokenize(&prompt, false);
                if uninterrupted.get(..prompt.len()) != Some(&prompt[..]) {
                    continue;
                }
                checked += 1;
                let left = 16 - to_u32(cut - start);
                let (rest, _) = reply_with(&mut session, &cont, left, &template);
                assert!(
                    rest.text.starts_with(char::is_whitespace),
                    "{:?} lost its leading whitespace",
                    rest.text
                );
                assert_eq!(format!("{head}{}", rest.text), full.text);
            }
        }
    }
    assert!(
        checked > 0,
        "no reply started a token with whitespace: this test checks nothing"
    );
}

#[test]
fn a_continuation_streams_exactly_the_text_it_generates() {
    let model = load();
    let p = profile(512, 64);
    let mut session = model.session(&p, THREADS).expect("session");
    let sentence = "hello mate, is the a you? I is the mate!";
    for assistant in ["Mate: {text}\n", "Mate:{text}\n"] {
        let template = ChatTemplate {
            assistant: assistant.into(),
            ..ChatTemplate::default()
        };
        let messages = conversation(1);
        // A reply cut short at every character of the sentence.
        for end in 1..=sentence.len() {
            let head = &sentence[..end];
            let cont = continuing(&messages, head);
            let (prompt, _) = model.render(&cont, &template).expect("render");
            let open = assistant.replace("{text}\n", head);
            assert!(
                prompt.ends_with(&format!("\nUser: hello?\n{open}")),
                "{prompt:?}"
            );
            let prompt = model.tokenize(&prompt, false);
            let (rest, _) = reply_with(&mut session, &cont, 6, &template);
            // The new tokens follow the prompt in the cache (all but the last one sampled).
            // What they say is what was streamed, from the first byte: nothing trimmed, since
            // the reply goes on mid-text.
            let generated: Vec<u8> = session.cached()[prompt.len()..]
                .iter()
                .flat_map(|t| model.piece(*t))
                .collect();
            let generated = String::from_utf8_lossy(&generated);
            assert!(
                rest.text
                    .starts_with(generated.trim_end_matches('\u{FFFD}')),
                "after {head:?}: streamed {:?}, generated {generated:?}",
                rest.text
            );
        }
    }

    // An empty partial reply is an ordinary one, leading whitespace trimmed as always.
    let messages = conversation(1);
    let template = ChatTemplate::default();
    session.reset();
    let (fresh, _) = reply_with(&mut session, &messages, 8, &template);
    session.reset();
    let (empty, _) = reply_with(&mut session, &continuing(&messages, ""), 8, &template);
    assert_eq!(empty.text, fresh.text);
}

fn reply_stats(
    session: &mut Session<'_>,
    messages: &[ChatMessage],
    max_tokens: u32,
) -> (String, mate_protocol::GenerationStats) {
    let (rec, stats) = reply_recorded(session, messages, max_tokens);
    (rec.text, stats)
}

/// The companion's conversation, another client's in between, then the companion's next turn:
/// it comes back from the stash (nothing decoded again) and says what it would have said had
/// nothing come between; with the stash off, the whole history is decoded again.
#[test]
fn a_conversation_displaced_by_another_comes_back_from_the_stash_unchanged() {
    let model = load();
    let p = profile(512, 64);
    let first = conversation(4);
    let other = vec![
        msg(ChatRole::System, "You write about the sea."),
        msg(
            ChatRole::User,
            "the ships and the sea and the ships, the 3 a you?",
        ),
    ];
    let next = |r1: &str| {
        let mut m = first.clone();
        m.push(msg(ChatRole::Assistant, r1));
        m.push(msg(ChatRole::User, "is it?"));
        m
    };

    let mut alone = model.session(&p, THREADS).expect("session");
    let (r1, _) = reply_stats(&mut alone, &first, 8);
    let (r2_alone, _) = reply_stats(&mut alone, &next(&r1), 8);

    for stash_on in [true, false] {
        let mut s = model.session(&p, THREADS).expect("session");
        if !stash_on {
            s.set_stash_bytes(0);
        }
        let (r1_here, first_stats) = reply_stats(&mut s, &first, 8);
        assert_eq!(r1_here, r1);
        assert!(first_stats.prompt_tokens >= 64, "{first_stats:?}");
        let (_, other_stats) = reply_stats(&mut s, &other, 8);
        assert!(other_stats.cached_tokens < 8, "{other_stats:?}");
        let (r2, stats) = reply_stats(&mut s, &next(&r1), 8);
        println!("stash {stash_on}: {stats:?}, stashed {:?}", s.stashed());
        assert_eq!(r2, r2_alone, "the reply is as if nothing came between");
        if stash_on {
            assert!(
                stats.cached_tokens >= first_stats.prompt_tokens,
                "the whole first turn came back: {stats:?} after {first_stats:?}"
            );
        } else {
            assert!(stats.cached_tokens < 8, "{stats:?}");
        }
    }
}
