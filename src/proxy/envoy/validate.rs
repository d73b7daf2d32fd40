//! `envoy --mode validate`: Envoy's own check of a bootstrap (schema, unknown
//! clusters, unreadable certificates) without touching the running chain.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::args::{validate_args, EnvoyOptions};
use crate::sys::{capture, Reaper};

/// A validation (or version query) that takes longer than this is a failure.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Run `envoy --mode validate` on `config`; `Err` carries Envoy's complaint.
pub async fn validate(
    reaper: &Reaper,
    binary: &Path,
    config: &Path,
    o: &EnvoyOptions,
) -> Result<(), String> {
    let mut cmd = Command::new(binary);
    cmd.args(validate_args(config, o));
    let (status, output) = capture(reaper, &mut cmd, COMMAND_TIMEOUT).await?;
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "envoy --mode validate failed ({status}): {}",
        summarize(&output)
    ))
}

/// `envoy --hot-restart-version`: which shared-memory layout this binary uses.
pub async fn hot_restart_version(reaper: &Reaper, binary: &Path) -> Result<String, String> {
    let mut cmd = Command::new(binary);
    cmd.arg("--hot-restart-version");
    let (status, output) = capture(reaper, &mut cmd, COMMAND_TIMEOUT).await?;
    let version = output.trim().to_string();
    if !status.success() || version.is_empty() {
        return Err(format!(
            "{} --hot-restart-version: {status}: {}",
            binary.display(),
            summarize(&output)
        ));
    }
    Ok(version)
}

/// Envoy's complaint without the noise: the lines that mention an error, or the last
/// lines, capped so a log line stays readable.
fn summarize(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.to_ascii_lowercase().contains("error") || l.contains("exception"))
        .collect();
    let picked = if errors.is_empty() {
        lines[lines.len().saturating_sub(3)..].to_vec()
    } else {
        errors
    };
    let mut text = picked.join(" | ");
    if text.len() > 800 {
        let mut cut = 800;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    if text.is_empty() {
        "no output".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_the_error_lines() {
        let out = "[info] starting\n[critical] error initializing configuration 'x': unknown cluster 'y'\n[info] exiting\n";
        assert_eq!(
            summarize(out),
            "[critical] error initializing configuration 'x': unknown cluster 'y'"
        );
    }

    #[test]
    fn summary_of_silence_says_so() {
        assert_eq!(summarize("\n \n"), "no output");
    }
}
