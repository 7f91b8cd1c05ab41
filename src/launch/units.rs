//! Memory and walltime in each batch system's units.

use std::time::Duration;

use super::BatchSystem;

/// Units of LSF memory limits (`LSF_UNIT_FOR_LIMITS` in `lsf.conf`; decimal, default KB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LsfUnit {
    /// Kilobytes (10³ bytes), LSF's default.
    #[default]
    KB,
    /// Megabytes (10⁶ bytes).
    MB,
    /// Gigabytes (10⁹ bytes).
    GB,
    /// Terabytes (10¹² bytes).
    TB,
}

impl LsfUnit {
    fn bytes(self) -> u64 {
        match self {
            LsfUnit::KB => 1_000,
            LsfUnit::MB => 1_000_000,
            LsfUnit::GB => 1_000_000_000,
            LsfUnit::TB => 1_000_000_000_000,
        }
    }

    /// Parses `KB`, `MB`, `GB`, `TB` (any case, as in `lsf.conf`).
    #[must_use]
    pub fn parse(s: &str) -> Option<LsfUnit> {
        match s.trim().trim_matches('"').to_ascii_uppercase().as_str() {
            "KB" | "K" => Some(LsfUnit::KB),
            "MB" | "M" => Some(LsfUnit::MB),
            "GB" | "G" => Some(LsfUnit::GB),
            "TB" | "T" => Some(LsfUnit::TB),
            _ => None,
        }
    }
}

const KI: u64 = 1024;
const MI: u64 = 1024 * 1024;
const GI: u64 = 1024 * 1024 * 1024;

/// `bytes` as a batch system wants it, rounded up so that a worker never gets less than asked:
///
/// * SLURM (`--mem`) and SGE (`h_vmem`): 1024-based, `G` from 1 GiB, `M` from 1 MiB, else `K`
///   (at least `1K`).
/// * PBS (`mem=`): 1024-based with a 10× threshold: `GB` from 10 GiB, `MB` from 10 MiB, else
///   `kB` (at least `1kB`).
/// * LSF (`-M`): a plain number in `lsf_unit` (decimal).
///
/// ```
/// use blockwise::launch::{BatchSystem, LsfUnit, format_memory};
///
/// assert_eq!(format_memory(BatchSystem::Slurm, 4 << 30, LsfUnit::KB), "4G");
/// assert_eq!(format_memory(BatchSystem::Slurm, (4 << 30) + 1, LsfUnit::KB), "5G");
/// assert_eq!(format_memory(BatchSystem::Pbs, 4 << 30, LsfUnit::KB), "4096MB");
/// assert_eq!(format_memory(BatchSystem::Lsf, 4 << 30, LsfUnit::MB), "4295");
/// ```
#[must_use]
pub fn format_memory(system: BatchSystem, bytes: u64, lsf_unit: LsfUnit) -> String {
    match system {
        BatchSystem::Slurm | BatchSystem::Sge => {
            if bytes >= GI {
                format!("{}G", bytes.div_ceil(GI))
            } else if bytes >= MI {
                format!("{}M", bytes.div_ceil(MI))
            } else {
                format!("{}K", bytes.div_ceil(KI).max(1))
            }
        }
        BatchSystem::Pbs => {
            if bytes >= 10 * GI {
                format!("{}GB", bytes.div_ceil(GI))
            } else if bytes >= 10 * MI {
                format!("{}MB", bytes.div_ceil(MI))
            } else {
                format!("{}kB", bytes.div_ceil(KI).max(1))
            }
        }
        BatchSystem::Lsf => bytes.div_ceil(lsf_unit.bytes()).max(1).to_string(),
    }
}

/// A wall-clock limit as a batch system wants it, rounded up: `HH:MM:SS` (SLURM, PBS, SGE; hours
/// may exceed 24) or `HH:MM` (LSF).
///
/// ```
/// use blockwise::launch::{BatchSystem, format_walltime};
/// use std::time::Duration;
///
/// assert_eq!(format_walltime(BatchSystem::Slurm, Duration::from_secs(90_061)), "25:01:01");
/// assert_eq!(format_walltime(BatchSystem::Lsf, Duration::from_secs(61)), "00:02");
/// ```
#[must_use]
pub fn format_walltime(system: BatchSystem, d: Duration) -> String {
    let mut secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs += 1;
    }
    match system {
        BatchSystem::Lsf => {
            let mins = secs.div_ceil(60);
            format!("{:02}:{:02}", mins / 60, mins % 60)
        }
        _ => format!(
            "{:02}:{:02}:{:02}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_and_sge_memory_round_up_in_1024_units() {
        let f = |b| format_memory(BatchSystem::Slurm, b, LsfUnit::KB);
        assert_eq!(f(0), "1K");
        assert_eq!(f(1), "1K");
        assert_eq!(f(1024), "1K");
        assert_eq!(f(1025), "2K");
        assert_eq!(f(MI - 1), "1024K");
        assert_eq!(f(MI), "1M");
        assert_eq!(f(500 * MI), "500M");
        assert_eq!(f(1500 * MI), "2G");
        assert_eq!(f(GI - 1), "1024M");
        assert_eq!(f(GI), "1G");
        assert_eq!(f(4 * GI + 1), "5G");
        assert_eq!(format_memory(BatchSystem::Sge, 3 * GI, LsfUnit::KB), "3G");
    }

    #[test]
    fn pbs_memory_switches_units_at_ten() {
        let f = |b| format_memory(BatchSystem::Pbs, b, LsfUnit::KB);
        assert_eq!(f(1), "1kB");
        assert_eq!(f(10 * MI - 1), "10240kB");
        assert_eq!(f(10 * MI), "10MB");
        assert_eq!(f(10 * GI - 1), "10240MB");
        assert_eq!(f(10 * GI), "10GB");
        assert_eq!(f(10 * GI + 1), "11GB");
    }

    #[test]
    fn lsf_memory_is_decimal_in_the_configured_unit() {
        assert_eq!(
            format_memory(BatchSystem::Lsf, 4 * GI, LsfUnit::KB),
            "4294968"
        );
        assert_eq!(format_memory(BatchSystem::Lsf, 4 * GI, LsfUnit::MB), "4295");
        assert_eq!(format_memory(BatchSystem::Lsf, 4 * GI, LsfUnit::GB), "5");
        assert_eq!(format_memory(BatchSystem::Lsf, 1, LsfUnit::TB), "1");
        assert_eq!(format_memory(BatchSystem::Lsf, 2_000_000, LsfUnit::MB), "2");
        assert_eq!(LsfUnit::parse(" \"gb\" "), Some(LsfUnit::GB));
        assert_eq!(LsfUnit::parse("PB"), None);
    }

    #[test]
    fn walltimes_round_up() {
        let s = |secs: u64| format_walltime(BatchSystem::Pbs, Duration::from_secs(secs));
        assert_eq!(s(0), "00:00:00");
        assert_eq!(s(59), "00:00:59");
        assert_eq!(s(3600), "01:00:00");
        assert_eq!(s(100 * 3600), "100:00:00");
        assert_eq!(
            format_walltime(BatchSystem::Sge, Duration::from_millis(1500)),
            "00:00:02"
        );
        let l = |secs: u64| format_walltime(BatchSystem::Lsf, Duration::from_secs(secs));
        assert_eq!(l(60), "00:01");
        assert_eq!(l(61), "00:02");
        assert_eq!(l(30 * 60), "00:30");
        assert_eq!(l(49 * 3600), "49:00");
    }
}
