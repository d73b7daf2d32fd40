//! Records the git commit baton is built from, for `baton version` and `--version`:
//! `BATON_GIT_COMMIT` when set (a container build, where `.git` is not in the build
//! context), else `git rev-parse --short HEAD`, else `unknown` (a source tarball).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=BATON_GIT_COMMIT");
    let commit = std::env::var("BATON_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]));
    // Rebuild when HEAD moves: HEAD itself (a checkout) and the branch it points at
    // (a commit). `--git-path` finds both in a worktree too.
    // (A path that does not exist would make cargo rerun this on every build.)
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in watched {
        if let Some(p) = git(&["rev-parse", "--git-path", &path]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    println!(
        "cargo:rustc-env=BATON_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
