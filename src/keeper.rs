//! `arbor-keeper`: holds one container's main process so that it outlives
//! the agent (live restore).
//!
//! Only a parent receives a child's exit status, and a pipe lives only while
//! some process holds it. So the agent does not start a kept container's
//! program itself: it starts this small program (the shape of
//! containerd-shim, conmon and Nomad's executor), which
//! - creates the output pipes and starts the program in its own process
//!   group (after joining the container's cgroups and network namespace),
//! - keeps a copy of the pipes' read ends, so that while no agent reads them
//!   the program blocks on a full pipe instead of dying of `SIGPIPE`, and
//!   hands them to every agent that connects (`SCM_RIGHTS`),
//! - is a child subreaper, so it reaps the program and everything it leaves,
//! - writes the exit status to a file and sends it to the connected agent,
//! - exits once the status reached an agent and nothing of the container is
//!   left (the agent reads that as "drained").
//!
//! It uses the standard library and libc only (no async runtime, no
//! allocation after start-up beyond a small buffer) to stay small: its
//! private memory is what the benches report.
//!
//! The agent runs the `arbor-keeper` binary installed beside `arbor`, else
//! `arbor` itself with `__keeper` as its first argument (same code, more
//! memory). Usage (not meant for people):
//!
//! ```text
//! arbor-keeper SOCKET EXIT_FILE [--join CGROUP_PROCS]... [--netns PATH] [--orphan-timeout-ms MS] [--pid-file PATH]
//! ```
//!
//! With `--pid-file` (the OCI runtime), the program only sets the container
//! up: it is `runc create`, which leaves the container's init waiting for
//! `runc start` and writes its pid to PATH. Once it exited 0, the keeper
//! (a subreaper, so the init's parent once runc is gone) keeps that init as
//! it keeps a program; if it failed, the keeper says `failed RAW_STATUS`
//! and exits.
//!
//! With `--orphan-timeout-ms`, a program left without an agent that long
//! is stopped (`SIGTERM` to its group, `SIGKILL` to its group and cgroup 10 s
//! later) and the keeper exits once it is gone, its status in the exit file
//! for an agent that comes later.
//!
//! File descriptor 0 is the first agent's connection (one end of a socket
//! pair). The agent first sends what to run: a little-endian `u64` length,
//! then the program path, the argument count, the arguments and the
//! environment, each NUL-terminated; so the keeper's own command line and
//! environment stay its own (`ps` and `/proc/PID/environ` show the
//! container's only on the program). Messages to the agent are lines: `pid
//! N` (with the two read ends attached), `exit RAW_WAIT_STATUS`, or `error
//! ERRNO STAGE` when the program could not be started.

use std::{
    ffi::{CString, OsString},
    os::unix::ffi::{OsStrExt, OsStringExt},
    process::ExitCode,
    time::{Duration, Instant},
};

/// The first argument that makes `arbor` run as a keeper.
pub const ARG: &str = "__keeper";

struct Args {
    socket: CString,
    exit_file: OsString,
    joins: Vec<CString>,
    netns: Option<CString>,
    /// Stop the program after this long without an agent.
    orphan_timeout: Option<Duration>,
    /// The program only sets the container up (`runc create`): once it
    /// exited 0, the container is the process whose pid it wrote here.
    pid_file: Option<CString>,
    /// The soft open files limit to take (the agent raised its own; the
    /// program gets the one the agent had).
    nofile: Option<u64>,
}

/// What to run, as the agent sends it.
struct Launch {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Option<Args> {
    let cstr = |s: OsString| CString::new(s.into_vec()).ok();
    let socket = cstr(args.next()?)?;
    let exit_file = args.next()?;
    let mut joins = Vec::new();
    let mut netns = None;
    let mut orphan_timeout = None;
    let mut pid_file = None;
    let mut nofile = None;
    while let Some(arg) = args.next() {
        match arg.as_bytes() {
            b"--join" => joins.push(cstr(args.next()?)?),
            b"--pid-file" => pid_file = Some(cstr(args.next()?)?),
            b"--netns" => netns = Some(cstr(args.next()?)?),
            b"--nofile" => nofile = Some(args.next()?.to_str()?.parse().ok()?),
            b"--orphan-timeout-ms" => {
                let ms: u64 = args.next()?.to_str()?.parse().ok()?;
                orphan_timeout = Some(Duration::from_millis(ms));
            }
            _ => return None,
        }
    }
    Some(Args {
        socket,
        exit_file,
        joins,
        netns,
        orphan_timeout,
        pid_file,
        nofile,
    })
}

/// The largest launch message taken (argv and environment).
const MAX_LAUNCH: u64 = 64 << 20;

/// Reads what to run from the first agent's connection.
fn read_launch() -> Result<Launch, (i32, &'static str)> {
    let read_exact = |buf: &mut [u8]| -> Result<(), (i32, &'static str)> {
        let mut off = 0;
        while off < buf.len() {
            // SAFETY: reading into a buffer we own.
            let n =
                unsafe { libc::read(FIRST_AGENT, buf[off..].as_mut_ptr().cast(), buf.len() - off) };
            if n == 0 {
                return Err((libc::EPIPE, "read launch"));
            }
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return Err((errno(), "read launch"));
            }
            off += n as usize;
        }
        Ok(())
    };
    let mut len = [0u8; 8];
    read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_LAUNCH {
        return Err((libc::E2BIG, "read launch"));
    }
    let mut payload = vec![0u8; len as usize];
    read_exact(&mut payload)?;
    let bad = (libc::EINVAL, "read launch");
    let mut parts = payload
        .split(|b| *b == 0)
        .map(|p| CString::new(p).map_err(|_| bad));
    let program = parts.next().ok_or(bad)??;
    let argc: usize = parts
        .next()
        .ok_or(bad)??
        .to_str()
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or(bad)?;
    let argv: Vec<CString> = parts.by_ref().take(argc).collect::<Result<_, _>>()?;
    if argv.len() != argc || argc == 0 {
        return Err(bad);
    }
    // The payload ends with a NUL: the last split part is empty.
    let env: Vec<CString> = parts
        .filter(|p| p.as_ref().map_or(true, |c| !c.as_bytes().is_empty()))
        .collect::<Result<_, _>>()?;
    Ok(Launch { program, argv, env })
}

/// The launch message for `program` with `argv` and `env` (the agent's
/// side of [`read_launch`]).
pub fn launch_message<'a>(
    program: &[u8],
    argv: impl ExactSizeIterator<Item = &'a [u8]>,
    env: impl Iterator<Item = Vec<u8>>,
) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut push = |b: &[u8]| {
        payload.extend(b.iter().copied().filter(|c| *c != 0));
        payload.push(0);
    };
    push(program);
    push(argv.len().to_string().as_bytes());
    for a in argv {
        push(a);
    }
    for e in env {
        push(&e);
    }
    let mut msg = (payload.len() as u64).to_le_bytes().to_vec();
    msg.extend(payload);
    msg
}

/// How long an orphaned program gets between `SIGTERM` and `SIGKILL`.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How often a keeper whose program ended checks that its socket (its
/// state dir) still exists while it waits for an agent.
const LINGER_CHECK: Duration = Duration::from_secs(10);

/// The agent's end, as given on fd 0.
const FIRST_AGENT: i32 = 0;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn send(fd: i32, text: &[u8]) -> bool {
    let mut off = 0;
    while off < text.len() {
        // SAFETY: a plain send(2) on a buffer we own.
        let n = unsafe {
            libc::send(
                fd,
                text[off..].as_ptr().cast(),
                text.len() - off,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        off += n as usize;
    }
    true
}

/// Sends `text` with `fds` attached.
fn send_fds(fd: i32, text: &[u8], fds: &[i32; 2]) -> bool {
    // SAFETY: the control buffer is sized by CMSG_SPACE for two fds and
    // aligned (u64 array); every pointer refers to live local data.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: text.as_ptr() as *mut _,
            iov_len: text.len(),
        };
        let space = libc::CMSG_SPACE(std::mem::size_of::<[i32; 2]>() as u32) as usize;
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<[i32; 2]>() as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), 2);
        loop {
            let n = libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                // A short first write still carried the fds; finish the line.
                return n as usize == text.len() || send(fd, &text[n as usize..]);
            }
            if errno() != libc::EINTR {
                return false;
            }
        }
    }
}

fn pipe() -> Result<[i32; 2], i32> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0 {
        Ok(fds)
    } else {
        Err(errno())
    }
}

fn open(path: &CString, flags: i32) -> Result<i32, i32> {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd >= 0 { Ok(fd) } else { Err(errno()) }
}

/// Binds and listens on `path` (mode 0600), replacing a stale file.
fn listen(path: &CString) -> Result<i32, i32> {
    let bytes = path.as_bytes();
    // SAFETY: sockaddr_un is plain data; the path is copied within bounds.
    unsafe {
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        if bytes.len() >= addr.sun_path.len() {
            return Err(libc::ENAMETOOLONG);
        }
        addr.sun_family = libc::AF_UNIX as _;
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as _;
        }
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(errno());
        }
        libc::unlink(path.as_ptr());
        let old = libc::umask(0o077);
        let bound = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as _,
        );
        libc::umask(old);
        if bound != 0 || libc::listen(fd, 8) != 0 {
            let e = errno();
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

/// Writes the raw exit status to `path` atomically (a temporary file
/// renamed over it), for an agent that connects after this keeper is gone.
fn write_exit(path: &OsString, status: i32) {
    let mut tmp = path.clone();
    tmp.push(".tmp");
    let written = {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(format!("{status}\n").as_bytes()))
    };
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Starts the program; returns its pid, or the errno and the stage that
/// failed.
fn start(
    args: &Args,
    launch: &Launch,
    out: [i32; 2],
    err: [i32; 2],
) -> Result<i32, (i32, &'static str)> {
    let null = open(&CString::new("/dev/null").unwrap_or_default(), libc::O_RDWR)
        .map_err(|e| (e, "open /dev/null"))?;
    let joins: Vec<i32> = args
        .joins
        .iter()
        .map(|p| open(p, libc::O_WRONLY))
        .collect::<Result<_, _>>()
        .map_err(|e| (e, "open cgroup"))?;
    let netns = match &args.netns {
        Some(p) => Some(open(p, libc::O_RDONLY).map_err(|e| (e, "open netns"))?),
        None => None,
    };
    let report = pipe().map_err(|e| (e, "pipe"))?;
    let mut argv: Vec<*const libc::c_char> = launch.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = launch.env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: fork in a single-threaded process; the child only makes
    // system calls on values prepared above, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err((errno(), "fork"));
    }
    if pid == 0 {
        // SAFETY: the child: system calls only, then exec or _exit.
        unsafe {
            let fail = |stage: u8| -> ! {
                let e = errno().to_ne_bytes();
                let msg = [e[0], e[1], e[2], e[3], stage];
                libc::write(report[1], msg.as_ptr().cast(), msg.len());
                libc::_exit(127)
            };
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            for sig in [libc::SIGPIPE, libc::SIGHUP, libc::SIGINT] {
                libc::signal(sig, libc::SIG_DFL);
            }
            if libc::setpgid(0, 0) != 0 {
                fail(0);
            }
            for fd in &joins {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    fail(1);
                }
            }
            if let Some(fd) = netns
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                fail(2);
            }
            if libc::dup2(null, 0) < 0 || libc::dup2(out[1], 1) < 0 || libc::dup2(err[1], 2) < 0 {
                fail(3);
            }
            libc::execve(launch.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
            fail(4)
        }
    }
    // SAFETY: closing fds this process owns.
    unsafe {
        libc::close(report[1]);
        libc::close(null);
        for fd in joins.iter().chain(netns.iter()) {
            libc::close(*fd);
        }
    }
    let mut msg = [0u8; 5];
    let n = loop {
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(report[0], msg.as_mut_ptr().cast(), msg.len()) };
        if n >= 0 || errno() != libc::EINTR {
            break n;
        }
    };
    // SAFETY: closing our end.
    unsafe { libc::close(report[0]) };
    if n == msg.len() as isize {
        let mut status = 0;
        // SAFETY: reaping the child that failed to exec.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let stage = ["setpgid", "join cgroup", "setns", "dup2", "exec"];
        let e = i32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]);
        return Err((e, stage.get(msg[4] as usize).copied().unwrap_or("start")));
    }
    Ok(pid)
}

/// Waits for the set-up program `pid` (`runc create`) and reads the pid of
/// the process it left in `pid_file`; else the message for the agent.
fn set_up(pid: i32, pid_file: &CString) -> Result<i32, String> {
    let mut raw = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut raw, 0) };
        if r == pid {
            break;
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(format!("error {} wait set-up\n", errno()));
        }
    }
    if !(libc::WIFEXITED(raw) && libc::WEXITSTATUS(raw) == 0) {
        return Err(format!("failed {raw}\n"));
    }
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(pid_file.as_bytes()));
    match std::fs::read_to_string(path) {
        Ok(text) => match text.trim().parse::<i32>() {
            Ok(init) if init > 0 => Ok(init),
            _ => Err(format!("error {} read pid file\n", libc::EINVAL)),
        },
        Err(e) => Err(format!(
            "error {} read pid file\n",
            e.raw_os_error().unwrap_or(libc::EIO)
        )),
    }
}

/// Runs the keeper with `args` (without the program name); never returns
/// before the container is gone.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let Some(args) = parse(args) else {
        send(FIRST_AGENT, b"error 22 usage\n");
        eprintln!(
            "usage: arbor-keeper SOCKET EXIT_FILE [--join CGROUP_PROCS]... [--netns PATH] [--orphan-timeout-ms MS] [--pid-file PATH] [--nofile SOFT_LIMIT] (run by the arbor agent, which sends what to run on fd 0)"
        );
        return ExitCode::from(2);
    };
    match keep(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, stage)) => {
            send(FIRST_AGENT, format!("error {e} {stage}\n").as_bytes());
            ExitCode::FAILURE
        }
    }
}

fn keep(args: &Args) -> Result<(), (i32, &'static str)> {
    // SAFETY: process-wide settings of this single-threaded program.
    let sigfd = unsafe {
        // Its own session, taken here rather than between the agent's
        // fork and exec: the agent then spawns keepers with posix_spawn,
        // whose cost does not grow with the agent's memory. No signal
        // meant for the agent's group or terminal reaches the keeper.
        libc::setsid();
        if let Some(soft) = args.nofile {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && soft < limit.rlim_cur {
                limit.rlim_cur = soft;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        for sig in [libc::SIGPIPE, libc::SIGHUP, libc::SIGINT] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut chld: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
        libc::signalfd(-1, &chld, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
    };
    if sigfd < 0 {
        return Err((errno(), "signalfd"));
    }
    let launch = read_launch()?;
    let listener = listen(&args.socket).map_err(|e| (e, "listen"))?;
    let out = pipe().map_err(|e| (e, "pipe"))?;
    let err = pipe().map_err(|e| (e, "pipe"))?;
    let child = match start(args, &launch, out, err) {
        Ok(pid) => pid,
        Err(e) => {
            // SAFETY: a NUL-terminated path.
            unsafe { libc::unlink(args.socket.as_ptr()) };
            return Err(e);
        }
    };
    drop(launch);
    // SAFETY: the write ends belong to the program now.
    unsafe {
        libc::close(out[1]);
        libc::close(err[1]);
    }
    let child = match &args.pid_file {
        None => child,
        Some(path) => match set_up(child, path) {
            Ok(init) => init,
            Err(message) => {
                // SAFETY: a NUL-terminated path.
                unsafe { libc::unlink(args.socket.as_ptr()) };
                send(FIRST_AGENT, message.as_bytes());
                return Ok(());
            }
        },
    };
    let readers = [out[0], err[0]];
    let hello = format!("pid {child}\n");
    let mut agent = Some(FIRST_AGENT).filter(|fd| send_fds(*fd, hello.as_bytes(), &readers));
    let mut status: Option<i32> = None;
    let mut delivered = false;
    let mut children_left = true;
    let mut buf = [0u8; 256];
    // Orphan timeout: since when no agent is connected, and the stop.
    let mut alone_since = agent.is_none().then(Instant::now);
    let mut stopping: Option<Instant> = None;
    let cgroup_kill = args.joins.first().and_then(|p| {
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(p.as_bytes()));
        CString::new(p.with_file_name("cgroup.kill").into_os_string().into_vec()).ok()
    });
    loop {
        if status.is_some() && (delivered || stopping.is_some()) && !children_left {
            // SAFETY: a NUL-terminated path.
            unsafe { libc::unlink(args.socket.as_ptr()) };
            return Ok(());
        }
        let mut fds = [
            libc::pollfd {
                fd: sigfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: listener,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: agent.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let mut timeout = -1;
        if let Some(limit) = args.orphan_timeout
            && status.is_none()
        {
            let now = Instant::now();
            match (stopping, alone_since) {
                (None, Some(since)) if now >= since + limit => {
                    // SAFETY: signalling the program and its group.
                    unsafe {
                        libc::kill(-child, libc::SIGTERM);
                        libc::kill(-child, libc::SIGCONT);
                        libc::kill(child, libc::SIGTERM);
                    }
                    stopping = Some(now);
                }
                (Some(at), _) if now >= at + STOP_GRACE => {
                    // SAFETY: signalling the program and its group; a
                    // NUL-terminated path.
                    unsafe {
                        libc::kill(-child, libc::SIGKILL);
                        libc::kill(child, libc::SIGKILL);
                        if let Some(path) = &cgroup_kill {
                            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                            if fd >= 0 {
                                libc::write(fd, b"1".as_ptr().cast(), 1);
                                libc::close(fd);
                            }
                        }
                    }
                }
                _ => {}
            }
            let next = match (stopping, alone_since) {
                (Some(at), _) => Some(at + STOP_GRACE),
                (None, Some(since)) => Some(since + limit),
                (None, None) => None,
            };
            if let Some(next) = next {
                let left = next.saturating_duration_since(Instant::now());
                timeout = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            }
        }
        // Ended, its status not yet taken: an agent may still come, unless
        // its state dir is gone (checked every LINGER_CHECK).
        let lingering = status.is_some() && agent.is_none() && !delivered;
        if lingering {
            // SAFETY: a NUL-terminated path.
            if unsafe { libc::access(args.socket.as_ptr(), libc::F_OK) } != 0 {
                return Ok(());
            }
            let check = LINGER_CHECK.as_millis() as i32;
            timeout = if timeout < 0 {
                check
            } else {
                timeout.min(check)
            };
        }
        // SAFETY: polling local pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) } < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err((errno(), "poll"));
        }
        if fds[0].revents != 0 {
            // SAFETY: draining the signalfd into a local buffer.
            while unsafe { libc::read(sigfd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
            loop {
                let mut raw = 0;
                // SAFETY: reaping our children.
                let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
                if pid == child {
                    write_exit(&args.exit_file, raw);
                    status = Some(raw);
                    if let Some(fd) = agent {
                        delivered = send(fd, format!("exit {raw}\n").as_bytes());
                    }
                } else if pid == 0 {
                    break;
                } else if pid < 0 {
                    if errno() == libc::ECHILD {
                        children_left = false;
                    }
                    break;
                }
            }
        }
        // The connection polled first: `agent` may change on an accept.
        if let Some(fd) = agent
            && fds[2].revents != 0
        {
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 || (n < 0 && errno() != libc::EINTR && errno() != libc::EAGAIN) {
                // SAFETY: closing the connection of an agent that left.
                unsafe { libc::close(fd) };
                agent = None;
                alone_since = Some(Instant::now());
            }
        }
        if fds[1].revents != 0 {
            // SAFETY: accepting a connection on our listener.
            let fd = unsafe {
                libc::accept4(
                    listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // A new agent replaces the one before (which is gone).
                if let Some(old) = agent.take() {
                    // SAFETY: closing our end of the old connection.
                    unsafe { libc::close(old) };
                }
                if send_fds(fd, hello.as_bytes(), &readers) {
                    agent = Some(fd);
                    alone_since = None;
                    if let Some(raw) = status {
                        delivered = send(fd, format!("exit {raw}\n").as_bytes());
                    }
                } else {
                    // SAFETY: closing a connection that failed.
                    unsafe { libc::close(fd) };
                }
            }
        }
    }
}
