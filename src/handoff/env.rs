//! What an epoch is told, as pure functions: its environment and its arguments.
//!
//! Fd layout (the contract with the child): listener `i` (in `--listen` order) at fd
//! `3 + i`, then extra fd `j` (e.g. the stats segment) at `3 + listeners + j`.
//!
//! | variable | value |
//! | --- | --- |
//! | `LISTEN_FDS` | number of listeners (extra fds are not counted) |
//! | `LISTEN_FDNAMES` | listener names joined by `:` |
//! | `LISTEN_PID` | the epoch's own pid, set by the exec shim ([`super::shim`]) |
//! | `BATON_FD_<NAME>` | the listener's fd, NAME upper-cased |
//! | `NGINX` | `3;4;…;` — every listener fd, each followed by `;` |
//! | `BATON_EPOCH` | the epoch number |
//! | extra env names (e.g. `BATON_STATS_FD`) | the extra fd |

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::spec::fd_env_name;

/// The first fd handed to an epoch (after stdin, stdout, stderr).
pub const FIRST_FD: i32 = 3;
/// Number of inherited listeners (systemd convention).
pub const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
/// Names of the inherited listeners, `:`-separated (systemd convention).
pub const ENV_LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// Pid the listeners are meant for (systemd convention); set by the exec shim.
pub const ENV_LISTEN_PID: &str = "LISTEN_PID";
/// Inherited fds for nginx: `3;4;…;`.
pub const ENV_NGINX: &str = "NGINX";
/// The epoch number.
pub const ENV_BATON_EPOCH: &str = "BATON_EPOCH";
/// The placeholder replaced by the epoch number in COMMAND's arguments.
pub const EPOCH_PLACEHOLDER: &str = "{epoch}";

/// The environment an epoch receives, except `LISTEN_PID` (only the exec shim can know
/// the final pid). `names` are listener names in `--listen` order; `extra` are the
/// environment names of the extra fds, in the order they follow the listeners.
pub fn epoch_env(names: &[&str], extra: &[&str], epoch: u32) -> Vec<(String, String)> {
    let fd = |i: usize| FIRST_FD + i as i32;
    let mut env = vec![
        (ENV_LISTEN_FDS.to_string(), names.len().to_string()),
        (ENV_LISTEN_FDNAMES.to_string(), names.join(":")),
        (
            ENV_NGINX.to_string(),
            (0..names.len()).map(|i| format!("{};", fd(i))).collect(),
        ),
        (ENV_BATON_EPOCH.to_string(), epoch.to_string()),
    ];
    env.extend(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| (fd_env_name(name), fd(i).to_string())),
    );
    env.extend(
        extra
            .iter()
            .enumerate()
            .map(|(j, name)| (name.to_string(), fd(names.len() + j).to_string())),
    );
    env
}

/// Replace every `{epoch}` in `arg` with the epoch number. There is no escape: an
/// argument that needs a literal `{epoch}` cannot have one.
pub fn substitute_epoch(arg: &OsStr, epoch: u32) -> OsString {
    let bytes = arg.as_bytes();
    let needle = EPOCH_PLACEHOLDER.as_bytes();
    let number = epoch.to_string();
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(number.as_bytes());
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn two_listeners_and_a_stats_fd_get_consecutive_fds_from_three() {
        let env = epoch_env(&["http", "admin"], &["BATON_STATS_FD"], 7);
        assert_eq!(
            pairs(&env),
            [
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "http:admin"),
                ("NGINX", "3;4;"),
                ("BATON_EPOCH", "7"),
                ("BATON_FD_HTTP", "3"),
                ("BATON_FD_ADMIN", "4"),
                ("BATON_STATS_FD", "5"),
            ]
        );
    }

    #[test]
    fn no_listeners_still_tells_the_epoch_its_number() {
        let env = epoch_env(&[], &[], 0);
        assert_eq!(
            pairs(&env),
            [
                ("LISTEN_FDS", "0"),
                ("LISTEN_FDNAMES", ""),
                ("NGINX", ""),
                ("BATON_EPOCH", "0"),
            ]
        );
    }

    #[test]
    fn every_epoch_placeholder_is_replaced_and_other_text_kept() {
        for (input, expected) in [
            ("pid /run/nginx.{epoch}.pid;", "pid /run/nginx.12.pid;"),
            ("{epoch}-{epoch}", "12-12"),
            ("{epoch", "{epoch"),
            ("{EPOCH}", "{EPOCH}"),
            ("plain", "plain"),
            ("", ""),
        ] {
            assert_eq!(
                substitute_epoch(OsStr::new(input), 12),
                OsStr::new(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn substitution_keeps_non_utf8_bytes() {
        let arg = OsStr::from_bytes(b"\xff{epoch}\xfe");
        assert_eq!(substitute_epoch(arg, 3).as_bytes(), b"\xff3\xfe");
    }
}
