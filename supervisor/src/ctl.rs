//! The client side of `mate ctl`: [`mate_protocol::client`] as the `Ctl` role.

use std::path::Path;

pub use mate_protocol::client::ClientError as CtlError;
use mate_protocol::{client, Reply, Request, Role};

/// Sends `request` and calls `on_reply` for each reply until it returns `false` or the
/// supervisor closes the stream.
pub fn request(
    state_dir: &Path,
    request: &Request,
    on_reply: impl FnMut(Reply) -> bool,
) -> Result<(), CtlError> {
    client::request(state_dir, Role::Ctl, request, on_reply)
}

/// Sends `request` and returns the first reply.
pub fn call(state_dir: &Path, req: &Request) -> Result<Reply, CtlError> {
    client::call(state_dir, Role::Ctl, req)
}
