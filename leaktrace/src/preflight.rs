//! Checks before anything is loaded, so that a missing privilege is named rather than
//! surfacing as an EPERM from deep inside the loader.

use crate::failure::Failure;

/// Capability bits (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability set from the `CapEff:` line of /proc/self/status.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The capabilities tracing needs that `cap_eff` lacks: CAP_BPF and CAP_PERFMON (kernels
/// before 5.8 only know CAP_SYS_ADMIN, which also covers both).
pub fn missing_capabilities(cap_eff: u64) -> Vec<&'static str> {
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect()
}

pub fn check_privileges() -> Result<(), Failure> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Failure::Privilege(format!("cannot read /proc/self/status: {e}")))?;
    let caps = parse_cap_eff(&status)
        .ok_or_else(|| Failure::Privilege("no CapEff line in /proc/self/status".into()))?;
    let missing = missing_capabilities(caps);
    if missing.is_empty() {
        return Ok(());
    }
    Err(Failure::Privilege(format!(
        "leaktrace needs CAP_BPF and CAP_PERFMON (or root) to load its eBPF probes; \
         this process lacks {}. Run it with sudo, or grant the capabilities \
         (setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep leaktrace).",
        missing.join(" and ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn names_what_is_missing() {
        assert_eq!(missing_capabilities(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
    }
}
