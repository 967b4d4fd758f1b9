//! The guard: what keeps a step from outliving its daemon.
//!
//! [`split`] runs in the child between fork and exec (`pre_exec`). It forks
//! once more: the new child goes on to exec the step, and the process the
//! daemon spawned stays behind as the *guard* — the process-group leader,
//! the pid the runner waits on and signals — and never execs. The guard:
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
//! Between fork and exec only async-signal-safe calls are allowed: no
//! allocation, no locks, no `std` I/O. Everything below is raw libc.

use std::io;

/// What the kernel sends the guard when the thread that forked it exits.
const PARENT_GONE: libc::c_int = libc::SIGHUP;

/// How long the guard sleeps between checks when nothing wakes it.
const CHECK_EVERY: libc::timespec = libc::timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// Split the just-forked child into guard and step. Returns `Ok` in the
/// step, which then execs; never returns in the guard.
///
/// # Safety
/// Only to be called between fork and exec (from `pre_exec`), in a child of
/// the process whose pid is `daemon`.
pub(super) unsafe fn split(daemon: libc::pid_t) -> io::Result<()> {
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
        let forked = if step == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
        libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        forked
    }
}

/// The guard's whole life: wait for the step, or for the daemon to die.
unsafe fn guard(daemon: libc::pid_t, step: libc::pid_t) -> ! {
    // SAFETY: async-signal-safe syscalls only; every pointer is to a local.
    unsafe {
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
        let mut limit: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as libc::c_int
        } else {
            1024
        };
        for fd in 0..max {
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
