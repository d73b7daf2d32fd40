//! A secret volume as the kubelet writes it (its "atomic writer"), and the
//! certificates to put in it.
//!
//! Layout: `..<timestamp>/` holds the files, `..data -> ..<timestamp>`, and each
//! visible name is a symlink through `..data` (`tls.crt -> ..data/tls.crt`). An
//! update writes a new timestamped directory, points a `..data_tmp` symlink at it,
//! renames that over `..data` (the one atomic step), adds missing visible links and
//! removes the old directory.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// A secret volume's directory.
pub struct SecretVolume {
    pub dir: PathBuf,
    writes: u32,
}

impl SecretVolume {
    /// The empty mount point.
    pub fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        SecretVolume { dir, writes: 0 }
    }

    /// The visible `tls.crt` and `tls.key`, as `--cert` takes them.
    pub fn cert_arg(&self) -> String {
        format!(
            "{}:{}",
            self.dir.join("tls.crt").display(),
            self.dir.join("tls.key").display()
        )
    }

    /// One update of the volume to `tls.crt` = `cert`, `tls.key` = `key`.
    pub fn write_tls(&mut self, cert: &Path, key: &Path) {
        self.write(&[("tls.crt", cert), ("tls.key", key)]);
    }

    /// The atomic writer's update with `payload` (visible name, source file).
    pub fn write(&mut self, payload: &[(&str, &Path)]) {
        self.writes += 1;
        let data = self.dir.join("..data");
        let old = std::fs::read_link(&data).ok();
        let ts = timestamp_dir_name(self.writes);
        let new = self.dir.join(&ts);
        std::fs::create_dir(&new).unwrap();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, source) in payload {
            let file = new.join(name);
            std::fs::copy(source, &file).unwrap();
            // A secret volume's defaultMode.
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, &data).unwrap();
        for (name, _) in payload {
            let visible = self.dir.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new("..data").join(name), &visible).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }

    /// The whole directory removed and made again, then written: what a volume
    /// remount looks like to a process watching it.
    pub fn recreate_tls(&mut self, cert: &Path, key: &Path) {
        std::fs::remove_dir_all(&self.dir).unwrap();
        std::fs::create_dir(&self.dir).unwrap();
        self.write_tls(cert, key);
    }
}

/// `..2026_11_29_12_00_00.<9 digits>`: the writer's `MkdirTemp` pattern (UTC time,
/// then a unique suffix).
fn timestamp_dir_name(n: u32) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let secs = now.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "..{y:04}_{m:02}_{d:02}_{:02}_{:02}_{:02}.{:09}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        u64::from(now.subsec_nanos()) + u64::from(n)
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A self-signed EC certificate for `localhost` with `serial`, and its key, in `dir`.
pub fn make_pair(dir: &Path, name: &str, serial: u32) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=localhost", "-days", "1"])
        .args(["-set_serial", &serial.to_string()])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn civil_dates_are_right() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(20_786), (2026, 11, 29));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
}
