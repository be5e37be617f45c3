//! llama.cpp behind two types: a loaded [`Model`] and a [`Session`], the conversation's
//! context on it.
//!
//! A session remembers the tokens in its KV cache. Every request renders the *whole*
//! conversation, and only the part after the longest common prefix with the cache is decoded,
//! in chunks of at most `n_batch` tokens. So a follow-up turn costs its new tokens, a restored
//! snapshot costs nothing, and a conversation re-sent after a restart costs one full decode.
//!
//! A conversation that ends with an assistant message is a reply cut short: when the worker is
//! killed mid-reply, the supervisor restarts it and sends the conversation with the part of the
//! reply already streamed as the last message. The prompt then leaves that reply open
//! ([`prompt::render_open`]) and [`Session::generate`] streams only what comes after it, as it
//! comes (no leading whitespace trimmed: the rest may start with " world"). An empty last
//! assistant message asks for an ordinary reply.

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{Duration, Instant, UNIX_EPOCH},
};

use llama_cpp_2::{
    context::session::{LlamaStateSeqFlags, SeqState},
    context::{
        params::{KvCacheType, LlamaContextParams},
        LlamaContext,
    },
    llama_backend::LlamaBackend,
    llama_batch::LlamaBatch,
    model::{params::LlamaModelParams, LlamaChatMessage, LlamaChatTemplate, LlamaModel},
    sampling::LlamaSampler,
    token::LlamaToken,
};
use mate_protocol::{
    ChatMessage, ChatRole, ChatTemplate, Coalesce, GenerationStats, KvType, LlmOptions, LlmPhase,
    Profile, Sampling, StopReason,
};
use serde::{Deserialize, Serialize};

use crate::{
    prompt::{self, Fitted},
    stash::{self, Plan, Stash, Stashed},
    stream::{Coalescer, Matched, ReplyStart, StopMatcher, Utf8Stream},
    to_u32, LlmError,
};

/// The llama.cpp backend, initialised once per process (llama.cpp allows no second init).
pub fn backend() -> Result<&'static LlamaBackend, LlmError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LlmError::Backend(e.clone()))
}

/// A device llama.cpp can run on, as `mate doctor` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub name: String,
    pub description: String,
    pub backend: String,
    pub memory_total: u64,
    pub memory_free: u64,
}

/// The devices this build of llama.cpp sees (the CPU always; GPUs with `cuda`/`vulkan`).
pub fn devices() -> Result<Vec<Device>, LlmError> {
    backend()?;
    Ok(llama_cpp_2::list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| Device {
            name: d.name,
            description: d.description,
            backend: d.backend,
            memory_total: d.memory_total as u64,
            memory_free: d.memory_free as u64,
        })
        .collect())
}

/// Which file a model came from, precisely enough to know a snapshot belongs to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub path: PathBuf,
    pub size: u64,
    pub modified_ns: u128,
}

/// A GGUF model in memory.
pub struct Model {
    inner: LlamaModel,
    identity: ModelIdentity,
    template: Option<LlamaChatTemplate>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("identity", &self.identity)
            .field("has_template", &self.template.is_some())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads the model with the profile's offload and memory settings. The file is checked
    /// first, so a missing or foreign file gives a clear error instead of llama.cpp's null.
    pub fn load(path: &Path, profile: &Profile) -> Result<Model, LlmError> {
        let identity = check_gguf(path)?;
        let params = LlamaModelParams::default()
            .with_n_gpu_layers(profile.n_gpu_layers)
            .with_use_mmap(profile.mmap)
            .with_use_mlock(profile.mlock);
        let inner = LlamaModel::load_from_file(backend()?, path, &params).map_err(|_| {
            LlmError::LoadFailed {
                path: path.to_path_buf(),
            }
        })?;
        let template = inner.chat_template(None).ok();
        Ok(Model {
            inner,
            identity,
            template,
        })
    }

    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    pub fn n_layers(&self) -> u32 {
        self.inner.n_layer()
    }

    /// Bytes of weights.
    pub fn size_bytes(&self) -> u64 {
        self.inner.size()
    }

    /// Whether the model carries its own chat template.
    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    pub fn n_ctx_train(&self) -> u32 {
        self.inner.n_ctx_train()
    }

    /// Renders a conversation for this model: its own template when it has one, else
    /// `fallback`. Returns the text and whether it holds special tokens to parse. The text
    /// ends with the generation prompt, or, when the conversation ends with an unfinished
    /// assistant reply, with that reply's text ([`prompt::render_open`]).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        fallback: &ChatTemplate,
    ) -> Result<(String, bool), LlmError> {
        let Some(template) = &self.template else {
            return Ok((prompt::render_fallback(fallback, messages), false));
        };
        let text = prompt::render_open(messages, |messages| {
            let chat = messages
                .iter()
                .map(|m| {
                    let role = match m.role {
                        ChatRole::System => "system",
                        ChatRole::User => "user",
                        ChatRole::Assistant => "assistant",
                    };
                    // NUL cannot cross into C; it has no business in a chat message anyway.
                    LlamaChatMessage::new(role.into(), m.text.replace('\0', ""))
                        .map_err(|e| LlmError::Template(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.inner
                .apply_chat_template(template, &chat, true)
                .map_err(|e| LlmError::Template(e.to_string()))
        })?;
        Ok((text, true))
    }

    /// Tokenizes rendered text, with the model's BOS.
    pub fn tokenize(&self, text: &str, parse_special: bool) -> Vec<LlamaToken> {
        self.inner
            .vocab()
            .tokenize(text.as_bytes(), true, parse_special)
    }

    /// The bytes of one token as text (control tokens give none).
    pub fn piece(&self, token: LlamaToken) -> Vec<u8> {
        self.inner.vocab().token_to_piece(token, false, None)
    }

    pub fn is_end(&self, token: LlamaToken) -> bool {
        self.inner.vocab().is_eog(token)
    }

    /// A context for one conversation.
    pub fn session(&self, profile: &Profile, threads: Threads) -> Result<Session<'_>, LlmError> {
        Session::new(self, profile, threads)
    }
}

/// Checks that `path` is a readable GGUF file before llama.cpp sees it.
fn check_gguf(path: &Path) -> Result<ModelIdentity, LlmError> {
    use std::io::Read;
    let shown = path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LlmError::ModelMissing {
            path: shown.clone(),
        },
        _ => LlmError::ModelUnreadable {
            path: shown.clone(),
            reason: e.to_string(),
        },
    })?;
    if !meta.is_file() {
        return Err(LlmError::ModelUnreadable {
            path: shown,
            reason: "not a regular file".into(),
        });
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| LlmError::ModelUnreadable {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if &magic != b"GGUF" {
        return Err(LlmError::NotGguf { path: shown });
    }
    Ok(ModelIdentity {
        path: std::fs::canonicalize(path).unwrap_or(shown),
        size: meta.len(),
        modified_ns: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos()),
    })
}

/// Threads for token generation and for prompt decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    pub generation: u32,
    pub batch: u32,
}

/// What the session tells whoever drives it, between tokens.
pub trait Listener {
    /// Polled between decoded batches and tokens.
    fn cancelled(&self) -> bool {
        false
    }
    /// Something was decoded; `ctx_used` tokens are now in the cache.
    fn progress(&mut self, _phase: LlmPhase, _ctx_used: usize) {}
    /// The next piece of the reply.
    fn text(&mut self, _chunk: &str) {}
    /// The oldest `dropped` messages were left out to fit the context.
    fn trimmed(&mut self, _dropped: usize, _prompt_tokens: usize) {}
}

/// What [`Session::ingest_conversation`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestReport {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub elapsed: Duration,
}

/// Which settings a KV snapshot depends on. GPU layers, batch sizes and threads do not change
/// what is in the cache, so a snapshot survives a downgrade that keeps these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotKey {
    pub model: ModelIdentity,
    pub n_ctx: u32,
    pub kv_type: String,
    pub flash_attention: bool,
    pub llama_cpp_2: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotMeta {
    key: SnapshotKey,
    tokens: usize,
    /// Where the kept part of the conversation started (see `prompt::fit`).
    head: Option<(usize, ChatMessage)>,
    /// The KV file this metadata belongs to, in the same directory.
    kv_file: String,
}

const SNAPSHOT_META: &str = "conversation.json";

/// One conversation's context on a [`Model`].
pub struct Session<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    /// Tokens whose keys and values are in the cache, in position order.
    cached: Vec<LlamaToken>,
    n_batch: usize,
    n_ctx: usize,
    key: SnapshotKey,
    /// The first kept non-system message of the last prompt, to keep the prefix stable.
    head: Option<(usize, ChatMessage)>,
    /// The tokens the snapshot on disk holds (saved or restored), to skip saves that would
    /// write the same state again.
    on_disk: Option<Vec<LlamaToken>>,
    /// Conversations set aside in host memory for when they come back.
    stash: Stash<LlamaToken, SeqState>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cached", &self.cached.len())
            .field("n_ctx", &self.n_ctx)
            .field("n_batch", &self.n_batch)
            .finish_non_exhaustive()
    }
}

impl<'m> Session<'m> {
    fn new(model: &'m Model, profile: &Profile, threads: Threads) -> Result<Self, LlmError> {
        if profile.kv_type != KvType::F16 && !profile.flash_attention {
            return Err(LlmError::Profile(format!(
                "profile {:?}: a {:?} KV cache needs flash_attention = true (llama.cpp cannot \
                 quantize the V cache without it)",
                profile.name, profile.kv_type
            )));
        }
        let n_ctx = profile.n_ctx.clamp(64, model.n_ctx_train().max(64));
        let n_batch = profile.n_batch.clamp(1, n_ctx);
        let kv = match profile.kv_type {
            KvType::F16 => KvCacheType::F16,
            KvType::Q8_0 => KvCacheType::Q8_0,
            KvType::Q4_0 => KvCacheType::Q4_0,
        };
        let flash = if profile.flash_attention {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
        } else {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
        };
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(profile.n_ubatch.clamp(1, n_batch))
            .with_n_threads(i32::try_from(threads.generation.max(1)).unwrap_or(1))
            .with_n_threads_batch(i32::try_from(threads.batch.max(1)).unwrap_or(1))
            .with_flash_attention_policy(flash)
            .with_type_k(kv)
            .with_type_v(kv);
        let ctx = model
            .inner
            .new_context(backend()?, params)
            .map_err(|_| LlmError::Context {
                n_ctx,
                reason: "llama.cpp returned no context (out of memory, or settings the model \
                         does not support); try a smaller n_ctx or the `low_memory` profile"
                    .into(),
            })?;
        Ok(Session {
            model,
            ctx,
            batch: LlamaBatch::new(n_batch as usize, 1),
            cached: Vec::new(),
            n_batch: n_batch as usize,
            n_ctx: n_ctx as usize,
            key: SnapshotKey {
                model: model.identity.clone(),
                n_ctx,
                kv_type: format!("{:?}", profile.kv_type),
                flash_attention: profile.flash_attention,
                llama_cpp_2: "0.1.160".into(),
            },
            head: None,
            on_disk: None,
            stash: Stash::new(
                usize::try_from(LlmOptions::default().stash_bytes).unwrap_or(usize::MAX),
            ),
        })
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// How much host memory conversations set aside may take (0: none are kept).
    pub fn set_stash_bytes(&mut self, bytes: usize) {
        self.stash = Stash::new(bytes);
    }

    /// Conversations set aside now, and the bytes they take.
    pub fn stashed(&self) -> (usize, usize) {
        (self.stash.len(), self.stash.bytes())
    }

    /// Tokens in the KV cache.
    pub fn cached(&self) -> &[LlamaToken] {
        &self.cached
    }

    /// Upper bound of the bytes the context state (KV cache, logits) takes.
    pub fn state_bytes(&self) -> u64 {
        self.ctx.get_state_size() as u64
    }

    /// Decodes a few tokens and throws them away, so buffers are allocated and caches warm
    /// before the first real request (as llama.cpp's own tools do after loading).
    pub fn warmup(&mut self) -> Result<Duration, LlmError> {
        let start = Instant::now();
        let tokens = self.model.tokenize("Hello", false);
        self.decode(&tokens, LlmPhase::Ingesting, &mut NoListener)?;
        let mut greedy = LlamaSampler::greedy();
        let _ = greedy.sample(&self.ctx, self.batch.n_tokens() - 1);
        self.reset();
        Ok(start.elapsed())
    }

    /// Empties the cache.
    pub fn reset(&mut self) {
        self.ctx.clear_kv_cache();
        self.cached.clear();
        self.head = None;
        self.on_disk = None;
    }

    /// Brings the cache up to date with `messages` without generating. A last assistant
    /// message is left open, as [`Session::generate`] would continue it.
    pub fn ingest_conversation(
        &mut self,
        messages: &[ChatMessage],
        fallback: &ChatTemplate,
        listener: &mut dyn Listener,
    ) -> Result<IngestReport, LlmError> {
        let start = Instant::now();
        let reserve = (self.n_ctx / 4).min(256);
        let tokens = self.prompt(messages, fallback, reserve, listener)?;
        let cached = self.ingest(&tokens, listener)?;
        Ok(IngestReport {
            prompt_tokens: tokens.len(),
            cached_tokens: cached,
            elapsed: start.elapsed(),
        })
    }

    /// Generates the reply to `messages`, streaming text through `listener`.
    ///
    /// When `messages` ends with a non-empty assistant message, that is the start of a reply
    /// cut short (a worker killed mid-reply): the prompt ends with its text and the reply goes
    /// on from there. Only the new text is streamed, exactly as generated, leading whitespace
    /// included; the caller appends it to what it already has. `max_tokens` counts the new
    /// tokens, and stop strings are looked for in the new text (the streamed part never ends
    /// with the start of one: that much is held back until it is known not to be one).
    pub fn generate(
        &mut self,
        messages: &[ChatMessage],
        sampling: &Sampling,
        fallback: &ChatTemplate,
        coalesce: Coalesce,
        listener: &mut dyn Listener,
    ) -> Result<GenerationStats, LlmError> {
        let start = Instant::now();
        let reserve = (sampling.max_tokens.max(1) as usize).min(self.n_ctx / 4);
        let tokens = self.prompt(messages, fallback, reserve, listener)?;
        let template_stops: &[String] = if self.model.has_template() {
            &[]
        } else {
            &fallback.stop
        };
        let reply = Reply {
            start,
            stops: template_stops,
            continuing: prompt::partial_reply(messages).is_some(),
            coalesce,
        };
        self.reply(&tokens, sampling, reply, listener)
    }

    /// Continues `prompt`, plain text with no chat template (`/v1/completions`), streaming
    /// the new text through `listener`. A prompt that leaves no room for the reply is an
    /// error (nothing of a plain prompt can be left out the way old turns are).
    pub fn complete(
        &mut self,
        prompt: &str,
        sampling: &Sampling,
        coalesce: Coalesce,
        listener: &mut dyn Listener,
    ) -> Result<GenerationStats, LlmError> {
        let start = Instant::now();
        let reserve = (sampling.max_tokens.max(1) as usize).min(self.n_ctx / 4);
        let budget = self.n_ctx.saturating_sub(reserve).max(1);
        let tokens = self.model.tokenize(&prompt.replace('\0', ""), false);
        if tokens.len() > budget {
            return Err(LlmError::PromptTooLong {
                tokens: tokens.len(),
                budget,
                n_ctx: self.n_ctx,
            });
        }
        let reply = Reply {
            start,
            stops: &[],
            continuing: true,
            coalesce,
        };
        self.reply(&tokens, sampling, reply, listener)
    }

    /// Decodes `tokens` (reusing the cache's common prefix) and samples the reply after them.
    fn reply(
        &mut self,
        tokens: &[LlamaToken],
        sampling: &Sampling,
        reply: Reply<'_>,
        listener: &mut dyn Listener,
    ) -> Result<GenerationStats, LlmError> {
        let Reply {
            start,
            stops: template_stops,
            continuing,
            coalesce,
        } = reply;
        let max_tokens = sampling.max_tokens.max(1) as usize;
        let prompt_tokens = tokens.len();
        let cached_tokens = self.ingest(tokens, listener)?;
        let prompt_done = Instant::now();
        let mut stats = GenerationStats {
            prompt_tokens: to_u32(prompt_tokens),
            generated_tokens: 0,
            ttft_ms: 0.0,
            prompt_tokens_per_s: rate(prompt_tokens - cached_tokens, prompt_done - start),
            gen_tokens_per_s: 0.0,
            stop: StopReason::EndOfText,
            cached_tokens: to_u32(cached_tokens),
        };
        if listener.cancelled() {
            stats.stop = StopReason::Cancelled;
            return Ok(stats);
        }

        let mut sampler = sampler(sampling);
        // Repetition penalties look back at the prompt too, as llama.cpp's own CLI does.
        sampler.accept_many(&tokens[tokens.len().saturating_sub(PENALTY_LAST_N)..]);
        let mut stops = StopMatcher::new(sampling.stop.iter().chain(template_stops).cloned());
        let mut utf8 = Utf8Stream::default();
        let mut coalescer = Coalescer::new(coalesce);
        let mut text = String::new();
        let mut reply_start = ReplyStart::new(continuing);
        let mut generated = 0usize;
        let stop = loop {
            // `sample` also accepts the token into the chain (penalties): no second accept.
            let token = sampler.sample(&self.ctx, self.batch.n_tokens() - 1);
            if generated == 0 {
                stats.ttft_ms = ms(start.elapsed());
            }
            if self.model.is_end(token) {
                break StopReason::EndOfText;
            }
            generated += 1;
            text.clear();
            utf8.push(&self.model.piece(token), &mut text);
            reply_start.push(&mut text);
            let now = Instant::now();
            match stops.push(&text) {
                Matched::Continue(safe) => send(&mut coalescer, &safe, now, listener),
                Matched::Stop { text, stop } => {
                    send(&mut coalescer, &text, now, listener);
                    break StopReason::StopString(stop);
                }
            }
            if generated >= max_tokens {
                break StopReason::MaxTokens;
            }
            // Checked once per token, before the next decode: a cancel costs at most one.
            if listener.cancelled() {
                break StopReason::Cancelled;
            }
            if self.cached.len() + 1 >= self.n_ctx {
                break StopReason::ContextFull;
            }
            self.decode(&[token], LlmPhase::Generating, listener)?;
        };
        if !matches!(stop, StopReason::StopString(_)) {
            // What was held back for a possible stop string was text after all. `text` still
            // holds the last token's text, which the matcher has seen already.
            text.clear();
            utf8.finish(&mut text);
            let mut tail = match stops.push(&text) {
                Matched::Continue(t) | Matched::Stop { text: t, .. } => t,
            };
            tail.push_str(&stops.finish());
            send(&mut coalescer, &tail, Instant::now(), listener);
        }
        if let Some(rest) = coalescer.finish() {
            listener.text(&rest);
        }
        stats.generated_tokens = to_u32(generated);
        stats.gen_tokens_per_s = rate(generated, prompt_done.elapsed());
        stats.stop = stop;
        Ok(stats)
    }

    /// Renders and tokenizes the conversation, leaving out old turns when it does not fit
    /// with `reserve` tokens to spare for the reply.
    fn prompt(
        &mut self,
        messages: &[ChatMessage],
        fallback: &ChatTemplate,
        reserve: usize,
        listener: &mut dyn Listener,
    ) -> Result<Vec<LlamaToken>, LlmError> {
        let budget = self.n_ctx.saturating_sub(reserve).max(1);
        let hint = match &self.head {
            Some((i, m)) if messages.get(*i) == Some(m) => *i,
            _ => 0,
        };
        let model = self.model;
        let mut render_error = None;
        let fitted = prompt::fit(messages, hint, budget, budget * 3 / 4, |kept| {
            match model.render(kept, fallback) {
                Ok((text, special)) => model.tokenize(&text, special),
                Err(e) => {
                    render_error = Some(e);
                    Vec::new()
                }
            }
        });
        if let Some(e) = render_error {
            return Err(e);
        }
        let Fitted {
            tokens,
            first,
            dropped,
            newly_dropped,
        } = fitted.map_err(|e| LlmError::PromptTooLong {
            tokens: e.tokens,
            budget: e.budget,
            n_ctx: self.n_ctx,
        })?;
        if tokens.is_empty() {
            return Err(LlmError::Template(
                "the conversation rendered to no tokens".into(),
            ));
        }
        if newly_dropped > 0 {
            listener.trimmed(dropped, tokens.len());
        }
        self.head = messages.get(first).cloned().map(|m| (first, m));
        Ok(tokens)
    }

    /// Makes the cache hold exactly `tokens`, decoding only what follows the longest prefix it
    /// already holds. Returns the number of tokens reused.
    fn ingest(
        &mut self,
        tokens: &[LlamaToken],
        listener: &mut dyn Listener,
    ) -> Result<usize, LlmError> {
        match stash::plan(&self.cached, tokens, &self.stash) {
            Plan::Keep => {}
            Plan::SetAside => self.set_aside(),
            Plan::Swap(i) => {
                // Taken before the cache is set aside: putting an entry may evict others and
                // shift the index.
                let entry = self.stash.take(i);
                self.set_aside();
                self.bring_back(entry);
            }
        }
        let mut common = stash::common_prefix(&self.cached, tokens);
        // The last prompt token is always decoded again: its logits start the reply.
        if common == tokens.len() {
            common = common.saturating_sub(1);
        }
        if common < self.cached.len() {
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(0), Some(to_u32(common)), None)
                .unwrap_or(false);
            if !removed {
                self.ctx.clear_kv_cache();
                common = 0;
            }
            self.cached.truncate(common);
        }
        self.decode(&tokens[common..], LlmPhase::Ingesting, listener)?;
        Ok(common)
    }

    /// Copies the cache's conversation out to the stash (one too short to be worth it stays).
    fn set_aside(&mut self) {
        if self.cached.len() < stash::MIN_KEEP {
            return;
        }
        match self.ctx.state_seq_get(0, LlamaStateSeqFlags::empty()) {
            Ok(state) => {
                let bytes = state.byte_len();
                self.stash.put(Stashed {
                    tokens: self.cached.clone(),
                    state,
                    bytes,
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot set the conversation aside"),
        }
    }

    /// Makes the cache hold a conversation set aside earlier (an empty cache if llama.cpp
    /// refuses its state).
    fn bring_back(&mut self, entry: Stashed<LlamaToken, SeqState>) {
        self.ctx.clear_kv_cache();
        self.cached.clear();
        self.head = None;
        match self.ctx.state_seq_set(&entry.state, 0) {
            Ok(()) => self.cached = entry.tokens,
            Err(e) => {
                tracing::warn!(error = %e, "cannot bring a conversation back");
                self.ctx.clear_kv_cache();
            }
        }
    }

    /// Decodes `tokens` after the cache, at most `n_batch` at a time; logits only for the
    /// last one. Stops early (cache consistent) if the listener cancels between batches.
    fn decode(
        &mut self,
        tokens: &[LlamaToken],
        phase: LlmPhase,
        listener: &mut dyn Listener,
    ) -> Result<(), LlmError> {
        let chunks = tokens.chunks(self.n_batch).count();
        for (i, chunk) in tokens.chunks(self.n_batch).enumerate() {
            if i > 0 && listener.cancelled() {
                return Ok(());
            }
            self.batch.clear();
            let base = self.cached.len();
            for (j, token) in chunk.iter().enumerate() {
                let last = i + 1 == chunks && j + 1 == chunk.len();
                let pos = i32::try_from(base + j).unwrap_or(i32::MAX);
                self.batch
                    .add(*token, pos, &[0], last)
                    .map_err(|e| LlmError::Decode(e.to_string()))?;
            }
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                // What the failed batch left in the cache is unknown: start clean next time.
                self.reset();
                return Err(LlmError::Decode(e.to_string()));
            }
            self.cached.extend_from_slice(chunk);
            listener.progress(phase, self.cached.len());
        }
        Ok(())
    }

    /// Saves the KV cache and the tokens in it, so a restarted worker can carry on without
    /// decoding the conversation again. Crash-safe: the state goes to a new file first, then
    /// the metadata naming it replaces the old metadata in one rename, then the old state file
    /// goes. A kill at any point leaves the old snapshot or the new one, never a mix.
    /// Returns `false` when the snapshot on disk already holds exactly this state.
    pub fn save_snapshot(&mut self, dir: &Path) -> Result<bool, LlmError> {
        if self.on_disk.as_ref() == Some(&self.cached) {
            return Ok(false);
        }
        let io = |e: std::io::Error| LlmError::Snapshot(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let kv_file = format!("conversation-{stamp:x}.kv");
        let tmp = dir.join(format!("{kv_file}.tmp"));
        if let Err(e) = self.ctx.state_save_file(&tmp, &self.cached) {
            let _ = std::fs::remove_file(&tmp);
            return Err(LlmError::Snapshot(format!("saving {}: {e}", tmp.display())));
        }
        std::fs::rename(&tmp, dir.join(&kv_file)).map_err(io)?;
        let meta = SnapshotMeta {
            key: self.key.clone(),
            tokens: self.cached.len(),
            head: self.head.clone(),
            kv_file: kv_file.clone(),
        };
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| LlmError::Snapshot(format!("encoding metadata: {e}")))?;
        let tmp = dir.join(format!("{SNAPSHOT_META}.tmp"));
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, dir.join(SNAPSHOT_META)).map_err(io)?;
        self.on_disk = Some(self.cached.clone());
        // Old state files (and leftovers of interrupted saves) are now unreferenced.
        for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("conversation-") && name != kv_file {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(true)
    }

    /// Restores a snapshot saved by [`Session::save_snapshot`] when it was made with this model
    /// and compatible settings.
    pub fn restore_snapshot(&mut self, dir: &Path) -> Restore {
        let meta: SnapshotMeta = match std::fs::read(dir.join(SNAPSHOT_META)) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(meta) => meta,
                Err(e) => return Restore::Skipped(format!("unreadable snapshot metadata: {e}")),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Restore::None,
            Err(e) => return Restore::Skipped(format!("snapshot metadata: {e}")),
        };
        if meta.key != self.key {
            return Restore::Skipped(
                "the snapshot was made with another model or context settings".into(),
            );
        }
        if meta.kv_file.contains(['/', '\\']) {
            return Restore::Skipped("snapshot metadata names a file outside its directory".into());
        }
        match self
            .ctx
            .state_load_file(dir.join(&meta.kv_file), self.n_ctx)
        {
            Ok(tokens) if tokens.len() == meta.tokens => {
                self.cached = tokens;
                self.head = meta.head;
                self.on_disk = Some(self.cached.clone());
                Restore::Restored(self.cached.len())
            }
            Ok(_) | Err(_) => {
                self.reset();
                Restore::Skipped("the snapshot file is damaged or incomplete".into())
            }
        }
    }
}

/// What [`Session::restore_snapshot`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// No snapshot yet.
    None,
    /// A snapshot exists but cannot be used; the reason is worth a log line.
    Skipped(String),
    /// This many tokens are back in the cache.
    Restored(usize),
}

/// How a reply is sampled beyond its sampling settings.
struct Reply<'a> {
    start: Instant,
    /// The fallback template's stops (a model with its own template ends its turn itself).
    stops: &'a [String],
    /// The prompt ends inside the reply (a resumed one, or a plain completion): its leading
    /// whitespace is text, not the gap after the generation prompt.
    continuing: bool,
    coalesce: Coalesce,
}

fn send(coalescer: &mut Coalescer, text: &str, now: Instant, listener: &mut dyn Listener) {
    if let Some(chunk) = coalescer.push(text, now) {
        listener.text(&chunk);
    }
}

const PENALTY_LAST_N: usize = 64;

struct NoListener;
impl Listener for NoListener {}

fn sampler(s: &Sampling) -> LlamaSampler {
    let mut chain = Vec::new();
    if (s.repeat_penalty - 1.0).abs() > f32::EPSILON && s.repeat_penalty > 0.0 {
        chain.push(LlamaSampler::penalties(
            0,
            PENALTY_LAST_N as i32,
            s.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if s.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if s.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(s.top_k).unwrap_or(i32::MAX),
            ));
        }
        if s.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(s.top_p, 1));
        }
        if s.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(s.min_p, 1));
        }
        chain.push(LlamaSampler::temp(s.temperature));
        chain.push(LlamaSampler::dist(s.seed));
    }
    LlamaSampler::chain_simple(chain)
}

fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1000.0
}

fn rate(tokens: usize, d: Duration) -> f32 {
    if d.is_zero() {
        0.0
    } else {
        tokens as f32 / d.as_secs_f32()
    }
}
