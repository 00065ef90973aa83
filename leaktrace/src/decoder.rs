//! Ring-buffer records → typed [`Event`]s. Records are checked before they are trusted: a
//! record of the wrong length, an unknown kind or an impossible field value is an error the
//! runtime counts, never a panic or a silently wrong event.

use std::mem::size_of;

use leaktrace_common as abi;

use crate::{
    event::{Event, FdPair, Goroutine, Path, Record, Sample, What},
    model::{FdKind, StackId},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooShort(usize),
    UnknownKind(u16),
    WrongLength {
        kind: &'static str,
        len: usize,
        want: usize,
    },
    BadField(&'static str, u64),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooShort(len) => write!(f, "record of {len} bytes is shorter than a header"),
            Self::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            Self::WrongLength { kind, len, want } => {
                write!(f, "{kind} record of {len} bytes, expected {want}")
            }
            Self::BadField(name, value) => write!(f, "invalid {name} {value}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Reads a `T` from the front of `bytes` once its length was checked.
fn read<T: Copy>(bytes: &[u8]) -> T {
    debug_assert!(bytes.len() >= size_of::<T>());
    // SAFETY: every ABI type is plain old data valid for any bit pattern, the length was checked
    // by the caller, and read_unaligned copes with the ring buffer's 8-byte alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn exact<T: Copy>(bytes: &[u8], kind: &'static str) -> Result<T, DecodeError> {
    let want = size_of::<T>();
    // The kernel rounds records up to 8 bytes; anything else is a different record.
    if bytes.len() < want || bytes.len() >= want + 8 {
        return Err(DecodeError::WrongLength {
            kind,
            len: bytes.len(),
            want,
        });
    }
    Ok(read(bytes))
}

fn stack(id: i32) -> Option<StackId> {
    u32::try_from(id).ok()
}

fn fd_kind(kind: u8) -> Result<Option<FdKind>, DecodeError> {
    use abi::FdKind as K;
    Ok(Some(
        match abi::FdKind::from_u8(kind).ok_or(DecodeError::BadField("fd kind", kind.into()))? {
            K::File => FdKind::File,
            K::Socket => FdKind::Socket,
            K::Pipe => FdKind::Pipe,
            K::EventFd => FdKind::EventFd,
            K::TimerFd => FdKind::TimerFd,
            K::Epoll => FdKind::Epoll,
            K::SignalFd => FdKind::SignalFd,
            K::Inotify => FdKind::Inotify,
            K::Fanotify => FdKind::Fanotify,
            K::MemFd => FdKind::MemFd,
            K::PidFd => FdKind::PidFd,
            K::Other => FdKind::Other,
            K::Received => FdKind::Received,
            K::IoUring => FdKind::IoUring,
            K::Installed => FdKind::Installed,
            K::Inherit => return Ok(None),
        },
    ))
}

fn fd_what(fd: &abi::FdEvent, path: Option<Path>) -> Result<What, DecodeError> {
    let op = abi::FdOp::from_u8(fd.op).ok_or(DecodeError::BadField("fd op", fd.op.into()))?;
    let kind = fd_kind(fd.kind)?;
    let created = |fds| {
        kind.map(|kind| What::FdOpen {
            fds,
            kind,
            stack: stack(fd.stack_id),
            path: path.clone(),
        })
        .ok_or(DecodeError::BadField("kind of a new fd", fd.kind.into()))
    };
    let non_negative = |v: i32, name| {
        if v < 0 {
            Err(DecodeError::BadField(name, v as u64))
        } else {
            Ok(v)
        }
    };
    Ok(match op {
        abi::FdOp::Open => created(FdPair::One(non_negative(fd.fd, "fd")?))?,
        abi::FdOp::OpenPair => created(FdPair::Two(
            non_negative(fd.fd, "fd")?,
            non_negative(fd.aux, "second fd")?,
        ))?,
        abi::FdOp::Dup => What::FdDup {
            fd: non_negative(fd.fd, "fd")?,
            source: fd.aux,
            stack: stack(fd.stack_id),
        },
        abi::FdOp::Close => What::FdClose { fd: fd.fd },
        // close_range takes unsigned ints; ~0 means "to the end".
        abi::FdOp::CloseRange => What::FdCloseRange {
            first: fd.fd as u32,
            last: fd.aux as u32,
        },
    })
}

/// A stack sample: a head, then `len` bytes of stack, then what was reserved but not copied.
fn sample(header: &abi::EventHeader, bytes: &[u8]) -> Result<Sample, DecodeError> {
    let head = abi::StackSample::HEAD;
    if bytes.len() < head {
        return Err(DecodeError::WrongLength {
            kind: "stack sample",
            len: bytes.len(),
            want: head,
        });
    }
    let len_at = std::mem::offset_of!(abi::StackSample, len);
    let len = read::<u32>(&bytes[len_at..]) as usize;
    if len > abi::STACK_COPY_MAX {
        return Err(DecodeError::BadField("stack sample length", len as u64));
    }
    // The record keeps its reserved size when a shorter copy was all that could be read.
    if bytes.len() < head + len || bytes.len() >= head + abi::STACK_COPY_MAX + 8 {
        return Err(DecodeError::WrongLength {
            kind: "stack sample",
            len: bytes.len(),
            want: head + len,
        });
    }
    let regs_at = std::mem::offset_of!(abi::StackSample, regs);
    Ok(Sample {
        ts_ns: header.ts_ns,
        pid: header.tgid,
        tid: header.tid,
        regs: read(&bytes[regs_at..]),
        stack: bytes[head..head + len].to_vec(),
    })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    if bytes.len() < size_of::<abi::EventHeader>() {
        return Err(DecodeError::TooShort(bytes.len()));
    }
    let header: abi::EventHeader = read(bytes);
    let kind =
        abi::EventKind::from_u16(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let what = match kind {
        abi::EventKind::TaskNew => {
            let e: abi::TaskNewEvent = exact(bytes, "task")?;
            What::TaskNew {
                child_tid: e.child_tid,
                thread: e.clone_flags & abi::CLONE_THREAD != 0,
                stack: stack(e.stack_id),
            }
        }
        abi::EventKind::ThreadExit => {
            let e: abi::ThreadExitEvent = exact(bytes, "thread exit")?;
            What::ThreadExit {
                group_dead: match e.group_dead {
                    x if x == abi::GroupDead::No as u8 => Some(false),
                    x if x == abi::GroupDead::Yes as u8 => Some(true),
                    x if x == abi::GroupDead::Unknown as u8 => None,
                    x => return Err(DecodeError::BadField("group_dead", x.into())),
                },
            }
        }
        abi::EventKind::Exec => {
            let _: abi::ExecEvent = exact(bytes, "exec")?;
            What::Exec
        }
        abi::EventKind::ExitGroup => {
            let _: abi::ExitGroupEvent = exact(bytes, "exit_group")?;
            What::ExitGroup
        }
        abi::EventKind::StackSample => return Ok(Record::Sample(sample(&header, bytes)?)),
        abi::EventKind::Fd => fd_what(&exact::<abi::FdEvent>(bytes, "fd")?, None)?,
        abi::EventKind::FdPath => {
            let e: abi::FdPathEvent = exact(bytes, "fd path")?;
            let len = usize::from(e.path_len);
            if len >= abi::PATH_CAP {
                return Err(DecodeError::BadField("path length", len as u64));
            }
            let path = Path {
                text: String::from_utf8_lossy(&e.path[..len]).into_owned(),
                truncated: e.truncated != 0,
            };
            fd_what(&e.fd, Some(path))?
        }
        abi::EventKind::GoroutineNew => {
            let e: abi::GoroutineNewEvent = exact(bytes, "goroutine")?;
            // Go numbers goroutines from 1; 0 is a g the probe could not read.
            if e.goid == 0 {
                return Err(DecodeError::BadField("goid", 0));
            }
            What::GoroutineNew {
                goroutine: Goroutine {
                    goid: e.goid,
                    parent_goid: e.parent_goid,
                    g: e.g,
                    gopc: e.gopc,
                    startpc: e.startpc,
                },
                stack: stack(e.stack_id),
            }
        }
        abi::EventKind::GoroutineExit => {
            let e: abi::GoroutineExitEvent = exact(bytes, "goroutine exit")?;
            if e.goid == 0 {
                return Err(DecodeError::BadField("goid", 0));
            }
            What::GoroutineExit { goid: e.goid }
        }
    };
    Ok(Record::Event(Event {
        ts_ns: header.ts_ns,
        pid: header.tgid,
        tid: header.tid,
        what,
    }))
}

/// The probe slot a record claims to come from, for per-probe accounting of bad records.
pub fn probe_of(bytes: &[u8]) -> Option<u16> {
    (bytes.len() >= size_of::<abi::EventHeader>()).then(|| read::<abi::EventHeader>(bytes).probe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: T is a plain-old-data ABI record.
        let raw =
            unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) };
        let mut v = raw.to_vec();
        // Ring-buffer records are padded to 8 bytes.
        v.resize(size_of::<T>().next_multiple_of(8), 0);
        v
    }

    fn decode_event(bytes: &[u8]) -> Result<Event, DecodeError> {
        match decode(bytes)? {
            Record::Event(event) => Ok(event),
            Record::Sample(_) => panic!("a stack sample"),
        }
    }

    fn header(kind: abi::EventKind) -> abi::EventHeader {
        abi::EventHeader {
            ts_ns: 42,
            tgid: 100,
            tid: 101,
            kind: kind as u16,
            probe: 7,
            _pad: 0,
        }
    }

    fn fd_event(op: abi::FdOp, kind: abi::FdKind, fd: i32, aux: i32) -> abi::FdEvent {
        abi::FdEvent {
            header: header(abi::EventKind::Fd),
            op: op as u8,
            kind: kind as u8,
            _pad: 0,
            fd,
            aux,
            stack_id: 9,
        }
    }

    #[test]
    fn thread_creation_tells_thread_from_process_by_clone_flags() {
        let mut e = abi::TaskNewEvent {
            header: header(abi::EventKind::TaskNew),
            child_tid: 200,
            stack_id: 3,
            clone_flags: abi::CLONE_THREAD | 0x100,
        };
        let ev = decode_event(&bytes_of(&e)).unwrap();
        assert_eq!((ev.ts_ns, ev.pid, ev.tid), (42, 100, 101));
        assert_eq!(
            ev.what,
            What::TaskNew {
                child_tid: 200,
                thread: true,
                stack: Some(3)
            }
        );
        e.clone_flags = 0x11; // SIGCHLD: fork
        e.stack_id = abi::NO_STACK;
        assert_eq!(
            decode_event(&bytes_of(&e)).unwrap().what,
            What::TaskNew {
                child_tid: 200,
                thread: false,
                stack: None
            }
        );
    }

    #[test]
    fn fd_operations_decode_to_their_events() {
        let open = fd_event(abi::FdOp::Open, abi::FdKind::Socket, 5, -1);
        assert_eq!(
            decode_event(&bytes_of(&open)).unwrap().what,
            What::FdOpen {
                fds: FdPair::One(5),
                kind: FdKind::Socket,
                stack: Some(9),
                path: None
            }
        );
        let pair = fd_event(abi::FdOp::OpenPair, abi::FdKind::Pipe, 5, 6);
        assert!(matches!(
            decode_event(&bytes_of(&pair)).unwrap().what,
            What::FdOpen {
                fds: FdPair::Two(5, 6),
                kind: FdKind::Pipe,
                ..
            }
        ));
        let dup = fd_event(abi::FdOp::Dup, abi::FdKind::Inherit, 7, 3);
        assert_eq!(
            decode_event(&bytes_of(&dup)).unwrap().what,
            What::FdDup {
                fd: 7,
                source: 3,
                stack: Some(9)
            }
        );
        let range = fd_event(abi::FdOp::CloseRange, abi::FdKind::Other, 3, -1);
        assert_eq!(
            decode_event(&bytes_of(&range)).unwrap().what,
            What::FdCloseRange {
                first: 3,
                last: u32::MAX
            }
        );
    }

    #[test]
    fn fds_only_fd_install_sees_decode_to_the_kind_of_where_they_came_from() {
        for (abi_kind, kind) in [
            (abi::FdKind::Received, FdKind::Received),
            (abi::FdKind::IoUring, FdKind::IoUring),
            (abi::FdKind::Installed, FdKind::Installed),
        ] {
            let mut open = fd_event(abi::FdOp::Open, abi_kind, 12, -1);
            open.header.probe = abi::Probe::FD_INSTALL;
            assert_eq!(
                decode_event(&bytes_of(&open)).unwrap().what,
                What::FdOpen {
                    fds: FdPair::One(12),
                    kind,
                    stack: Some(9),
                    path: None
                }
            );
            assert!(kind.is_origin());
        }
        assert_eq!(FdKind::Received.as_str(), "received");
        assert_eq!(FdKind::IoUring.as_str(), "io_uring");
        assert_eq!(FdKind::Installed.as_str(), "installed");
        // /proc never says where an fd came from.
        assert!(FdKind::ALL
            .iter()
            .filter(|k| k.is_origin())
            .all(|k| FdKind::from_link(k.as_str()) != *k));
        assert!(!FdKind::File.is_origin());
    }

    #[test]
    fn open_carries_its_path_and_truncation() {
        let mut e = abi::FdPathEvent {
            fd: fd_event(abi::FdOp::Open, abi::FdKind::File, 4, -1),
            path_len: 9,
            truncated: 1,
            _pad: [0; 5],
            path: [0; abi::PATH_CAP],
        };
        e.fd.header.kind = abi::EventKind::FdPath as u16;
        e.path[..9].copy_from_slice(b"/dev/null");
        let What::FdOpen { path, .. } = decode_event(&bytes_of(&e)).unwrap().what else {
            panic!("not an open");
        };
        assert_eq!(
            path,
            Some(Path {
                text: "/dev/null".into(),
                truncated: true
            })
        );
        e.path_len = abi::PATH_CAP as u16;
        assert_eq!(
            decode_event(&bytes_of(&e)),
            Err(DecodeError::BadField("path length", abi::PATH_CAP as u64))
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        assert_eq!(decode_event(&[0; 4]), Err(DecodeError::TooShort(4)));
        let mut h = header(abi::EventKind::Exec);
        h.kind = 99;
        assert_eq!(
            decode_event(&bytes_of(&h)),
            Err(DecodeError::UnknownKind(99))
        );
        // An fd record cut short.
        let open = fd_event(abi::FdOp::Open, abi::FdKind::File, 4, -1);
        let short = &bytes_of(&open)[..30];
        assert!(matches!(
            decode_event(short),
            Err(DecodeError::WrongLength { kind: "fd", .. })
        ));
        let mut bad_op = open;
        bad_op.op = 77;
        assert_eq!(
            decode_event(&bytes_of(&bad_op)),
            Err(DecodeError::BadField("fd op", 77))
        );
        let mut bad_kind = open;
        bad_kind.kind = 0;
        assert_eq!(
            decode_event(&bytes_of(&bad_kind)),
            Err(DecodeError::BadField("fd kind", 0))
        );
        let inherit_open = fd_event(abi::FdOp::Open, abi::FdKind::Inherit, 4, -1);
        assert!(decode_event(&bytes_of(&inherit_open)).is_err());
        let negative = fd_event(abi::FdOp::Open, abi::FdKind::File, -4, -1);
        assert!(decode_event(&bytes_of(&negative)).is_err());
        let mut exit = abi::ThreadExitEvent {
            header: header(abi::EventKind::ThreadExit),
            group_dead: 5,
            _pad: [0; 7],
        };
        assert!(decode_event(&bytes_of(&exit)).is_err());
        exit.group_dead = abi::GroupDead::Unknown as u8;
        assert_eq!(
            decode_event(&bytes_of(&exit)).unwrap().what,
            What::ThreadExit { group_dead: None }
        );
    }

    fn sample(len: u32) -> Vec<u8> {
        let mut s = Box::new(abi::StackSample {
            header: header(abi::EventKind::StackSample),
            regs: abi::UserRegs {
                ip: 1,
                sp: 0x7000,
                fp: 3,
                lr: 4,
            },
            len,
            _pad: 0,
            stack: [0; abi::STACK_COPY_MAX],
        });
        s.stack[..4].copy_from_slice(b"abcd");
        let mut bytes = bytes_of(&*s);
        bytes.truncate((abi::StackSample::HEAD + len as usize).next_multiple_of(8));
        bytes
    }

    #[test]
    fn stack_samples_carry_registers_and_the_bytes_sent() {
        let Ok(Record::Sample(s)) = decode(&sample(12)) else {
            panic!("not a sample");
        };
        assert_eq!((s.ts_ns, s.pid, s.tid), (42, 100, 101));
        assert_eq!(
            (s.regs.ip, s.regs.sp, s.regs.fp, s.regs.lr),
            (1, 0x7000, 3, 4)
        );
        assert_eq!(&s.stack[..], b"abcd\0\0\0\0\0\0\0\0");
        // The length field must match the record, and stay within the copy's capacity.
        let mut short = sample(64);
        short.truncate(abi::StackSample::HEAD + 32);
        assert!(matches!(
            decode(&short),
            Err(DecodeError::WrongLength {
                kind: "stack sample",
                ..
            })
        ));
        let mut huge = sample(0);
        huge[abi::StackSample::HEAD - 8..abi::StackSample::HEAD - 4]
            .copy_from_slice(&(abi::STACK_COPY_MAX as u32 + 8).to_ne_bytes());
        assert!(decode(&huge).is_err());
        // Reserved for 64 bytes, 16 copied: the tail is not stack.
        let mut partial = sample(64);
        partial[abi::StackSample::HEAD - 8..abi::StackSample::HEAD - 4]
            .copy_from_slice(&16u32.to_ne_bytes());
        let Ok(Record::Sample(s)) = decode(&partial) else {
            panic!("not a sample");
        };
        assert_eq!(s.stack.len(), 16);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        // A cheap deterministic sweep over lengths and kinds: every outcome is Ok or Err.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..400 {
            let mut buf = vec![0u8; len];
            for b in &mut buf {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            if len >= 24 {
                buf[16] = (len % 7) as u8;
                buf[17] = 0;
            }
            let _ = decode(&buf);
        }
    }

    #[test]
    fn goroutine_records_decode_and_an_unread_g_is_an_error() {
        let new = abi::GoroutineNewEvent {
            header: header(abi::EventKind::GoroutineNew),
            goid: 17,
            parent_goid: 1,
            g: 0x00c0_0000_71c0,
            gopc: 0x49_1234,
            startpc: 0x49_2000,
            stack_id: 3,
            _pad: 0,
        };
        let event = decode_event(&bytes_of(&new)).unwrap();
        assert_eq!(
            event.what,
            What::GoroutineNew {
                goroutine: Goroutine {
                    goid: 17,
                    parent_goid: 1,
                    g: 0x00c0_0000_71c0,
                    gopc: 0x49_1234,
                    startpc: 0x49_2000,
                },
                stack: Some(3),
            }
        );
        let exit = abi::GoroutineExitEvent {
            header: header(abi::EventKind::GoroutineExit),
            goid: 17,
        };
        assert_eq!(
            decode_event(&bytes_of(&exit)).unwrap().what,
            What::GoroutineExit { goid: 17 }
        );
        let unread = abi::GoroutineExitEvent { goid: 0, ..exit };
        assert_eq!(
            decode(&bytes_of(&unread)),
            Err(DecodeError::BadField("goid", 0))
        );
        let short = &bytes_of(&new)[..size_of::<abi::GoroutineExitEvent>()];
        assert!(matches!(
            decode(short),
            Err(DecodeError::WrongLength {
                kind: "goroutine",
                ..
            })
        ));
    }

    #[test]
    fn go_field_offsets_survive_the_attach_cookie() {
        let fields = abi::GoFields {
            goid: 152,
            parent_goid: 280,
            gopc: 288,
            startpc: 304,
        };
        assert_eq!(abi::GoFields::from_cookie(fields.cookie()), fields);
        let high = abi::GoFields {
            goid: u16::MAX,
            parent_goid: 1,
            gopc: u16::MAX,
            startpc: u16::MAX,
        };
        assert_eq!(abi::GoFields::from_cookie(high.cookie()), high);
    }
}
