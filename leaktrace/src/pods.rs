//! Where each traced process runs: on the host or in a container, and in which Kubernetes pod.
//! The container and pod UID come from the process's cgroup ([`cgroup`]); the pod's namespace
//! and name from the kubelet's log directories (`/var/log/pods/<namespace>_<name>_<uid>`), so
//! no API server is needed. Read once per process, when it is first seeded.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::cgroup::{self, Placement};

/// The kubelet's pod log directories.
pub const POD_LOGS: &str = "/var/log/pods";

/// A process's placement, with its pod's name when known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placed {
    #[serde(flatten)]
    pub placement: Placement,
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

pub struct Pods {
    log_dir: PathBuf,
    by_pid: HashMap<u32, Placed>,
    /// Pod UID → (namespace, name), from the last listing of `log_dir`.
    names: HashMap<String, (String, String)>,
}

impl Pods {
    pub fn new(log_dir: &Path) -> Self {
        Self {
            log_dir: log_dir.to_owned(),
            by_pid: HashMap::new(),
            names: HashMap::new(),
        }
    }

    /// Places process `pid`, unless it already is. A process that is gone stays unplaced.
    pub fn note(&mut self, pid: u32) {
        if self.by_pid.contains_key(&pid) {
            return;
        }
        if let Some(placement) = cgroup::placement_of(pid) {
            let placed = self.name(placement);
            self.by_pid.insert(pid, placed);
        }
    }

    pub fn of(&self, pid: u32) -> Option<&Placed> {
        self.by_pid.get(&pid)
    }

    /// Forgets the processes no longer tracked: this map is bounded by the aggregator's.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.by_pid.retain(|&pid, _| live(pid));
    }

    /// Names the pod of a container; a pod not listed yet makes the directory be read again
    /// (a new pod's directory appears when it starts).
    fn name(&mut self, placement: Placement) -> Placed {
        let uid = match &placement {
            Placement::Container {
                pod_uid: Some(uid), ..
            } => Some(uid.clone()),
            _ => None,
        };
        if let Some(uid) = &uid {
            if !self.names.contains_key(uid) {
                self.names = cgroup::pods_from_logs(&self.log_dir);
            }
        }
        let named = uid.and_then(|uid| self.names.get(&uid).cloned());
        let (namespace, pod) = named.map_or((None, None), |(ns, name)| (Some(ns), Some(name)));
        Placed {
            placement,
            namespace,
            pod,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const UID: &str = "1f3e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b";

    #[test]
    fn a_pod_is_named_from_the_kubelet_log_directories() {
        let dir = std::env::temp_dir().join(format!("leaktrace-pods-{}", std::process::id()));
        fs::create_dir_all(dir.join(format!("shop_cart-7d9f_{UID}"))).unwrap();
        let mut pods = Pods::new(&dir);
        let placed = pods.name(Placement::Container {
            runtime: cgroup::Runtime::Containerd,
            id: "a".repeat(64),
            pod_uid: Some(UID.into()),
        });
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(placed.namespace.as_deref(), Some("shop"));
        assert_eq!(placed.pod.as_deref(), Some("cart-7d9f"));
        // Outside Kubernetes there is nothing to name.
        assert_eq!(
            pods.name(Placement::Host),
            Placed {
                placement: Placement::Host,
                namespace: None,
                pod: None
            }
        );
    }

    #[test]
    fn processes_are_placed_once_and_forgotten_when_gone() {
        let mut pods = Pods::new(Path::new("/nonexistent"));
        let me = std::process::id();
        pods.note(me);
        assert!(pods.of(me).is_some());
        // Above PID_MAX_LIMIT: never a process.
        pods.note(u32::MAX / 4);
        assert!(pods.of(u32::MAX / 4).is_none());
        pods.retain(|pid| pid != me);
        assert!(pods.of(me).is_none());
    }
}
