//! The same greedy generation the worker does, written directly against `llama-cpp-2` with
//! nothing of mate in between: the baseline `mate bench llm` compares the worker with, in the
//! same run, on the same model, threads and prompt.

use std::{num::NonZeroU32, path::Path, time::Instant};

use llama_cpp_2::{
    context::params::LlamaContextParams, llama_batch::LlamaBatch, model::params::LlamaModelParams,
    model::LlamaModel, sampling::LlamaSampler,
};
use serde::Serialize;

use crate::{engine::backend, LlmError};

/// Timings of one baseline run.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineRun {
    pub load_ms: f64,
    pub prompt_tokens: usize,
    pub ttft_ms: f64,
    pub prompt_tokens_per_s: f64,
    pub generated_tokens: usize,
    /// Tokens after the first, over the time after the first: the steady decode rate, the
    /// same measure `mate bench llm` takes of the worker from its side of the socket.
    pub gen_tokens_per_s: f64,
    /// Milliseconds between one sampled token and the next: the latency distribution of
    /// streaming. Left out of the JSON of a run: reports carry the distribution.
    #[serde(skip)]
    pub token_gaps_ms: Vec<f64>,
    pub text: String,
}

/// Loads `model`, decodes `prompt` (already rendered) and generates up to `max_tokens`
/// greedily, the textbook llama.cpp loop.
pub fn generate_greedy(
    model: &Path,
    prompt: &str,
    n_ctx: u32,
    n_batch: u32,
    threads: u32,
    max_tokens: usize,
) -> Result<BaselineRun, LlmError> {
    let backend = backend()?;
    let start = Instant::now();
    let model =
        LlamaModel::load_from_file(backend, model, &LlamaModelParams::default()).map_err(|_| {
            LlmError::LoadFailed {
                path: model.to_path_buf(),
            }
        })?;
    let threads = i32::try_from(threads.max(1)).unwrap_or(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_batch)
        .with_n_ubatch(n_batch)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED);
    let mut ctx = model
        .new_context(backend, params)
        .map_err(|e| LlmError::Context {
            n_ctx,
            reason: e.to_string(),
        })?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;

    let request = Instant::now();
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, false);
    let mut batch = LlamaBatch::new(n_batch as usize, 1);
    let chunks: Vec<_> = tokens.chunks(n_batch as usize).collect();
    let mut pos = 0i32;
    for (i, chunk) in chunks.iter().enumerate() {
        batch.clear();
        for (j, t) in chunk.iter().enumerate() {
            let last = i + 1 == chunks.len() && j + 1 == chunk.len();
            batch
                .add(*t, pos, &[0], last)
                .map_err(|e| LlmError::Decode(e.to_string()))?;
            pos += 1;
        }
        ctx.decode(&mut batch)
            .map_err(|e| LlmError::Decode(e.to_string()))?;
    }
    let prompt_s = request.elapsed().as_secs_f64();

    let mut sampler = LlamaSampler::greedy();
    let mut text = Vec::new();
    let mut generated = 0;
    let mut ttft_ms = 0.0;
    let mut first_at = Instant::now();
    let mut last_at = first_at;
    let mut token_gaps_ms = Vec::with_capacity(max_tokens);
    while generated < max_tokens {
        let token = sampler.sample(&ctx, batch.n_tokens() - 1);
        let now = Instant::now();
        if generated == 0 {
            ttft_ms = (now - request).as_secs_f64() * 1e3;
            first_at = now;
        } else {
            token_gaps_ms.push((now - last_at).as_secs_f64() * 1e3);
        }
        last_at = now;
        if model.vocab().is_eog(token) {
            break;
        }
        text.extend(model.vocab().token_to_piece(token, false, None));
        generated += 1;
        if generated == max_tokens {
            break;
        }
        batch.clear();
        batch
            .add(token, pos, &[0], true)
            .map_err(|e| LlmError::Decode(e.to_string()))?;
        pos += 1;
        ctx.decode(&mut batch)
            .map_err(|e| LlmError::Decode(e.to_string()))?;
    }
    let gen_s = first_at.elapsed().as_secs_f64();
    Ok(BaselineRun {
        load_ms,
        prompt_tokens: tokens.len(),
        ttft_ms,
        prompt_tokens_per_s: tokens.len() as f64 / prompt_s.max(1e-9),
        generated_tokens: generated,
        gen_tokens_per_s: generated.saturating_sub(1) as f64 / gen_s.max(1e-9),
        token_gaps_ms,
        text: String::from_utf8_lossy(&text).into_owned(),
    })
}
