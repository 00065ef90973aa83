//! Where each traced process runs: on the host or in a container, and in which Kubernetes pod.
//! The container and pod UID come from the process's cgroup ([`cgroup`]). Names come from the
//! node, so no API server is needed: the pod's namespace and name from the kubelet's log
//! directories (`/var/log/pods/<namespace>_<name>_<uid>`), the container's name from its log
//! links (`/var/log/containers/<pod>_<namespace>_<container>-<id>.log`). With a service account
//! the Kubernetes API's pods of this node ([`kubeapi`]) name them first. A process is placed
//! once, when first seeded; names missing then (a pod not listed yet) are looked up again at
//! each report.

use std::{collections::HashMap, path::PathBuf, sync::PoisonError};

use serde::Serialize;

use crate::{
    cgroup::{self, Placement},
    kubeapi::Directory,
};

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
    /// The API server's pods, kept current by the watch task.
    api: Option<Directory>,
    by_pid: HashMap<u32, Placed>,
    /// Pod UID → (namespace, name), from the last listing of the pod log directories.
    pod_names: HashMap<String, (String, String)>,
    /// Container id → name, from the last listing of the container log links.
    container_names: HashMap<String, String>,
}

impl Pods {
    pub fn new(logs: NodeLogs, api: Option<Directory>) -> Self {
        Self {
            logs,
            api,
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

    /// Fills in the names the API server and the listings have; whether it is now fully named.
    fn name(&self, placed: &mut Placed) -> bool {
        if let (Some(api), Placement::Container { id, pod_uid, .. }) =
            (&self.api, &placed.placement)
        {
            let pods = api.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(meta) = pod_uid.as_ref().and_then(|uid| pods.get(uid)) {
                placed.namespace = Some(meta.namespace.clone());
                placed.pod = Some(meta.name.clone());
                placed.container = meta.containers.get(id).cloned();
            }
        }
        if !placed.unnamed() {
            return true;
        }
        if let Placement::Container { id, pod_uid, .. } = &placed.placement {
            let listed = pod_uid.as_ref().and_then(|u| self.pod_names.get(u));
            if let (None, Some((namespace, pod))) = (&placed.pod, listed) {
                placed.namespace = Some(namespace.clone());
                placed.pod = Some(pod.clone());
            }
            if let Some(container) = self.container_names.get(id) {
                placed.container.get_or_insert_with(|| container.clone());
            }
        }
        !placed.unnamed()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::kubeapi;

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
        let mut pods = Pods::new(logs, None);
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
    fn the_api_server_names_first_and_the_logs_fill_in() {
        let logs = temp_logs("pods-api");
        let root = logs.pods.parent().unwrap().to_owned();
        fs::create_dir_all(root.join(format!("pods/old-ns_old-name_{UID}"))).unwrap();
        fs::write(
            root.join(format!("containers/old-name_old-ns_app-{ID}.log")),
            "",
        )
        .unwrap();
        let api = Directory::default();
        let mut pods = Pods::new(logs, Some(std::sync::Arc::clone(&api)));
        pods.relist();
        let placement = Placement::Container {
            runtime: cgroup::Runtime::Crio,
            id: ID.into(),
            pod_uid: Some(UID.into()),
        };
        // The API has not listed the pod yet: the logs name it.
        let mut placed = unnamed(placement.clone());
        assert!(pods.name(&mut placed));
        assert_eq!(placed.pod.as_deref(), Some("old-name"));
        // Once listed, the API's names win; a container it has no status for yet keeps the
        // logs' name.
        api.lock().unwrap().insert(
            UID.into(),
            kubeapi::PodMeta {
                namespace: "shop".into(),
                name: "cart-7d9f".into(),
                containers: HashMap::new(),
            },
        );
        let mut placed = unnamed(placement.clone());
        assert!(pods.name(&mut placed));
        assert_eq!(placed.namespace.as_deref(), Some("shop"));
        assert_eq!(placed.pod.as_deref(), Some("cart-7d9f"));
        assert_eq!(placed.container.as_deref(), Some("app"));
        api.lock()
            .unwrap()
            .get_mut(UID)
            .unwrap()
            .containers
            .insert(ID.into(), "cart".into());
        let mut placed = unnamed(placement);
        pods.name(&mut placed);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(placed.container.as_deref(), Some("cart"));
    }

    #[test]
    fn processes_are_placed_once_and_forgotten_when_gone() {
        let mut pods = Pods::new(
            NodeLogs {
                pods: "/nonexistent".into(),
                containers: "/nonexistent".into(),
            },
            None,
        );
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
