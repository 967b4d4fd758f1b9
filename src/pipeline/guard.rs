//! The guard: what keeps a step from outliving its daemon.
//!
//! [`split`] runs in the child between fork and exec (`pre_exec`). It forks
//! once more: the new child goes on to exec the step, and the process the
//! daemon spawned stays behind as the *guard* — the process-group leader,
//! the pid the runner waits on and signals — and never execs. The guard:
//! - makes itself non-dumpable: it is a copy of the daemon's memory (the
//!   store URL, the config's secrets), and a step of the same user must not
//!   read it through `/proc/$PPID/{environ,mem}`, whatever the daemon did;
//! - stays the daemon's user: a step that runs as another user
//!   (`clusters.NAME.user`) switches in its own process, after the fork,
//!   so it can neither read the guard nor signal it;
//! - closes every file descriptor it inherited, so it holds no pipe, socket
//!   or database file of the daemon's;
//! - asks the kernel for SIGHUP when its parent dies (`PR_SET_PDEATHSIG`),
//!   and checks `getppid()` on every wake-up and at least once a second.
//!   That signal fires when the *thread* that forked exits, while the daemon
//!   may live on; `getppid()` names the process, so only the daemon's own
//!   death — the guard reparented to init or a subreaper — counts. Then the
//!   guard SIGKILLs its whole process group, itself included;
//! - keeps every signal blocked, so SIGTERM sent to the group on cancel or
//!   timeout reaches the step (which gets its grace) but not the guard;
//! - when the step exits, exits the same way: the same code, or the same
//!   signal re-raised (with core dumps off, so a crashing step dumps no copy
//!   of the daemon). What the runner reports ("exit code 2", "killed by
//!   signal 9") is the step's.
//!
//! The step, before it execs, marks every descriptor but its stdio
//! close-on-exec (one the daemon opened without it must not reach the step)
//! and, when it has a user, takes on the user's groups, gid and uid and
//! enters its directory again as that user (the runner entered it as the
//! daemon), so it gets no further than the user could.
//!
//! Between fork and exec only async-signal-safe calls are allowed: no
//! allocation, no locks, no `std` I/O. Everything below is raw libc.

use crate::users::Ids;
use std::ffi::CString;
use std::io;

/// Who the step becomes, and the directory it must be able to enter as
/// that user; prepared before the fork, since nothing may be allocated
/// after it.
pub(super) struct Become {
    pub ids: Ids,
    pub cwd: CString,
}

/// What the kernel sends the guard when the thread that forked it exits.
const PARENT_GONE: libc::c_int = libc::SIGHUP;

/// How long the guard sleeps between checks when nothing wakes it.
const CHECK_EVERY: libc::timespec = libc::timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// Split the just-forked child into guard and step. Returns `Ok` in the
/// step, which then execs, as `user` when given; never returns in the guard.
///
/// # Safety
/// Only to be called between fork and exec (from `pre_exec`), in a child of
/// the process whose pid is `daemon`.
pub(super) unsafe fn split(daemon: libc::pid_t, user: Option<&Become>) -> io::Result<()> {
    // SAFETY: plain syscalls on local, zero-initialised sigsets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut before);
        let step = libc::fork();
        if step != 0 && step != -1 {
            guard(daemon, step);
        }
        let ready = if step == -1 {
            Err(io::Error::last_os_error())
        } else {
            become_step(user)
        };
        libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        ready
    }
}

/// In the step, just before exec: no descriptor but stdio survives the
/// exec, and the step becomes `user`.
unsafe fn become_step(user: Option<&Become>) -> io::Result<()> {
    // SAFETY: async-signal-safe syscalls only; `groups` and `cwd` were
    // allocated before the fork and are only read.
    unsafe {
        close_on_exec_from(3);
        let Some(Become { ids, cwd }) = user else {
            return Ok(());
        };
        // Groups and gid first: once the uid is dropped they cannot change.
        if libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) != 0
            || libc::setgid(ids.gid) != 0
            || libc::setuid(ids.uid) != 0
            || libc::chdir(cwd.as_ptr()) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Mark every descriptor from `first` on close-on-exec.
unsafe fn close_on_exec_from(first: libc::c_int) {
    // SAFETY: changing descriptor flags only; unused numbers are skipped.
    unsafe {
        let flags = libc::CLOSE_RANGE_CLOEXEC as libc::c_uint;
        if libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, flags) == 0 {
            return;
        }
        for fd in first..open_files_limit() {
            let current = libc::fcntl(fd, libc::F_GETFD);
            if current != -1 {
                libc::fcntl(fd, libc::F_SETFD, current | libc::FD_CLOEXEC);
            }
        }
    }
}

/// How many descriptors to look through when the kernel has no
/// `close_range` (before Linux 5.9, or 5.11 for `CLOSE_RANGE_CLOEXEC`).
unsafe fn open_files_limit() -> libc::c_int {
    // SAFETY: getrlimit writes only into the local it is given.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1024
        }
    }
}

/// The guard's whole life: wait for the step, or for the daemon to die.
unsafe fn guard(daemon: libc::pid_t, step: libc::pid_t) -> ! {
    // SAFETY: async-signal-safe syscalls only; every pointer is to a local.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        close_every_fd();
        // `ps` tells it from the daemon whose memory image it shares.
        libc::prctl(libc::PR_SET_NAME, c"deployd-guard".as_ptr(), 0, 0, 0);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            PARENT_GONE as libc::c_ulong,
            0,
            0,
            0,
        );
        let mut wake: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut wake);
        libc::sigaddset(&mut wake, libc::SIGCHLD);
        libc::sigaddset(&mut wake, PARENT_GONE);
        loop {
            // Checked after the prctl, so a daemon that died before it is seen.
            if libc::getppid() != daemon {
                libc::kill(0, libc::SIGKILL);
            }
            let mut status = 0;
            match libc::waitpid(step, &mut status, libc::WNOHANG) {
                0 => {}
                pid if pid == step => exit_like(status),
                _ if *libc::__errno_location() == libc::EINTR => {}
                _ => libc::_exit(127),
            }
            libc::sigtimedwait(&wake, std::ptr::null_mut(), &CHECK_EVERY);
        }
    }
}

/// Close every descriptor, stdio included: the step has its own copies.
unsafe fn close_every_fd() {
    // SAFETY: closing descriptors this process will never use again.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) == 0 {
            return;
        }
        for fd in 0..open_files_limit() {
            libc::close(fd);
        }
    }
}

/// End the guard as the step ended, so its wait status is the step's.
unsafe fn exit_like(status: libc::c_int) -> ! {
    // SAFETY: async-signal-safe syscalls only; pointers are to locals.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let mut only: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut only);
            libc::sigaddset(&mut only, signal);
            libc::kill(libc::getpid(), signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
            libc::_exit(128 + signal);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}
