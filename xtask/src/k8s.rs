//! `cargo xtask image` and `cargo xtask k8s`: the container image and the Kubernetes DaemonSet
//! of deploy/, checked as far as a machine without a cluster allows.
//!
//! - image: leaktrace and the reproducer built static (x86_64-unknown-linux-musl), staged under
//!   target/k8s/ and built with `buildah bud` into `localhost/leaktrace:dev` (deploy/Containerfile)
//!   and `localhost/leaktrace-reproducer:dev` (the e2e's leaky workload). Offline: FROM scratch.
//! - k8s: (1) deploy/daemonset.yaml against the OpenAPI schemas of Kubernetes releases
//!   (`kubernetes-validate --strict`, from PyPI, in a venv under target/k8s/), and cross-checks
//!   a schema cannot make (ports, probes, selector, service account, seccomp); (2) the e2e: a
//!   pod `default/leaky` whose container `workload` leaks a socket every 300 ms, played with
//!   `podman kube play`; the DaemonSet's pod template turned into `podman run` flags and run
//!   next to it; its HTTP endpoints scraped from the host until the leak shows up, attributed to
//!   that pod, in /metrics and /findings; its RSS and CPU measured; then SIGTERM, which must end
//!   it with a final report and exit 0 within the grace period. (3) Each added capability is
//!   dropped alone in a short run and must break what it is there for.
//!
//! What the e2e does not cover: there is no kubelet and no API server here (none can be
//! installed from the reachable registries). Scheduling, the probes as the kubelet runs them, the
//! service account token and RBAC (the Kubernetes API watch stays off: no in-cluster config),
//! PodSecurity admission and the seccompProfile field (podman reads the annotation) are left to a
//! real cluster. `podman kube play` ignores hostPID, so the tracer runs with `podman run
//! --pid=host` instead, built from the template; the kubelet's log directories, from which
//! leaktrace names pods, are written by the test the way the kubelet would write them.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

use crate::{cargo, ensure_apt_packages, is_root, on_path, output, run, workspace};

#[derive(clap::Args, Default)]
pub struct K8sArgs {
    /// Schema validation and manifest checks only: no images, no podman, no root (unless
    /// python3-venv must be installed).
    #[arg(long)]
    validate_only: bool,
    /// Skip the runs that drop one capability at a time (about a minute).
    #[arg(long)]
    skip_capabilities: bool,
}

/// The tracer's image as `cargo xtask image` tags it; the manifest's (a placeholder registry) is
/// replaced by this one in the e2e.
const IMAGE: &str = "localhost/leaktrace:dev";
/// The e2e's leaky workload: the static reproducer alone.
const WORKLOAD_IMAGE: &str = "localhost/leaktrace-reproducer:dev";
const MUSL: &str = "x86_64-unknown-linux-musl";
/// The PyPI release of kubernetes-validate; it bundles the schemas of Kubernetes 1.25 to 1.37.
const KUBERNETES_VALIDATE: &str = "1.37.0";
/// An older release that clusters still run (extended support), and a current one.
const SCHEMA_VERSIONS: &[&str] = &["1.32.0", "1.35.0"];

/// The workload's Kubernetes names, which the tracer must find in /var/log/pods and
/// /var/log/containers.
const NAMESPACE: &str = "default";
const POD: &str = "leaky";
const CONTAINER: &str = "workload";
/// `podman kube play` names the container `<pod>-<container>`.
const WORKLOAD_CONTAINER: &str = "leaky-workload";
/// The tracer's podman container.
const TRACER: &str = "leaktrace-e2e";
/// A new socket every 300 ms for 8 hours: it leaks for as long as the test runs. The workload
/// runs as nobody, so the tracer's reading of another user's /proc/PID/{fd,maps,root} (what
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH are for) is exercised.
const WORKLOAD_POD: &str = r#"# Written by `cargo xtask k8s` (xtask/src/k8s.rs): the leaky pod.
apiVersion: v1
kind: Pod
metadata:
  name: leaky
  namespace: default
spec:
  restartPolicy: Never
  securityContext:
    runAsUser: 65534
    runAsGroup: 65534
  containers:
    - name: workload
      image: localhost/leaktrace-reproducer:dev
      imagePullPolicy: IfNotPresent
      args: ["fd-socket", "--count", "100000", "--interval-ms", "300"]
"#;
const WORKLOAD_CONTAINERFILE: &str = r#"# Written by `cargo xtask image` (xtask/src/k8s.rs).
FROM scratch
COPY leaktrace-reproducer /leaktrace-reproducer
ENTRYPOINT ["/leaktrace-reproducer"]
"#;
/// What the reproducer's leaking function is called; the finding's stack must name it.
const LEAK_SYMBOL: &str = "leak_socket_fd";
/// Appended to the manifest's arguments (later flags win): reports every 2 s, and a group is a
/// finding once 2 s old, so the leak verdict comes within seconds rather than minutes.
const E2E_ARGS: &[&str] = &["--interval", "2s", "--min-age", "2s"];
const SCRAPE_EVERY: Duration = Duration::from_millis(2500);
const SCRAPE_FOR: Duration = Duration::from_secs(90);
/// Scrapes go on at least this long once the checks hold, so that CPU and memory are measured
/// over a steady state rather than the first seconds.
const MEASURE_FOR: Duration = Duration::from_secs(30);
/// podman needs these on the project's VMs: its default ulimits exceed the VM's hard limits, and
/// crun refuses their hybrid cgroups ("cgroups in hybrid mode not supported"). Written under target/, pointed
/// to by CONTAINERS_CONF; /etc is left alone.
const CONTAINERS_CONF: &str = r#"# Written by `cargo xtask` (xtask/src/k8s.rs).
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
runtime = "runc"
"#;

fn k8s_dir() -> PathBuf {
    // target_dir() is <target>/release.
    crate::target_dir()
        .parent()
        .expect("the target directory has a parent")
        .join("k8s")
}

fn musl_bin_dir() -> PathBuf {
    crate::target_dir()
        .parent()
        .expect("the target directory has a parent")
        .join(MUSL)
        .join("release")
}

/// `run`, with the command's stdout sent to our stderr: stdout is for the findings of the task.
fn run_to_stderr(cmd: &mut Command) -> Result<()> {
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    run(cmd.stdout(Stdio::from(stderr)))
}

/// podman (or buildah) with this task's containers.conf.
fn container_tool(name: &str) -> Result<Command> {
    let conf = k8s_dir().join("containers.conf");
    if fs::read_to_string(&conf).ok().as_deref() != Some(CONTAINERS_CONF) {
        fs::create_dir_all(k8s_dir())?;
        fs::write(&conf, CONTAINERS_CONF)
            .with_context(|| format!("cannot write {}", conf.display()))?;
    }
    let mut cmd = Command::new(name);
    cmd.env("CONTAINERS_CONF", conf);
    Ok(cmd)
}

fn podman() -> Result<Command> {
    container_tool("podman")
}

/// Runs a podman command whose failure does not matter (cleanup), quietly.
fn podman_quiet(args: &[&str]) {
    if let Ok(mut cmd) = podman() {
        let _ = cmd.args(args).output();
    }
}

/// podman, buildah, runc (crun refuses this VM's hybrid cgroups), the pieces podman only
/// recommends or picks one of (catatonit builds kube play's pause image; netavark publishes
/// ports), and musl-gcc (ring and psm compile C for the musl target).
fn ensure_container_tools() -> Result<()> {
    ensure_apt_packages(&[
        ("podman", "podman"),
        ("buildah", "buildah"),
        ("runc", "runc"),
        ("iptables", "iptables"),
        ("musl-tools", "musl-gcc"),
        ("file", "file"),
    ])?;
    // Not commands on PATH: files.
    crate::ensure_apt(
        &[
            ("catatonit", "/usr/libexec/podman/catatonit"),
            ("netavark", "/usr/lib/podman/netavark"),
        ],
        |path| Path::new(path).exists(),
    )
}

/// `rustup target add x86_64-unknown-linux-musl` unless it is installed.
fn ensure_musl_target() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == MUSL) {
        eprintln!("xtask: rust target {MUSL} present");
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", MUSL]))
}

/// Fails unless `file` says the binary is statically linked (no interpreter, no libc to find).
fn check_static(bin: &Path) -> Result<()> {
    let desc = output(Command::new("file").arg("-L").arg(bin))?;
    ensure!(
        (desc.contains("statically linked") || desc.contains("static-pie linked"))
            && !desc.contains("dynamically linked")
            && !desc.contains("interpreter"),
        "{} is not a static binary: {}",
        bin.display(),
        desc.trim()
    );
    Ok(())
}

/// Builds `context` into `tag` with buildah; the image the tag named before, if any, is removed
/// (when no container uses it) so repeated builds do not pile up.
fn buildah_bud(context: &Path, tag: &str) -> Result<()> {
    let old = podman()?
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    run_to_stderr(
        container_tool("buildah")?
            .args(["bud", "--layers=false", "--file"])
            .arg(context.join("Containerfile"))
            .args(["--tag", tag])
            .arg(context),
    )?;
    let new = output(podman()?.args(["image", "inspect", "--format", "{{.Id}}", tag]))?;
    if let Some(old) = old.filter(|old| *old != new.trim()) {
        podman_quiet(&["rmi", &old]);
    }
    Ok(())
}

/// `cargo xtask image`.
pub fn image() -> Result<()> {
    crate::bootstrap()?;
    ensure_container_tools()?;
    ensure_musl_target()?;
    // Frame pointers come from .cargo/config.toml (see there why the musl build needs them).
    run(cargo().args([
        "build",
        "--release",
        "--target",
        MUSL,
        "--package",
        "leaktrace",
        "--bin",
        "leaktrace",
        "--package",
        "leaktrace-tests",
        "--bin",
        "leaktrace-reproducer",
    ]))?;
    let bin = musl_bin_dir();
    for name in ["leaktrace", "leaktrace-reproducer"] {
        check_static(&bin.join(name))?;
    }

    // The contexts hold only what the images hold.
    let tracer = k8s_dir().join("image");
    let workload = k8s_dir().join("workload-image");
    for dir in [&tracer, &workload] {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)?;
    }
    fs::copy(
        workspace().join("deploy/Containerfile"),
        tracer.join("Containerfile"),
    )?;
    // Line tables off (symbols stay, for panics): leaktrace reads other binaries' debug info,
    // never its own. The reproducer keeps its line tables: findings name its file:line.
    run(Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(tracer.join("leaktrace"))
        .arg(bin.join("leaktrace")))?;
    fs::write(workload.join("Containerfile"), WORKLOAD_CONTAINERFILE)?;
    fs::copy(
        bin.join("leaktrace-reproducer"),
        workload.join("leaktrace-reproducer"),
    )?;
    buildah_bud(&tracer, IMAGE)?;
    buildah_bud(&workload, WORKLOAD_IMAGE)?;

    // The image runs (no privileges needed for --version).
    let version = output(podman()?.args(["run", "--rm", "--network=none", IMAGE, "--version"]))?;
    ensure!(
        version.starts_with("leaktrace "),
        "{IMAGE} --version printed {version:?}"
    );
    let size = output(podman()?.args(["image", "inspect", "--format", "{{.Size}}", IMAGE]))?;
    eprintln!(
        "xtask: image: {IMAGE} ({}, {:.1} MiB), {WORKLOAD_IMAGE}",
        version.trim(),
        size.trim().parse::<f64>().unwrap_or(0.0) / 1048576.0
    );
    Ok(())
}

/// The venv's bin directory, with kubernetes-validate (and PyYAML, its dependency) installed.
fn ensure_validator() -> Result<PathBuf> {
    let venv = k8s_dir().join("venv");
    let bin = venv.join("bin");
    let installed = Command::new(bin.join("pip"))
        .args(["show", "kubernetes-validate"])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.trim() == format!("Version: {KUBERNETES_VALIDATE}"))
        });
    if installed {
        eprintln!("xtask: kubernetes-validate {KUBERNETES_VALIDATE} present");
        return Ok(bin);
    }
    if !on_path("python3") {
        ensure_apt_packages(&[("python3", "python3")])?;
    }
    // Debian's python3 keeps venv (and its pip bootstrap) in a package of its own.
    let has_venv = Command::new("python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_venv {
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "python3-venv",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(bin.join("pip"))
        .args(["install", "--quiet"])
        .arg(format!("kubernetes-validate=={KUBERNETES_VALIDATE}")))?;
    Ok(bin)
}

/// The documents of a YAML file as JSON, read by PyYAML (safe_load_all).
fn yaml_documents(venv_bin: &Path, path: &Path) -> Result<Vec<Value>> {
    let json = output(
        Command::new(venv_bin.join("python3"))
            .args([
                "-c",
                "import json, sys, yaml\n\
                 docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
                 json.dump(docs, sys.stdout)",
            ])
            .arg(path),
    )?;
    let docs: Vec<Value> = serde_json::from_str(&json)?;
    Ok(docs)
}

/// The manifest's object of `kind`.
fn object<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let first = found
        .next()
        .with_context(|| format!("deploy/daemonset.yaml has no {kind}"))?;
    ensure!(
        found.next().is_none(),
        "deploy/daemonset.yaml has more than one {kind}"
    );
    Ok(first)
}

fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str()
        .with_context(|| format!("{what} is not a string: {v}"))
}

/// The one container of the DaemonSet's pod template.
fn tracer_container(template: &Value) -> Result<&Value> {
    let containers = template["spec"]["containers"]
        .as_array()
        .context("the pod template has no containers")?;
    ensure!(
        containers.len() == 1,
        "the pod template has {} containers; the e2e runs one",
        containers.len()
    );
    Ok(&containers[0])
}

/// The containerPort of the container's port called `name`.
fn named_port(container: &Value, name: &str) -> Result<u64> {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .with_context(|| format!("the container has no port named {name}"))
}

/// A probe's or annotation's port: a number, a numeric string or a port name.
fn port_of(container: &Value, port: &Value) -> Result<u64> {
    if let Some(n) = port.as_u64() {
        return Ok(n);
    }
    let s = str_of(port, "port")?;
    match s.parse() {
        Ok(n) => Ok(n),
        Err(_) => named_port(container, s),
    }
}

/// Whether the pod runs without a seccomp filter, and that the annotation (podman) and the
/// seccompProfile field (Kubernetes) agree, as the API server requires when both are set.
fn seccomp_unconfined(template: &Value) -> Result<bool> {
    let container = tracer_container(template)?;
    let field = container["securityContext"]["seccompProfile"]["type"]
        .as_str()
        .or_else(|| template["spec"]["securityContext"]["seccompProfile"]["type"].as_str());
    let annotation =
        template["metadata"]["annotations"]["seccomp.security.alpha.kubernetes.io/pod"].as_str();
    if let (Some(field), Some(annotation)) = (field, annotation) {
        let same = match field {
            "Unconfined" => annotation == "unconfined",
            "RuntimeDefault" => annotation == "runtime/default",
            _ => annotation.starts_with("localhost/"),
        };
        ensure!(
            same,
            "seccompProfile {field} and the seccomp annotation {annotation} disagree"
        );
    }
    Ok(field == Some("Unconfined") || annotation == Some("unconfined"))
}

/// What a schema cannot check: the parts of the manifest that must agree with each other and
/// with what leaktrace needs.
fn check_manifest(docs: &[Value]) -> Result<()> {
    let ds = object(docs, "DaemonSet")?;
    let template = &ds["spec"]["template"];
    let container = tracer_container(template)?;
    // The selector must select the template's pods.
    let selector = ds["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("the DaemonSet has no selector.matchLabels")?;
    for (k, v) in selector {
        ensure!(
            template["metadata"]["labels"][k] == *v,
            "selector {k}={v} does not match the template's labels"
        );
    }
    ensure!(
        template["spec"]["hostPID"] == true,
        "the pod template must have hostPID: true"
    );
    // The port leaktrace listens on, the container port, the scrape annotation and the probes.
    let metrics = named_port(container, "metrics")?;
    let args: Vec<&str> = container["args"]
        .as_array()
        .context("the container has no args")?
        .iter()
        .map(|a| str_of(a, "an argument"))
        .collect::<Result<_>>()?;
    let listen = args
        .iter()
        .rposition(|a| *a == "--listen")
        .and_then(|i| args.get(i + 1))
        .context("the container's args have no --listen")?;
    ensure!(
        listen.ends_with(&format!(":{metrics}")),
        "--listen {listen} is not the metrics port {metrics}"
    );
    ensure!(args.contains(&"--all"), "the container's args lack --all");
    let annotations = &template["metadata"]["annotations"];
    ensure!(
        annotations["prometheus.io/scrape"] == "true",
        "prometheus.io/scrape is not \"true\""
    );
    let scrape_port = port_of(container, &annotations["prometheus.io/port"])?;
    ensure!(
        scrape_port == metrics,
        "prometheus.io/port {scrape_port} is not the metrics port {metrics}"
    );
    ensure!(
        annotations["prometheus.io/path"] == "/metrics",
        "prometheus.io/path is not /metrics"
    );
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &container[probe]["httpGet"];
        ensure!(get["path"] == path, "{probe} does not get {path}");
        let port = port_of(container, &get["port"])?;
        ensure!(
            port == metrics,
            "{probe} port {port} is not the metrics port {metrics}"
        );
    }
    // The service account exists, and the binding gives it the role.
    let account = str_of(
        &template["spec"]["serviceAccountName"],
        "serviceAccountName",
    )?;
    let namespace = str_of(&ds["metadata"]["namespace"], "the DaemonSet's namespace")?;
    let sa = object(docs, "ServiceAccount")?;
    ensure!(
        sa["metadata"]["name"] == account && sa["metadata"]["namespace"] == namespace,
        "the ServiceAccount is not {namespace}/{account}"
    );
    let binding = object(docs, "ClusterRoleBinding")?;
    let role = object(docs, "ClusterRole")?;
    ensure!(
        binding["roleRef"]["name"] == role["metadata"]["name"],
        "the ClusterRoleBinding names another role"
    );
    ensure!(
        binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == namespace
            }),
        "the ClusterRoleBinding does not bind {namespace}/{account}"
    );
    ensure!(
        seccomp_unconfined(template)?,
        "the pod must run without a seccomp filter (bpf() is refused under the default one)"
    );
    ensure!(
        object(docs, "Namespace")?["metadata"]["name"] == namespace,
        "the Namespace is not {namespace}"
    );
    Ok(())
}

fn validate(venv_bin: &Path) -> Result<Vec<Value>> {
    let manifest = workspace().join("deploy/daemonset.yaml");
    for version in SCHEMA_VERSIONS {
        run_to_stderr(
            Command::new(venv_bin.join("kubernetes-validate"))
                .args(["--kubernetes-version", version, "--strict"])
                .arg(&manifest),
        )?;
    }
    let docs = yaml_documents(venv_bin, &manifest)?;
    check_manifest(&docs)?;
    eprintln!(
        "xtask: k8s: deploy/daemonset.yaml valid for Kubernetes {} (strict), cross-checks passed",
        SCHEMA_VERSIONS.join(", ")
    );
    Ok(docs)
}

/// A Kubernetes quantity ("256Mi", "500m", "1G", "2") as a number.
fn quantity(q: &Value) -> Result<f64> {
    let s = match q {
        Value::Number(n) => return n.as_f64().context("quantity"),
        v => str_of(v, "a quantity")?,
    };
    let units: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("m", 1e-3),
        ("", 1.0),
    ];
    let (number, scale) = units
        .iter()
        .find_map(|&(suffix, scale)| s.strip_suffix(suffix).map(|n| (n, scale)))
        .expect("the empty suffix always matches");
    let n: f64 = number
        .parse()
        .with_context(|| format!("bad quantity {s:?}"))?;
    Ok(n * scale)
}

/// What the e2e puts in place of parts of the pod that only a cluster provides.
struct Substitutes<'a> {
    /// hostPath → the directory used instead.
    host_paths: BTreeMap<&'a str, PathBuf>,
    node_name: String,
    /// Host ports on 127.0.0.1 for the container ports.
    ports: BTreeMap<u64, u16>,
    variant: Variant<'a>,
}

/// The pod template as written, or changed in one respect to see what that breaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant<'a> {
    AsWritten,
    /// One capability of the manifest's `add` left out.
    Without(&'a str),
    /// The runtime's default seccomp profile instead of none.
    DefaultSeccomp,
}

impl Variant<'_> {
    fn describe(self) -> String {
        match self {
            Variant::AsWritten => "as written".to_owned(),
            Variant::Without(cap) => format!("without CAP_{cap}"),
            Variant::DefaultSeccomp => "under the default seccomp profile".to_owned(),
        }
    }
}

/// `podman run` arguments (after `run`) for the DaemonSet's pod template: what the kubelet
/// would ask of the runtime, as far as podman can say it. Image and args come last; the caller
/// appends its own arguments.
fn podman_run_args(template: &Value, subs: &Substitutes<'_>) -> Result<Vec<String>> {
    let spec = &template["spec"];
    let container = tracer_container(template)?;
    let mut args: Vec<String> = vec!["--detach".into()];
    let mut arg = |a: String| args.push(a);
    if spec["hostPID"] == true {
        arg("--pid=host".into());
    }
    ensure!(
        spec["hostNetwork"] != true && spec["hostIPC"] != true,
        "hostNetwork/hostIPC: not what the e2e runs"
    );
    let sc = &container["securityContext"];
    if sc["privileged"] == true {
        arg("--privileged".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        arg("--security-opt=no-new-privileges".into());
    }
    if sc["readOnlyRootFilesystem"] == true {
        // Kubernetes mounts no tmpfs on /tmp and /run of a read-only root; podman would.
        arg("--read-only".into());
        arg("--read-only-tmpfs=false".into());
    }
    let user = sc["runAsUser"]
        .as_u64()
        .or_else(|| spec["securityContext"]["runAsUser"].as_u64());
    let group = sc["runAsGroup"]
        .as_u64()
        .or_else(|| spec["securityContext"]["runAsGroup"].as_u64());
    match (user, group) {
        (Some(u), Some(g)) => arg(format!("--user={u}:{g}")),
        (Some(u), None) => arg(format!("--user={u}")),
        (None, _) => {}
    }
    for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        arg(format!("--cap-drop={}", str_of(cap, "a capability")?));
    }
    for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        let cap = str_of(cap, "a capability")?;
        if subs.variant != Variant::Without(cap) {
            arg(format!("--cap-add={cap}"));
        }
    }
    if seccomp_unconfined(template)? && subs.variant != Variant::DefaultSeccomp {
        arg("--security-opt=seccomp=unconfined".into());
    }
    let limits = &container["resources"]["limits"];
    if !limits["memory"].is_null() {
        arg(format!("--memory={}", quantity(&limits["memory"])? as u64));
    }
    if !limits["cpu"].is_null() {
        arg(format!("--cpus={}", quantity(&limits["cpu"])?));
    }
    for env in container["env"].as_array().into_iter().flatten() {
        let name = str_of(&env["name"], "an env name")?;
        let value = if let Some(v) = env["value"].as_str() {
            v.to_owned()
        } else {
            // The downward API, for the fields the e2e can stand in for.
            match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("spec.nodeName") => subs.node_name.clone(),
                Some("metadata.name") => TRACER.to_owned(),
                Some("metadata.namespace") => "leaktrace".to_owned(),
                _ => bail!("env {name}: the e2e cannot provide {}", env["valueFrom"]),
            }
        };
        arg(format!("--env={name}={value}"));
    }
    for port in container["ports"].as_array().into_iter().flatten() {
        let number = port["containerPort"]
            .as_u64()
            .context("a port without containerPort")?;
        let host = subs
            .ports
            .get(&number)
            .with_context(|| format!("no host port for {number}"))?;
        let proto = port["protocol"].as_str().unwrap_or("TCP").to_lowercase();
        arg(format!("--publish=127.0.0.1:{host}:{number}/{proto}"));
    }
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = str_of(&mount["name"], "a volumeMount name")?;
        let target = str_of(&mount["mountPath"], "a mountPath")?;
        let volume = volumes
            .iter()
            .find(|v| v["name"] == name)
            .with_context(|| format!("volumeMount {name} has no volume"))?;
        let host = str_of(
            &volume["hostPath"]["path"],
            &format!("volume {name}'s hostPath.path (only hostPath volumes are run)"),
        )?;
        let source = match subs.host_paths.get(host) {
            Some(dir) => dir.clone(),
            None => {
                // What the kubelet checks of a hostPath's type.
                let path = PathBuf::from(host);
                match volume["hostPath"]["type"].as_str().unwrap_or("") {
                    "Directory" => ensure!(path.is_dir(), "hostPath {host} is not a directory"),
                    "DirectoryOrCreate" => fs::create_dir_all(&path)?,
                    "" => {}
                    other => ensure!(path.exists(), "hostPath {host} ({other}) is missing"),
                }
                path
            }
        };
        let ro = if mount["readOnly"] == true { ":ro" } else { "" };
        arg(format!("--volume={}:{target}{ro}", source.display()));
    }
    if let Some(command) = container["command"].as_array() {
        let command: Vec<&str> = command
            .iter()
            .map(|c| str_of(c, "a command word"))
            .collect::<Result<_>>()?;
        arg(format!("--entrypoint={}", serde_json::to_string(&command)?));
    }
    arg(IMAGE.into());
    for a in container["args"].as_array().into_iter().flatten() {
        arg(str_of(a, "an argument")?.to_owned());
    }
    Ok(args)
}

/// One sample of the OpenMetrics text: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
    line: String,
}

/// The samples of an OpenMetrics (or Prometheus text) exposition; comments and `# EOF` skipped.
fn parse_metrics(text: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .with_context(|| format!("bad metric line {line:?}"))?;
        let name = &line[..name_end];
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(mut s) = rest.strip_prefix('{') {
            loop {
                s = s.trim_start_matches([',', ' ']);
                if let Some(after) = s.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let (key, after) = s
                    .split_once("=\"")
                    .with_context(|| format!("bad labels in {line:?}"))?;
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => bail!("bad escape in {line:?}"),
                        },
                        Some((i, '"')) => break i,
                        Some((_, c)) => value.push(c),
                        None => bail!("unterminated label value in {line:?}"),
                    }
                };
                labels.insert(key.trim().to_owned(), value);
                s = &after[end + 1..];
            }
        }
        let value = rest
            .split_whitespace()
            .next()
            .with_context(|| format!("no value in {line:?}"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .with_context(|| format!("bad value in {line:?}"))?,
        };
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
            line: line.to_owned(),
        });
    }
    Ok(samples)
}

/// The one sample named `name` whose labels include all of `labels`.
fn find_sample<'a>(
    samples: &'a [Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// GET http://127.0.0.1:port/path: status and body.
fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    get(port, path).with_context(|| format!("GET http://127.0.0.1:{port}{path}"))
}

fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw).context("a response that is not UTF-8")?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {raw:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").context("bad chunk")?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
            if size == 0 {
                break;
            }
            out.push_str(after.get(..size).context("short chunk")?);
            rest = after.get(size + 2..).context("short chunk")?;
        }
        out
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// A free TCP port on 127.0.0.1 (free when asked; podman binds it right after).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Removes what the e2e started, whatever way it ends.
struct Teardown {
    pod_yaml: PathBuf,
    tracers: Vec<String>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        for tracer in &self.tracers {
            podman_quiet(&["rm", "--force", "--time", "0", tracer]);
        }
        if let Some(yaml) = self.pod_yaml.to_str() {
            podman_quiet(&["kube", "down", yaml]);
        }
        podman_quiet(&["pod", "rm", "--force", POD]);
        eprintln!("xtask: k8s: removed the e2e's containers and pod");
    }
}

/// `podman inspect --format FORMAT NAME`.
fn inspect(name: &str, format: &str) -> Result<String> {
    Ok(
        output(podman()?.args(["inspect", "--format", format, name]))?
            .trim()
            .to_owned(),
    )
}

/// The container's stdout and stderr so far.
fn logs(name: &str) -> (String, String) {
    match podman().and_then(|mut cmd| Ok(cmd.args(["logs", name]).output()?)) {
        Ok(out) => (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(err) => (String::new(), format!("(podman logs {name}: {err:#})")),
    }
}

/// The last lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| {
            let cut: String = l.chars().take(400).collect();
            format!("    {cut}\n")
        })
        .collect()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("bad /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3).
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / hz)
}

/// A `Vm*:` line of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The peak memory of the process's memory cgroup in bytes (cgroup v2 memory.peak, v1
/// memory.max_usage_in_bytes): what a memory limit is checked against. It includes kernel
/// memory charged to the container, the eBPF maps among it, which RSS does not.
fn cgroup_memory_peak(pid: u32) -> Option<u64> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let (v1, v2) = cgroups.lines().fold((None, None), |(v1, v2), line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next(), parts.next(), parts.next());
        match (id, controllers, path) {
            (Some("0"), Some(""), Some(p)) => (v1, Some(p.to_owned())),
            (_, Some(c), Some(p)) if c.split(',').any(|c| c == "memory") => {
                (Some(p.to_owned()), v2)
            }
            _ => (v1, v2),
        }
    });
    let read = |p: String| fs::read_to_string(p).ok()?.trim().parse().ok();
    match v1 {
        Some(p) => read(format!(
            "/sys/fs/cgroup/memory{p}/memory.max_usage_in_bytes"
        )),
        None => read(format!("/sys/fs/cgroup{}/memory.peak", v2?)),
    }
}

/// The kubelet's view of the workload, written where the tracer's /var/log/pods and
/// /var/log/containers mounts point: there is no kubelet here to write them.
fn kubelet_dirs(
    dir: &Path,
    pod_uid: &str,
    container_id: &str,
) -> Result<BTreeMap<&'static str, PathBuf>> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    let pods = dir.join("pods");
    let containers = dir.join("containers");
    let container_dir = pods.join(format!("{NAMESPACE}_{POD}_{pod_uid}/{CONTAINER}"));
    fs::create_dir_all(&container_dir)?;
    fs::write(container_dir.join("0.log"), "")?;
    fs::create_dir_all(&containers)?;
    // The kubelet makes this a symlink to the pod log; only the name is read.
    fs::write(
        containers.join(format!("{POD}_{NAMESPACE}_{CONTAINER}-{container_id}.log")),
        "",
    )?;
    Ok(BTreeMap::from([
        ("/var/log/pods", pods),
        ("/var/log/containers", containers),
    ]))
}

/// tracefs must be mounted on the host for the hostPath to show it (systemd mounts it on a
/// node; a fresh VM may not have it).
fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(());
    }
    eprintln!(
        "xtask: k8s: tracefs is not mounted on this host; mounting it as a node's systemd would"
    );
    run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}

/// The ids of the workload: (pod id, container id, host pid).
fn workload_ids() -> Result<(String, String, u32)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = inspect(WORKLOAD_CONTAINER, "{{.State.Running}}")?;
        if running == "true" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{WORKLOAD_CONTAINER} is not running: {}",
            inspect(WORKLOAD_CONTAINER, "{{.State.Status}} {{.State.Error}}")?
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pod_id = inspect(POD, "{{.Id}}")?;
    let container_id = inspect(WORKLOAD_CONTAINER, "{{.Id}}")?;
    let pid: u32 = inspect(WORKLOAD_CONTAINER, "{{.State.Pid}}")?.parse()?;
    // What leaktrace reads: the ids in the cgroup path.
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    ensure!(
        cgroup.contains(&pod_id) && cgroup.contains(&container_id),
        "the workload's cgroup does not name pod {pod_id} and container {container_id}:\n{cgroup}"
    );
    Ok((pod_id, container_id, pid))
}

/// Starts a tracer container `name` from the template; returns the host port of `metrics`.
fn start_tracer(
    template: &Value,
    name: &str,
    host_paths: &BTreeMap<&'static str, PathBuf>,
    variant: Variant<'_>,
    extra: &[&str],
) -> Result<u16> {
    let container = tracer_container(template)?;
    let metrics = named_port(container, "metrics")?;
    let mut ports = BTreeMap::new();
    for port in container["ports"].as_array().into_iter().flatten() {
        if let Some(n) = port["containerPort"].as_u64() {
            ports.insert(n, free_port()?);
        }
    }
    let subs = Substitutes {
        host_paths: host_paths.iter().map(|(k, v)| (*k, v.clone())).collect(),
        node_name: fs::read_to_string("/proc/sys/kernel/hostname")?
            .trim()
            .to_owned(),
        ports,
        variant,
    };
    let args = podman_run_args(template, &subs)?;
    podman_quiet(&["rm", "--force", "--time", "0", name]);
    run_to_stderr(
        podman()?
            .args(["run", "--name", name])
            .args(&args)
            .args(E2E_ARGS)
            .args(extra),
    )?;
    Ok(subs.ports[&metrics])
}

/// Polls `path` until it answers 200, for up to `budget`; fails if the tracer exits.
fn wait_for_200(name: &str, port: u16, path: &str, budget: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if let Ok((200, _)) = http_get(port, path) {
            return Ok(start.elapsed());
        }
        if inspect(name, "{{.State.Running}}")? != "true" {
            bail!(
                "the tracer exited ({}) before {path} answered 200",
                inspect(name, "{{.State.ExitCode}}")?
            );
        }
        ensure!(
            start.elapsed() < budget,
            "{path} did not answer 200 within {budget:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The probe's budget as the kubelet counts it: initial delay plus period × failure threshold.
fn probe_budget(container: &Value, probe: &str) -> Duration {
    let p = &container[probe];
    let get = |k: &str, default: u64| p[k].as_u64().unwrap_or(default);
    Duration::from_secs(
        get("initialDelaySeconds", 0) + get("periodSeconds", 10) * get("failureThreshold", 3),
    )
}

/// The tracer's CPU seconds over the wall seconds of the scrapes.
type CpuWindow = (f64, f64);
/// Why the scrapes failed, and the last one, for the log.
type ScrapeFailure = (anyhow::Error, Option<Scrape>);

/// What one scrape round saw.
struct Scrape {
    at: f64,
    metrics: Vec<Sample>,
    findings: Value,
}

/// The e2e proper; `guard` tears down.
fn e2e(docs: &[Value], check_capabilities: bool) -> Result<()> {
    let start = Instant::now();
    let ds = object(docs, "DaemonSet")?;
    let template = &ds["spec"]["template"];
    let container = tracer_container(template)?;
    let dir = k8s_dir().join("e2e");
    fs::create_dir_all(&dir)?;
    let pod_yaml = dir.join("leaky-pod.yaml");
    fs::write(&pod_yaml, WORKLOAD_POD)?;
    let pod_yaml_str = pod_yaml
        .to_str()
        .context("non-UTF-8 target path")?
        .to_owned();
    let mut guard = Teardown {
        pod_yaml: pod_yaml.clone(),
        tracers: vec![TRACER.to_owned()],
    };
    // Leftovers of an interrupted run.
    podman_quiet(&["rm", "--force", "--time", "0", TRACER]);
    podman_quiet(&["kube", "down", &pod_yaml_str]);
    ensure_tracefs()?;

    run_to_stderr(podman()?.args(["kube", "play", &pod_yaml_str]))?;
    let (pod_id, container_id, workload_pid) = workload_ids()?;
    eprintln!(
        "xtask: k8s: pod {NAMESPACE}/{POD} = podman pod {pod_id}, container {CONTAINER} = \
         {container_id} (pid {workload_pid})"
    );
    let host_paths = kubelet_dirs(&dir.join("kubelet"), &pod_id, &container_id)?;

    let port = start_tracer(template, TRACER, &host_paths, Variant::AsWritten, &[])?;
    let tracer_pid: u32 = inspect(TRACER, "{{.State.Pid}}")?.parse()?;
    let result = scrape_and_check(container, port, tracer_pid, &container_id);
    let (stdout, stderr) = logs(TRACER);
    let (scrapes, cpu_window) = match result {
        Ok(ok) => ok,
        Err((err, last)) => {
            eprintln!("xtask: k8s: the tracer's stderr:\n{}", tail(&stderr, 60));
            eprintln!(
                "xtask: k8s: the tracer's stdout (last lines):\n{}",
                tail(&stdout, 15)
            );
            if let Some(last) = last {
                let lines: String = last
                    .metrics
                    .iter()
                    .filter(|s| s.name.starts_with("leaktrace_"))
                    .map(|s| format!("    {}\n", s.line))
                    .collect();
                eprintln!(
                    "xtask: k8s: the last scrape ({:.1}s):\n{lines}    /findings: {}",
                    last.at,
                    last.findings
                        .to_string()
                        .chars()
                        .take(2000)
                        .collect::<String>()
                );
            }
            return Err(err);
        }
    };

    // Resources, for the manifest's requests and limits.
    let rss = status_kib(tracer_pid, "VmRSS:")?;
    let hwm = status_kib(tracer_pid, "VmHWM:")?;
    let cgroup_peak = cgroup_memory_peak(tracer_pid);
    let cpu_total = cpu_seconds(tracer_pid)?;
    let last = scrapes.last().expect("scrape_and_check returns scrapes");
    println!("\n## The tracer (leaktrace --all, pod template of deploy/daemonset.yaml)\n");
    println!(
        "- RSS now {:.1} MiB, peak (VmHWM) {:.1} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    match cgroup_peak {
        Some(b) => println!(
            "- container memory cgroup peak {:.1} MiB \
             (RSS, page cache and kernel memory, eBPF maps included)",
            b as f64 / 1048576.0
        ),
        None => println!("- container memory cgroup peak: not found"),
    }
    println!(
        "- CPU {:.1}% of one core over {:.0}s of scrapes ({:.2} s), {:.2} s in all since start",
        cpu_window.0 / cpu_window.1 * 100.0,
        cpu_window.1,
        cpu_window.0,
        cpu_total
    );
    println!(
        "\n## Metrics of {NAMESPACE}/{POD}/{CONTAINER} at {:.1}s\n",
        last.at
    );
    for s in &last.metrics {
        if s.labels.get("container_id") == Some(&container_id) {
            println!("    {}", s.line);
        }
    }
    println!("\n## Health\n");
    for s in &last.metrics {
        if s.name.starts_with("leaktrace_") && s.labels.is_empty() {
            println!("    {}", s.line);
        }
    }

    // SIGTERM, as the kubelet stops a pod: a final report and exit 0 within the grace period.
    let grace = template["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    let stop_start = Instant::now();
    run_to_stderr(podman()?.args(["stop", "--time", &grace.to_string(), TRACER]))?;
    let stopped = stop_start.elapsed();
    let code = inspect(TRACER, "{{.State.ExitCode}}")?;
    let (stdout, stderr) = logs(TRACER);
    let last_report = stdout
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "report");
    let final_ok = last_report.as_ref().is_some_and(|r| r["final"] == true);
    if code != "0" || !final_ok || stopped >= Duration::from_secs(grace) {
        eprintln!("xtask: k8s: the tracer's stderr:\n{}", tail(&stderr, 30));
        bail!(
            "SIGTERM: exit code {code} after {stopped:.1?} (grace {grace}s), last report {}",
            last_report.map_or("missing".to_owned(), |r| r.to_string())
        );
    }
    println!(
        "\nSIGTERM: exit 0 after {:.1}s (grace {grace}s), last report line final: true",
        stopped.as_secs_f64()
    );
    podman_quiet(&["rm", "--force", TRACER]);
    if check_capabilities {
        guard.tracers.push(DROP_TRACER.to_owned());
        capabilities(template, &host_paths, &container_id)?;
    }
    eprintln!(
        "xtask: k8s: e2e passed in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    drop(guard);
    Ok(())
}

/// Scrapes until every check holds or SCRAPE_FOR passes. Returns the scrapes and the tracer's
/// CPU (seconds, wall seconds) over them; on failure the error and the last scrape.
fn scrape_and_check(
    container: &Value,
    port: u16,
    tracer_pid: u32,
    container_id: &str,
) -> std::result::Result<(Vec<Scrape>, CpuWindow), ScrapeFailure> {
    let startup = probe_budget(container, "startupProbe");
    let healthy = wait_for_200(TRACER, port, "/healthz", startup).map_err(|e| (e, None))?;
    // Ready after the first report; the readiness probe's budget on top of startup's.
    let ready = wait_for_200(
        TRACER,
        port,
        "/readyz",
        startup + probe_budget(container, "readinessProbe"),
    )
    .map_err(|e| (e, None))?;
    eprintln!(
        "xtask: k8s: /healthz 200 after {:.1}s, /readyz 200 after {:.1}s",
        healthy.as_secs_f64(),
        ready.as_secs_f64()
    );
    let cpu0 = cpu_seconds(tracer_pid).map_err(|e| (e, None))?;
    let t0 = Instant::now();
    let placement = [
        ("namespace", NAMESPACE),
        ("pod", POD),
        ("container", CONTAINER),
        ("container_id", container_id),
    ];
    let mut leak = placement.to_vec();
    leak.extend([("resource", "fd"), ("verdict", "leak")]);
    let mut sockets = placement.to_vec();
    sockets.push(("kind", "socket"));
    let mut scrapes: Vec<Scrape> = Vec::new();
    let mut outstanding: Vec<f64> = Vec::new();
    let mut socket_fds: Vec<f64> = Vec::new();
    let mut finding_ok = false;
    let mut problems: Vec<String>;
    loop {
        let round = || -> Result<Scrape> {
            for path in ["/healthz", "/readyz"] {
                let (status, body) = http_get(port, path)?;
                ensure!(status == 200, "{path}: {status} {body}");
            }
            let (status, body) = http_get(port, "/metrics")?;
            ensure!(status == 200, "/metrics: {status}");
            ensure!(
                body.trim_end().ends_with("# EOF"),
                "/metrics does not end with # EOF"
            );
            let metrics = parse_metrics(&body)?;
            let (status, body) = http_get(port, "/findings")?;
            ensure!(status == 200, "/findings: {status}");
            let findings: Value = serde_json::from_str(&body).context("/findings JSON")?;
            Ok(Scrape {
                at: t0.elapsed().as_secs_f64(),
                metrics,
                findings,
            })
        };
        let scrape = match round() {
            Ok(s) => s,
            Err(e) => {
                let state = inspect(TRACER, "{{.State.Status}}, exit code {{.State.ExitCode}}")
                    .unwrap_or_else(|e| format!("unknown ({e:#})"));
                let e = e.context(format!("scrape failed; the tracer container is {state}"));
                return Err((e, scrapes.pop()));
            }
        };
        if let Some(s) = find_sample(&scrape.metrics, "leaktrace_outstanding", &leak) {
            outstanding.push(s.value);
        }
        if let Some(s) = find_sample(&scrape.metrics, "leaktrace_fds", &sockets) {
            socket_fds.push(s.value);
        }
        finding_ok |= scrape.findings["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| {
                let p = &f["placement"];
                p["id"] == container_id
                    && p["namespace"] == NAMESPACE
                    && p["pod"] == POD
                    && p["container"] == CONTAINER
                    && f["resource"] == "fd"
                    && f["verdict"] == "leak"
                    && f["frames"].as_array().into_iter().flatten().any(|fr| {
                        fr["symbol"]
                            .as_str()
                            .is_some_and(|s| s.contains(LEAK_SYMBOL))
                    })
            });
        problems = Vec::new();
        let grows = |v: &[f64]| v.len() >= 3 && v[v.len() - 1] > v[0];
        if !grows(&outstanding) {
            problems.push(format!(
                "leaktrace_outstanding{{{}}} does not grow over 3 or more scrapes: {outstanding:?}",
                label_text(&leak)
            ));
        }
        if !grows(&socket_fds) {
            problems.push(format!(
                "leaktrace_fds{{{}}} does not grow over 3 or more scrapes: {socket_fds:?}",
                label_text(&sockets)
            ));
        }
        if !finding_ok {
            problems.push(format!(
                "/findings has no fd leak finding placed in {NAMESPACE}/{POD}/{CONTAINER} \
                 ({container_id}) \
                 with a frame naming {LEAK_SYMBOL}"
            ));
        }
        for health in [
            "leaktrace_events_total",
            "leaktrace_lost_events_total",
            "leaktrace_stack_failures_total",
            "leaktrace_evicted_processes_total",
            "leaktrace_dropped_objects_total",
            "leaktrace_probes_attached",
        ] {
            if find_sample(&scrape.metrics, health, &[]).is_none() {
                problems.push(format!("no {health}"));
            }
        }
        for positive in ["leaktrace_events_total", "leaktrace_probes_attached"] {
            if find_sample(&scrape.metrics, positive, &[]).is_some_and(|s| s.value <= 0.0) {
                problems.push(format!("{positive} is 0"));
            }
        }
        scrapes.push(scrape);
        if (problems.is_empty() && t0.elapsed() >= MEASURE_FOR) || t0.elapsed() > SCRAPE_FOR {
            break;
        }
        std::thread::sleep(SCRAPE_EVERY);
    }
    if !problems.is_empty() {
        return Err((
            anyhow::anyhow!(
                "after {} scrapes in {:.0}s:\n  {}",
                scrapes.len(),
                t0.elapsed().as_secs_f64(),
                problems.join("\n  ")
            ),
            scrapes.pop(),
        ));
    }
    println!(
        "\n## {} scrapes of the tracer over {:.0}s (every {:.1}s)\n\n\
         - leaktrace_outstanding{{...,resource=\"fd\",verdict=\"leak\"}} of \
         {NAMESPACE}/{POD}/{CONTAINER}: {outstanding:?}\n\
         - leaktrace_fds{{...,kind=\"socket\"}} of {NAMESPACE}/{POD}/{CONTAINER}: {socket_fds:?}\n\
         - /findings: a leak finding placed in the pod, its stack through {LEAK_SYMBOL}",
        scrapes.len(),
        t0.elapsed().as_secs_f64(),
        SCRAPE_EVERY.as_secs_f64()
    );
    let cpu = cpu_seconds(tracer_pid).map_err(|e| (e, None))? - cpu0;
    Ok((scrapes, (cpu, t0.elapsed().as_secs_f64())))
}

fn label_text(labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",")
}

/// `cargo xtask k8s`.
pub fn k8s(args: K8sArgs) -> Result<()> {
    let start = Instant::now();
    let venv = ensure_validator()?;
    let docs = validate(&venv)?;
    if args.validate_only {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "K8S E2E NOT RUN: podman runs the tracer with the host's pid namespace and eBPF; it \
             needs root. Run `sudo -E cargo xtask k8s` (or `cargo xtask k8s --validate-only`)."
        );
    }
    image()?;
    e2e(&docs, !args.skip_capabilities)?;
    eprintln!(
        "xtask: k8s: passed in {:.0}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The tracer container of the runs that change the template.
const DROP_TRACER: &str = "leaktrace-e2e-variant";
/// How long each of those runs traces: longer than the e2e took to see the leak here.
const DROP_RUN: &str = "12s";

/// Each capability the manifest adds, and the unconfined seccomp profile, must be needed: the
/// tracer runs without it (next to the same leaking pod) and must fail to start or miss what
/// the e2e found with everything, a leak finding placed in the pod whose stack names
/// LEAK_SYMBOL. What each change broke is printed.
fn capabilities(
    template: &Value,
    host_paths: &BTreeMap<&'static str, PathBuf>,
    container_id: &str,
) -> Result<()> {
    let container = tracer_container(template)?;
    let mut variants: Vec<Variant<'_>> = container["securityContext"]["capabilities"]["add"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|cap| str_of(cap, "a capability").map(Variant::Without))
        .collect::<Result<_>>()?;
    if seccomp_unconfined(template)? {
        variants.push(Variant::DefaultSeccomp);
    }
    println!("\n## The pod template with one thing taken away ({DROP_RUN} runs)\n");
    let mut unneeded = Vec::new();
    for variant in variants {
        start_tracer(
            template,
            DROP_TRACER,
            host_paths,
            variant,
            &["--duration", DROP_RUN],
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while inspect(DROP_TRACER, "{{.State.Running}}")? == "true" {
            ensure!(
                Instant::now() < deadline,
                "the tracer {} did not end",
                variant.describe()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let code = inspect(DROP_TRACER, "{{.State.ExitCode}}")?;
        let (stdout, stderr) = logs(DROP_TRACER);
        podman_quiet(&["rm", "--force", DROP_TRACER]);
        let saw = workload_in_final_report(&stdout, container_id);
        let error = stderr
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("")
            .chars()
            .take(160)
            .collect::<String>();
        let broke = code != "0" || !saw.found;
        println!(
            "- {}: exit {code}{}; workload: {}{}",
            variant.describe(),
            if error.is_empty() {
                String::new()
            } else {
                format!(" ({error})")
            },
            saw.summary,
            if broke { "" } else { " -- NOTHING BROKE" }
        );
        if !broke {
            unneeded.push(variant.describe());
        }
    }
    ensure!(
        unneeded.is_empty(),
        "the tracer found the leak and its stack {}: does the manifest ask for more than it needs?",
        unneeded.join(", ")
    );
    Ok(())
}

/// What a tracer's final report says of the workload container.
struct Saw {
    /// A leak finding placed in the workload whose stack names LEAK_SYMBOL.
    found: bool,
    summary: String,
}

fn workload_in_final_report(stdout: &str, container_id: &str) -> Saw {
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let Some(seq) = lines
        .iter()
        .rev()
        .find(|v| v["type"] == "report")
        .map(|v| v["seq"].clone())
    else {
        return Saw {
            found: false,
            summary: "no report".to_owned(),
        };
    };
    let of_workload = |v: &&Value| v["seq"] == seq && v["placement"]["id"] == container_id;
    let process = lines
        .iter()
        .filter(of_workload)
        .find(|v| v["type"] == "process");
    let findings: Vec<&Value> = lines
        .iter()
        .filter(of_workload)
        .filter(|v| v["type"] == "finding" && v["resource"] == "fd")
        .collect();
    let named = |f: &&&Value| {
        f["frames"].as_array().into_iter().flatten().any(|fr| {
            fr["symbol"]
                .as_str()
                .is_some_and(|s| s.contains(LEAK_SYMBOL))
        })
    };
    let found = findings
        .iter()
        .filter(named)
        .any(|f| f["verdict"] == "leak");
    let mut summary = match process {
        Some(p) => format!(
            "comm {}, fds {}, preexisting fds {}",
            p["comm"], p["fds"], p["preexisting"]["fds"]
        ),
        None => "no process line".to_owned(),
    };
    match findings.first() {
        None => summary.push_str(", no fd finding"),
        Some(f) => {
            let symbols: Vec<String> = f["frames"]
                .as_array()
                .into_iter()
                .flatten()
                .take(4)
                .map(|fr| fr["symbol"].as_str().unwrap_or("?").to_owned())
                .collect();
            summary.push_str(&format!(
                ", fd finding {} of {} outstanding, stack [{}]",
                f["verdict"],
                f["outstanding"],
                symbols.join(" <- ")
            ));
        }
    }
    Saw { found, summary }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_samples() {
        let text = "# HELP leaktrace_fds fds\n# TYPE leaktrace_fds gauge\n\
            leaktrace_fds{kind=\"socket\",pod=\"a\\\"b\",namespace=\"\"} 12\n\
            leaktrace_events_total 3.5e3\n# EOF\n";
        let s = parse_metrics(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "leaktrace_fds");
        assert_eq!(s[0].labels["pod"], "a\"b");
        assert_eq!(s[0].labels["namespace"], "");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].labels.len(), 0);
        assert_eq!(s[1].value, 3500.0);
        assert!(find_sample(&s, "leaktrace_fds", &[("kind", "socket")]).is_some());
        assert!(find_sample(&s, "leaktrace_fds", &[("kind", "pipe")]).is_none());
        assert!(parse_metrics("x{a=\"1} 2\n").is_err());
    }

    #[test]
    fn reads_quantities() {
        assert_eq!(quantity(&Value::from("256Mi")).unwrap(), 268435456.0);
        assert_eq!(quantity(&Value::from("500m")).unwrap(), 0.5);
        assert_eq!(quantity(&Value::from("1G")).unwrap(), 1e9);
        assert_eq!(quantity(&Value::from(2)).unwrap(), 2.0);
        assert!(quantity(&Value::from("12Xi")).is_err());
    }
}
