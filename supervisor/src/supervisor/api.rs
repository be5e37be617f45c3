//! The API worker's calls: generations queued with every other client's turns, cancels from
//! clients that left, `/health` and `/metrics`.

use mate_protocol::{ApiCall, ApiEvent, ApiOptions, Health};

use super::turn::{Asked, Client};
use super::*;

impl Supervisor {
    /// What the API worker serves with: the `[api]` settings and the model's name.
    pub(super) fn api_options(&self) -> ApiOptions {
        let mut options = self.opts.settings.api.options.clone();
        options.model = model_name(&self.opts.model);
        options.sampling = self.opts.settings.chat.sampling.clone();
        options
    }

    pub(super) fn on_api_call(&mut self, generation: u64, call: ApiCall) {
        let Some(tx) = self
            .process(WorkerKind::Api, generation)
            .and_then(|p| p.tx.clone())
        else {
            return;
        };
        let answer = |id, event| {
            let _ = tx.try_send(ToWorker::Api { id, event });
        };
        match call {
            ApiCall::Generate {
                id,
                input,
                sampling,
            } => {
                let client = Client::Api { id, tx: tx.clone() };
                if let Err(refusal) = self.enqueue(Asked::Api { input, sampling }, client.clone()) {
                    client.refuse(refusal);
                }
            }
            ApiCall::Cancel { id } => self.cancel_api(id),
            ApiCall::Health { id } => answer(id, ApiEvent::Health(self.health())),
            ApiCall::Metrics { id } => {
                let text = self.metrics.render(&self.status());
                answer(id, ApiEvent::Metrics { text })
            }
        }
    }

    /// The HTTP client of call `id` went away: its generation stops at the next token, or it
    /// leaves the queue.
    pub(super) fn cancel_api(&mut self, id: u64) {
        if self.turn.as_ref().and_then(|t| t.api_id()) == Some(id) {
            debug!(id, "the API client left: cancelling its generation");
            return self.cancel();
        }
        self.queue.retain(|q| match &q.client {
            Client::Api { id: queued, .. } => *queued != id,
            Client::Chat(_) => true,
        });
    }

    /// The API worker died: the generation it was streaming has no one to go to.
    pub(super) fn api_worker_gone(&mut self) {
        if self.turn.as_ref().is_some_and(|t| t.api_id().is_some()) {
            self.cancel();
        }
    }

    /// Whether the LLM serves, and if not why (llama-server's `/health`).
    pub(super) fn health(&mut self) -> Health {
        let profile = self.profile.clone();
        let queued = self.queued() as u32;
        let (stopping, gone) = (self.stopping, self.llm_gone());
        let w = self.worker(WorkerKind::Llm);
        let (status, reason) = match (w.state(), gone) {
            _ if stopping => ("stopping", "mate is shutting down".to_string()),
            (WorkerState::Failed, Some(why)) => ("failed", why),
            (_, Some(why)) => ("stopped", why),
            (WorkerState::Running, None) => ("ok", String::new()),
            (WorkerState::Starting, None) => {
                ("loading", format!("the model is loading ({profile})"))
            }
            _ => (
                "restarting",
                format!(
                    "the LLM worker is restarting{}",
                    w.last_error
                        .as_ref()
                        .map(|e| format!(" after: {e}"))
                        .unwrap_or_default()
                ),
            ),
        };
        Health {
            ok: status == "ok",
            status: status.into(),
            reason,
            profile,
            queued,
        }
    }
}

/// The model's name as clients see it: its file name without `.gguf`.
fn model_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mate".into());
    name.strip_suffix(".gguf")
        .map(str::to_string)
        .unwrap_or(name)
}
