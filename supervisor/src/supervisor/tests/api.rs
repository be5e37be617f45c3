//! The API worker's calls in the loop: one queue with chats, stateless turns, resumes,
//! cancels from clients that leave, and health.

use mate_protocol::{ApiCall, ApiEvent, ApiInput, Sampling};

use super::*;

impl Loop {
    /// The API worker passes on an HTTP client's call.
    fn api(&mut self, call: ApiCall) {
        self.send(API, FromWorker::Api(call));
    }

    /// What the API worker was told about call `id` since the last look.
    fn api_events(&mut self, id: u64) -> Vec<ApiEvent> {
        self.sent(API)
            .into_iter()
            .filter_map(|m| match m {
                ToWorker::Api { id: of, event } if of == id => Some(event),
                _ => None,
            })
            .collect()
    }

    fn health(&mut self) -> mate_protocol::Health {
        self.api(ApiCall::Health { id: 99 });
        match self.api_events(99).as_slice() {
            [ApiEvent::Health(h)] => h.clone(),
            other => panic!("one health answer: {other:?}"),
        }
    }
}

fn asked(text: &str) -> ApiInput {
    ApiInput::Chat(vec![ChatMessage {
        role: ChatRole::User,
        text: text.into(),
    }])
}

fn generate(id: u64, input: ApiInput) -> ApiCall {
    ApiCall::Generate {
        id,
        input,
        sampling: Sampling::greedy(8),
    }
}

fn text_of_events(events: &[ApiEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            ApiEvent::Chunk { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_api_request_waits_behind_a_chat_then_streams_and_stays_out_of_the_transcript() {
    let mut l = Loop::up();
    let mut chat = l.request(Request::Chat { text: "Hi".into() });
    let (chat_id, _) = l.generate();
    l.api(generate(7, asked("What is 2+2?")));
    assert_eq!(l.api_events(7), [ApiEvent::Queued { ahead: 1 }]);
    assert_eq!(l.sup.queued(), 1);

    l.chunk(chat_id, "Hello!");
    l.done(chat_id, StopReason::EndOfText);
    assert!(matches!(
        replies(&mut chat).last(),
        Some(Reply::ChatDone { .. })
    ));
    // Stateless: the client's messages only, no system prompt, no companion history.
    let (api_id, messages) = l.generate();
    assert_eq!(
        messages,
        vec![ChatMessage {
            role: ChatRole::User,
            text: "What is 2+2?".into(),
        }]
    );
    l.chunk(api_id, "It is 4.");
    l.done(api_id, StopReason::EndOfText);
    let events = l.api_events(7);
    assert_eq!(text_of_events(&events), "It is 4.");
    assert!(
        matches!(events.last(), Some(ApiEvent::Done { .. })),
        "{events:?}"
    );
    assert_eq!(
        l.sup.transcript.len(),
        1,
        "only the chat is a turn of the session"
    );
    assert!(l.sup.turn.is_none());
}

#[test]
fn a_killed_llm_resumes_an_api_reply_and_a_plain_prompt_the_same_way() {
    let mut l = Loop::up();
    l.api(generate(3, asked("Tell me a story")));
    let (id, _) = l.generate();
    l.chunk(id, "Once upon ");
    l.exit(LLM, ExitStatus::Signal(9));
    l.restart(LLM);
    let (id2, messages) = l.generate();
    let last = messages.last().expect("messages");
    assert_eq!(
        (last.role, last.text.as_str()),
        (ChatRole::Assistant, "Once upon ")
    );
    l.chunk(id2, "a time.");
    l.done(id2, StopReason::EndOfText);
    let events = l.api_events(3);
    assert_eq!(
        text_of_events(&events),
        "Once upon a time.",
        "nothing lost or repeated"
    );
    assert!(
        events.contains(&ApiEvent::Resumed { streamed_chars: 10 }),
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, ApiEvent::Done { .. }))
            .count(),
        1
    );

    // `/v1/completions`: the prompt goes on as plain text, the streamed part appended.
    l.api(generate(4, ApiInput::Prompt("The sky is".into())));
    let complete = |sent: Vec<ToWorker>| {
        sent.into_iter().find_map(|m| match m {
            ToWorker::Complete {
                request_id, prompt, ..
            } => Some((request_id, prompt)),
            _ => None,
        })
    };
    let (id, prompt) = complete(l.sent(LLM)).expect("a Complete");
    assert_eq!(prompt, "The sky is");
    l.chunk(id, " blue");
    l.exit(LLM, ExitStatus::Signal(9));
    l.restart(LLM);
    let (_, prompt) = complete(l.sent(LLM)).expect("the Complete again");
    assert_eq!(prompt, "The sky is blue");
}

#[test]
fn a_client_that_leaves_cancels_its_generation_or_gives_up_its_place() {
    let mut l = Loop::up();
    l.api(generate(1, asked("first")));
    let (id, _) = l.generate();
    l.api(generate(2, asked("second")));
    assert_eq!(l.sup.queued(), 1);
    l.api(ApiCall::Cancel { id: 2 });
    assert_eq!(l.sup.queued(), 0, "the waiting request left the queue");

    l.api(ApiCall::Cancel { id: 1 });
    assert!(l.sent(LLM).contains(&ToWorker::Cancel { request_id: id }));
    l.done(id, StopReason::Cancelled);
    assert!(l.sup.turn.is_none());

    // The API worker dies mid-reply: nobody is left to read it.
    l.api(generate(3, asked("third")));
    let (id, _) = l.generate();
    l.exit(API, ExitStatus::Signal(9));
    assert!(l.sent(LLM).contains(&ToWorker::Cancel { request_id: id }));
}

#[test]
fn a_full_queue_is_a_429_and_a_stopped_llm_a_503() {
    let mut l = Loop::new("[chat]\nqueue = 0\n", None);
    for kind in [LLM, BRIDGE, API] {
        l.serve(kind);
    }
    let _chat = l.request(Request::Chat { text: "Hi".into() });
    l.api(generate(1, asked("me too")));
    assert!(matches!(
        l.api_events(1).as_slice(),
        [ApiEvent::Failed {
            status: 429,
            retry_after_s: 2,
            ..
        }]
    ));

    let mut l = Loop::up();
    let _stop = l.request(Request::Stop { worker: LLM });
    l.exit(LLM, ExitStatus::Code(0));
    l.api(generate(2, asked("hello?")));
    match l.api_events(2).as_slice() {
        [ApiEvent::Failed {
            status: 503,
            message,
            ..
        }] => {
            assert!(message.contains("mate ctl start llm"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn health_says_loading_ok_restarting_and_failed() {
    let mut l = Loop::new("", None);
    l.serve(API);
    let h = l.health();
    assert_eq!((h.ok, h.status.as_str()), (false, "loading"));
    l.serve(LLM);
    let h = l.health();
    assert_eq!((h.ok, h.status.as_str()), (true, "ok"));
    l.exit(LLM, ExitStatus::Signal(9));
    let h = l.health();
    assert_eq!((h.ok, h.status.as_str()), (false, "restarting"));
    assert!(h.reason.contains("signal 9"), "{}", h.reason);
    l.sup.fail(LLM, "the model file is gone".into());
    let h = l.health();
    assert_eq!((h.ok, h.status.as_str()), (false, "failed"));
    assert!(h.reason.contains("the model file is gone"), "{}", h.reason);
}

#[test]
fn a_prompt_the_llm_cannot_fit_is_the_clients_400_and_a_worker_failure_a_500() {
    let mut l = Loop::up();
    for (id, client_error, status) in [(1, true, 400), (2, false, 500)] {
        l.api(generate(id, ApiInput::Prompt("long".into())));
        let request_id = l
            .sent(LLM)
            .into_iter()
            .find_map(|m| match m {
                ToWorker::Complete { request_id, .. } => Some(request_id),
                _ => None,
            })
            .expect("a Complete");
        l.send(
            LLM,
            FromWorker::Failed {
                request_id,
                reason: "the prompt needs 9000 tokens".into(),
                client_error,
            },
        );
        match l.api_events(id).as_slice() {
            [ApiEvent::Failed {
                status: s, message, ..
            }] => {
                assert_eq!(*s, status);
                assert!(message.contains("9000 tokens"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(l.sup.turn.is_none());
}
