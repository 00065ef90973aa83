//! tracefs: where it is, and the record layout of a tracepoint on this kernel. Layouts change
//! between kernels (6.18's `sched_process_fork` moved its pids), so offsets are read here at
//! load time instead of being compiled into the eBPF programs.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// A mounted tracefs.
#[derive(Clone, Debug)]
pub struct Tracefs {
    root: PathBuf,
}

/// One field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

impl Tracefs {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Finds the mounted tracefs, mounting it at /sys/kernel/tracing when it is not (a fresh
    /// VM often has it unmounted; aya finds it in the same places).
    pub fn find_or_mount() -> Result<Self, String> {
        Self::find_or_mount_with(is_mounted, mount_tracefs)
    }

    fn find_or_mount_with(
        mounted: impl Fn(&Path) -> bool,
        mount: impl FnOnce(&str) -> io::Result<()>,
    ) -> Result<Self, String> {
        let find = || {
            CANDIDATES
                .iter()
                .map(Path::new)
                .find(|p| mounted(p))
                .map(Self::at)
        };
        if let Some(found) = find() {
            return Ok(found);
        }
        let target = CANDIDATES[0];
        let mounting = mount(target);
        // Looked for again even when the mount failed: a tracer starting at the same moment may
        // have mounted it first, and then this mount fails with EBUSY (seen on a fresh machine
        // whose first two tracers started together).
        if let Some(found) = find() {
            return Ok(found);
        }
        Err(match mounting {
            Ok(()) => format!("mounted tracefs at {target} but it is empty"),
            Err(err) => format!(
                "tracefs is not mounted at {} and mounting it at {target} failed: {err} \
                 (mount it with `mount -t tracefs nodev {target}`)",
                CANDIDATES.join(" or "),
            ),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn event_dir(&self, category: &str, name: &str) -> PathBuf {
        self.root.join("events").join(category).join(name)
    }

    /// Whether this kernel has the tracepoint.
    pub fn has_event(&self, category: &str, name: &str) -> bool {
        self.event_dir(category, name).join("id").exists()
    }

    /// Layout of a tracepoint's record.
    pub fn format(&self, category: &str, name: &str) -> io::Result<Format> {
        fs::read_to_string(self.event_dir(category, name).join("format")).map(|s| Format::parse(&s))
    }
}

fn is_mounted(path: &Path) -> bool {
    path.join("events").is_dir()
}

fn mount_tracefs(target: &str) -> io::Result<()> {
    let source = CString::new("nodev").map_err(io::Error::other)?;
    let fstype = CString::new("tracefs").map_err(io::Error::other)?;
    let target = CString::new(target).map_err(io::Error::other)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The fields of a tracepoint record, from its `format` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Format {
    fields: Vec<(String, Field)>,
}

impl Format {
    /// Parses lines like `\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;`; lines it does not
    /// understand are skipped (the file is the kernel's, but never trusted blindly).
    pub fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|line| {
                let mut decl = None;
                let mut offset = None;
                let mut size = None;
                for part in line.split(';').map(str::trim) {
                    if let Some(d) = part.strip_prefix("field:") {
                        decl = Some(d);
                    } else if let Some(o) = part.strip_prefix("offset:") {
                        offset = o.parse().ok();
                    } else if let Some(s) = part.strip_prefix("size:") {
                        size = s.parse().ok();
                    }
                }
                let name = decl?.rsplit([' ', '*']).next()?;
                // `char comm[16]` → `comm`
                let name = name.split('[').next()?.to_owned();
                Some((
                    name,
                    Field {
                        offset: offset?,
                        size: size?,
                    },
                ))
            })
            .collect();
        Self { fields }
    }

    pub fn field(&self, name: &str) -> Option<Field> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, f)| *f)
    }

    /// The field right after `name` in record order.
    pub fn field_after(&self, name: &str) -> Option<Field> {
        let pos = self.fields.iter().position(|(n, _)| n == name)?;
        self.fields.get(pos + 1).map(|(_, f)| *f)
    }

    /// Offset of `name`, which must be `size` bytes wide.
    pub fn offset_of(&self, name: &str, size: u32) -> Result<u32, String> {
        match self.field(name) {
            Some(f) if f.size == size => Ok(f.offset),
            Some(f) => Err(format!("field {name} is {} bytes, expected {size}", f.size)),
            None => Err(format!("no field {name}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_mounted_tracefs_is_found_without_mounting() {
        let found = Tracefs::find_or_mount_with(
            |p| p == Path::new("/sys/kernel/debug/tracing"),
            |_| panic!("mounted although one was there"),
        );
        assert_eq!(
            found.unwrap().root(),
            Path::new("/sys/kernel/debug/tracing")
        );
    }

    #[test]
    fn a_mount_lost_to_a_concurrent_tracer_finds_its_mount() {
        let mounted = Cell::new(false);
        let found = Tracefs::find_or_mount_with(
            |p| mounted.get() && p == Path::new("/sys/kernel/tracing"),
            |_| {
                // The other tracer's mount lands first; this one is refused.
                mounted.set(true);
                Err(io::Error::from_raw_os_error(libc::EBUSY))
            },
        );
        assert_eq!(found.unwrap().root(), Path::new("/sys/kernel/tracing"));
    }

    #[test]
    fn a_failed_mount_says_how_to_mount_it() {
        let err = Tracefs::find_or_mount_with(
            |_| false,
            |_| Err(io::Error::from_raw_os_error(libc::EPERM)),
        )
        .unwrap_err();
        assert!(
            err.contains("mounting it at /sys/kernel/tracing failed"),
            "{err}"
        );
        assert!(
            err.contains("mount -t tracefs nodev /sys/kernel/tracing"),
            "{err}"
        );
    }

    #[test]
    fn a_mount_that_shows_no_events_is_an_error() {
        let err = Tracefs::find_or_mount_with(|_| false, |_| Ok(())).unwrap_err();
        assert!(err.contains("but it is empty"), "{err}");
    }

    const NEWTASK_6_18: &str = "name: task_newtask
ID: 205
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;
\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:40;\tsize:2;\tsigned:1;

print fmt: \"pid=%d comm=%s clone_flags=%llx\", REC->pid, REC->comm, REC->clone_flags
";

    #[test]
    fn parses_offsets_and_sizes() {
        let f = Format::parse(NEWTASK_6_18);
        assert_eq!(f.field("pid"), Some(Field { offset: 8, size: 4 }));
        assert_eq!(
            f.field("comm"),
            Some(Field {
                offset: 12,
                size: 16
            })
        );
        assert_eq!(f.offset_of("clone_flags", 8), Ok(32));
        assert!(f.offset_of("pid", 8).unwrap_err().contains("4 bytes"));
        assert!(f
            .offset_of("group_dead", 1)
            .unwrap_err()
            .contains("no field"));
        assert_eq!(
            f.field_after("pid"),
            Some(Field {
                offset: 12,
                size: 16
            })
        );
    }

    #[test]
    fn pointer_and_data_loc_fields_keep_their_names() {
        let f = Format::parse(
            "\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
             \tfield:__data_loc char[] name;\toffset:8;\tsize:4;\tsigned:0;\n",
        );
        assert_eq!(
            f.field("filename"),
            Some(Field {
                offset: 24,
                size: 8
            })
        );
        assert_eq!(f.field("name"), Some(Field { offset: 8, size: 4 }));
    }

    #[test]
    fn garbage_yields_no_fields() {
        let f = Format::parse("field:int;\noffset:x;size:4;\n\u{0}\u{1}field:int a;offset:9");
        assert_eq!(f, Format::default());
    }

    #[test]
    fn missing_events_are_reported_absent() {
        let root = std::env::temp_dir().join(format!("leaktrace-tracefs-{}", std::process::id()));
        let dir = root.join("events/syscalls/sys_exit_openat");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("id"), "781\n").unwrap();
        let t = Tracefs::at(&root);
        assert!(t.has_event("syscalls", "sys_exit_openat"));
        assert!(!t.has_event("syscalls", "sys_exit_memfd_secret"));
        assert!(t.format("syscalls", "sys_exit_memfd_secret").is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
