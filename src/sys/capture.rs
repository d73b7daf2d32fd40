//! Running a short helper command (a validation, a preflight, a version query)
//! through the reaper, with its output captured and a deadline.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::spawn::clean_slate;
use super::Reaper;
use crate::supervisor::ProcessExit;

/// Run a short command through the reaper; its status and its stdout+stderr.
pub async fn capture(
    reaper: &Reaper,
    cmd: &mut Command,
    timeout: Duration,
) -> Result<(ProcessExit, String), String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_slate(cmd);
    let mut spawned = reaper
        .spawn(cmd)
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let readers: Vec<_> = [
        spawned
            .child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        spawned
            .child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    })
    .collect();
    // Dropped before the command ends (baton shutting down mid-preflight): the
    // command goes too, rather than outliving the preflight that wanted it.
    let mut guard = KillOnDrop(Some(spawned.pid));
    let status = match tokio::time::timeout(timeout, spawned.exit).await {
        Ok(Ok(status)) => status,
        Ok(Err(_)) => {
            // Reaped already: its pid may be another process's by now.
            guard.0 = None;
            return Err(format!("{program}: process vanished"));
        }
        Err(_) => return Err(format!("{program} did not finish within {timeout:?}")),
    };
    guard.0 = None;
    let mut output = String::new();
    for reader in readers {
        output.push_str(&reader.await.unwrap_or_default());
    }
    Ok((status, output))
}

/// Kills the process group of a command whose run was abandoned.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
