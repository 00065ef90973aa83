//! Which container, and which Kubernetes pod, a process runs in — read from its cgroup path.
//!
//! Container runtimes name a container's cgroup after its id, and the kubelet nests those under a
//! cgroup named after the pod's UID, so `/proc/PID/cgroup` alone attributes a process without a
//! container runtime socket or an API server. The pod's namespace and name come from the kubelet's
//! log directories ([`parse_pod_log_dir`]). Everything here but [`placement_of`] and
//! [`pods_from_logs`] is pure.

use std::{collections::HashMap, path::Path};

use serde::Serialize;

/// The container runtime whose cgroup naming a path follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
    Podman,
}

impl Runtime {
    /// As in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::Crio => "crio",
            Self::Docker => "docker",
            Self::Podman => "podman",
        }
    }
}

/// Where a process runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Placement {
    /// Not in a container: a host process.
    Host,
    Container {
        runtime: Runtime,
        id: String,
        pod_uid: Option<String>,
    },
}

/// Parses the text of /proc/PID/cgroup (cgroup v1 "hierarchy-id:controllers:path" lines, or the
/// v2 "0::path" line, or both in hybrid mode) into a placement.
///
/// The first line that names a container wins: in hybrid mode a v1 hierarchy may place the
/// process while the v2 line is just `0::/`, or the other way round.
pub fn parse(cgroup: &str) -> Placement {
    cgroup
        .lines()
        .find_map(parse_line)
        .unwrap_or(Placement::Host)
}

/// Pod namespace and name from the kubelet's log directory names, /var/log/pods/<namespace>_<name>_<uid>
/// (namespaces and pod names are DNS labels/subdomains: no '_'). Returns (uid, namespace, name).
pub fn parse_pod_log_dir(name: &str) -> Option<(String, String, String)> {
    let mut parts = name.split('_');
    let (Some(namespace), Some(pod), Some(uid), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    (is_dns_name(namespace) && is_dns_name(pod) && is_pod_id(uid))
        .then(|| (uid.to_owned(), namespace.to_owned(), pod.to_owned()))
}

/// A container's name from the kubelet's log link names, /var/log/containers/
/// <pod>_<namespace>_<container>-<container id>.log (the names log shippers read too).
/// Returns (container id, namespace, pod, container).
pub fn parse_container_log(name: &str) -> Option<(String, String, String, String)> {
    let rest = name.strip_suffix(".log")?;
    let mut parts = rest.split('_');
    let (Some(pod), Some(namespace), Some(tail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (container, id) = tail.rsplit_once('-')?;
    (is_dns_name(namespace) && is_dns_name(pod) && is_dns_name(container) && is_container_id(id))
        .then(|| {
            (
                id.to_owned(),
                namespace.to_owned(),
                pod.to_owned(),
                container.to_owned(),
            )
        })
}

/// Reads /proc/PID/cgroup; None if unreadable (process gone).
pub fn placement_of(pid: u32) -> Option<Placement> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    Some(parse(&text))
}

/// Lists /var/log/pods (or the given root, for tests) into uid → (namespace, name); empty if absent.
pub fn pods_from_logs(dir: &Path) -> HashMap<String, (String, String)> {
    list_names(dir, |name| {
        let (uid, namespace, pod) = parse_pod_log_dir(name)?;
        Some((uid, (namespace, pod)))
    })
}

/// Lists /var/log/containers (or the given root) into container id → container name.
pub fn containers_from_logs(dir: &Path) -> HashMap<String, String> {
    list_names(dir, |name| {
        let (id, _, _, container) = parse_container_log(name)?;
        Some((id, container))
    })
}

/// The entries of `dir` whose names `parse` accepts; empty if `dir` cannot be read.
fn list_names<V>(dir: &Path, parse: impl Fn(&str) -> Option<(String, V)>) -> HashMap<String, V> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(|entry| parse(entry.ok()?.file_name().to_str()?))
        .collect()
}

/// One line's placement; None if it is malformed or names no container.
fn parse_line(line: &str) -> Option<Placement> {
    // The path is last and may itself hold ':'.
    let mut fields = line.splitn(3, ':');
    let (Some(hierarchy), Some(_controllers), Some(path)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    if hierarchy.parse::<u32>().is_err() || !path.starts_with('/') {
        return None;
    }
    parse_path(path)
}

/// What a cgroup path component names.
enum Found<'a> {
    Container(Runtime, &'a str),
    /// A runtime's monitor (conmon) in a scope of its own beside the container's.
    Conmon,
}

fn parse_path(path: &str) -> Option<Placement> {
    let mut pod_uid = None;
    // The innermost container wins: anything below it (podman's `container` leaf, a nested
    // systemd's units) is still that container.
    let mut innermost = None;
    let mut parent = "";
    let mut parent_is_pod = false;
    for name in path.split('/').filter(|name| !name.is_empty()) {
        // cgroupfs drivers name the container's cgroup by its bare id; only the parent says whose.
        let bare = match parent {
            "docker" => Some(Runtime::Docker),
            // The runtime is not in the path. dockershim is gone since Kubernetes 1.24 and CRI-O
            // writes `crio-<id>`, so a bare id under a pod is containerd's (or cri-dockerd's, rare).
            _ if parent_is_pod => Some(Runtime::Containerd),
            _ => None,
        };
        parent_is_pod = false;
        if let Some(uid) = pod_uid_of(name, parent) {
            pod_uid = Some(uid);
            parent_is_pod = true;
        } else if let Some(found) = container_of(name, bare) {
            innermost = Some(found);
        }
        parent = name;
    }
    match innermost? {
        Found::Container(runtime, id) => Some(Placement::Container {
            runtime,
            id: id.to_owned(),
            pod_uid,
        }),
        // conmon (CRI-O's `crio-conmon-<id>.scope`, podman's `libpod-conmon-<id>.scope`) is the
        // runtime's node-level helper, not the workload: it is reported as a host process.
        Found::Conmon => None,
    }
}

/// The pod UID a kubelet-made pod cgroup is named after, or the id of a podman pod (`podman
/// pod`, `podman kube play`), which stands in for a UID there.
fn pod_uid_of(name: &str, parent: &str) -> Option<String> {
    // podman: cgroupfs `libpod_parent/<pod id>`, systemd `machine-libpod_pod_<pod id>.slice`.
    let podman = match name.strip_suffix(".slice") {
        Some(slice) => slice.strip_prefix("machine-libpod_pod_"),
        None => (parent == "libpod_parent").then_some(name),
    };
    if let Some(id) = podman {
        return is_container_id(id).then(|| id.to_owned());
    }
    let uid = match name.strip_suffix(".slice") {
        // systemd driver: `kubepods[-<qos>]-pod<uid>.slice`, with the uid's '-' written as '_'
        // because systemd reads '-' in a slice name as nesting.
        Some(slice) => {
            let (qos, uid) = slice.rsplit_once("-pod")?;
            if !matches!(
                qos,
                "kubepods" | "kubepods-burstable" | "kubepods-besteffort"
            ) {
                return None;
            }
            uid.replace('_', "-")
        }
        // cgroupfs driver: `pod<uid>`.
        None => name.strip_prefix("pod")?.to_owned(),
    };
    is_pod_uid(&uid).then_some(uid)
}

/// The container a cgroup is named after: the systemd driver's `<prefix><id>.scope` unit, the
/// cgroupfs `<prefix><id>`, or a bare id where the parent says which runtime (`bare`).
fn container_of(name: &str, bare: Option<Runtime>) -> Option<Found<'_>> {
    const PREFIXES: [(&str, Runtime); 4] = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
    ];
    let unit = name.strip_suffix(".scope").unwrap_or(name);
    if let Some(id) = unit
        .strip_prefix("crio-conmon-")
        .or_else(|| unit.strip_prefix("libpod-conmon-"))
    {
        return is_container_id(id).then_some(Found::Conmon);
    }
    let (runtime, id) = PREFIXES
        .iter()
        .find_map(|&(prefix, runtime)| Some((runtime, unit.strip_prefix(prefix)?)))
        .or_else(|| Some((bare?, name)))?;
    is_container_id(id).then_some(Found::Container(runtime, id))
}

fn is_lower_hex(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'f')
}

/// Every runtime here names containers by a 64-hex-digit id (SHA-256).
fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(is_lower_hex)
}

/// A Kubernetes UID: a lowercase 8-4-4-4-12 UUID.
fn is_pod_uid(uid: &str) -> bool {
    uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => is_lower_hex(b),
        })
}

/// A pod's UID, or a podman pod's id, which stands in for it.
fn is_pod_id(uid: &str) -> bool {
    is_pod_uid(uid) || is_container_id(uid)
}

/// A DNS label or subdomain, as Kubernetes namespaces and pod names are.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const ID: &str = "4c01db0b339c3bc1f5f5d8e0a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
    const UID: &str = "1f3e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b";
    /// The UID as the systemd driver writes it into slice names.
    const UID_SLICE: &str = "1f3e2a4b_5c6d_4e7f_8a9b_0c1d2e3f4a5b";

    /// A cgroup v1 /proc/PID/cgroup with every hierarchy at `path`.
    fn v1(path: &str) -> String {
        [
            "12:hugetlb",
            "11:pids",
            "10:net_cls,net_prio",
            "9:perf_event",
            "8:cpuset",
            "7:freezer",
            "6:devices",
            "5:memory",
            "4:blkio",
            "3:cpu,cpuacct",
            "2:rdma",
            "1:name=systemd",
        ]
        .iter()
        .map(|hierarchy| format!("{hierarchy}:{path}\n"))
        .collect()
    }

    fn container(runtime: Runtime, pod_uid: Option<&str>) -> Placement {
        Placement::Container {
            runtime,
            id: ID.into(),
            pod_uid: pod_uid.map(str::to_owned),
        }
    }

    #[test]
    fn containerd_systemd_v2_burstable() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SLICE}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(parse(&text), container(Runtime::Containerd, Some(UID)));
    }

    #[test]
    fn containerd_systemd_v2_guaranteed() {
        let text =
            format!("0::/kubepods.slice/kubepods-pod{UID_SLICE}.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(parse(&text), container(Runtime::Containerd, Some(UID)));
    }

    #[test]
    fn containerd_systemd_v2_besteffort() {
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SLICE}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(parse(&text), container(Runtime::Containerd, Some(UID)));
    }

    #[test]
    fn containerd_cgroupfs_v1_burstable() {
        let text = v1(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(parse(&text), container(Runtime::Containerd, Some(UID)));
    }

    #[test]
    fn containerd_cgroupfs_v2_guaranteed() {
        let text = format!("0::/kubepods/pod{UID}/{ID}\n");
        assert_eq!(parse(&text), container(Runtime::Containerd, Some(UID)));
    }

    #[test]
    fn bare_id_under_a_besteffort_pod_is_containerd() {
        // Also dockershim's shape before Kubernetes 1.24: the path cannot tell them apart.
        let text = v1(&format!("/kubepods/besteffort/pod{UID}/{ID}"));
        assert_eq!(parse(&text), container(Runtime::Containerd, Some(UID)));
    }

    #[test]
    fn crio_systemd_v2() {
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SLICE}.slice/crio-{ID}.scope\n"
        );
        assert_eq!(parse(&text), container(Runtime::Crio, Some(UID)));
    }

    #[test]
    fn crio_conmon_is_host() {
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SLICE}.slice/crio-conmon-{ID}.scope\n"
        );
        assert_eq!(parse(&text), Placement::Host);
    }

    #[test]
    fn docker_systemd_v2() {
        let text = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(parse(&text), container(Runtime::Docker, None));
    }

    #[test]
    fn docker_cgroupfs_v1() {
        assert_eq!(
            parse(&v1(&format!("/docker/{ID}"))),
            container(Runtime::Docker, None)
        );
    }

    #[test]
    fn podman_systemd_v2() {
        let text = format!("0::/machine.slice/libpod-{ID}.scope\n");
        assert_eq!(parse(&text), container(Runtime::Podman, None));
    }

    #[test]
    fn podman_rootless_v2() {
        let text = format!(
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope\n"
        );
        assert_eq!(parse(&text), container(Runtime::Podman, None));
    }

    #[test]
    fn podman_nested_container_leaf() {
        let text = format!("0::/machine.slice/libpod-{ID}.scope/container\n");
        assert_eq!(parse(&text), container(Runtime::Podman, None));
    }

    #[test]
    fn podman_cgroupfs_v1() {
        assert_eq!(
            parse(&v1(&format!("/libpod_parent/libpod-{ID}"))),
            container(Runtime::Podman, None)
        );
    }

    /// A podman pod's id, as `podman kube play` makes one.
    const POD_ID: &str = "ef50768af3833cf148eded4ab54e73e4a40c1618adb8a752b5df788b09cb4d54";

    #[test]
    fn podman_pod_cgroupfs_v1() {
        // Measured: podman 4.3 `kube play` with the cgroupfs manager, on a hybrid host.
        let text = v1(&format!("/libpod_parent/{POD_ID}/libpod-{ID}"))
            + &format!("0::/libpod_parent/{POD_ID}/libpod-{ID}\n");
        assert_eq!(parse(&text), container(Runtime::Podman, Some(POD_ID)));
    }

    #[test]
    fn podman_pod_systemd_v2() {
        let text =
            format!("0::/machine.slice/machine-libpod_pod_{POD_ID}.slice/libpod-{ID}.scope\n");
        assert_eq!(parse(&text), container(Runtime::Podman, Some(POD_ID)));
        // Not a pod id: the container is still placed, without a pod.
        let text = format!("0::/machine.slice/machine-libpod_pod_xyz.slice/libpod-{ID}.scope\n");
        assert_eq!(parse(&text), container(Runtime::Podman, None));
    }

    #[test]
    fn podman_conmon_is_host() {
        let text = format!("0::/machine.slice/libpod-conmon-{ID}.scope\n");
        assert_eq!(parse(&text), Placement::Host);
    }

    #[test]
    fn host_v2() {
        for text in [
            "0::/init.scope\n",
            "0::/system.slice/sshd.service\n",
            "0::/user.slice/user-0.slice/session-1.scope\n",
            "0::/\n",
        ] {
            assert_eq!(parse(text), Placement::Host, "{text}");
        }
    }

    #[test]
    fn host_v1() {
        assert_eq!(parse(&v1("/system.slice/cron.service")), Placement::Host);
        assert_eq!(
            parse("12:memory:/system.slice/cron.service\n"),
            Placement::Host
        );
    }

    #[test]
    fn hybrid_prefers_the_line_naming_a_container() {
        // The v1 hierarchies place the process; the v2 line comes last and says nothing.
        let text = v1(&format!("/docker/{ID}")) + "0::/\n";
        assert_eq!(parse(&text), container(Runtime::Docker, None));
        // And the other way round: only the unified hierarchy places it.
        let text = v1("/") + &format!("0::/machine.slice/libpod-{ID}.scope/container\n");
        assert_eq!(parse(&text), container(Runtime::Podman, None));
    }

    #[test]
    fn hybrid_without_a_container_is_host() {
        let text = v1("/user.slice/user-0.slice/session-1.scope") + "0::/user.slice\n";
        assert_eq!(parse(&text), Placement::Host);
    }

    #[test]
    fn invalid_container_ids_are_host() {
        let upper = ID.to_uppercase();
        let short = &ID[1..];
        let long = format!("{ID}0");
        let not_hex = format!("{}g", &ID[1..]);
        for id in [upper.as_str(), short, long.as_str(), not_hex.as_str(), ""] {
            for text in [
                format!("0::/system.slice/docker-{id}.scope\n"),
                format!("0::/kubepods/pod{UID}/{id}\n"),
                format!("0::/machine.slice/libpod-{id}.scope\n"),
            ] {
                assert_eq!(parse(&text), Placement::Host, "{text}");
            }
        }
    }

    #[test]
    fn a_malformed_pod_uid_is_dropped_not_the_container() {
        // The container is still identified by its own cgroup; only the pod cannot be.
        let text =
            format!("0::/kubepods.slice/kubepods-podnot_a_uid.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(parse(&text), container(Runtime::Containerd, None));
    }

    #[test]
    fn malformed_input_is_host() {
        for text in [
            "",
            "\n\n",
            "garbage",
            "0:",
            "0::",
            &format!("x::/docker/{ID}"),
            &format!("0::docker/{ID}"),
            &format!("abc:memory:/docker/{ID}"),
            &format!("/docker/{ID}"),
        ] {
            assert_eq!(parse(text), Placement::Host, "{text}");
        }
    }

    #[test]
    fn serializes_with_a_kind_tag() {
        let json = serde_json::to_value(container(Runtime::Crio, Some(UID))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "container", "runtime": "crio", "id": ID, "pod_uid": UID})
        );
        let json = serde_json::to_value(Placement::Host).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "host"}));
        for runtime in [
            Runtime::Containerd,
            Runtime::Crio,
            Runtime::Docker,
            Runtime::Podman,
        ] {
            assert_eq!(serde_json::to_value(runtime).unwrap(), runtime.as_str());
        }
    }

    /// Deterministic xorshift64: reproducible inputs without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_only_valid_ids_come_out() {
        // Bytes the parsers branch on, so random input reaches past the first check.
        const ALPHABET: &[u8] =
            b"0123456789abcdef:/-_.\npodscopeslicekubepodsdockerlibpodcrio\xff\xc3";
        let seeds = [
            format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SLICE}.slice/cri-containerd-{ID}.scope"),
            format!("3:memory:/kubepods/pod{UID}/{ID}"),
            format!("0::/machine.slice/libpod-{ID}.scope/container"),
            format!("kube-system_coredns-5d78c9869d-abcde_{UID}"),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                seeds[rng.below(seeds.len())].clone().into_bytes()
            } else {
                Vec::new()
            };
            for _ in 0..rng.below(8) {
                let byte = if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    ALPHABET[rng.below(ALPHABET.len())]
                };
                let at = rng.below(bytes.len() + 1);
                match rng.below(3) {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => bytes[at] = byte,
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.push(byte),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Placement::Container { id, pod_uid, .. } = parse(&text) {
                assert!(is_container_id(&id), "{text:?}");
                assert!(pod_uid.is_none_or(|uid| is_pod_id(&uid)), "{text:?}");
            }
            if let Some((uid, namespace, name)) = parse_pod_log_dir(&text) {
                assert!(is_pod_id(&uid) && is_dns_name(&namespace) && is_dns_name(&name));
            }
            if let Some((id, namespace, pod, container)) = parse_container_log(&text) {
                assert!(is_container_id(&id) && is_dns_name(&namespace));
                assert!(is_dns_name(&pod) && is_dns_name(&container));
            }
        }
    }

    #[test]
    fn pod_log_dir_names_parse() {
        assert_eq!(
            parse_pod_log_dir(&format!("kube-system_coredns-5d78c9869d-abcde_{UID}")),
            Some((
                UID.to_owned(),
                "kube-system".to_owned(),
                "coredns-5d78c9869d-abcde".to_owned()
            ))
        );
    }

    #[test]
    fn pod_log_dir_names_reject_wrong_shapes() {
        for name in [
            String::new(),
            format!("coredns_{UID}"),
            format!("kube-system_coredns_extra_{UID}"),
            format!("_coredns_{UID}"),
            format!("kube-system__{UID}"),
            "kube-system_coredns_not-a-uid".to_owned(),
            format!("kube-system_coredns_{}", UID.to_uppercase()),
            format!("kube-system_coredns_{UID_SLICE}"),
        ] {
            assert_eq!(parse_pod_log_dir(&name), None, "{name}");
        }
    }

    #[test]
    fn container_log_names_parse() {
        assert_eq!(
            parse_container_log(&format!(
                "coredns-5d78c9869d-abcde_kube-system_coredns-{ID}.log"
            )),
            Some((
                ID.to_owned(),
                "kube-system".to_owned(),
                "coredns-5d78c9869d-abcde".to_owned(),
                "coredns".to_owned()
            ))
        );
        // Container names may hold '-': the id is what follows the last one.
        assert_eq!(
            parse_container_log(&format!("web_shop_log-shipper-{ID}.log")).map(|c| c.3),
            Some("log-shipper".to_owned())
        );
        for name in [
            format!("web_shop_app-{ID}"),
            format!("web_shop_app{ID}.log"),
            format!("web_shop_app-{}.log", &ID[1..]),
            format!("web_app-{ID}.log"),
            format!("web_shop_x_app-{ID}.log"),
            format!("web_shop_-{ID}.log"),
            format!("Web_shop_app-{ID}.log"),
        ] {
            assert_eq!(parse_container_log(&name), None, "{name}");
        }
    }

    #[test]
    fn pods_are_listed_from_log_directories() {
        let dir = std::env::temp_dir().join(format!("leaktrace-cgroup-{}", std::process::id()));
        let other = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
        for name in [
            format!("kube-system_coredns-5d78c9869d-abcde_{UID}"),
            format!("shop_cart-7d9f_{other}"),
            "not-a-pod".to_owned(),
        ] {
            fs::create_dir_all(dir.join(name)).unwrap();
        }
        let pods = pods_from_logs(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            pods,
            HashMap::from([
                (
                    UID.to_owned(),
                    (
                        "kube-system".to_owned(),
                        "coredns-5d78c9869d-abcde".to_owned()
                    )
                ),
                (
                    other.to_owned(),
                    ("shop".to_owned(), "cart-7d9f".to_owned())
                ),
            ])
        );
        // Not a Kubernetes node: nothing to list.
        assert!(pods_from_logs(&dir).is_empty());
    }

    #[test]
    fn containers_are_named_from_log_links() {
        let dir = std::env::temp_dir().join(format!("leaktrace-containers-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for name in [format!("web_shop_app-{ID}.log"), "unrelated.log".to_owned()] {
            fs::write(dir.join(name), "").unwrap();
        }
        let containers = containers_from_logs(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            containers,
            HashMap::from([(ID.to_owned(), "app".to_owned())])
        );
    }

    #[test]
    fn this_process_has_a_placement() {
        assert!(placement_of(std::process::id()).is_some());
    }
}
