//! Hot-restart chains and their base ids.
//!
//! Envoy's hot restart joins the epochs of one base id through shared memory and
//! abstract unix sockets. A chain can break (a child that dies after attaching leaves
//! the shared memory flagged as initialising), so baton may open a new chain under a
//! new base id; this module remembers which base id each chain has and cleans up
//! after chains that are gone.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// How an epoch learns its base id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseIdArgs {
    /// First epoch of a chain: Envoy picks a free one and writes it to the path.
    Dynamic(PathBuf),
    /// A known base id.
    Fixed(u64),
}

impl BaseIdArgs {
    /// The flags for Envoy's command line.
    pub fn to_args(&self) -> Vec<OsString> {
        match self {
            BaseIdArgs::Dynamic(path) => vec![
                "--use-dynamic-base-id".into(),
                "--base-id-path".into(),
                path.into(),
            ],
            BaseIdArgs::Fixed(id) => vec!["--base-id".into(), id.to_string().into()],
        }
    }
}

/// The base ids of live chains.
#[derive(Debug)]
pub struct Chains {
    dir: PathBuf,
    first_fixed: Option<u64>,
    known: HashMap<u32, u64>,
}

impl Chains {
    /// Chains whose base id files live in `dir`; `--base-id` fixes chain 0's.
    pub fn new(dir: &Path, first_fixed: Option<u64>) -> Self {
        Chains {
            dir: dir.to_path_buf(),
            first_fixed,
            known: HashMap::new(),
        }
    }

    fn path(&self, chain: u32) -> PathBuf {
        self.dir.join(format!("base-id.{chain}"))
    }

    /// The base id flags for an epoch of `chain`.
    pub fn args_for(&mut self, chain: u32, restart_epoch: u32) -> Result<BaseIdArgs, String> {
        if restart_epoch == 0 {
            if let (0, Some(id)) = (chain, self.first_fixed) {
                self.known.insert(chain, id);
                return Ok(BaseIdArgs::Fixed(id));
            }
            let path = self.path(chain);
            let _ = std::fs::remove_file(&path);
            return Ok(BaseIdArgs::Dynamic(path));
        }
        self.base_id(chain).map(BaseIdArgs::Fixed).ok_or_else(|| {
            format!(
                "base id of chain {chain} unknown: {} unreadable",
                self.path(chain).display()
            )
        })
    }

    /// The base id of `chain`, once Envoy has written it.
    pub fn base_id(&mut self, chain: u32) -> Option<u64> {
        if let Some(id) = self.known.get(&chain) {
            return Some(*id);
        }
        let text = std::fs::read_to_string(self.path(chain)).ok()?;
        let id = text.trim().parse().ok()?;
        self.known.insert(chain, id);
        Some(id)
    }

    /// Clear the "initialising" flag a dead epoch left in the chain's shared memory.
    pub fn repair(&mut self, chain: u32) -> Result<(), String> {
        let id = self
            .base_id(chain)
            .ok_or_else(|| format!("base id of chain {chain} unknown"))?;
        let path = crate::sys::envoy_shm::segment_path(id);
        crate::sys::envoy_shm::clear_initializing(&path)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// No epoch of `chain` runs any more: forget it and remove what it left behind.
    pub fn release(&mut self, chain: u32) {
        let id = self.base_id(chain);
        self.known.remove(&chain);
        let _ = std::fs::remove_file(self.path(chain));
        if let Some(id) = id {
            remove_shared_memory(id);
        }
    }
}

/// Envoy does not unlink its hot-restart shared memory when the last epoch exits;
/// baton owns the chain, so it does.
fn remove_shared_memory(base_id: u64) {
    let path = crate::sys::envoy_shm::segment_path(base_id);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed Envoy shared memory"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove Envoy shared memory")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_epochs_read_the_base_id_envoy_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let mut chains = Chains::new(dir.path(), None);
        let first = chains.args_for(0, 0).unwrap();
        let BaseIdArgs::Dynamic(path) = first else {
            panic!("expected dynamic")
        };
        std::fs::write(&path, "42").unwrap();
        assert_eq!(chains.args_for(0, 1).unwrap(), BaseIdArgs::Fixed(42));
        chains.release(0);
        assert!(!path.exists());
    }

    #[test]
    fn fixed_base_id_applies_to_the_first_chain_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut chains = Chains::new(dir.path(), Some(7));
        assert_eq!(chains.args_for(0, 0).unwrap(), BaseIdArgs::Fixed(7));
        assert_eq!(chains.args_for(0, 1).unwrap(), BaseIdArgs::Fixed(7));
        assert!(matches!(
            chains.args_for(1, 0).unwrap(),
            BaseIdArgs::Dynamic(_)
        ));
    }

    #[test]
    fn unknown_base_id_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut chains = Chains::new(dir.path(), None);
        let err = chains.args_for(3, 1).unwrap_err();
        assert!(err.contains("base-id.3"), "{err}");
    }
}
