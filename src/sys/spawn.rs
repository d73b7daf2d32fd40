//! Starting a child with a clean slate: its own process group, default signal
//! dispositions, an empty signal mask, and death with baton.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};

/// Prepare `cmd` so the child starts in its own process group (so baton can signal
/// the whole epoch, helpers included) with default signal handling, is killed if
/// baton dies (`PR_SET_PDEATHSIG`; Envoy sets its own, which replaces this one), and
/// is the OOM killer's first choice until it serves ([`super::oom`]).
pub fn clean_slate(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0);
    super::oom::newcomer(cmd);
    // SAFETY: the closure runs between fork and exec and calls only
    // async-signal-safe functions (sigprocmask, sigaction, prctl); it allocates
    // nothing (Signal::iterator walks a static array).
    unsafe {
        cmd.pre_exec(|| {
            signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            for sig in Signal::iterator() {
                if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
                    // Ignored signals survive exec; handled ones reset anyway.
                    let _ = signal::signal(sig, SigHandler::SigDfl);
                }
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        })
    };
    cmd
}
