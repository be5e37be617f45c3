//! Where a supervisor listens, and how peers reach it.
//!
//! One endpoint per state dir. On Unix it is a filesystem socket `run/mate.sock` inside the
//! state dir, in a directory of mode 0700 and with the socket itself at 0600, so only the user
//! who runs mate can connect at all; the auth token is a second lock. On Windows it is a named
//! pipe whose name is derived from the state dir, with a security descriptor that lets only
//! that user open it. Both ends check that the other runs as the same user ([`crate::peer`]).
//!
//! A socket file left behind by a crashed supervisor is *stale*: nobody accepts on it. Binding
//! tries the name; if it is taken, a test connection tells a live listener (refuse, never
//! steal) from a stale file (remove and bind again).

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use interprocess::local_socket::{
    prelude::*, ConnectOptions, Listener, ListenerOptions, Name, Stream,
};

use crate::{
    handshake::{self, Hello, Rejection, HELLO_DEADLINE},
    Error,
};

/// Longest socket path `bind` accepts (`sockaddr_un.sun_path` is 108 bytes on Linux, 104 on
/// macOS, with a terminating NUL).
#[cfg(unix)]
pub const MAX_SOCKET_PATH: usize = if cfg!(target_os = "linux") { 107 } else { 103 };

/// The address of one supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Socket file on Unix, pipe name on Windows.
    path: PathBuf,
}

impl Endpoint {
    /// The endpoint of the supervisor that owns `state_dir`.
    pub fn for_state_dir(state_dir: &Path) -> Endpoint {
        #[cfg(unix)]
        let path = state_dir.join("run").join("mate.sock");
        #[cfg(windows)]
        let path = PathBuf::from(format!(
            "mate-{:016x}",
            fnv1a(state_dir.to_string_lossy().as_bytes())
        ));
        Endpoint { path }
    }

    /// An endpoint at an explicit socket path (Unix) or pipe name (Windows).
    pub fn at(path: impl Into<PathBuf>) -> Endpoint {
        Endpoint { path: path.into() }
    }

    /// The socket path or pipe name, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn name(&self) -> io::Result<Name<'_>> {
        #[cfg(unix)]
        {
            use interprocess::local_socket::GenericFilePath;
            self.path.as_os_str().to_fs_name::<GenericFilePath>()
        }
        #[cfg(windows)]
        {
            use interprocess::local_socket::GenericNamespaced;
            self.path.as_os_str().to_ns_name::<GenericNamespaced>()
        }
    }

    fn listener_options(&self) -> io::Result<ListenerOptions<'_>> {
        let opts = ListenerOptions::new()
            .name(self.name()?)
            .reclaim_name(true)
            .try_overwrite(false);
        #[cfg(unix)]
        let opts = {
            use interprocess::os::unix::local_socket::ListenerOptionsExt;
            opts.mode(0o600)
        };
        #[cfg(windows)]
        let opts = {
            use interprocess::os::windows::local_socket::ListenerOptionsExt;
            let user = crate::peer::current_user().ok_or_else(|| {
                io::Error::other("Windows does not tell which user runs mate (no SID)")
            })?;
            opts.security_descriptor(crate::peer::owner_only_descriptor(&user)?)
        };
        Ok(opts)
    }

    /// Creates the private directory for the socket (Unix) and checks the path fits.
    fn prepare(&self) -> Result<(), Error> {
        #[cfg(unix)]
        {
            let len = self.path.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(Error::PathTooLong {
                    path: self.path.clone(),
                    len,
                    max: MAX_SOCKET_PATH,
                });
            }
            if let Some(dir) = self.path.parent() {
                private_dir(dir)?;
            }
        }
        Ok(())
    }

    /// Binds with `create`, replacing a stale socket file and refusing a live listener.
    fn bind_with<L>(
        &self,
        create: impl Fn(ListenerOptions<'_>) -> io::Result<L>,
    ) -> Result<L, Error> {
        self.prepare()?;
        match create(self.listener_options()?) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if self.is_live() {
                    return Err(Error::EndpointInUse {
                        path: self.path.clone(),
                    });
                }
                std::fs::remove_file(&self.path)?;
                Ok(create(self.listener_options()?)?)
            }
            other => Ok(other?),
        }
    }

    /// True when something accepts connections on this endpoint.
    pub fn is_live(&self) -> bool {
        match self.name() {
            Ok(name) => match ConnectOptions::new().name(name).connect_sync() {
                Ok(_) => true,
                // Refused or missing: nobody is there. Anything else (no permission, say):
                // assume someone is, and do not touch it.
                Err(e) => !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ),
            },
            Err(_) => false,
        }
    }

    /// Listens, blocking flavour.
    pub fn listen(&self) -> Result<Listener, Error> {
        self.bind_with(|opts| opts.create_sync())
    }

    /// Connects, blocking flavour, without a handshake.
    pub fn connect_raw(&self) -> Result<Stream, Error> {
        Ok(ConnectOptions::new().name(self.name()?).connect_sync()?)
    }

    /// Connects and introduces itself; returns the stream and the accepting process's pid.
    ///
    /// The token goes only to a process of the same user: the listening end's credentials
    /// are checked first, so a socket that another user swapped in learns nothing.
    pub fn connect(&self, hello: &Hello) -> Result<(Stream, u32), Error> {
        let mut stream = self.connect_raw()?;
        self.check_listener(&stream)?;
        set_recv_timeout(&stream, Some(HELLO_DEADLINE))?;
        let pid = handshake::client(&mut stream, hello)?;
        set_recv_timeout(&stream, None)?;
        Ok((stream, pid))
    }

    /// Refuses a listening end that runs as another user (Unix: the kernel recorded its
    /// credentials when it called `listen`; Windows: the user of the pipe server's process).
    fn check_listener(&self, stream: &Stream) -> Result<(), Error> {
        let Ok(creds) = stream.peer_creds() else {
            return Ok(());
        };
        let ours = crate::peer::current_user();
        match ours.map(|ours| (crate::peer::check_same_user(&creds, &ours), ours)) {
            Some((Err(theirs), ours)) => Err(Error::ForeignListener {
                path: self.path.clone(),
                theirs,
                ours: ours.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Listens, tokio flavour. Must be called inside a tokio runtime.
    #[cfg(feature = "tokio")]
    pub fn listen_tokio(&self) -> Result<interprocess::local_socket::tokio::Listener, Error> {
        self.bind_with(|opts| opts.create_tokio())
    }

    /// Connects, tokio flavour, without a handshake.
    #[cfg(feature = "tokio")]
    pub async fn connect_raw_tokio(
        &self,
    ) -> Result<interprocess::local_socket::tokio::Stream, Error> {
        Ok(ConnectOptions::new()
            .name(self.name()?)
            .connect_tokio()
            .await?)
    }
}

/// Creates `dir` (and its parents) readable by the owner only (0700 on Unix), tightening the
/// mode of a directory that predates us with looser bits; fails if it is not ours.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Completes the accepting side of the handshake on a fresh blocking stream, waiting at most
/// `deadline` (normally [`HELLO_DEADLINE`]) for the `Hello`.
pub fn accept_hello(
    stream: &mut Stream,
    deadline: Duration,
    verify: impl FnOnce(&Hello) -> Result<(), Rejection>,
) -> Result<Hello, Error> {
    set_recv_timeout(stream, Some(deadline))?;
    let hello = handshake::server(stream, verify)?;
    set_recv_timeout(stream, None)?;
    Ok(hello)
}

/// Named pipes have no receive timeout; there the deadline is the async side's job.
fn set_recv_timeout(stream: &Stream, timeout: Option<Duration>) -> Result<(), Error> {
    match stream.set_recv_timeout(timeout) {
        Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(()),
        other => Ok(other?),
    }
}

/// FNV-1a: a pipe name that is stable across builds, unlike `DefaultHasher`.
#[cfg(windows)]
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
