//! What the core reports, as log lines. The message texts and fields are part of
//! baton's interface (log pipelines and the integration tests match them exactly).

use crate::supervisor::Report;

/// Log one report.
pub(super) fn log(report: &Report) {
    match report {
        Report::Joined { trigger, epoch } => {
            tracing::info!(%trigger, epoch, "joined the restart that is about to start")
        }
        Report::Coalesced { trigger } => {
            tracing::info!(%trigger, "restart already in progress; folded into one follow-up")
        }
        Report::Covered { trigger, epoch } => tracing::info!(
            %trigger,
            epoch,
            "inputs unchanged since the restart in flight read them: it covers the triggers that came meanwhile, no follow-up"
        ),
        Report::Ignored { trigger, why } => {
            tracing::info!(%trigger, "restart request ignored: {why}")
        }
        Report::Deferred { trigger, draining } => tracing::info!(
            %trigger,
            draining,
            "restart waits until the previous epoch has drained (a restart now would cut its drain short)"
        ),
        Report::RestartStarted { epoch, trigger } => match trigger {
            Some(trigger) => tracing::info!(epoch, %trigger, "hot restart requested"),
            None => tracing::info!(epoch, "starting epoch"),
        },
        Report::Serving {
            epoch,
            pid,
            replaced,
            trigger: _,
            restart_ms,
            startup_ms,
        } => tracing::info!(
            epoch,
            pid,
            ?replaced,
            restart_ms,
            startup_ms,
            "epoch ready and serving"
        ),
        Report::RestartFailed {
            epoch,
            reason,
            message,
        } => tracing::error!(
            epoch,
            %reason,
            "new epoch refused; the serving epoch (if any) keeps serving: {message}"
        ),
        Report::Drained { serving } => tracing::info!(
            serving = serving.map(i64::from).unwrap_or(-1),
            "draining on request: readiness is 503 from now on; no epoch starts until shutdown"
        ),
        Report::HandedOverEarly { epoch, child } => tracing::warn!(
            epoch,
            child,
            "the serving epoch was terminated by its child before the child was seen ready \
             (--parent-shutdown-duration is short for this start time); epoch {child} takes over"
        ),
        Report::GivingUp { code, why } => {
            tracing::error!(code, "baton gives up: {why}")
        }
        Report::ParentDied {
            epoch,
            status,
            child,
        } => tracing::warn!(
            epoch,
            %status,
            child,
            "a draining epoch died while its child still talked to it; baton answers for it \
             so the serving epoch does not abort"
        ),
        Report::Crashed {
            epoch,
            status,
            crashes,
            retry_in,
        } => match retry_in {
            Some(ms) => tracing::error!(
                epoch,
                %status,
                crashes,
                retry_in_ms = ms,
                "serving epoch crashed; restarting it"
            ),
            None => tracing::error!(
                epoch,
                %status,
                crashes,
                "serving epoch crashed too often; giving up"
            ),
        },
        Report::Exited {
            epoch,
            pid,
            status,
            role,
            ran_ms,
        } => tracing::info!(epoch, pid, %status, role = role.label(), ran_ms, "epoch exited"),
        Report::ChainRepaired { chain } => tracing::warn!(
            chain,
            "cleared the 'initialising' flag a failed epoch left in Envoy's shared memory; hot restarts continue"
        ),
        Report::ChainRepairFailed { chain, why } => {
            tracing::warn!(chain, "cannot repair the hot-restart chain: {why}")
        }
        Report::ChainAbandoned { chain, why } => tracing::warn!(
            chain,
            "hot-restart chain can no longer be extended ({why}); the next epoch starts a new chain"
        ),
        Report::WatchFailed { message } => tracing::error!(
            "file watch failed; changes there go unnoticed until it is re-armed: {message}"
        ),
        Report::WatchRestored => tracing::info!("file watch re-armed; every watched path is watched"),
        Report::RotationStarted { rotation, epoch } => {
            tracing::info!(rotation, epoch, "certificate rotation in place requested")
        }
        Report::RotationWaits { why } => tracing::info!("certificate rotation waits: {why}"),
        Report::RotationIgnored { why } => {
            tracing::info!("certificate rotation ignored: {why}")
        }
        Report::WaitsForRotation { trigger } => tracing::info!(
            %trigger,
            "restart waits until the certificate rotation in progress is done"
        ),
        Report::Rotated {
            rotation,
            epoch,
            serials,
            changed: true,
            rotation_ms,
        } => tracing::info!(
            rotation,
            epoch,
            ?serials,
            rotation_ms,
            "certificate rotated in place: envoy serves the new pair"
        ),
        Report::Rotated {
            rotation,
            epoch,
            serials,
            changed: false,
            ..
        } => tracing::info!(
            rotation,
            epoch,
            ?serials,
            "certificate rotation: the pair on disk is the one served already"
        ),
        Report::RotationFailed {
            rotation,
            epoch,
            reason,
            message,
        } => tracing::error!(
            rotation,
            epoch,
            %reason,
            "certificate rotation refused; the serving epoch keeps serving its certificate: {message}"
        ),
    }
}
