//! baton's own log output (to stderr, so it interleaves with the proxy's).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

/// Install the global subscriber; a bad `--log-level` is a usage error.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let filter = EnvFilter::try_new(directives(&args.log_level))
        .map_err(|e| format!("--log-level {}: {e}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// The filter for `--log-level`. The HTTP/2 stack under the metrics receiver logs
/// every frame at debug (several lines per Envoy flush, four flushes a second in the
/// tests): not baton's debugging, so it stays at info unless the filter names `h2`.
fn directives(level: &str) -> String {
    if level.split(',').any(|d| d.trim().starts_with("h2")) {
        level.to_string()
    } else {
        format!("{level},h2=info")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_frames_stay_quiet_unless_asked_for() {
        assert_eq!(directives("debug"), "debug,h2=info");
        assert_eq!(directives("info,h2=trace"), "info,h2=trace");
        assert!(EnvFilter::try_new(directives("baton=debug")).is_ok());
    }
}
