//! What the supervisor does differently on Unix and on Windows, kept in one place.
//!
//! - **Workers die with the supervisor.** On Linux each worker asks the kernel for a
//!   parent-death signal (`mate_protocol::worker::die_with_parent`). On Windows the supervisor
//!   puts itself in a Job Object with kill-on-close before it spawns anything: its workers are
//!   in the job too, and when the supervisor's process ends, however it ends, Windows closes the
//!   job's last handle and terminates whatever is left in it, hung workers included.
//! - **How a process ended**: a signal on Unix; on Windows an exit code, which for a crash is an
//!   NTSTATUS (`ExitStatus::describe` names them).
//! - **Ctrl-C reaches only the supervisor.** Workers and a background supervisor run away from
//!   the terminal's keys: in a process group of their own on Unix, without a console on
//!   Windows (where Ctrl-C, Ctrl-Break and closing the window go to every process attached to
//!   the console). The supervisor then stops its workers itself, with their grace period.

use mate_protocol::ExitStatus;

/// Makes sure no worker outlives this process (Windows: a Job Object with kill-on-close; Unix:
/// nothing to do here, each worker arranges it). A failure is only a warning: the supervisor
/// still works, but a crash of it could leave workers behind.
pub fn contain_workers() {
    #[cfg(windows)]
    if let Err(e) = kill_on_close_job() {
        tracing::warn!(
            "workers might outlive a crashed supervisor: could not put it in a Job Object: {e}"
        );
    }
}

#[cfg(windows)]
fn kill_on_close_job() -> Result<(), win32job::JobError> {
    let job = win32job::Job::create()?;
    let mut info = job.query_extended_limit_info()?;
    info.limit_kill_on_job_close();
    job.set_extended_limit_info(&info)?;
    job.assign_current_process()?;
    // The handle must stay open as long as this process lives: closing it would terminate the
    // job, this process included. Windows closes it when the process ends.
    std::mem::forget(job);
    Ok(())
}

/// Keeps the terminal's Ctrl-C (and Ctrl-Break, and the window closing on Windows) away from
/// a child: workers, and the supervisor `mate` starts in the background.
pub fn away_from_terminal(command: &mut std::process::Command) {
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(command, 0);
    #[cfg(windows)]
    {
        // No console at all: control events are sent to the processes attached to one.
        const CREATE_NO_WINDOW: u32 = 0x0800_0000;
        std::os::windows::process::CommandExt::creation_flags(command, CREATE_NO_WINDOW);
    }
}

/// A child's exit as the wire tells it.
pub fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return ExitStatus::Signal(signal);
        }
    }
    ExitStatus::Code(status.code().unwrap_or(-1))
}
