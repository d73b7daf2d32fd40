//! Envoy's worker threads (`--concurrency`): given, or derived from the CPUs the
//! container may use. Envoy's own default is one worker per core of the *node*, so a
//! sidecar limited to one CPU on a 64-core node would run 64 workers (128 during a
//! hot restart) fighting for it.

use crate::defaults;
use crate::sys::cgroup_cpu::Cpus;

/// The worker count and why, for the start log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    /// Envoy's `--concurrency`.
    pub workers: u32,
    /// How it was chosen.
    pub reason: String,
}

/// `--concurrency` when given; otherwise the CPU limit rounded up, at least 1 and at
/// most the cores this process may run on; Istio's 2 (or fewer cores) without a limit.
pub fn concurrency(given: Option<u32>, cpus: &Cpus) -> Concurrency {
    if let Some(workers) = given {
        return Concurrency {
            workers,
            reason: "given".into(),
        };
    }
    let Some(limit) = &cpus.limit else {
        let workers = defaults::CONCURRENCY_WITHOUT_CPU_LIMIT.min(cpus.cores);
        return Concurrency {
            workers,
            reason: format!(
                "no CPU limit in this process's cgroups: {}, as Istio ({} cores here)",
                defaults::CONCURRENCY_WITHOUT_CPU_LIMIT,
                cpus.cores
            ),
        };
    };
    let wanted = limit.quota.cores();
    let workers = wanted.min(cpus.cores);
    let capped = if workers < wanted {
        format!(", capped at the {} cores this process may use", cpus.cores)
    } else {
        String::new()
    };
    Concurrency {
        workers,
        reason: format!(
            "CPU limit {} ({}), rounded up{capped}",
            limit.quota.cpus(),
            limit.file.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::cgroup_cpu::{CpuLimit, CpuQuota};

    fn limited(quota_us: u64, period_us: u64, cores: u32) -> Cpus {
        Cpus {
            limit: Some(CpuLimit {
                quota: CpuQuota {
                    quota_us,
                    period_us,
                },
                file: "/sys/fs/cgroup/cpu.max".into(),
            }),
            cores,
        }
    }

    fn workers(given: Option<u32>, cpus: &Cpus) -> u32 {
        concurrency(given, cpus).workers
    }

    #[test]
    fn the_cpu_limit_rounded_up_is_the_default() {
        assert_eq!(workers(None, &limited(150_000, 100_000, 8)), 2);
        assert_eq!(workers(None, &limited(100_000, 100_000, 8)), 1);
        assert_eq!(workers(None, &limited(20_000, 100_000, 8)), 1);
        let c = concurrency(None, &limited(150_000, 100_000, 8));
        assert_eq!(
            c.reason,
            "CPU limit 1.5 (/sys/fs/cgroup/cpu.max), rounded up"
        );
    }

    #[test]
    fn never_more_workers_than_cores() {
        let c = concurrency(None, &limited(1_600_000, 100_000, 4));
        assert_eq!(c.workers, 4);
        assert!(c
            .reason
            .ends_with("capped at the 4 cores this process may use"));
    }

    #[test]
    fn without_a_limit_istios_two() {
        let unlimited = |cores| Cpus { limit: None, cores };
        assert_eq!(workers(None, &unlimited(64)), 2);
        assert_eq!(workers(None, &unlimited(1)), 1);
    }

    #[test]
    fn an_explicit_concurrency_wins() {
        assert_eq!(workers(Some(6), &limited(100_000, 100_000, 2)), 6);
        assert_eq!(concurrency(Some(6), &limited(1, 1, 1)).reason, "given");
    }
}
