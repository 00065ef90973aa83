//! Where each traced process runs: on the host or in a container, and in which Kubernetes pod.
//! The container and pod UID come from the process's cgroup ([`cgroup`]). Names come from the
//! node, so no API server is needed: the pod's namespace and name from the kubelet's log
//! directories (`/var/log/pods/<namespace>_<name>_<uid>`), the container's name from its log
//! links (`/var/log/containers/<pod>_<namespace>_<container>-<id>.log`). A process is placed
//! once, when first seeded; names missing then (a pod whose directory was not there yet) are
//! looked up again at each report.

use std::{collections::HashMap, path::PathBuf};

use serde::Serialize;

use crate::cgroup::{self, Placement};

/// The kubelet's pod log directories.
pub const POD_LOGS: &str = "/var/log/pods";
/// The kubelet's container log links.
pub const CONTAINER_LOGS: &str = "/var/log/containers";

/// A process's placement, with its pod's and container's names when known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placed {
    #[serde(flatten)]
    pub placement: Placement,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
}

impl Placed {
    /// A container in a pod whose names are not all known yet.
    fn unnamed(&self) -> bool {
        match &self.placement {
            Placement::Host => false,
            Placement::Container { pod_uid, .. } => {
                self.container.is_none() || (pod_uid.is_some() && self.pod.is_none())
            }
        }
    }
}

/// Where the kubelet leaves the names of pods and containers.
pub struct NodeLogs {
    pub pods: PathBuf,
    pub containers: PathBuf,
}

impl Default for NodeLogs {
    fn default() -> Self {
        Self {
            pods: POD_LOGS.into(),
            containers: CONTAINER_LOGS.into(),
        }
    }
}

pub struct Pods {
    logs: NodeLogs,
    by_pid: HashMap<u32, Placed>,
    /// Pod UID → (namespace, name), from the last listing of the pod log directories.
    pod_names: HashMap<String, (String, String)>,
    /// Container id → name, from the last listing of the container log links.
    container_names: HashMap<String, String>,
}

impl Pods {
    pub fn new(logs: NodeLogs) -> Self {
        Self {
            logs,
            by_pid: HashMap::new(),
            pod_names: HashMap::new(),
            container_names: HashMap::new(),
        }
    }

    /// Places process `pid`, unless it already is. A process that is gone stays unplaced.
    pub fn note(&mut self, pid: u32) {
        if self.by_pid.contains_key(&pid) {
            return;
        }
        if let Some(placement) = cgroup::placement_of(pid) {
            let mut placed = Placed {
                placement,
                namespace: None,
                pod: None,
                container: None,
            };
            if placed.unnamed() && !self.name(&mut placed) {
                self.relist();
                self.name(&mut placed);
            }
            self.by_pid.insert(pid, placed);
        }
    }

    pub fn of(&self, pid: u32) -> Option<&Placed> {
        self.by_pid.get(&pid)
    }

    /// Forgets the processes no longer tracked (this map is bounded by the aggregator's), and
    /// names those whose pod or container was not listed when they were placed.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.by_pid.retain(|&pid, _| live(pid));
        if self.by_pid.values().any(Placed::unnamed) {
            self.relist();
            let mut by_pid = std::mem::take(&mut self.by_pid);
            for placed in by_pid.values_mut().filter(|p| p.unnamed()) {
                self.name(placed);
            }
            self.by_pid = by_pid;
        }
    }

    fn relist(&mut self) {
        self.pod_names = cgroup::pods_from_logs(&self.logs.pods);
        self.container_names = cgroup::containers_from_logs(&self.logs.containers);
    }

    /// Fills in the names the listings have; whether it is now fully named.
    fn name(&self, placed: &mut Placed) -> bool {
        if let Placement::Container { id, pod_uid, .. } = &placed.placement {
            if let Some((namespace, pod)) = pod_uid.as_ref().and_then(|u| self.pod_names.get(u)) {
                placed.namespace = Some(namespace.clone());
                placed.pod = Some(pod.clone());
            }
            if let Some(container) = self.container_names.get(id) {
                placed.container = Some(container.clone());
            }
        }
        !placed.unnamed()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const UID: &str = "1f3e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b";
    const ID: &str = "4c01db0b339c3bc1f5f5d8e0a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

    fn temp_logs(name: &str) -> NodeLogs {
        let root = std::env::temp_dir().join(format!("leaktrace-{name}-{}", std::process::id()));
        let logs = NodeLogs {
            pods: root.join("pods"),
            containers: root.join("containers"),
        };
        fs::create_dir_all(&logs.pods).unwrap();
        fs::create_dir_all(&logs.containers).unwrap();
        logs
    }

    fn unnamed(placement: Placement) -> Placed {
        Placed {
            placement,
            namespace: None,
            pod: None,
            container: None,
        }
    }

    #[test]
    fn a_container_is_named_from_the_kubelet_logs_when_they_appear() {
        let logs = temp_logs("pods");
        let root = logs.pods.parent().unwrap().to_owned();
        let mut pods = Pods::new(logs);
        let mut placed = unnamed(Placement::Container {
            runtime: cgroup::Runtime::Containerd,
            id: ID.into(),
            pod_uid: Some(UID.into()),
        });
        // Nothing listed yet: a pod starting up.
        pods.relist();
        assert!(!pods.name(&mut placed));
        fs::create_dir_all(root.join(format!("pods/shop_cart-7d9f_{UID}/app"))).unwrap();
        fs::write(
            root.join(format!("containers/cart-7d9f_shop_app-{ID}.log")),
            "",
        )
        .unwrap();
        pods.relist();
        let named = pods.name(&mut placed);
        fs::remove_dir_all(&root).unwrap();
        assert!(named);
        assert_eq!(placed.namespace.as_deref(), Some("shop"));
        assert_eq!(placed.pod.as_deref(), Some("cart-7d9f"));
        assert_eq!(placed.container.as_deref(), Some("app"));
        // Outside Kubernetes there is nothing to name, and nothing missing.
        let mut host = unnamed(Placement::Host);
        assert!(pods.name(&mut host));
        assert_eq!(host, unnamed(Placement::Host));
    }

    #[test]
    fn processes_are_placed_once_and_forgotten_when_gone() {
        let mut pods = Pods::new(NodeLogs {
            pods: "/nonexistent".into(),
            containers: "/nonexistent".into(),
        });
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
