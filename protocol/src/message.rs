//! Every message that crosses a process boundary in mate.
//!
//! Four directions, four enums, each sent inside one frame after the handshake:
//!
//! | from → to               | type           |
//! |-------------------------|----------------|
//! | supervisor → worker     | [`ToWorker`]   |
//! | worker → supervisor     | [`FromWorker`] |
//! | client → supervisor     | [`Request`]    |
//! | supervisor → client     | [`Reply`]      |
//!
//! Wire compatibility: bincode encodes an enum variant by its index and a struct by field order.
//! New variants go at the **end** of an enum, fields are never reordered, and any change that
//! alters an existing encoding bumps [`crate::PROTOCOL_VERSION`]. The golden-byte snapshot
//! (`protocol/src/tests.rs`, `golden_bytes`) fails on an accidental change.

use serde::{Deserialize, Serialize};

/// Which process kind a peer is. Sent in [`crate::Hello`] so the accepting side knows what it
/// talks to and which credentials apply.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Supervisor,
    LlmWorker,
    BridgeWorker,
    /// `mate ctl …`: one request, its replies, then gone.
    Ctl,
    /// The dashboard: stays attached and follows events.
    Tui,
    ApiWorker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::LlmWorker => "llm worker",
            Role::BridgeWorker => "bridge worker",
            Role::Ctl => "ctl client",
            Role::Tui => "tui client",
            Role::ApiWorker => "api worker",
        }
    }

    /// Workers are spawned by the supervisor and carry a one-time token; clients use the
    /// control token from the state dir.
    pub fn is_worker(self) -> bool {
        matches!(self, Role::LlmWorker | Role::BridgeWorker | Role::ApiWorker)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The supervised worker kinds, as named on the command line (`mate ctl restart llm`).
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkerKind {
    Llm,
    Bridge,
    /// The OpenAI-compatible HTTP front door.
    Api,
}

impl WorkerKind {
    /// Every kind, in discriminant order (`kind as usize` indexes arrays built from it).
    pub const ALL: [WorkerKind; 3] = [WorkerKind::Llm, WorkerKind::Bridge, WorkerKind::Api];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Llm => "llm",
            WorkerKind::Bridge => "bridge",
            WorkerKind::Api => "api",
        }
    }

    pub fn role(self) -> Role {
        match self {
            WorkerKind::Llm => Role::LlmWorker,
            WorkerKind::Bridge => Role::BridgeWorker,
            WorkerKind::Api => Role::ApiWorker,
        }
    }
}

impl std::fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WorkerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "llm" => Ok(WorkerKind::Llm),
            "bridge" => Ok(WorkerKind::Bridge),
            "api" => Ok(WorkerKind::Api),
            other => Err(format!(
                "unknown worker {other:?}: expected `llm`, `bridge` or `api`"
            )),
        }
    }
}

/// Fault injection, as Chromium's `chrome://gpucrash` and `chrome://gpuhang`.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// The worker aborts itself (as a crash would: no cleanup, no goodbye).
    Crash,
    /// The worker stops answering, heartbeats included, but stays alive.
    Hang,
    /// The LLM worker dies the way a GPU out-of-memory kills it: llama.cpp's allocation
    /// error on stderr, then an abort.
    OutOfMemory,
}

/// GPU offload and memory knobs the LLM worker loads a model with. Named profiles
/// (`performance`, `balanced`, `low_memory`, `cpu`) are values of this type.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub n_gpu_layers: u32,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub kv_type: KvType,
    pub flash_attention: bool,
    pub mmap: bool,
    pub mlock: bool,
    /// 0 means "choose from the CPU".
    pub n_threads: u32,
}

impl Profile {
    /// Everything on the CPU: no offload, F16 cache, flash attention off, threads by the CPU
    /// rule. The last rung of the ladder, and the start for machines without a GPU.
    pub fn cpu(n_ctx: u32) -> Profile {
        Profile {
            name: "cpu".into(),
            n_gpu_layers: 0,
            n_ctx,
            n_batch: 512,
            n_ubatch: 512,
            kv_type: KvType::F16,
            flash_attention: false,
            mmap: true,
            mlock: false,
            n_threads: 0,
        }
    }
}

/// Element type of the KV cache.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvType {
    F16,
    Q8_0,
    Q4_0,
}

/// Who said a chat message.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub text: String,
}

/// Sampling parameters for one generation.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub seed: u32,
    pub max_tokens: u32,
    pub stop: Vec<String>,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            seed: 42,
            max_tokens: 256,
            stop: Vec::new(),
        }
    }
}

impl Sampling {
    /// Always the most likely token and no penalties: the same text on every run, for tests
    /// and benchmarks.
    pub fn greedy(max_tokens: u32) -> Sampling {
        Sampling {
            temperature: 0.0,
            repeat_penalty: 1.0,
            max_tokens,
            ..Sampling::default()
        }
    }
}

/// Why a generation ended.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    EndOfText,
    MaxTokens,
    StopString(String),
    Cancelled,
    /// The context window filled up during the reply.
    ContextFull,
}

/// Figures the LLM worker reports with the last chunk of a reply.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub ttft_ms: f32,
    pub prompt_tokens_per_s: f32,
    pub gen_tokens_per_s: f32,
    pub stop: StopReason,
    /// Prompt tokens that were already in the KV cache and not decoded again.
    pub cached_tokens: u32,
}

/// One avatar command, as the Unity bridge sends it on.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AvatarCommand {
    LoadVrm {
        path: String,
    },
    SetExpression {
        expression: String,
        intensity: f32,
        transition_ms: u32,
    },
    PlayAnimation {
        name: String,
        looped: bool,
    },
    Blink {
        enabled: bool,
    },
}

/// The part of the avatar a command sets, for commands that set state rather than trigger
/// something once. A newer command for a part replaces an older one, and the latest one per
/// part is what a restarted Unity app or bridge is brought back to, in this order (a model
/// load resets the rest, so it goes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AvatarPart {
    Model,
    Blink,
    /// A looping animation.
    Loop,
    Expression,
}

/// "expression happy (intensity 1.00, 150 ms)", "animation wave (looping)", for logs and
/// event lists.
impl std::fmt::Display for AvatarCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        match self {
            AvatarCommand::LoadVrm { path } => write!(f, "load model {path}"),
            AvatarCommand::SetExpression {
                expression,
                intensity,
                transition_ms,
            } => write!(
                f,
                "expression {expression} (intensity {intensity:.2}, {transition_ms} ms)"
            ),
            AvatarCommand::PlayAnimation { name, looped } => write!(
                f,
                "animation {name}{}",
                if *looped { " (looping)" } else { "" }
            ),
            AvatarCommand::Blink { enabled } => write!(f, "blink {}", on(*enabled)),
        }
    }
}

/// Puts `item` in `list` as the command for its part, replacing the previous one and keeping
/// the list in [`AvatarPart`] order: the avatar's state, ready to be restored.
pub fn set_avatar_part<T>(list: &mut Vec<T>, item: T, cmd: impl Fn(&T) -> &AvatarCommand) {
    let part = cmd(&item).part();
    list.retain(|x| cmd(x).part() != part);
    let at = list.partition_point(|x| cmd(x).part() < part);
    list.insert(at, item);
}

impl AvatarCommand {
    /// `None` for a one-shot animation.
    pub fn part(&self) -> Option<AvatarPart> {
        match self {
            AvatarCommand::LoadVrm { .. } => Some(AvatarPart::Model),
            AvatarCommand::SetExpression { .. } => Some(AvatarPart::Expression),
            AvatarCommand::Blink { .. } => Some(AvatarPart::Blink),
            AvatarCommand::PlayAnimation { looped: true, .. } => Some(AvatarPart::Loop),
            AvatarCommand::PlayAnimation { looped: false, .. } => None,
        }
    }
}

/// Resource figures a worker reports with each heartbeat reply.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerVitals {
    pub rss_bytes: u64,
    pub cpu_percent: f32,
    /// Only from the LLM worker.
    pub llm: Option<LlmVitals>,
    /// Only from the bridge worker (boxed: most vitals are the LLM's, and this is large).
    pub bridge: Option<Box<BridgeStatus>>,
    /// Only from the API worker.
    pub api: Option<Box<crate::ApiVitals>>,
}

/// What the LLM worker is doing, for heartbeats and the dashboard.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LlmPhase {
    /// Waiting for [`ToWorker::Load`].
    #[default]
    NoModel,
    Loading,
    Ready,
    /// Decoding a prompt (a turn or an [`ToWorker::Ingest`]).
    Ingesting,
    Generating,
}

#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmVitals {
    pub phase: LlmPhase,
    /// Milliseconds since the current phase last made progress (a decoded batch or token).
    /// Large while `Ingesting`/`Generating` means llama.cpp is stuck.
    pub stalled_ms: u64,
    pub model_bytes: u64,
    pub kv_bytes: u64,
    pub n_ctx: u32,
    /// Tokens in the KV cache now.
    pub ctx_used: u32,
    pub last: Option<GenerationStats>,
}

/// What [`FromWorker::Loaded`] reports.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub profile: String,
    pub n_layers: u32,
    pub model_bytes: u64,
    pub load_ms: u32,
    pub warmup_ms: u32,
    pub n_threads: u32,
    /// Whether the model brought its own chat template (otherwise the fallback is used).
    pub model_template: bool,
    /// Tokens restored from the conversation snapshot (0: none matched).
    pub restored_tokens: u32,
}

/// How the LLM worker runs a model, beyond the profile's memory knobs.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmOptions {
    /// Used when the model has no chat template of its own (base models).
    pub fallback_template: ChatTemplate,
    pub coalesce: Coalesce,
    /// Directory for the conversation's KV snapshot; `None` turns snapshots off.
    pub snapshot_dir: Option<String>,
    /// Decode a few tokens after loading so the first real reply does not pay for
    /// allocations and cold caches.
    pub warmup: bool,
    /// Host memory for conversations set aside (the KV state of a conversation another one
    /// displaced, brought back when it continues); 0 keeps none.
    pub stash_bytes: u64,
}

impl Default for LlmOptions {
    fn default() -> Self {
        LlmOptions {
            fallback_template: ChatTemplate::default(),
            coalesce: Coalesce::default(),
            snapshot_dir: None,
            warmup: true,
            stash_bytes: 512 << 20,
        }
    }
}

/// A plain-text chat format for models without a template. Each part holds `{text}` where the
/// message goes; `generation_prompt` opens the reply; `stop` ends it (so a base model does not
/// go on to write the user's next line).
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTemplate {
    pub system: String,
    pub user: String,
    pub assistant: String,
    pub generation_prompt: String,
    pub stop: Vec<String>,
}

impl Default for ChatTemplate {
    fn default() -> Self {
        ChatTemplate {
            system: "{text}\n\n".into(),
            user: "User: {text}\n".into(),
            assistant: "Mate: {text}\n".into(),
            generation_prompt: "Mate:".into(),
            stop: vec!["\nUser:".into(), "\nMate:".into()],
        }
    }
}

/// How streamed tokens are grouped into [`FromWorker::Chunk`]s: a chunk goes out once it holds
/// `max_tokens` tokens, or `max_delay_ms` after its first token, or at a word or punctuation
/// boundary once it holds `min_tokens`. `max_tokens: 1` sends every token at once.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coalesce {
    pub min_tokens: u32,
    pub max_tokens: u32,
    pub max_delay_ms: u32,
}

impl Coalesce {
    /// Every token in its own chunk: lowest latency, most messages.
    pub const OFF: Coalesce = Coalesce {
        min_tokens: 1,
        max_tokens: 1,
        max_delay_ms: 0,
    };
}

impl Default for Coalesce {
    /// The rule that made the original app's streaming smooth: 3–5 tokens or 50 ms.
    fn default() -> Self {
        Coalesce {
            min_tokens: 3,
            max_tokens: 5,
            max_delay_ms: 50,
        }
    }
}

/// Exit code of an LLM worker that could not create its context with the profile it was
/// given (out of memory): the supervisor restarts it on the next lower profile.
///
/// Not 3, which is what `abort()` of the Windows C runtime (msvcrt) exits with, so a failed
/// assertion in llama.cpp is never taken for a profile that does not fit.
pub const EXIT_LOAD_FAILED: i32 = 75;

/// Supervisor → worker.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Liveness probe; the worker answers [`FromWorker::Heartbeat`] with the same sequence.
    Heartbeat {
        seq: u64,
    },
    /// Finish what is in flight within `grace_ms`, then exit 0.
    Shutdown {
        grace_ms: u32,
    },
    Inject(Fault),
    /// LLM: load (or reload) the model with this profile.
    Load {
        model_path: String,
        profile: Profile,
        options: LlmOptions,
    },
    /// LLM: generate a reply to `messages` (the whole conversation the worker should see).
    /// When the last message is the assistant's, the reply *continues* it: the supervisor
    /// resumes a reply cut short by a crash this way, and the chunks carry only the new text.
    Generate {
        request_id: u64,
        messages: Vec<ChatMessage>,
        sampling: Sampling,
        /// Keep this conversation's KV snapshot on disk for a fast restart (the companion's
        /// conversation; an API client's is not worth replacing it).
        snapshot: bool,
    },
    /// LLM: stop generation `request_id` at the next token.
    Cancel {
        request_id: u64,
    },
    /// Bridge: drive the avatar.
    Avatar(AvatarCommand),
    /// LLM: bring the KV cache up to date with `messages` without generating (after a
    /// restart, so the next turn does not pay for the whole conversation). Answered by
    /// [`FromWorker::Ingested`].
    Ingest {
        request_id: u64,
        messages: Vec<ChatMessage>,
    },
    /// Bridge: where Unity is, how to talk to it, and the avatar's state to bring it to (the
    /// latest command per [`AvatarPart`]); sent once, when the worker is ready.
    Unity {
        options: UnityOptions,
        avatar: Vec<AvatarCommand>,
    },
    /// LLM: continue `prompt`, plain text with no chat template (`/v1/completions`); a resumed
    /// reply comes back as the prompt plus the text streamed so far. Answered like
    /// [`ToWorker::Generate`].
    Complete {
        request_id: u64,
        prompt: String,
        sampling: Sampling,
    },
    /// API: where to listen and how to serve; sent once, when the worker is ready.
    ApiStart(Box<crate::ApiOptions>),
    /// API: what happened to one of its calls.
    Api {
        id: u64,
        event: crate::ApiEvent,
    },
}

/// Worker → supervisor.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FromWorker {
    /// The worker finished start-up and takes requests.
    Ready,
    Heartbeat {
        seq: u64,
        vitals: WorkerVitals,
    },
    /// A start-up failure no restart can fix (missing model, bad config): do not restart.
    Fatal {
        reason: String,
    },
    /// LLM: the model is loaded with this profile.
    Loaded(LoadReport),
    /// LLM: a piece of the reply, already valid UTF-8.
    Chunk {
        request_id: u64,
        text: String,
    },
    /// LLM: the reply is complete.
    Done {
        request_id: u64,
        stats: GenerationStats,
    },
    /// LLM: the request failed; the worker lives on.
    Failed {
        request_id: u64,
        reason: String,
        /// The request itself cannot be served (a prompt too long for the context): the
        /// client's to change, not a fault of the worker.
        client_error: bool,
    },
    /// Something the supervisor should log and show in the event list.
    Notice {
        level: Level,
        message: String,
    },
    /// Bridge: connection state towards the Unity peer (boxed, as in [`WorkerVitals`]).
    BridgeStatus(Box<BridgeStatus>),
    /// LLM: the conversation is in the KV cache.
    Ingested {
        request_id: u64,
        prompt_tokens: u32,
        /// Tokens that were already in the cache (restored snapshot or earlier turns).
        cached_tokens: u32,
        elapsed_ms: u32,
    },
    /// LLM: the conversation outgrew the context; the oldest turns were left out of the
    /// prompt (the system prompt is always kept). The transcript itself is untouched.
    ContextTrimmed {
        request_id: u64,
        dropped_messages: u32,
        prompt_tokens: u32,
        n_ctx: u32,
    },
    /// API: an HTTP client's request for the supervisor.
    Api(crate::ApiCall),
}

#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// The bridge worker's view of its Unity peer, sent when it changes and with every heartbeat.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BridgeStatus {
    pub connected: bool,
    /// The Unity address (and, once connected, the peer it answered from).
    pub peer: String,
    /// Commands waiting to be sent (coalescing, or no Unity to send them to).
    pub queue_depth: u32,
    /// Lines sent and not answered yet.
    pub acks_pending: u32,
    /// Commands sent per second, over the last few seconds.
    pub commands_per_s: f32,
    pub last_error: Option<String>,
    /// Successful connections since the worker started (reconnects are this minus one).
    pub connects: u32,
    /// Commands sent (each command of a batch counts) and lines they went in.
    pub sent: u64,
    pub lines: u64,
    /// Commands Unity confirmed, and commands it answered with an error.
    pub acked: u64,
    pub errors: u64,
    /// Lines that got no answer within the ack timeout.
    pub timeouts: u64,
    /// Reply lines that were not JSON, not a reply, matched nothing sent, or too long.
    pub malformed: u64,
    /// Commands given up: expired (TTL) before Unity came back, or pushed out of a full queue.
    pub dropped: u64,
    /// The expression the avatar shows (or will, once Unity is back).
    pub expression: Option<String>,
}

impl BridgeStatus {
    /// "connected to …" or "waiting for Unity at …", as status lines print it.
    pub fn describe(&self) -> String {
        if self.connected {
            format!("connected to {}", self.peer)
        } else if self.peer.is_empty() {
            "not configured".into()
        } else {
            format!("waiting for Unity at {}", self.peer)
        }
    }
}

/// How the bridge worker talks to Unity; sent by the supervisor when the worker is ready.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnityOptions {
    /// `host:port` of the Unity app's listener.
    pub address: String,
    /// Commands issued within this window go out as one batch.
    pub batch_window_ms: u32,
    pub ack_timeout_ms: u32,
    /// One-shot commands queued longer than this are not sent after a reconnect (the
    /// avatar's state is restored instead).
    pub ttl_ms: u32,
    /// Longest reply line accepted.
    pub max_line_bytes: u32,
    /// Reconnect backoff ceiling.
    pub reconnect_max_ms: u32,
    /// Most one-shot commands held while Unity is away.
    pub queue_limit: u32,
    /// Also drive a VMC receiver (VSeeFace, Warudo, …) over OSC; `None`: no VMC.
    pub vmc: Option<crate::VmcOptions>,
}

impl Default for UnityOptions {
    fn default() -> Self {
        UnityOptions {
            address: crate::unity::DEFAULT_ADDRESS.into(),
            batch_window_ms: 16,
            ack_timeout_ms: 2000,
            ttl_ms: 5000,
            max_line_bytes: crate::unity::DEFAULT_MAX_LINE as u32,
            reconnect_max_ms: 2000,
            queue_limit: 256,
            vmc: None,
        }
    }
}

/// Client (`mate ctl`, the TUI) → supervisor.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    Status,
    Restart {
        worker: WorkerKind,
        profile: Option<String>,
    },
    Stop {
        worker: WorkerKind,
    },
    Start {
        worker: WorkerKind,
    },
    SetProfile {
        name: String,
    },
    /// A user turn; the reply streams back as [`Reply::Chunk`]s and one [`Reply::ChatDone`].
    Chat {
        text: String,
    },
    Cancel,
    /// The recent events as [`Reply::Event`]s, then [`Reply::Ok`]; with `follow`, no end:
    /// every new event follows until the client leaves.
    Events {
        follow: bool,
    },
    Shutdown,
    Inject {
        worker: WorkerKind,
        fault: Fault,
    },
    /// Send one command to the avatar through the bridge worker.
    Avatar(AvatarCommand),
    /// Start a new conversation: the transcript is archived next to it and emptied.
    ClearSession,
}

/// Supervisor → client.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    /// The request failed; `message` says why and what to do.
    Error {
        message: String,
    },
    /// Boxed: a status with the ladder and the last decision is far larger than the other
    /// replies, which stream by the thousand.
    Status(Box<StatusReport>),
    Chunk {
        text: String,
    },
    ChatDone {
        stats: GenerationStats,
    },
    Event(Event),
}

/// Lifecycle state of a supervised worker.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerState {
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
    Failed,
}

impl WorkerState {
    /// As `mate ctl status` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Running => "running",
            WorkerState::Backoff => "backoff",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
            WorkerState::Failed => "failed",
        }
    }
}

/// How a worker process ended.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// The exit code; on Windows, a crash's NTSTATUS (0xC0000005 and so on) as an `i32`.
    Code(i32),
    /// Ended by a Unix signal.
    Signal(i32),
    /// Ended by mate itself with `TerminateProcess` (Windows, where no signal tells a kill
    /// apart from an exit code).
    Terminated,
}

impl ExitStatus {
    /// As a sentence's end: "exited with code 1", "was killed by signal 9 (SIGKILL)",
    /// "crashed with 0xC0000005 (STATUS_ACCESS_VIOLATION: …)", "was terminated by mate".
    pub fn describe(self) -> String {
        match self {
            ExitStatus::Code(code) => match ntstatus(code) {
                Some((status, name)) => format!("crashed with 0x{status:08X} ({name})"),
                None => format!("exited with code {code}"),
            },
            ExitStatus::Signal(signal) => {
                let name = match signal {
                    6 => " (SIGABRT)",
                    9 => " (SIGKILL)",
                    11 => " (SIGSEGV)",
                    15 => " (SIGTERM)",
                    _ => "",
                };
                format!("was killed by signal {signal}{name}")
            }
            ExitStatus::Terminated => "was terminated by mate".into(),
        }
    }

    /// For a table column: "exit 1", "signal 9", "0xC0000409", "terminated".
    pub fn short(self) -> String {
        match self {
            ExitStatus::Code(c) => match ntstatus(c) {
                Some((status, _)) => format!("0x{status:08X}"),
                None => format!("exit {c}"),
            },
            ExitStatus::Signal(s) => format!("signal {s}"),
            ExitStatus::Terminated => "terminated".into(),
        }
    }

    /// Windows ended the process for want of memory (a failed commit, or no room left in the
    /// page file), as a CUDA or host allocation in llama.cpp can.
    pub fn is_out_of_memory(self) -> bool {
        matches!(
            self,
            ExitStatus::Code(c) if matches!(c as u32, STATUS_NO_MEMORY | STATUS_COMMITMENT_LIMIT)
        )
    }
}

const STATUS_NO_MEMORY: u32 = 0xC000_0017;
const STATUS_COMMITMENT_LIMIT: u32 = 0xC000_012D;

/// A Windows exit code in the error range of NTSTATUS (0xC… to 0xE…), with what it means. No
/// Unix exit code is there (those are 0 to 255), nor the -1 of a status nobody could read.
fn ntstatus(code: i32) -> Option<(u32, &'static str)> {
    let status = code as u32;
    if !(0xC000_0000..0xF000_0000).contains(&status) {
        return None;
    }
    let name = match status {
        0xC000_0005 => "STATUS_ACCESS_VIOLATION: a bad memory access",
        0xC000_001D => "STATUS_ILLEGAL_INSTRUCTION: a CPU feature this machine lacks",
        0xC000_00FD => "STATUS_STACK_OVERFLOW",
        STATUS_NO_MEMORY => "STATUS_NO_MEMORY: out of memory",
        STATUS_COMMITMENT_LIMIT => "STATUS_COMMITMENT_LIMIT: out of memory (page file full)",
        0xC000_0135 => "STATUS_DLL_NOT_FOUND: a DLL it needs is missing",
        0xC000_0139 => "STATUS_ENTRYPOINT_NOT_FOUND: a DLL lacks a function it needs",
        0xC000_0142 => "STATUS_DLL_INIT_FAILED",
        0xC000_013A => "STATUS_CONTROL_C_EXIT: Ctrl-C",
        0xC000_0409 => "STATUS_STACK_BUFFER_OVERRUN: an abort or a fast fail",
        0xC000_0374 => "STATUS_HEAP_CORRUPTION",
        0xE06D_7363 => "an unhandled C++ exception",
        _ => "an NTSTATUS error",
    };
    Some((status, name))
}

#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub kind: WorkerKind,
    pub state: WorkerState,
    pub pid: Option<u32>,
    pub uptime_ms: u64,
    pub restarts: u32,
    pub profile: Option<String>,
    pub last_exit: Option<ExitStatus>,
    pub last_error: Option<String>,
    pub vitals: WorkerVitals,
}

#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub supervisor_pid: u32,
    pub uptime_ms: u64,
    pub workers: Vec<WorkerReport>,
    pub turns: u64,
    pub tokens: u64,
    /// The profile the LLM loads now.
    pub profile: String,
    /// The highest rung automatic upgrades return to: the one the user started on or picked,
    /// or below a rung that ran out of memory or crash-looped.
    pub ceiling: String,
    /// The profile ladder, highest first, with each rung's estimated VRAM.
    pub ladder: Vec<Rung>,
    pub gpu: GpuReport,
    /// The last profile decision (alert, downgrade, upgrade, explicit change), if any.
    pub last_decision: Option<Event>,
    /// Chats waiting for the reply in progress (one FIFO for every client).
    pub queued: u32,
}

/// One step of the profile ladder.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rung {
    pub profile: Profile,
    /// What the LLM worker is estimated to hold in VRAM with this profile (0 for `cpu`).
    pub estimated_vram_bytes: u64,
}

/// The GPU the supervisor watches.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// The card's name; `None` when there is no GPU to watch (`note` says why).
    pub name: Option<String>,
    /// A simulated GPU from a scenario file, not a real card.
    pub simulated: bool,
    /// Why there is no reading ("no NVIDIA GPU: …"), or the last probe error.
    pub note: Option<String>,
    pub reading: Option<VramReading>,
    /// Used VRAM, percent of total, at which an alert is raised and at which the LLM downgrades;
    /// below `upgrade_below_percent` it is calm enough to go back up.
    pub alert_percent: f32,
    pub upgrade_below_percent: f32,
    pub critical_percent: f32,
    pub auto_downgrade: bool,
    pub auto_upgrade: bool,
}

/// One sample of the GPU.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VramReading {
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// The LLM worker's own share, when the driver reports it.
    pub llm_bytes: Option<u64>,
    pub temperature_c: Option<u32>,
    pub utilization_percent: Option<u32>,
}

impl VramReading {
    /// Used VRAM in percent of the total (0 for a card that reports no memory).
    pub fn used_percent(&self) -> f32 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        (self.used_bytes as f64 * 100.0 / self.total_bytes as f64) as f32
    }
}

/// Why the LLM went down a rung.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DowngradeCause {
    /// Used VRAM reached the critical threshold.
    Critical,
    /// Used VRAM is rising and will cross the critical threshold within a few samples.
    Trend,
    /// The worker died of (GPU) out-of-memory.
    OutOfMemory,
    /// The worker crashed too often too fast on this profile.
    CrashLoop,
}

/// Something that happened, for `mate ctl events`, the journal file and the dashboard's log:
/// `kind` for scripts, `message` for people.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub level: Level,
    pub worker: Option<WorkerKind>,
    pub kind: EventKind,
    pub message: String,
}

/// Every state change the supervisor records.
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// The supervisor took the state dir.
    SupervisorStarted {
        pid: u32,
    },
    /// The transcript on disk was read back (after a restart or a crash).
    SessionRestored {
        turns: u64,
    },
    Spawned {
        pid: u32,
    },
    /// The worker said hello and takes requests.
    Ready,
    /// LLM: the model is loaded.
    Loaded {
        profile: String,
        load_ms: u32,
        /// The decode after loading that spares the first reply the cold start.
        warmup_ms: u32,
        restored_tokens: u32,
    },
    /// The process ended; `expected` when the supervisor asked for it (stop, restart, shutdown).
    Exited {
        status: ExitStatus,
        expected: bool,
    },
    /// No heartbeat answer, or no progress while generating: the worker is killed.
    HangDetected {
        silent_ms: u64,
    },
    /// A new process starts after `delay_ms` (exponential backoff).
    Restarting {
        delay_ms: u64,
        attempt: u32,
    },
    /// The LLM goes one rung down the ladder, on its own (`cause`); `reading` is the GPU
    /// sample the decision was made on.
    Downgraded {
        from: String,
        to: String,
        cause: DowngradeCause,
        reading: Option<VramReading>,
    },
    /// VRAM pressure cleared for the cool-down and the higher rung fits again.
    Upgraded {
        from: String,
        to: String,
        reading: VramReading,
    },
    /// Given up: no more restarts until `mate ctl start`.
    Failed {
        reason: String,
    },
    /// Asked for (`mate ctl profile`, `ctl restart --profile`).
    ProfileChanged {
        from: String,
        to: String,
    },
    /// Used VRAM stayed above the alert threshold for several samples, or a downgrade was
    /// due but automatic downgrades are off.
    VramAlert {
        reading: VramReading,
    },
    ClientAttached {
        role: Role,
        pid: u32,
    },
    /// A connection was refused or dropped (bad token, garbage, flood).
    ClientRejected {
        reason: String,
    },
    /// A reply cut short by a worker crash goes on in a new worker.
    ReplyResumed {
        streamed_chars: u32,
    },
    /// A turn ended without a complete reply.
    TurnFailed {
        reason: String,
    },
    /// A worker's notice (warnings from loading and the like).
    Notice,
    Stopping {
        reason: String,
    },
    Stopped,
    /// A completed turn could not be written to the transcript (a full disk, say); it is
    /// kept in memory, with `unsaved` turns in all, and written with the next turn.
    TurnNotSaved {
        turn: u64,
        unsaved: u64,
    },
    /// A chat waits for the reply in progress: `ahead` turns go first (one FIFO for every
    /// client). Told to the client that waits, and journaled.
    TurnQueued {
        ahead: u32,
    },
}
