//! Pod and container names from the Kubernetes API, for a leaktrace running in a cluster with a
//! service account.
//!
//! The node alone tells a pod's UID and a container's id (from cgroup paths); only the API server
//! knows the namespace, pod and container names a person reads. [`spawn_watch`] keeps a
//! [`Directory`] of the pods on this node current from a list-then-watch of
//! `/api/v1/pods?fieldSelector=spec.nodeName=<node>`, so a lookup is a map read, never a request.
//!
//! The watch is `kube::runtime::watcher`, not a hand-written loop over `Api::watch`: list and
//! watch from the listed resourceVersion, bookmarks, pagination, a re-list when the server says
//! the version is gone (410) and backoff are the parts a hand-written loop gets subtly wrong, and
//! there they are kept and tested upstream. It costs about 25 small crates over kube's client,
//! some 10 s of the 4 CPU-minutes that kube adds to a release build.
//!
//! The service account needs `list` and `watch` on pods in all namespaces (a ClusterRole): the
//! node's pods are in many. The node name is the caller's, typically `spec.nodeName` passed in
//! through the downward API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client};
use serde::Serialize;

/// Most pods kept. A node runs a few hundred at most (kubelet's default is 110); this bounds the
/// memory when watching a whole cluster, or when a node name matches more than it should.
pub const MAX_PODS: usize = 4096;

/// What the API server says about one pod on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    /// Container id (64 hex, the `containerd://`/`cri-o://`/`docker://` prefix stripped) →
    /// container name, from status.containerStatuses, initContainerStatuses and
    /// ephemeralContainerStatuses.
    pub containers: HashMap<String, String>,
}

/// Pod UID → its metadata; shared with the watch task. The API writes UIDs with dashes, where
/// cgroup paths of the systemd driver have underscores.
pub type Directory = Arc<Mutex<HashMap<String, PodMeta>>>;

/// How the watch fares, for the report: names missing from findings are explained here.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ApiStatus {
    /// The last thing heard from the API server was data, not an error.
    pub connected: bool,
    pub pods: usize,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Pods refused because the directory held [`MAX_PODS`]; counted again on each re-list.
    pub pods_dropped: u64,
}

pub struct KubeApi {
    pub directory: Directory,
    pub status: Arc<Mutex<ApiStatus>>,
}

/// Where the kubelet mounts the service account's token (kube reads it from there, privately).
const TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Whether a service account and in-cluster config are present: what [`client`] needs.
pub fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some()
        && std::path::Path::new(TOKEN_FILE).is_file()
}

/// A client for the API server from the pod's service account. Async because building the
/// client spawns its connection worker on the current runtime.
pub async fn client() -> anyhow::Result<Client> {
    let config = kube::Config::incluster().context("reading the in-cluster Kubernetes config")?;
    Client::try_from(config).context("building the Kubernetes client")
}

/// Starts a task that lists then watches pods with fieldSelector spec.nodeName=<node> (all pods
/// if None) and keeps the directory current. It retries with the watcher's capped backoff
/// (0.8 s doubling to 30 s) and lives as long as the runtime.
pub fn spawn_watch(client: Client, node: Option<String>) -> KubeApi {
    let api = KubeApi {
        directory: Directory::default(),
        status: Arc::default(),
    };
    let config = match &node {
        Some(node) => watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        None => watcher::Config::default(),
    };
    let mut mirror = Mirror {
        directory: Arc::clone(&api.directory),
        status: Arc::clone(&api.status),
        relisted: None,
    };
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(Api::<Pod>::all(client), config).default_backoff());
        while let Some(event) = events.next().await {
            mirror.apply(event);
        }
    });
    api
}

/// A pod's UID and what the directory keeps of it; `None` without a UID, which only a malformed
/// object lacks.
pub fn pod_meta(pod: &Pod) -> Option<(String, PodMeta)> {
    let uid = pod.metadata.uid.clone().filter(|uid| !uid.is_empty())?;
    let statuses = pod.status.iter().flat_map(|status| {
        [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten()
    });
    let meta = PodMeta {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        containers: statuses.filter_map(container).collect(),
    };
    Some((uid, meta))
}

/// (id, name) of a started container. One not started yet has no id; an id that is not 64 hex
/// digits could never match a cgroup path, so it is not kept.
fn container(status: &ContainerStatus) -> Option<(String, String)> {
    let (_runtime, id) = status.container_id.as_deref()?.split_once("://")?;
    let id = (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)?;
    Some((id.to_ascii_lowercase(), status.name.clone()))
}

/// Applies watcher events to the shared directory and status.
struct Mirror {
    directory: Directory,
    status: Arc<Mutex<ApiStatus>>,
    /// Pods of a re-list in progress: they replace the directory whole when it completes, so
    /// pods deleted while the watch was down are forgotten and lookups never see half a list.
    relisted: Option<HashMap<String, PodMeta>>,
}

impl Mirror {
    fn apply(&mut self, event: Result<Event<Pod>, watcher::Error>) {
        let mut dropped = 0;
        match event {
            // Said before the list request is made: nothing heard from the server yet.
            Ok(Event::Init) => {
                self.relisted = Some(HashMap::new());
                return;
            }
            Ok(Event::InitApply(pod)) => {
                if let (Some(relisted), Some((uid, meta))) = (&mut self.relisted, pod_meta(&pod)) {
                    dropped += u64::from(!insert_bounded(relisted, uid, meta));
                }
            }
            Ok(Event::InitDone) => {
                if let Some(relisted) = self.relisted.take() {
                    *lock(&self.directory) = relisted;
                }
            }
            Ok(Event::Apply(pod)) => {
                if let Some((uid, meta)) = pod_meta(&pod) {
                    dropped += u64::from(!insert_bounded(&mut lock(&self.directory), uid, meta));
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    lock(&self.directory).remove(uid);
                }
            }
            Err(err) => {
                let mut status = lock(&self.status);
                status.connected = false;
                status.errors += 1;
                status.last_error = Some(err.to_string());
                return;
            }
        }
        let pods = lock(&self.directory).len();
        let mut status = lock(&self.status);
        status.connected = true;
        status.pods = pods;
        status.pods_dropped += dropped;
    }
}

/// Upserts unless that would grow `pods` past [`MAX_PODS`]; false if the pod was refused.
fn insert_bounded(pods: &mut HashMap<String, PodMeta>, uid: String, meta: PodMeta) -> bool {
    if pods.len() >= MAX_PODS && !pods.contains_key(&uid) {
        return false;
    }
    pods.insert(uid, meta);
    true
}

/// The data stay consistent whatever panicked while holding the lock: every update is one
/// insert, remove or swap.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const ID_A: &str = "3f2504e04f8941d39a0c0305e82c3301aaaabbbbccccddddeeeeffff00001111";
    const ID_B: &str = "9b1deb4d3b7d4bad9bdd2b0d7b3dcb6d0123456789abcdef0123456789abcdef";
    const ID_C: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

    /// A pod as the API server writes it, with the given container statuses.
    fn pod_json(uid: &str, name: &str, statuses: Value) -> Value {
        let mut pod = json!({
            "metadata": {
                "name": name,
                "namespace": "shop",
                "uid": uid,
                "resourceVersion": "17",
                "labels": {"app": "cart"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "cart-7d9f", "uid": "0b6a2c1e-0000-4000-8000-000000000001"}]
            },
            "spec": {
                "nodeName": "node-a",
                "containers": [{"name": "cart", "image": "registry.example/cart:1.4"}]
            },
            "status": {"phase": "Running", "podIP": "10.244.1.7"}
        });
        if let Value::Object(more) = statuses {
            pod["status"].as_object_mut().unwrap().extend(more);
        }
        pod
    }

    fn status(name: &str, container_id: &str) -> Value {
        json!({"name": name, "containerID": container_id, "image": "registry.example/x:1",
               "imageID": "", "ready": true, "restartCount": 0,
               "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}})
    }

    fn meta(pod: Value) -> Option<(String, PodMeta)> {
        pod_meta(&serde_json::from_value(pod).unwrap())
    }

    fn containers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(id, name)| (id.to_string(), name.to_string()))
            .collect()
    }

    #[test]
    fn pod_meta_strips_each_runtime_prefix_and_reads_all_three_status_lists() {
        let pod = pod_json(
            "7c1d6f3a-2b4e-4c5d-9e8f-0a1b2c3d4e5f",
            "cart-7d9f-x2x4q",
            json!({
                "containerStatuses": [status("cart", &format!("containerd://{ID_A}"))],
                "initContainerStatuses": [status("migrate", &format!("cri-o://{ID_B}"))],
                "ephemeralContainerStatuses": [status("debugger", &format!("docker://{ID_C}"))]
            }),
        );
        let (uid, meta) = meta(pod).unwrap();
        assert_eq!(uid, "7c1d6f3a-2b4e-4c5d-9e8f-0a1b2c3d4e5f");
        assert_eq!(
            meta,
            PodMeta {
                namespace: "shop".into(),
                name: "cart-7d9f-x2x4q".into(),
                containers: containers(&[(ID_A, "cart"), (ID_B, "migrate"), (ID_C, "debugger")]),
            }
        );
    }

    #[test]
    fn pod_meta_of_a_pending_pod_has_names_but_no_containers() {
        // Scheduled, not started: no statuses at all, or a waiting container without an id.
        let no_statuses = pod_json("u-1", "cart-a", json!({}));
        let mut no_status = no_statuses.clone();
        no_status.as_object_mut().unwrap().remove("status");
        let waiting = pod_json(
            "u-1",
            "cart-a",
            json!({"containerStatuses": [{"name": "cart", "image": "x", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        for pod in [no_statuses, no_status, waiting] {
            let (uid, meta) = meta(pod).unwrap();
            assert_eq!(uid, "u-1");
            assert_eq!(
                (meta.namespace.as_str(), meta.name.as_str()),
                ("shop", "cart-a")
            );
            assert!(meta.containers.is_empty(), "{meta:?}");
        }
    }

    #[test]
    fn pod_meta_keeps_only_ids_a_cgroup_path_can_hold_and_lowercases_them() {
        let pod = pod_json(
            "u-2",
            "cart-b",
            json!({"containerStatuses": [
                status("upper", &format!("containerd://{}", ID_A.to_uppercase())),
                status("bare", ID_B),
                status("short", "containerd://abc123"),
                status("nothex", &format!("containerd://{}", "z".repeat(64))),
                status("empty", ""),
            ]}),
        );
        let (_, meta) = meta(pod).unwrap();
        assert_eq!(meta.containers, containers(&[(ID_A, "upper")]));
    }

    #[test]
    fn pod_meta_needs_a_uid() {
        let mut pod = pod_json("", "cart-c", json!({}));
        assert_eq!(meta(pod.clone()), None);
        pod["metadata"].as_object_mut().unwrap().remove("uid");
        assert_eq!(meta(pod), None);
    }

    /// A self-signed P-256 CA (`openssl req -x509`), base64 of its PEM as in a kubeconfig.
    const CLUSTER_CA: &str = concat!(
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJqakNDQVRXZ0F3SUJBZ0lVUm0zcWRzQ0k5TzNOOHVDTC80",
        "VDhmZE5GOGRNd0NnWUlLb1pJemowRUF3SXcKSERFYU1CZ0dBMVVFQXd3UmJHVmhhM1J5WVdObExYUmxjM1F0WTJF",
        "d0lCY05Nall4TVRJek1qSXpOek0xV2hnUApNakV5TmpFd016QXlNak0zTXpWYU1Cd3hHakFZQmdOVkJBTU1FV3hs",
        "WVd0MGNtRmpaUzEwWlhOMExXTmhNRmt3CkV3WUhLb1pJemowQ0FRWUlLb1pJemowREFRY0RRZ0FFc21idG51R3Vw",
        "Q3NhOUp4SHNwbDBhbUdnZDhvdi9HZWsKa015UzEvalV1UlpacXhzOTVQTzhOZFFXcVFsdkt0OTNVK0ZNanl2WUli",
        "UVVGTG5SaG4vbHZLTlRNRkV3SFFZRApWUjBPQkJZRUZBZVgwVHpMUnU2Z2RvMUlSdTFEeTJId1d0dktNQjhHQTFV",
        "ZEl3UVlNQmFBRkFlWDBUekxSdTZnCmRvMUlSdTFEeTJId1d0dktNQThHQTFVZEV3RUIvd1FGTUFNQkFmOHdDZ1lJ",
        "S29aSXpqMEVBd0lEUndBd1JBSWcKWWEzdjlZd1BTNUNBSndSUXl3Q1JOdEVvdHI5UDN5bU9vZFdpTmY3Z3J4b0NJ",
        "RU9XNnBJOWdTL0R3N2YzTkg4LwpMWnJ2YnBsb0w4WTNXVmpxTkRXKzBhZzkKLS0tLS1FTkQgQ0VSVElGSUNBVEUt",
        "LS0tLQo=",
    );

    /// The in-cluster client speaks TLS through rustls with ring, the only provider built in (no
    /// openssl or aws-lc, for the static musl build), found without being installed. Building a
    /// client for an https server with a cluster CA, as in a pod, fails if a dependency enables a
    /// second provider or none.
    #[tokio::test]
    async fn https_client_with_a_cluster_ca_builds_on_ring() {
        let kubeconfig = format!(
            "clusters: [{{name: c, cluster: {{server: 'https://10.96.0.1:443', \
             certificate-authority-data: {CLUSTER_CA}}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n\
             current-context: c\n\
             users: [{{name: u, user: {{token: t}}}}]\n"
        );
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
        Client::try_from(config).unwrap();
    }

    fn mirror() -> Mirror {
        Mirror {
            directory: Directory::default(),
            status: Arc::default(),
            relisted: None,
        }
    }

    fn pod(uid: &str) -> Pod {
        serde_json::from_value(pod_json(uid, uid, json!({}))).unwrap()
    }

    #[test]
    fn mirror_bounds_the_directory_and_counts_what_it_refuses() {
        let mut mirror = mirror();
        mirror.apply(Ok(Event::Init));
        for i in 0..MAX_PODS + 3 {
            mirror.apply(Ok(Event::InitApply(pod(&format!("u-{i}")))));
        }
        mirror.apply(Ok(Event::InitDone));
        // An update of a pod already known is no growth: it is taken.
        mirror.apply(Ok(Event::Apply(pod("u-0"))));
        mirror.apply(Ok(Event::Apply(pod("u-new"))));
        let status = lock(&mirror.status).clone();
        assert_eq!(lock(&mirror.directory).len(), MAX_PODS);
        assert!(lock(&mirror.directory).contains_key("u-0"));
        assert_eq!((status.pods, status.pods_dropped), (MAX_PODS, 4));
    }

    #[test]
    fn mirror_counts_errors_and_keeps_the_directory_through_them() {
        let mut mirror = mirror();
        mirror.apply(Ok(Event::Apply(pod("u-1"))));
        mirror.apply(Err(watcher::Error::NoResourceVersion));
        mirror.apply(Err(watcher::Error::NoResourceVersion));
        let status = lock(&mirror.status).clone();
        assert!(!status.connected);
        assert_eq!(status.errors, 2);
        assert!(status.last_error.unwrap().contains("resourceVersion"));
        assert!(lock(&mirror.directory).contains_key("u-1"));
        mirror.apply(Ok(Event::Delete(pod("u-1"))));
        assert!(lock(&mirror.status).connected);
        assert!(lock(&mirror.directory).is_empty());
    }

    /// A stand-in for the Kubernetes API server, since none can run here: hand-written HTTP/1.1
    /// that answers pod lists and watches the way the API server does, for the real client and
    /// watcher to talk to.
    mod stand_in {
        use std::collections::VecDeque;
        use std::sync::{Arc, Mutex};

        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use tokio::net::{TcpListener, TcpStream};
        use tokio::sync::mpsc;

        pub struct Script {
            /// PodList bodies, one per list request; the last repeats.
            pub lists: Mutex<VecDeque<String>>,
            /// Watch events, streamed as they come; an ERROR event ends its watch response.
            pub events: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
            /// Request targets (path and query), in arrival order.
            pub requests: Mutex<Vec<String>>,
        }

        pub async fn serve(listener: TcpListener, script: Arc<Script>) {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(connection(conn, Arc::clone(&script)));
            }
        }

        async fn connection(mut conn: TcpStream, script: Arc<Script>) -> std::io::Result<()> {
            let mut buf = Vec::new();
            loop {
                let target = loop {
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        break head.split(' ').nth(1).unwrap_or_default().to_owned();
                    }
                    let mut chunk = [0; 4096];
                    let n = conn.read(&mut chunk).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    buf.extend_from_slice(&chunk[..n]);
                };
                script.requests.lock().unwrap().push(target.clone());
                if target.contains("watch=true") {
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                          Transfer-Encoding: chunked\r\n\r\n",
                    )
                    .await?;
                    let mut events = script.events.lock().await;
                    while let Some(event) = events.recv().await {
                        let line = format!("{event}\n");
                        conn.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
                            .await?;
                        if event.contains(r#""type":"ERROR""#) {
                            break;
                        }
                    }
                    conn.write_all(b"0\r\n\r\n").await?;
                } else {
                    let body = {
                        let mut lists = script.lists.lock().unwrap();
                        let body = lists.front().cloned().unwrap_or_default();
                        if lists.len() > 1 {
                            lists.pop_front();
                        }
                        body
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    );
                    conn.write_all(head.as_bytes()).await?;
                    conn.write_all(body.as_bytes()).await?;
                }
            }
        }
    }

    fn pod_list(resource_version: &str, pods: &[Value]) -> String {
        json!({"kind": "PodList", "apiVersion": "v1",
               "metadata": {"resourceVersion": resource_version}, "items": pods})
        .to_string()
    }

    fn watch_event(kind: &str, mut pod: Value, resource_version: &str) -> String {
        pod["kind"] = json!("Pod");
        pod["apiVersion"] = json!("v1");
        pod["metadata"]["resourceVersion"] = json!(resource_version);
        json!({"type": kind, "object": pod}).to_string()
    }

    /// Polls the directory until `done` holds; fails the test after 10 s.
    async fn until(api: &KubeApi, what: &str, done: impl Fn(&HashMap<String, PodMeta>) -> bool) {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !done(&lock(&api.directory)) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "{what}: directory {:?}, status {:?}",
            lock(&api.directory),
            lock(&api.status)
        );
    }

    #[tokio::test]
    async fn watch_against_a_stand_in_api_server_fills_updates_forgets_and_relists() {
        let cart =
            |id| json!({"containerStatuses": [status("cart", &format!("containerd://{id}"))]});
        let pod_a = pod_json("uid-a", "cart-a", cart(ID_A));
        let pod_b = pod_json("uid-b", "cart-b", json!({}));
        let pod_x = pod_json("uid-x", "cart-x", cart(ID_C));
        let (events, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let script = Arc::new(stand_in::Script {
            lists: Mutex::new(
                [
                    pod_list("10", &[pod_a, pod_x.clone()]),
                    // After the 410: pod-a went while the watch was down.
                    pod_list("30", std::slice::from_ref(&pod_b)),
                ]
                .into(),
            ),
            events: tokio::sync::Mutex::new(events_rx),
            requests: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(stand_in::serve(listener, Arc::clone(&script)));
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let api = spawn_watch(client, Some("node-a".into()));

        until(&api, "first list", |dir| dir.len() == 2).await;
        assert_eq!(
            lock(&api.directory)["uid-a"].containers,
            containers(&[(ID_A, "cart")])
        );
        assert_eq!(lock(&api.directory)["uid-x"].name, "cart-x");

        events
            .send(watch_event("ADDED", pod_b.clone(), "11"))
            .unwrap();
        until(&api, "ADDED", |dir| dir.contains_key("uid-b")).await;

        let mut pod_a2 = pod_json("uid-a", "cart-a", cart(ID_A));
        pod_a2["status"]["containerStatuses"]
            .as_array_mut()
            .unwrap()
            .push(status("sidecar", &format!("cri-o://{ID_B}")));
        events.send(watch_event("MODIFIED", pod_a2, "12")).unwrap();
        until(&api, "MODIFIED", |dir| dir["uid-a"].containers.len() == 2).await;
        assert_eq!(
            lock(&api.directory)["uid-a"].containers,
            containers(&[(ID_A, "cart"), (ID_B, "sidecar")])
        );

        events.send(watch_event("DELETED", pod_x, "13")).unwrap();
        until(&api, "DELETED", |dir| !dir.contains_key("uid-x")).await;
        assert_eq!(lock(&api.directory).len(), 2);

        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
            "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
            "message": "too old resource version: 13 (30)"}});
        events.send(gone.to_string()).unwrap();
        until(&api, "re-list after 410", |dir| {
            dir.len() == 1 && dir.contains_key("uid-b")
        })
        .await;

        let status = lock(&api.status).clone();
        assert!(status.connected);
        assert_eq!((status.pods, status.errors, status.pods_dropped), (1, 1, 0));
        assert!(status
            .last_error
            .unwrap()
            .contains("too old resource version"));

        let requests = script.requests.lock().unwrap().clone();
        let selector = "fieldSelector=spec.nodeName%3Dnode-a";
        let lists: Vec<_> = requests
            .iter()
            .filter(|r| !r.contains("watch=true"))
            .collect();
        let watches: Vec<_> = requests
            .iter()
            .filter(|r| r.contains("watch=true"))
            .collect();
        assert_eq!(lists.len(), 2, "{requests:?}");
        assert!(!watches.is_empty(), "{requests:?}");
        for request in lists.iter().chain(&watches) {
            assert!(request.starts_with("/api/v1/pods?"), "{request}");
            assert!(request.contains(selector), "{request}");
        }
        assert!(watches[0].contains("resourceVersion=10"), "{requests:?}");
    }
}
