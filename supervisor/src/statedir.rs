//! The state dir is private: the conversation, the KV snapshots, the journal, the logs and the
//! control token live there, and the socket's directory decides who may talk to the
//! supervisor. Before `mate up` writes anything, [`secure`] checks that the state dir and its
//! folders belong to the user running mate and that nobody else can write to them (refusing
//! with what to do otherwise), tightens what is looser than 0700/0600, and the process creates
//! every file with mode 0600 whatever the umask ([`private_umask`]). Files are opened with
//! [`open_private`], which never follows a symbolic link: another user who could plant a link
//! would have to own or write the folder, which [`secure`] refuses.
//!
//! Windows: the checks are the Unix permission bits, so there they are no-ops (the named
//! pipe's access control is the endpoint's business).

use std::{
    fs::{File, OpenOptions},
    io,
    path::{Path, PathBuf},
};

/// The folders of a state dir that mate creates and writes to.
pub const FOLDERS: [&str; 3] = ["run", "logs", "session"];

/// Why a state dir is not safe to use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDirError {
    #[error(
        "{path} belongs to uid {owner}, not to uid {ours} who runs mate: another user could \
         read the conversation or swap the socket. Use a state dir of your own (--state-dir, \
         MATE_STATE_DIR), or `chown -R {ours} {path}` if it is yours"
    )]
    NotOurs {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error(
        "{path} is writable by {who} (mode {mode:03o}): they could plant links or swap the \
         socket. `chmod 700 {path}` makes it private"
    )]
    Writable {
        path: PathBuf,
        who: &'static str,
        mode: u32,
    },
    #[error(
        "{path} is a symbolic link; mate does not follow links inside its state dir. Remove \
         it (`rm {path}`) and mate creates a real one"
    )]
    Link { path: PathBuf },
    #[error("{path} is not a {expected}; move it out of the state dir")]
    NotA {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("cannot prepare {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateDirError + '_ {
    move |source| StateDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// From now on this process (and the workers it spawns) creates files 0600 and folders 0700.
pub fn private_umask() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
}

/// Creates or checks the state dir and its folders, then tightens the modes of what is in
/// them. The state dir itself may be a link (to another disk, say); its folders may not.
pub fn secure(state_dir: &Path) -> Result<(), StateDirError> {
    private_umask();
    ensure_dir(state_dir, true)?;
    for name in FOLDERS {
        ensure_dir(&state_dir.join(name), false)?;
    }
    tighten(state_dir, 3)
}

/// Creates `dir` 0700 if missing; otherwise checks it is ours and nobody else may write it,
/// and takes away read access from others.
fn ensure_dir(dir: &Path, may_be_link: bool) -> Result<(), StateDirError> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_private_dir(dir).map_err(io_error(dir))?;
        }
        Err(e) => return Err(io_error(dir)(e)),
        Ok(meta) if meta.file_type().is_symlink() && !may_be_link => {
            return Err(StateDirError::Link {
                path: dir.to_path_buf(),
            })
        }
        Ok(_) => {}
    }
    let meta = std::fs::metadata(dir).map_err(io_error(dir))?;
    if !meta.is_dir() {
        return Err(StateDirError::NotA {
            path: dir.to_path_buf(),
            expected: "directory",
        });
    }
    check_owner_and_mode(dir, &meta)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_error(dir))?;
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn check_owner_and_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), StateDirError> {
    use std::os::unix::fs::MetadataExt;
    let ours = rustix::process::geteuid().as_raw();
    if meta.uid() != ours {
        return Err(StateDirError::NotOurs {
            path: path.to_path_buf(),
            owner: meta.uid(),
            ours,
        });
    }
    let mode = meta.mode() & 0o777;
    let who = match mode & 0o022 {
        0 => return Ok(()),
        0o002 => "every user",
        0o020 => "its group",
        _ => "its group and every user",
    };
    Err(StateDirError::Writable {
        path: path.to_path_buf(),
        who,
        mode,
    })
}

#[cfg(not(unix))]
fn check_owner_and_mode(_: &Path, _: &std::fs::Metadata) -> Result<(), StateDirError> {
    Ok(())
}

/// Takes group and other bits off the files and folders under `dir` (down to `depth`
/// levels), written by an older mate or under another umask. Links are left alone: they are
/// never followed, and opening one through [`open_private`] fails with a clear error.
fn tighten(dir: &Path, depth: u32) -> Result<(), StateDirError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let ours = rustix::process::geteuid().as_raw();
        let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() || meta.uid() != ours {
                continue;
            }
            let (private, is_dir) = if meta.is_dir() {
                (0o700, true)
            } else if meta.is_file() {
                (meta.mode() & 0o700, false)
            } else {
                // The socket: the endpoint sets its mode when it binds.
                continue;
            };
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private))
                    .map_err(io_error(&path))?;
            }
            if is_dir && depth > 1 {
                tighten(&path, depth - 1)?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (dir, depth);
    Ok(())
}

/// Opens a file of the state dir for appending (`append`) or writing from the start, creating
/// it 0600. A symbolic link is refused rather than followed, a file of another user is
/// refused, and an existing file with looser bits is made 0600.
pub fn open_private(path: &Path, append: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true);
    if append {
        options.append(true);
    } else {
        options.write(true).read(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    let file = options.open(path).map_err(|e| explain_link(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = file.metadata()?;
        let ours = rustix::process::geteuid().as_raw();
        if meta.uid() != ours {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} belongs to uid {}, not to uid {ours} who runs mate; remove it",
                    path.display(),
                    meta.uid()
                ),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(file)
}

/// `O_NOFOLLOW` on a link fails with `ELOOP`, which reads as "too many levels of links".
fn explain_link(path: &Path, e: io::Error) -> io::Error {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        io::Error::new(
            e.kind(),
            format!(
                "{} is a symbolic link; mate does not follow links inside its state dir \
                 (remove it)",
                path.display()
            ),
        )
    } else {
        e
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("meta").mode() & 0o777
    }

    #[test]
    fn a_loose_state_dir_of_ours_is_tightened_and_its_folders_created_private() {
        let tmp = tempfile::tempdir().expect("dir");
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let old = dir.join("events.jsonl");
        std::fs::write(&old, "{}\n").expect("write");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        secure(&dir).expect("secure");
        assert_eq!(mode(&dir), 0o700);
        for name in FOLDERS {
            assert_eq!(mode(&dir.join(name)), 0o700, "{name}");
        }
        assert_eq!(mode(&old), 0o600);
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().expect("dir");
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = secure(&dir).expect_err("refused");
        assert!(matches!(err, StateDirError::Writable { .. }), "{err}");
        assert!(err.to_string().contains("chmod 700"), "{err}");
        assert!(
            !dir.join("run").exists(),
            "nothing is created in a refused dir"
        );
    }

    #[test]
    fn a_linked_folder_is_refused_and_its_target_untouched() {
        let tmp = tempfile::tempdir().expect("dir");
        let dir = tmp.path().join("state");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        std::os::unix::fs::symlink(&elsewhere, dir.join("run")).expect("link");
        let err = secure(&dir).expect_err("refused");
        assert!(matches!(err, StateDirError::Link { .. }), "{err}");
        assert_eq!(mode(&elsewhere), 0o755);
    }

    #[test]
    fn private_files_are_0600_whatever_the_umask_and_links_are_not_followed() {
        let tmp = tempfile::tempdir().expect("dir");
        let file = tmp.path().join("a.log");
        open_private(&file, true).expect("open");
        assert_eq!(mode(&file), 0o600);
        let loose = tmp.path().join("b.log");
        std::fs::write(&loose, "x").expect("write");
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        open_private(&loose, true).expect("open");
        assert_eq!(mode(&loose), 0o600);

        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "theirs").expect("write");
        let link = tmp.path().join("c.log");
        std::os::unix::fs::symlink(&victim, &link).expect("link");
        let err = open_private(&link, true).expect_err("a link is refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("read"),
            "theirs",
            "the link's target is untouched"
        );
    }
}
