//! Finding an executable the way a shell would, without running it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Env, Problems};

/// Find an executable: a path is taken as given, a bare name is looked up on PATH.
/// A problem naming `flag` is recorded when there is none.
pub fn resolve_binary(flag: &str, binary: &Path, env: &dyn Env) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if binary.components().count() > 1 {
        if executable(binary) {
            return Ok(binary.to_path_buf());
        }
        return Err(format!(
            "{flag} {}: not an executable file",
            binary.display()
        ));
    }
    let path = env.var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| {
            format!(
                "{flag} {}: not found on PATH (give a path, or install it)",
                binary.display()
            )
        })
}

/// [`resolve_binary`], recording the problem.
pub(super) fn resolve_into(
    flag: &str,
    binary: &Path,
    env: &dyn Env,
    problems: &mut Problems,
) -> Option<PathBuf> {
    problems.check(resolve_binary(flag, binary, env))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MapEnv;

    #[test]
    fn missing_binary_names_the_flag() {
        let err = resolve_binary(
            "--envoy-binary",
            Path::new("surely-not-a-binary-here"),
            &MapEnv::of(&[("PATH", "/nonexistent")]),
        )
        .unwrap_err();
        assert!(err.starts_with("--envoy-binary surely-not-a-binary-here: not found on PATH"));
    }

    #[test]
    fn a_path_must_be_an_executable_file() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        let err = resolve_binary("--x", &plain, &MapEnv::default()).unwrap_err();
        assert_eq!(
            err,
            format!("--x {}: not an executable file", plain.display())
        );
        assert_eq!(
            resolve_binary("--x", Path::new("/bin/sh"), &MapEnv::default()),
            Ok(PathBuf::from("/bin/sh"))
        );
    }
}
