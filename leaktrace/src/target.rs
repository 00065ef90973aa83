//! Running the command to trace. It must be traced from its first instruction, so it starts as
//! a gate: leaktrace re-executes itself as `leaktrace __exec-gate FD -- COMMAND...`, puts the
//! gate's pid in the kernel's target map, then writes to FD; only then does the gate exec the
//! command (that exec is traced like any other). A plain fork-and-wait in `pre_exec` cannot
//! work: spawning blocks until the child has exec'd.

use std::{
    ffi::OsString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::process::CommandExt as _,
    },
};

use tokio::process::{Child, Command};

/// argv[1] of the gate.
pub const GATE_ARG: &str = "__exec-gate";

pub struct Spawned {
    pub child: Child,
    pub pid: u32,
    /// Write end of the pipe the gate waits on.
    gate: OwnedFd,
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid int[2].
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The executable the gate will exec for `program`, looked up in `PATH` as `execvp` does:
/// what the goroutine probes attach to before the command runs.
pub fn program_path(program: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    let program = std::path::Path::new(program);
    if program.components().count() > 1 {
        return Some(program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// A file someone may execute (root too needs an x bit).
pub fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn spawn(argv: &[OsString]) -> io::Result<Spawned> {
    if argv.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    let (wait_end, gate) = pipe()?;
    let wait_fd = wait_end.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(GATE_ARG)
        .arg(wait_fd.to_string())
        .arg("--")
        .args(argv);
    // SAFETY: fcntl is async-signal-safe. The gate (only) must inherit the read end.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(wait_fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(wait_end);
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("command exited before it started"))?;
    Ok(Spawned { child, pid, gate })
}

impl Spawned {
    /// Lets the command run.
    pub fn release(&mut self) -> io::Result<()> {
        // SAFETY: writes one byte from a valid buffer to an fd we own.
        let n = unsafe { libc::write(self.gate.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        if n == 1 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Asks the command to stop (SIGTERM), and kills it if it has not after `grace`.
    pub async fn stop(&mut self, grace: std::time::Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: signalling our own child, which we have not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The gate: `args` are what follows GATE_ARG. Waits for the release byte, then becomes the
/// command. Returns only on failure, with the exit status to use (127 like a shell).
pub fn gate_main(args: &[OsString]) -> i32 {
    let fd: Option<RawFd> = args.first().and_then(|a| a.to_str()?.parse().ok());
    let (Some(fd), Some(sep), Some((program, rest))) =
        (fd, args.get(1), args.get(2..).and_then(|c| c.split_first()))
    else {
        eprintln!("leaktrace: {GATE_ARG} is internal: {GATE_ARG} FD -- COMMAND");
        return 2;
    };
    if sep != "--" {
        eprintln!("leaktrace: {GATE_ARG}: expected -- before the command");
        return 2;
    }
    // SAFETY: the fd was handed to us by the parent and nothing else in this process owns it.
    let gate = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut byte = 0u8;
    loop {
        // SAFETY: reads into a valid one-byte buffer.
        match unsafe { libc::read(gate.as_raw_fd(), (&raw mut byte).cast(), 1) } {
            1 => break,
            0 => {
                eprintln!("leaktrace: tracer exited before the command could start");
                return 127;
            }
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => {
                eprintln!(
                    "leaktrace: waiting to start: {}",
                    io::Error::last_os_error()
                );
                return 127;
            }
        }
    }
    drop(gate);
    let err = std::process::Command::new(program).args(rest).exec();
    eprintln!("leaktrace: cannot run {}: {err}", program.to_string_lossy());
    127
}
