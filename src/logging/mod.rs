//! baton's own log output, and the proxy's, on baton's standard error.
//!
//! Text logs are for people: baton's lines as tracing formats them, the proxy's
//! lines exactly as it wrote them. JSON logs are for a pod's log pipeline: **every**
//! line on baton's stderr is one JSON object — baton's events (list fields as JSON
//! arrays), each line an epoch wrote (`source: "proxy"`, `epoch`, `pid`, `stream`),
//! and a panic.

mod json;

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Install the global subscriber; a bad `--log-level` is a usage error.
pub fn init(args: &LogArgs) -> Result<(), String> {
    let filter = EnvFilter::try_new(directives(&args.log_level))
        .map_err(|e| format!("--log-level {}: {e}", args.log_level))?;
    let _ = FORMAT.set(args.log_format);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            builder.event_format(json::JsonLines).init();
            std::panic::set_hook(Box::new(|info| {
                let line = json::object([
                    ("level", "ERROR".into()),
                    ("message", format!("baton panicked: {info}").into()),
                ]);
                let _ = writeln!(std::io::stderr(), "{line}");
            }));
        }
    }
    Ok(())
}

/// The filter for `--log-level`. The HTTP/2 stack under the metrics receiver logs
/// every frame at debug (several lines per Envoy flush): not baton's debugging, so it
/// stays at info unless the filter names `h2`.
fn directives(level: &str) -> String {
    if level.split(',').any(|d| d.trim().starts_with("h2")) {
        level.to_string()
    } else {
        format!("{level},h2=info")
    }
}

/// Which stream of an epoch a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Its standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

/// Pass on one line an epoch wrote: as-is in text logs (stdout to stdout, stderr to
/// stderr), wrapped in a JSON object on stderr in JSON logs.
pub fn proxy_line(epoch: u32, pid: u32, stream: Stream, line: &str) {
    match FORMAT.get() {
        Some(LogFormat::Json) => {
            let object = json::object([
                ("level", "INFO".into()),
                ("source", "proxy".into()),
                ("epoch", epoch.into()),
                ("pid", pid.into()),
                (
                    "stream",
                    match stream {
                        Stream::Stdout => "stdout",
                        Stream::Stderr => "stderr",
                    }
                    .into(),
                ),
                ("message", line.into()),
            ]);
            let _ = writeln!(std::io::stderr().lock(), "{object}");
        }
        _ => {
            // One write per line, so lines of baton and of its epochs never mix.
            let mut text = String::with_capacity(line.len() + 1);
            text.push_str(line);
            text.push('\n');
            let _ = match stream {
                Stream::Stdout => std::io::stdout().lock().write_all(text.as_bytes()),
                Stream::Stderr => std::io::stderr().lock().write_all(text.as_bytes()),
            };
        }
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
