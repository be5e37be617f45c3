//! Reads a GGUF model file's header (metadata and tensor table, never the tensor data) and
//! returns the facts the VRAM estimate needs, [`ModelFacts`].
//!
//! The estimate follows how llama.cpp places a model: `--n-gpu-layers k` puts the last `k`
//! repeating blocks (`blk.N.*`) on the GPU, `k = n_layer + 1` adds the output head, and the token
//! embeddings stay in RAM. So we need each block's bytes, the head's bytes, and the attention
//! shape (layers, KV heads, key and value lengths) that sizes the KV cache.
//!
//! Tensor sizes come from the data offsets (each tensor runs to the next one's offset), so no
//! table of ggml quantisation types is needed and new types just work. The reader is bounded:
//! every length is checked against a cap and against the bytes left in the file before anything
//! is allocated or skipped, and arrays such as the 262k-token vocab are skipped, not stored. A
//! header reads in milliseconds; a hostile or truncated file gives a [`GgufError`].

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

/// What the VRAM estimate needs to know about a model, read from its GGUF header.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelFacts {
    /// `general.architecture`, e.g. `gemma3`; the prefix of the other keys.
    pub architecture: String,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// Size of the whole file.
    pub file_bytes: u64,
    /// Repeating layers: `{arch}.block_count`.
    pub n_layer: u32,
    /// Context length the model was trained with: `{arch}.context_length`.
    pub n_ctx_train: u32,
    /// Embedding width: `{arch}.embedding_length`.
    pub n_embd: u32,
    /// Attention (query) heads: `{arch}.attention.head_count`.
    pub n_head: u32,
    /// Key/value heads: `{arch}.attention.head_count_kv`, `n_head` when absent.
    pub n_head_kv: u32,
    /// Width of one key head: `{arch}.attention.key_length`, `n_embd / n_head` when absent.
    pub key_length: u32,
    /// Width of one value head: `{arch}.attention.value_length`, `n_embd / n_head` when absent.
    pub value_length: u32,
    /// Vocabulary size: the length of `tokenizer.ggml.tokens`, else `{arch}.vocab_size`.
    pub n_vocab: u32,
    /// Bytes of each repeating layer's tensors (`blk.N.*`), index N (len == n_layer).
    pub layer_bytes: Vec<u64>,
    /// Bytes llama.cpp puts on the GPU with the last offloaded "layer": `output.weight` (or, when the
    /// model ties it, `token_embd.weight`) plus `output_norm.*`.
    pub output_bytes: u64,
    /// Every other tensor (token embeddings, …): stays in RAM.
    pub other_bytes: u64,
}

/// Why a model file's header could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read model file {}: {source}; check the path and its permissions", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{} is not a GGUF model file: pass --model PATH to a .gguf file", path.display())]
    NotGguf {
        /// The model file.
        path: PathBuf,
    },
    /// The header is truncated, corrupt or beyond the reader's limits.
    #[error(
        "{} is not a valid GGUF file ({what}); it may be truncated or corrupt: download it again \
         (`mate model fetch` for the default model) or pass --model PATH to another .gguf file",
        path.display()
    )]
    Malformed {
        /// The model file.
        path: PathBuf,
        /// What is wrong, and where.
        what: String,
    },
    /// A metadata key the estimate needs is absent.
    #[error(
        "{} has no `{key}` in its GGUF metadata, so mate cannot size it: pass --model PATH to a \
         model llama.cpp can load",
        path.display()
    )]
    Missing {
        /// The model file.
        path: PathBuf,
        /// The absent key.
        key: String,
    },
}

const MAX_STRING: u64 = 1 << 20;
const MAX_KEY: u64 = 64 << 10;
const MAX_COUNT: u64 = 1_000_000;
const MAX_DIMS: u64 = 8;
const MAX_DEPTH: u32 = 4;
const STRING: u32 = 8;
const ARRAY: u32 = 9;

/// Reads the header of the GGUF file at `path`; see the module docs.
pub fn read(path: &Path) -> Result<ModelFacts, GgufError> {
    let io_err = |source| GgufError::Io {
        path: path.into(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let file_bytes = file.metadata().map_err(io_err)?.len();
    let inner = BufReader::with_capacity(64 << 10, file);
    let mut r = Reader {
        inner,
        pos: 0,
        len: file_bytes,
        path,
    };
    if file_bytes < 4 || r.array::<4>()? != *b"GGUF" {
        return Err(GgufError::NotGguf { path: path.into() });
    }
    let (meta, mut tensors) = r.header()?;
    let m = Meta { map: &meta, path };

    let align = u64::from(m.int("general.alignment")?.unwrap_or(32));
    if !align.is_power_of_two() {
        return Err(r.malformed(format!("general.alignment {align} is not a power of two")));
    }
    let data_start = r.pos.div_ceil(align) * align;
    let data_len = file_bytes.checked_sub(data_start);
    let data_len = data_len.ok_or_else(|| r.malformed("no data section"))?;

    // Each tensor runs to the next one's offset, the last one to the end of the file.
    tensors.sort_unstable_by_key(|&(offset, _)| offset);
    let mut sizes = Vec::with_capacity(tensors.len());
    for (i, &(offset, part)) in tensors.iter().enumerate() {
        let end = tensors.get(i + 1).map_or(data_len, |&(next, _)| next);
        if offset >= end {
            let what =
                format!("tensor data at offset {offset} overlaps another or is past the end");
            return Err(r.malformed(what));
        }
        sizes.push((part, end - offset));
    }

    let arch = m.string("general.architecture")?;
    let key = |k: &str| format!("{arch}.{k}");
    let n_layer = m.need(&key("block_count"))?;
    if u64::from(n_layer) > tensors.len() as u64 {
        return Err(r.malformed(format!("{n_layer} layers in {} tensors", tensors.len())));
    }
    let tied = !sizes.iter().any(|(part, _)| *part == Part::OutputWeight);
    let (mut layer_bytes, mut output_bytes, mut other_bytes) = (vec![0; n_layer as usize], 0, 0);
    for (part, bytes) in sizes {
        let layer = match part {
            Part::Layer(n) => usize::try_from(n).ok().and_then(|n| layer_bytes.get_mut(n)),
            _ => None,
        };
        match (layer, part) {
            (Some(layer), _) => *layer += bytes,
            (None, Part::Output | Part::OutputWeight) => output_bytes += bytes,
            (None, Part::TokenEmbd) if tied => output_bytes += bytes,
            // The embeddings, and blocks past `n_layer` (e.g. next-token prediction).
            (None, _) => other_bytes += bytes,
        }
    }

    let n_embd = m.need(&key("embedding_length"))?;
    let n_head = m.need(&key("attention.head_count"))?;
    let head_dim = || {
        n_embd
            .checked_div(n_head)
            .ok_or_else(|| r.malformed("0 attention heads"))
    };
    let n_vocab = match meta.get("tokenizer.ggml.tokens") {
        Some(Value::Array(n)) => {
            u32::try_from(*n).map_err(|_| r.malformed(format!("{n} tokens")))?
        }
        _ => m.need(&key("vocab_size"))?,
    };
    Ok(ModelFacts {
        name: m.string("general.name").ok(),
        file_bytes,
        n_layer,
        n_ctx_train: m.need(&key("context_length"))?,
        n_embd,
        n_head,
        n_head_kv: m.int(&key("attention.head_count_kv"))?.unwrap_or(n_head),
        key_length: m
            .int(&key("attention.key_length"))?
            .map_or_else(head_dim, Ok)?,
        value_length: m
            .int(&key("attention.value_length"))?
            .map_or_else(head_dim, Ok)?,
        n_vocab,
        layer_bytes,
        output_bytes,
        other_bytes,
        architecture: arch,
    })
}

/// Where a tensor goes when llama.cpp offloads layers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    /// `blk.N.*`.
    Layer(u64),
    /// `output.weight`: when absent, the model ties its output to the token embeddings.
    OutputWeight,
    /// `output.*` (biases) and `output_norm.*`.
    Output,
    TokenEmbd,
    Other,
}

impl Part {
    fn of(name: &str) -> Part {
        if let Some(rest) = name.strip_prefix("blk.") {
            let digits = rest.split('.').next().unwrap_or_default();
            digits.parse().map_or(Part::Other, Part::Layer)
        } else if name == "output.weight" {
            Part::OutputWeight
        } else if name.starts_with("output.") || name.starts_with("output_norm.") {
            Part::Output
        } else if name == "token_embd.weight" {
            Part::TokenEmbd
        } else {
            Part::Other
        }
    }
}

/// A metadata value, as much of it as the facts need.
#[derive(Debug)]
enum Value {
    Int(i128),
    Str(String),
    /// An array, skipped: only its length is kept.
    Array(u64),
    Other,
}

/// Typed lookups in the metadata.
struct Meta<'a> {
    map: &'a HashMap<String, Value>,
    path: &'a Path,
}

impl Meta<'_> {
    fn int(&self, key: &str) -> Result<Option<u32>, GgufError> {
        let what = match self.map.get(key) {
            None => return Ok(None),
            Some(Value::Int(v)) => match u32::try_from(*v) {
                Ok(v) => return Ok(Some(v)),
                Err(_) => format!("`{key}` = {v} is out of range"),
            },
            Some(_) => format!("`{key}` is not an integer"),
        };
        Err(GgufError::Malformed {
            path: self.path.into(),
            what,
        })
    }

    fn need(&self, key: &str) -> Result<u32, GgufError> {
        self.int(key)?.ok_or_else(|| self.missing(key))
    }

    fn string(&self, key: &str) -> Result<String, GgufError> {
        match self.map.get(key) {
            Some(Value::Str(s)) => Ok(s.clone()),
            _ => Err(self.missing(key)),
        }
    }

    fn missing(&self, key: &str) -> GgufError {
        GgufError::Missing {
            path: self.path.into(),
            key: key.into(),
        }
    }
}

/// The metadata by key, and each tensor's data offset and [`Part`].
type Header = (HashMap<String, Value>, Vec<(u64, Part)>);

/// A position-tracking little-endian reader that never reads or skips past the file's end.
struct Reader<'a> {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl Reader<'_> {
    /// Reads the version, the metadata and the tensor infos (offset and [`Part`]).
    fn header(&mut self) -> Result<Header, GgufError> {
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            let what = format!("GGUF version {version}; mate reads versions 2 and 3");
            return Err(self.malformed(what));
        }
        let tensor_count = self.count("tensor count", MAX_COUNT)?;
        let kv_count = self.count("metadata count", MAX_COUNT)?;
        let mut meta = HashMap::new();
        for _ in 0..kv_count {
            let key = self.string(MAX_KEY)?;
            let ty = self.u32()?;
            let value = self.value(ty)?;
            if meta.contains_key(&key) {
                return Err(self.malformed(format!("key `{key}` appears twice")));
            }
            meta.insert(key, value);
        }
        // name (>= 8 bytes) + n_dims (4) + type (4) + offset (8): at least 24 bytes a tensor.
        if tensor_count > self.remaining() / 24 {
            return Err(self.malformed(format!("{tensor_count} tensors do not fit in the file")));
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = self.string(MAX_KEY)?;
            let n_dims = u64::from(self.u32()?);
            if n_dims > MAX_DIMS {
                return Err(self.malformed(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            self.skip(n_dims * 8 + 4)?; // dims and ggml type: sizes come from the offsets
            tensors.push((self.u64()?, Part::of(&name)));
        }
        Ok((meta, tensors))
    }

    fn malformed(&self, what: impl Into<String>) -> GgufError {
        let (path, what) = (self.path.into(), what.into());
        GgufError::Malformed { path, what }
    }

    fn io_error(&self, source: io::Error) -> GgufError {
        match source.kind() {
            io::ErrorKind::UnexpectedEof => self.truncated(),
            _ => GgufError::Io {
                path: self.path.into(),
                source,
            },
        }
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn truncated(&self) -> GgufError {
        self.malformed(format!(
            "the header stops at byte {} of {}",
            self.pos, self.len
        ))
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        self.inner.read_exact(buf).map_err(|e| self.io_error(e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn count(&mut self, what: &str, max: u64) -> Result<u64, GgufError> {
        let n = self.u64()?;
        match n <= max {
            true => Ok(n),
            false => Err(self.malformed(format!("{what} {n} exceeds the limit of {max}"))),
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        if n > self.remaining() {
            return Err(self.truncated());
        }
        let offset = i64::try_from(n).map_err(|_| self.truncated())?;
        self.inner
            .seek_relative(offset)
            .map_err(|e| self.io_error(e))?;
        self.pos += n;
        Ok(())
    }

    /// Reads a string's length, checked against `max` and the file; the bytes are left unread.
    fn string_len(&mut self, max: u64) -> Result<u64, GgufError> {
        let n = self.count("string length", max)?;
        match n <= self.remaining() {
            true => Ok(n),
            false => Err(self.truncated()),
        }
    }

    fn string(&mut self, max: u64) -> Result<String, GgufError> {
        let mut buf = vec![0; self.string_len(max)? as usize];
        self.fill(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads a metadata value of type `ty`, keeping integers and strings, skipping the rest.
    fn value(&mut self, ty: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::Int(u8::from_le_bytes(self.array()?).into()),
            1 => Value::Int(i8::from_le_bytes(self.array()?).into()),
            2 => Value::Int(u16::from_le_bytes(self.array()?).into()),
            3 => Value::Int(i16::from_le_bytes(self.array()?).into()),
            4 => Value::Int(u32::from_le_bytes(self.array()?).into()),
            5 => Value::Int(i32::from_le_bytes(self.array()?).into()),
            10 => Value::Int(u64::from_le_bytes(self.array()?).into()),
            11 => Value::Int(i64::from_le_bytes(self.array()?).into()),
            STRING => Value::Str(self.string(MAX_STRING)?),
            ARRAY => Value::Array(self.skip_array(1)?),
            _ => {
                self.skip_value(ty, 0)?;
                Value::Other
            }
        })
    }

    /// Skips one value of type `ty` inside an array nested `depth` deep.
    fn skip_value(&mut self, ty: u32, depth: u32) -> Result<(), GgufError> {
        match ty {
            STRING => {
                let n = self.string_len(MAX_STRING)?;
                self.skip(n)
            }
            ARRAY => self.skip_array(depth + 1).map(drop),
            _ => {
                self.skip(fixed_size(ty).ok_or_else(|| self.malformed(format!("value type {ty}")))?)
            }
        }
    }

    /// Skips an array (element type, count, elements), returning its length.
    fn skip_array(&mut self, depth: u32) -> Result<u64, GgufError> {
        if depth > MAX_DEPTH {
            return Err(self.malformed(format!("arrays nested more than {MAX_DEPTH} deep")));
        }
        let ty = self.u32()?;
        let n = self.u64()?;
        let min_size = match ty {
            STRING => 8,
            ARRAY => 12,
            _ => {
                fixed_size(ty).ok_or_else(|| self.malformed(format!("array of value type {ty}")))?
            }
        };
        if n > self.remaining() / min_size {
            return Err(
                self.malformed(format!("an array of {n} elements does not fit in the file"))
            );
        }
        match ty {
            STRING | ARRAY => (0..n).try_for_each(|_| self.skip_value(ty, depth))?,
            _ => self.skip(n * min_size)?,
        }
        Ok(n)
    }
}

/// Bytes of a fixed-size value type, `None` for strings, arrays and unknown types.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::{io::Write, time::Instant};

    /// A metadata value for [`gguf`]; `Int(ty, v)` writes `v`'s low bytes as value type `ty`.
    enum V {
        Int(u32, u64),
        Str(&'static str),
        Strs(u64),
        F32s(u64),
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// A GGUF v3 file: the metadata, then a tensor of `bytes` zero bytes (padded to 32) per
    /// `(name, bytes)`. Tensor infos are written in reverse, so the reader must sort by offset.
    fn gguf(kvs: &[(&str, V)], tensors: &[(&str, u64)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((kvs.len() as u64).to_le_bytes());
        for (key, value) in kvs {
            put_str(&mut out, key);
            let ty = |out: &mut Vec<u8>, ty: u32| out.extend(ty.to_le_bytes());
            match value {
                V::Int(t, v) => {
                    ty(&mut out, *t);
                    out.extend(&v.to_le_bytes()[..fixed_size(*t).unwrap() as usize]);
                }
                V::Str(s) => {
                    ty(&mut out, STRING);
                    put_str(&mut out, s);
                }
                V::Strs(n) => {
                    [ARRAY, STRING].into_iter().for_each(|t| ty(&mut out, t));
                    out.extend(n.to_le_bytes());
                    (0..*n).for_each(|i| put_str(&mut out, &format!("t{i}")));
                }
                V::F32s(n) => {
                    [ARRAY, 6].into_iter().for_each(|t| ty(&mut out, t));
                    out.extend(n.to_le_bytes());
                    out.resize(out.len() + *n as usize * 4, 0);
                }
            }
        }
        let mut offset = 0;
        let mut infos = Vec::new();
        for (name, bytes) in tensors {
            infos.push((name, bytes, offset));
            offset += bytes.div_ceil(32) * 32;
        }
        for (name, bytes, offset) in infos.into_iter().rev() {
            put_str(&mut out, name);
            out.extend(1u32.to_le_bytes());
            out.extend((bytes / 4).to_le_bytes());
            out.extend(0u32.to_le_bytes()); // F32
            out.extend(offset.to_le_bytes());
        }
        out.resize(out.len().div_ceil(32) * 32 + offset as usize, 0);
        out
    }

    fn read_bytes(bytes: &[u8]) -> Result<ModelFacts, GgufError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        read(file.path())
    }

    fn kvs(skip: &[&str]) -> Vec<(&'static str, V)> {
        let all = vec![
            ("general.architecture", V::Str("llama")),
            ("general.name", V::Str("tiny")),
            ("llama.block_count", V::Int(10, 2)),         // u64
            ("llama.context_length", V::Int(5, 4096)),    // i32
            ("llama.embedding_length", V::Int(2, 64)),    // u16
            ("llama.attention.head_count", V::Int(0, 4)), // u8
            ("llama.attention.head_count_kv", V::Int(11, 2)), // i64
            ("llama.attention.key_length", V::Int(4, 32)),
            ("llama.attention.value_length", V::Int(3, 24)), // i16
            ("llama.rope.freq_base", V::Int(6, 0)),          // f32: skipped
            ("llama.use_parallel_residual", V::Int(7, 1)),   // bool: skipped
            ("tokenizer.ggml.tokens", V::Strs(300)),
            ("tokenizer.ggml.scores", V::F32s(300)),
        ];
        all.into_iter().filter(|(k, _)| !skip.contains(k)).collect()
    }

    const TENSORS: &[(&str, u64)] = &[
        ("token_embd.weight", 256),
        ("output_norm.weight", 64),
        ("output.weight", 256),
        ("blk.0.attn_q.weight", 128),
        ("blk.0.ffn_norm.weight", 40), // padded to 64
        ("blk.1.attn_q.weight", 128),
        ("blk.1.ffn_norm.weight", 32),
        ("blk.2.nextn.weight", 32), // beyond block_count: other
        ("rope_freqs.weight", 32),
    ];

    #[test]
    fn reads_a_two_layer_model() {
        let bytes = gguf(&kvs(&[]), TENSORS);
        let facts = read_bytes(&bytes).unwrap();
        let expected = ModelFacts {
            architecture: "llama".into(),
            name: Some("tiny".into()),
            file_bytes: bytes.len() as u64,
            n_layer: 2,
            n_ctx_train: 4096,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 2,
            key_length: 32,
            value_length: 24,
            n_vocab: 300,
            layer_bytes: vec![192, 160],
            output_bytes: 320,
            other_bytes: 256 + 32 + 32,
        };
        assert_eq!(facts, expected);
    }

    #[test]
    fn tied_output_counts_the_embeddings_as_output() {
        let tensors: Vec<_> = TENSORS
            .iter()
            .copied()
            .filter(|t| t.0 != "output.weight")
            .collect();
        let facts = read_bytes(&gguf(&kvs(&[]), &tensors)).unwrap();
        assert_eq!((facts.output_bytes, facts.other_bytes), (64 + 256, 64));
    }

    #[test]
    fn defaults_for_kv_heads_head_lengths_and_vocab() {
        let skip = [
            "llama.attention.head_count_kv",
            "llama.attention.key_length",
            "llama.attention.value_length",
            "tokenizer.ggml.tokens",
        ];
        let mut kvs = kvs(&skip);
        kvs.push(("llama.vocab_size", V::Int(4, 1000)));
        let facts = read_bytes(&gguf(&kvs, TENSORS)).unwrap();
        let got = (
            facts.n_head_kv,
            facts.key_length,
            facts.value_length,
            facts.n_vocab,
        );
        assert_eq!(got, (4, 16, 16, 1000));
    }

    #[test]
    fn every_truncation_is_an_error_until_the_last_tensor_starts() {
        let bytes = gguf(&kvs(&[]), TENSORS);
        let len = bytes.len() as u64;
        let (data_start, last_tensor) = (len - 992, len - 32);
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().write_all(&bytes).unwrap();
        for n in (0..len).rev() {
            file.as_file().set_len(n).unwrap();
            match read(file.path()) {
                // Past the last tensor's start only its own size (unknowable without a ggml type
                // table) shrinks, and llama.cpp reports that when it loads the file.
                Ok(facts) if n > last_tensor => {
                    let sum = facts.layer_bytes.iter().sum::<u64>()
                        + facts.output_bytes
                        + facts.other_bytes;
                    assert_eq!(sum, n - data_start);
                }
                Ok(_) => panic!("a {n}-byte prefix of {len} read fine"),
                Err(GgufError::NotGguf { .. }) => assert!(n < 4),
                Err(GgufError::Malformed { .. }) => {}
                Err(e) => panic!("{n} bytes: unexpected {e}"),
            }
        }
    }

    #[test]
    fn hostile_lengths_are_malformed_without_allocating() {
        let max = u64::MAX.to_le_bytes().to_vec();
        let kv_a = |ty: u32| [&1u64.to_le_bytes()[..], b"a", &ty.to_le_bytes()].concat();
        let nested = [9u32.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec()]
            .concat()
            .repeat(6);
        let string_array = [kv_a(ARRAY), STRING.to_le_bytes().to_vec(), max.clone()].concat();
        // (expected in the message, tensor count, kv count, what follows)
        let cases = [
            ("tensor count", u64::MAX, 0, vec![]),
            ("metadata count", 0, u64::MAX, vec![]),
            ("limit of 65536", 0, 1, max.clone()), // key length
            (
                "limit of 1048576",
                0,
                1,
                [kv_a(STRING), max.clone()].concat(),
            ),
            ("array of 18446744073709551615", 0, 1, string_array),
            ("nested", 0, 1, [kv_a(ARRAY), nested].concat()),
            ("value type 13", 0, 1, kv_a(13)),
            ("tensors do not fit", 1000, 0, vec![]),
        ];
        let start = Instant::now();
        for (what, tensors, kvs, tail) in cases {
            let counts = [tensors.to_le_bytes(), kvs.to_le_bytes()].concat();
            let bytes = [&b"GGUF\x03\0\0\0"[..], &counts, &tail, &[0; 64]].concat();
            match read_bytes(&bytes) {
                Err(GgufError::Malformed { what: msg, .. }) => assert!(msg.contains(what), "{msg}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        let mut too_many_layers = kvs(&["llama.block_count"]);
        too_many_layers.push(("llama.block_count", V::Int(4, u64::from(u32::MAX))));
        let err = read_bytes(&gguf(&too_many_layers, TENSORS)).unwrap_err();
        assert!(matches!(err, GgufError::Malformed { .. }), "{err}");
        assert!(start.elapsed().as_secs() < 1);
    }

    #[test]
    fn other_files_are_not_gguf() {
        for bytes in [&b""[..], b"GG", b"GGML\x03\0\0\0", b"PK\x03\x04 a zip file"] {
            let err = read_bytes(bytes).unwrap_err();
            assert!(matches!(err, GgufError::NotGguf { .. }), "{err}");
            assert!(err.to_string().contains("--model PATH"));
        }
    }

    #[test]
    fn missing_block_count_is_named() {
        let err = read_bytes(&gguf(&kvs(&["llama.block_count"]), TENSORS)).unwrap_err();
        assert!(
            matches!(&err, GgufError::Missing { key, .. } if key == "llama.block_count"),
            "{err}"
        );
    }

    /// Reads the default model when `MATE_TEST_MODEL` points at it.
    #[test]
    fn reads_the_default_model() {
        let Ok(path) = std::env::var("MATE_TEST_MODEL") else {
            eprintln!("MATE_TEST_MODEL is unset: skipping the real-model test");
            return;
        };
        let start = Instant::now();
        let facts = read(Path::new(&path)).unwrap();
        let took = start.elapsed();
        let mut shown = facts.clone();
        shown.layer_bytes.truncate(3);
        eprintln!("read {path} in {took:?}: {shown:#?} (layer_bytes: first 3 shown)");
        assert_eq!((facts.architecture.as_str(), facts.n_layer), ("gemma3", 18));
        assert_eq!(facts.layer_bytes.len(), 18);
        assert!(facts.layer_bytes.iter().all(|&b| b > 0));
        let sum = facts.layer_bytes.iter().sum::<u64>() + facts.output_bytes + facts.other_bytes;
        let header = facts.file_bytes - sum;
        // The header is mostly the vocab: 262k strings plus scores and types, a few MB.
        let vocab = u64::from(facts.n_vocab) * (8 + 4 + 4);
        assert!(
            header > vocab && header < vocab + (1 << 20) * 4,
            "header {header} B, vocab {vocab} B"
        );
    }
}
