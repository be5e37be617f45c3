//! Writes a tiny random-weight llama GGUF: two layers, a byte-fallback SentencePiece vocab of
//! a few hundred tokens, about 500 KB. llama.cpp loads it in milliseconds, so engine tests run
//! real inference on every commit without the 253 MB default model.
//!
//! The vocab has the three special tokens, all 256 `<0xNN>` byte tokens (so any text, emoji
//! included, tokenizes, and multibyte characters split across tokens), and a handful of
//! ASCII pieces. The weights are uniform noise from a fixed seed: the output is gibberish, but
//! the same gibberish every run, which is what determinism tests need.

use std::{io::Write, path::Path};

/// Shape of the generated model.
#[derive(Debug, Clone, Copy)]
pub struct TinyModel {
    pub n_embd: u32,
    pub n_ff: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub context_length: u32,
    pub seed: u64,
}

impl Default for TinyModel {
    fn default() -> Self {
        TinyModel {
            n_embd: 64,
            n_ff: 128,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 2,
            context_length: 2048,
            seed: 42,
        }
    }
}

/// ASCII pieces besides the byte tokens; `▁` is SentencePiece's word-start marker.
const PIECES: &[&str] = &[
    "▁", "▁the", "▁a", "▁is", "▁you", "▁I", "▁hello", "▁mate", "▁User", "▁Mate", ":", ".", ",",
    "!", "?", "e", "t", "a", "o", "i", "n", "s", "h", "r", "l", "d", "u", "m", "y", "w",
];

impl TinyModel {
    /// Number of tokens in the vocab.
    pub fn n_vocab(&self) -> usize {
        3 + 256 + PIECES.len()
    }

    /// Writes the model to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(600 * 1024);
        self.encode(&mut out);
        let mut file = std::fs::File::create(path)?;
        file.write_all(&out)?;
        file.sync_all()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let (tokens, scores, types) = vocab();
        let head_dim = self.n_embd / self.n_head;
        let n_embd_kv = head_dim * self.n_head_kv;
        let e = u64::from(self.n_embd);
        let f = u64::from(self.n_ff);
        let v = tokens.len() as u64;
        let kv = u64::from(n_embd_kv);

        // (name, dims with the row length first, fill)
        let mut tensors: Vec<(String, Vec<u64>, Fill)> = vec![
            ("token_embd.weight".into(), vec![e, v], Fill::Noise),
            ("output_norm.weight".into(), vec![e], Fill::Ones),
            ("output.weight".into(), vec![e, v], Fill::Noise),
        ];
        for l in 0..self.n_layer {
            let b = |n: &str| format!("blk.{l}.{n}.weight");
            tensors.extend([
                (b("attn_norm"), vec![e], Fill::Ones),
                (b("attn_q"), vec![e, e], Fill::Noise),
                (b("attn_k"), vec![e, kv], Fill::Noise),
                (b("attn_v"), vec![e, kv], Fill::Noise),
                (b("attn_output"), vec![e, e], Fill::Noise),
                (b("ffn_norm"), vec![e], Fill::Ones),
                (b("ffn_gate"), vec![e, f], Fill::Noise),
                (b("ffn_up"), vec![e, f], Fill::Noise),
                (b("ffn_down"), vec![f, e], Fill::Noise),
            ]);
        }

        let kvs: Vec<(&str, Value)> = vec![
            ("general.architecture", Value::Str("llama".into())),
            ("general.name", Value::Str("mate tiny test model".into())),
            ("general.alignment", Value::U32(ALIGN as u32)),
            ("llama.context_length", Value::U32(self.context_length)),
            ("llama.embedding_length", Value::U32(self.n_embd)),
            ("llama.block_count", Value::U32(self.n_layer)),
            ("llama.feed_forward_length", Value::U32(self.n_ff)),
            ("llama.attention.head_count", Value::U32(self.n_head)),
            ("llama.attention.head_count_kv", Value::U32(self.n_head_kv)),
            ("llama.rope.dimension_count", Value::U32(head_dim)),
            ("llama.rope.freq_base", Value::F32(10_000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("tokenizer.ggml.model", Value::Str("llama".into())),
            ("tokenizer.ggml.tokens", Value::StrArray(tokens)),
            ("tokenizer.ggml.scores", Value::F32Array(scores)),
            ("tokenizer.ggml.token_type", Value::I32Array(types)),
            ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        ];

        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (key, value) in &kvs {
            put_str(out, key);
            value.encode(out);
        }
        let mut offset = 0u64;
        for (name, dims, _) in &tensors {
            put_str(out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&0u32.to_le_bytes()); // GGML_TYPE_F32
            out.extend_from_slice(&offset.to_le_bytes());
            offset += padded(dims.iter().product::<u64>() * 4);
        }
        pad(out);
        let mut rng = XorShift(self.seed | 1);
        for (_, dims, fill) in &tensors {
            let n = dims.iter().product::<u64>();
            for _ in 0..n {
                let x = match fill {
                    Fill::Ones => 1.0f32,
                    Fill::Noise => rng.uniform() * 0.2,
                };
                out.extend_from_slice(&x.to_le_bytes());
            }
            pad(out);
        }
    }
}

const ALIGN: usize = 32;

fn padded(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(ALIGN) {
        out.push(0);
    }
}

enum Fill {
    Ones,
    Noise,
}

fn vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    // token types: 1 normal, 2 unknown, 3 control, 6 byte
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for p in PIECES {
        tokens.push((*p).to_string());
        types.push(1);
    }
    // Longer pieces score higher so the tokenizer prefers them over single letters.
    let scores = tokens
        .iter()
        .zip(&types)
        .map(|(t, ty)| {
            if *ty == 1 {
                t.chars().count() as f32
            } else {
                0.0
            }
        })
        .collect();
    (tokens, scores, types)
}

enum Value {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    F32Array(Vec<f32>),
    I32Array(Vec<i32>),
}

impl Value {
    fn encode(&self, out: &mut Vec<u8>) {
        const UINT32: u32 = 4;
        const INT32: u32 = 5;
        const FLOAT32: u32 = 6;
        const BOOL: u32 = 7;
        const STRING: u32 = 8;
        const ARRAY: u32 = 9;
        let ty = |out: &mut Vec<u8>, t: u32| out.extend_from_slice(&t.to_le_bytes());
        let array = |out: &mut Vec<u8>, t: u32, n: usize| {
            ty(out, ARRAY);
            ty(out, t);
            out.extend_from_slice(&(n as u64).to_le_bytes());
        };
        match self {
            Value::U32(v) => {
                ty(out, UINT32);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::F32(v) => {
                ty(out, FLOAT32);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Bool(v) => {
                ty(out, BOOL);
                out.push(u8::from(*v));
            }
            Value::Str(s) => {
                ty(out, STRING);
                put_str(out, s);
            }
            Value::StrArray(v) => {
                array(out, STRING, v.len());
                v.iter().for_each(|s| put_str(out, s));
            }
            Value::F32Array(v) => {
                array(out, FLOAT32, v.len());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
            Value::I32Array(v) => {
                array(out, INT32, v.len());
                v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// xorshift64: a fixed, dependency-free stream of noise.
struct XorShift(u64);

impl XorShift {
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
