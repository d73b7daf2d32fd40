//! `baton version` (and the first line of `--version`): baton's version and the git
//! commit it was built from (`build.rs`), then the proxy's version when it can be
//! asked: `envoy --version` of `--envoy-binary`, or of `envoy` on PATH.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::{resolve_binary, ProcessEnv};
use crate::exit;
use crate::sys::{capture, Reaper};

/// `0.1.0 (commit 1a2b3c4)`: what `--version` prints after the name.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BATON_GIT_COMMIT"),
    ")"
);

/// How long `envoy --version` may take (it takes well under a second).
const ENVOY_TIMEOUT: Duration = Duration::from_secs(5);

/// Print the versions. An Envoy binary that was named (flag or environment) but
/// cannot be asked is an error (exit 1); none named and none on PATH is omitted.
pub fn run(envoy_binary: Option<&Path>) -> anyhow::Result<i32> {
    println!("baton {VERSION}");
    let named = envoy_binary.is_some();
    let binary = envoy_binary.unwrap_or(Path::new(crate::defaults::ENVOY_BINARY));
    let found = match resolve_binary("--envoy-binary", binary, &ProcessEnv) {
        Ok(found) => found,
        Err(e) if named => {
            eprintln!("baton version: {e}");
            return Ok(exit::FAILURE);
        }
        Err(_) => return Ok(exit::OK),
    };
    match ask_envoy(&found) {
        Ok(line) => {
            println!("{line}");
            Ok(exit::OK)
        }
        Err(e) => {
            eprintln!("baton version: {e}");
            Ok(if named { exit::FAILURE } else { exit::OK })
        }
    }
}

/// `envoy 1.40.0 (9e5580…/1.40.0/Clean/RELEASE/BoringSSL) at /usr/local/bin/envoy`.
fn ask_envoy(binary: &PathBuf) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (status, output) = runtime.block_on(async {
        let reaper = Reaper::start().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(binary);
        cmd.arg("--version");
        capture(&reaper, &mut cmd, ENVOY_TIMEOUT).await
    })?;
    let build = envoy_build(&output).filter(|_| status.success());
    let Some(build) = build else {
        return Err(format!(
            "{} --version: {status}: {}",
            binary.display(),
            output.trim()
        ));
    };
    let version = envoy_release(build).unwrap_or("unknown");
    Ok(format!("envoy {version} ({build}) at {}", binary.display()))
}

/// The build string of `envoy --version`'s `<argv0>  version: <build>` line.
fn envoy_build(output: &str) -> Option<&str> {
    output
        .lines()
        .find_map(|line| line.split_once("version: "))
        .and_then(|(_, build)| build.split_whitespace().next())
}

/// The release in a build string: `<sha>/<release>/<status>/<mode>/<ssl>`.
fn envoy_release(build: &str) -> Option<&str> {
    build.split('/').nth(1).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_version_output_gives_build_and_release() {
        let output = "\n/usr/local/bin/envoy  version: \
                      9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n\n";
        let build = envoy_build(output).unwrap();
        assert_eq!(
            build,
            "9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL"
        );
        assert_eq!(envoy_release(build), Some("1.40.0"));
        assert_eq!(envoy_build("envoy: unknown option --version\n"), None);
        assert_eq!(envoy_release("abc"), None);
    }

    #[test]
    fn the_version_names_the_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(VERSION.contains("(commit "), "{VERSION}");
    }
}
