//! Who is at the other end of a local connection: this user, or someone else.
//!
//! mate talks only to processes of the user who runs it, both ways: the supervisor refuses a
//! client of another user, and a client never sends its token to a supervisor of another user.
//! On Unix the kernel records the peer's effective uid with the connection. On Windows a named
//! pipe tells the peer's process id, and that process's token names its user (a SID); a process
//! whose token cannot be read counts as another user's.

use std::fmt;

use interprocess::local_socket::PeerCreds;

/// A user: a uid on Unix, a SID such as `S-1-5-21-…-1001` on Windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(Inner);

#[cfg(unix)]
type Inner = u32;
#[cfg(windows)]
type Inner = String;

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[cfg(unix)]
        return write!(f, "uid {}", self.0);
        #[cfg(windows)]
        return write!(f, "user {}", self.0);
    }
}

/// The user this process runs as; `None` only where Windows will not say.
pub fn current_user() -> Option<User> {
    #[cfg(unix)]
    return Some(User(rustix::process::geteuid().as_raw()));
    #[cfg(windows)]
    return user_of_process(std::process::id());
}

/// Whether the peer runs as `ours`: `Err` carries the peer's user (or why it is unknown) for
/// the message. A peer the platform cannot identify at all passes on Unix, where the socket's
/// 0700 directory already keeps other users out.
pub fn check_same_user(creds: &PeerCreds, ours: &User) -> Result<(), String> {
    #[cfg(unix)]
    {
        match creds.euid() {
            Some(uid) if uid != ours.0 => Err(User(uid).to_string()),
            _ => Ok(()),
        }
    }
    #[cfg(windows)]
    {
        let Some(pid) = creds.pid() else {
            return Err("a process Windows does not name".into());
        };
        match user_of_process(pid) {
            Some(theirs) if &theirs == ours => Ok(()),
            Some(theirs) => Err(format!("{theirs} (process {pid})")),
            None => Err(format!("process {pid}, whose user Windows does not tell")),
        }
    }
}

/// The SID of the user a process runs as, read from its token.
#[cfg(windows)]
fn user_of_process(pid: u32) -> Option<User> {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
    let pid = Pid::from_u32(pid);
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().with_user(UpdateKind::Always),
    );
    let uid = system.process(pid)?.user_id()?;
    Some(User(uid.to_string()))
}

/// The named pipe's security descriptor: full access for `user`, and nobody else (the
/// equivalent of the 0700 directory and 0600 socket on Unix).
#[cfg(windows)]
pub(crate) fn owner_only_descriptor(
    user: &User,
) -> std::io::Result<interprocess::os::windows::security_descriptor::SecurityDescriptor> {
    use interprocess::os::windows::security_descriptor::SecurityDescriptor;
    // D: the DACL; P: protected, nothing inherited; one entry: Allow, Generic All, to the SID.
    let sddl = format!("D:P(A;;GA;;;{})", user.0);
    let wide = widestring::U16CString::from_str(&sddl)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    SecurityDescriptor::deserialize(&wide)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use interprocess::local_socket::prelude::*;

    #[test]
    fn a_peer_of_this_user_passes_and_the_same_peer_fails_for_another_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let endpoint = crate::Endpoint::for_state_dir(dir.path());
        let listener = endpoint.listen().expect("listen");
        let _client = endpoint.connect_raw().expect("connect");
        let accepted = listener.accept().expect("accept");
        let creds = accepted.peer_creds().expect("peer credentials");
        let ours = current_user().expect("the current user");
        assert_eq!(check_same_user(&creds, &ours), Ok(()));
        let other = User(ours.0 + 1);
        assert_eq!(
            check_same_user(&creds, &other),
            Err(format!("uid {}", ours.0))
        );
    }
}
