//! `mate bench threads`: prompt and generation speed of llama.cpp in this process for each
//! thread count, to check the worker's thread rule (`mate_worker_llm::cpu`) against the
//! machine; `--write-config` puts the fastest count into `[llm] threads`.

use std::path::Path;

use anyhow::Context as _;
use mate_protocol::ChatTemplate;
use mate_worker_llm::{baseline, prompt::render_fallback};
use serde::Serialize;

use super::{stats::median, user, PROMPT};

/// One thread count's figures in `mate bench threads`.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadPoint {
    pub threads: u32,
    pub prompt_tokens_per_s: f64,
    pub gen_tokens_per_s: f64,
}

/// `mate bench threads`: prompt and generation speed for each thread count, medians of `runs`.
pub fn threads(model: &Path, counts: &[u32], runs: usize) -> anyhow::Result<Vec<ThreadPoint>> {
    let rendered = render_fallback(&ChatTemplate::default(), &[user(PROMPT)]).repeat(4);
    let mut points = Vec::new();
    for &t in counts {
        let (mut p, mut g) = (Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            let r = baseline::generate_greedy(model, &rendered, 2048, 512, t, 48)?;
            p.push(r.prompt_tokens_per_s);
            g.push(r.gen_tokens_per_s);
        }
        let point = ThreadPoint {
            threads: t,
            prompt_tokens_per_s: median(p),
            gen_tokens_per_s: median(g),
        };
        eprintln!(
            "mate bench threads: {t:>2} threads  prompt {:>8.1} tok/s  generation {:>6.1} tok/s",
            point.prompt_tokens_per_s, point.gen_tokens_per_s
        );
        points.push(point);
    }
    Ok(points)
}

/// Sets `[llm] threads` in the config file, keeping its comments and layout.
pub fn write_threads(config: &Path, threads: u32) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", config.display()))?;
    if !doc.contains_table("llm") {
        doc["llm"] = toml_edit::table();
    }
    doc["llm"]["threads"] = toml_edit::value(i64::from(threads));
    if let Some(dir) = config.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = config.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string())?;
    std::fs::rename(&tmp, config)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_threads_keeps_comments_and_other_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "# mine\nprofile = \"cpu\"\n\n[llm]\nwarmup = false\n",
        )
        .expect("write");
        write_threads(&path, 3).expect("write threads");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("# mine\nprofile = \"cpu\""), "{text}");
        let parsed = crate::config::parse(&text, &path).expect("still a valid config");
        assert_eq!(parsed.llm.threads, Some(3));
        assert_eq!(parsed.llm.warmup, Some(false));
    }
}
