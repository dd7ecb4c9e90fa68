/*
 * jobgroup-shim: the tiny per-node supervisor of jobgroup's local backend.
 *
 * usage: jobgroup-shim -s STATUS_FILE -o LOG_FILE [-g GRACE_SECONDS] [-C DIR]
 *                      [-G CGROUP_DIR] [-m UMASK] [-L MAX_BYTES] [-T]
 *                      -- PROGRAM [ARGS...]
 *
 * One shim runs per node phase. It owns the node's process tree and records
 * how the node ended in a file, so the controller may be SIGKILLed and
 * restarted at any moment and still learn every outcome (DESIGN.md,
 * principle 3). It is C, not Python, so that a node costs well under 1 MB.
 *
 * What it does:
 *   - becomes a child subreaper, so descendants abandoned by their parents
 *     (double forks, `setsid cmd &`) re-parent to the shim, not to init;
 *   - forks PROGRAM in a new session (session id = process group id = child
 *     pid), stdin from /dev/null, stdout and stderr appended to LOG_FILE
 *     through one shared descriptor (so lines interleave in order), cwd DIR;
 *   - right after the fork writes STATUS_FILE.pid atomically:
 *         "CHILDPID SHIM_START_TIME\n"
 *     SHIM_START_TIME is field 22 of /proc/<shim>/stat (clock ticks since
 *     boot), so a reader can tell a live shim from a reused pid;
 *   - before the fork reserves the space of STATUS_FILE (STATUS_FILE.rsv,
 *     written and fsync'ed), so recording the outcome later needs no new
 *     disk space: on a full disk the node either does not start (exit 126,
 *     "no space left") or its outcome is recorded, never lost;
 *   - when the child ends writes STATUS_FILE atomically (the reserved file
 *     rewritten in place, then renamed), one line of JSON:
 *         {"exit_code": N, "pid": P}
 *         {"signal": N, "core": false, "pid": P}
 *     with `"stopped": true` added when a stop had been requested before the
 *     child ended; then SIGTERMs every descendant still alive, SIGKILLs them
 *     after the grace period, waits until it has no child left, and exits
 *     with the child's exit code (or 128 + signal).
 *
 * With -G CGROUP_DIR (a cgroup v2 directory; created if missing), the child
 * is started inside that cgroup (clone3 with CLONE_INTO_CGROUP, Linux 5.7+),
 * and the node's processes are found by reading
 * CGROUP_DIR/cgroup.procs instead of walking all of /proc: stopping a node
 * then costs the same whether 10 or 10,000 processes run on the machine, and
 * no process of the node can leave the set (setsid, double forks and
 * re-parenting do not change a cgroup). The shim itself stays outside (when
 * the cgroup has a memory limit, the OOM killer must never take the
 * supervisor) and leaves the directory in place: the controller reads its
 * OOM count and removes it. If the child cannot be started there, a note goes
 * to the log, the child is forked as usual and the /proc walk is used.
 *
 * Signals to the shim:
 *   SIGTERM, SIGINT, SIGHUP  stop request: SIGTERM to every descendant,
 *                            SIGKILL after GRACE_SECONDS (default 10).
 *   SIGUSR1                  kill everything now (SIGKILL).
 *
 * Exit codes of the shim itself:
 *   0-255 / 128+N  the child's exit code, or 128 + the signal that killed it
 *                  (the authoritative record is STATUS_FILE);
 *   125            usage error (bad arguments), nothing started;
 *   126            start-up failure (cannot open the log or the status
 *                  directory, reserve the status file, fork or pid-file
 *                  failure); the reason is on
 *                  stderr, no status file is written.
 *   A program that itself exits 125/126 is told apart by STATUS_FILE existing.
 * Exit codes recorded for the child when it could not run PROGRAM:
 *   127            exec failed (message in LOG_FILE);
 *   1              chdir(DIR) failed (message in LOG_FILE).
 *
 * If the shim is SIGKILLed, PR_SET_PDEATHSIG kills the direct child. Other
 * descendants survive that, and are the controller's job: they are the
 * processes whose session id (field 6 of /proc/PID/stat) is CHILDPID from
 * STATUS_FILE.pid, unless they called setsid themselves.
 *
 * If STATUS_FILE cannot be written at the end all the same (the file system
 * was made read-only), a note goes to LOG_FILE if it can, and the shim's own
 * exit code is then the only record: the controller that spawned the shim
 * reads it with waitpid.
 *
 * -m UMASK (octal) is the file-creation mask PROGRAM runs with; the shim's
 * own files are created with the mask it inherited (the controller's 077).
 *
 * -L MAX_BYTES (at least 65536) caps LOG_FILE. Without it (and without -T)
 * PROGRAM writes LOG_FILE itself (no copy anywhere). With it (or -T),
 * PROGRAM's stdout and stderr are one pipe, and a copier process (forked before PROGRAM, a child of the
 * shim outside the node's session and cgroup, never signalled by a stop)
 * appends what it reads (blocks of at most 64 KiB) to LOG_FILE. Once LOG_FILE
 * is within min(64 KiB, MAX_BYTES / 2) of MAX_BYTES, it ends at the next line
 * end that fits; LOG_FILE is then renamed LOG_FILE.1 (replacing it) and a new
 * LOG_FILE continues. LOG_FILE never exceeds MAX_BYTES, LOG_FILE.1 holds the
 * output just before it, and a line is split between them only when no line
 * end comes in that last stretch (a line that long is cut at MAX_BYTES). The
 * copier ends when every writer has closed the pipe (PROGRAM and all its
 * descendants are gone), and the shim exits only after it, so the whole
 * output is in the file(s) when the shim is seen to end. If the shim is
 * SIGKILLed the copier still drains the pipe, then exits. A write error
 * (full disk) drops that output rather than block the node.
 *
 * -T records when the output came: the copier (started as for -L, with or
 * without a cap) appends to LOG_FILE.times, after a 24-byte header
 * ("JGTIMES1", then LOG_FILE's st_dev and st_ino, little-endian 64-bit), one
 * 16-byte record (LOG_FILE's size, the CLOCK_REALTIME in ns when the copier
 * had received those bytes; little-endian signed 64-bit each) at most every
 * TIMES_EVERY_NS while output comes, and one when it pauses or ends: every
 * byte up to SIZE had arrived by TIME, every byte after it arrived later. The
 * log itself is unchanged (no prefix). A rotation (-L) renames
 * LOG_FILE.times to LOG_FILE.1.times with its file and starts a new one; a
 * reader matches an index to its file by the header, not by the name. A
 * header naming another file (a log made again) starts the index afresh.
 *
 * A stale STATUS_FILE (and STATUS_FILE.pid) left by an earlier run is removed
 * at start-up, so a present STATUS_FILE always describes this run.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE shim.c (it includes ../die.h)
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sched.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 125
#define EXIT_STARTUP 126
#define EXIT_EXEC 127
#define EXIT_CHDIR 1

/* While killing, re-walk /proc this often: processes may fork while dying. */
#define KILL_REPEAT_NS 200000000L

static const char *prog = "jobgroup-shim";
#include "../die.h" /* vwarn, die(code, ...): need prog; the Slurm agent shares them */

/* Start-up state, filled by main() before the fork. */
static pid_t shim_pid;
static int dir_fd = -1;   /* directory holding STATUS_FILE (for fsync/rename) */
static int log_fd = -1;   /* kept open to report late failures */
static char *status_name, *status_rsv, *pid_name, *pid_tmp;
static int rsv_fd = -1;   /* STATUS_FILE.rsv: the status file's reserved space */
static int child_umask = -1; /* -m: PROGRAM's umask (-1: inherit ours) */
static const char *log_file;  /* LOG_FILE */
static char *log_rotated;     /* LOG_FILE.1 (-L) */
static long long log_max;     /* -L: LOG_FILE's cap in bytes; 0: none */
static int out_fd = -1;       /* PROGRAM's stdout/stderr: log_fd, or the copier's pipe */
static pid_t copier_pid = -1; /* -L/-T: the process copying out_fd into LOG_FILE */
static int log_times;         /* -T: record LOG_FILE.times */
static char *times_file, *times_rotated; /* LOG_FILE.times, LOG_FILE.1.times (-T) */

/* -T: a record at most this often while output keeps coming (and one when it pauses). */
#define TIMES_EVERY_NS 10000000L

/* Room for the longest status line, reserved before the node starts. */
#define STATUS_RESERVE 512
static char *cg_procs;    /* CGROUP_DIR/cgroup.procs when the child was moved there */

/* ---- small helpers ---------------------------------------------------- */

static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vwarn(fmt, ap);
    va_end(ap);
    fprintf(stderr, "usage: %s -s STATUS_FILE -o LOG_FILE [-g GRACE_SECONDS]"
                    " [-C DIR] [-G CGROUP_DIR] [-m UMASK] [-L MAX_BYTES] [-T]"
                    " -- PROGRAM [ARGS...]\n", prog);
    exit(EXIT_USAGE);
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Best-effort note in the node's log: after start-up, stderr is /dev/null. */
static void log_note(const char *fmt, ...)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s: ", prog);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < sizeof buf)
        vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strnlen(buf, sizeof buf - 2);
    buf[len++] = '\n';
    if (log_max > 0 || log_times) { /* rotated away, or copied: go through its name */
        int fd = open(log_file, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd >= 0) {
            (void)write_all(fd, buf, len);
            close(fd);
            return;
        }
    }
    if (log_fd >= 0)
        (void)write_all(log_fd, buf, len);
}

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (!s)
        die(EXIT_STARTUP, "out of memory");
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    /* CLOCK_MONOTONIC cannot fail with a valid clock id and pointer. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Write `data` to dir/name atomically and durably: tmp file, fsync, rename,
 * fsync the directory. A reader sees the old file, no file, or the whole new
 * one, even across a power cut. */
static int write_atomic(const char *name, const char *tmp, const char *data)
{
    int fd;
    do
        fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -1;
    if (write_all(fd, data, strlen(data)) < 0 || fsync(fd) < 0) {
        int saved = errno;
        close(fd);
        unlinkat(dir_fd, tmp, 0);
        errno = saved;
        return -1;
    }
    if (close(fd) < 0 && errno != EINTR)
        return -1;
    if (renameat(dir_fd, tmp, dir_fd, name) < 0)
        return -1;
    return fsync(dir_fd);
}

/* Reserve STATUS_FILE's space before the node starts: a file of
 * STATUS_RESERVE bytes, written (not just sized: a sparse file would need its
 * blocks later) and fsync'ed. */
static int reserve_status(void)
{
    char pad[STATUS_RESERVE];
    memset(pad, ' ', sizeof pad);
    pad[sizeof pad - 1] = '\n';
    do
        rsv_fd = openat(dir_fd, status_rsv, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    while (rsv_fd < 0 && errno == EINTR);
    if (rsv_fd < 0)
        return -1;
    if (write_all(rsv_fd, pad, sizeof pad) < 0 || fsync(rsv_fd) < 0) {
        int saved = errno;
        close(rsv_fd);
        rsv_fd = -1;
        unlinkat(dir_fd, status_rsv, 0);
        errno = saved;
        return -1;
    }
    return 0;
}

/* Record the outcome: rewrite the reserved file in place (its blocks are
 * already allocated, so a full disk cannot refuse it), then rename it to
 * STATUS_FILE. Readers see no file or the whole record. */
static int write_status(const char *data)
{
    size_t len = strlen(data);
    if (rsv_fd < 0 || len > STATUS_RESERVE) {
        errno = EINVAL;
        return -1;
    }
    ssize_t n;
    do
        n = pwrite(rsv_fd, data, len, 0);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)len) {
        if (n >= 0)
            errno = EIO;
        return -1;
    }
    (void)ftruncate(rsv_fd, (off_t)len); /* frees space, never needs any */
    if (fsync(rsv_fd) < 0)
        return -1;
    if (renameat(dir_fd, status_rsv, dir_fd, status_name) < 0)
        return -1;
    return fsync(dir_fd);
}

/* Field 22 (starttime) of /proc/self/stat. The command name (field 2) may
 * hold spaces and parentheses, so parse from the last ')'. */
static unsigned long long self_start_time(void)
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(EXIT_STARTUP, "cannot open /proc/self/stat: %s", strerror(errno));
    ssize_t n;
    do
        n = read(fd, buf, sizeof buf - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        die(EXIT_STARTUP, "cannot read /proc/self/stat");
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        die(EXIT_STARTUP, "cannot parse /proc/self/stat");
    p++;
    /* After ')' come fields 3, 4, ...; starttime is the 20th of them. */
    for (int field = 3; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            die(EXIT_STARTUP, "cannot parse /proc/self/stat");
    }
    return strtoull(p + 1, NULL, 10);
}

/* ---- finding and signalling descendants ------------------------------- */

struct proc {
    pid_t pid, ppid, pgrp;
    int mine;
};

static int cmp_pid(const void *a, const void *b)
{
    pid_t x = ((const struct proc *)a)->pid, y = ((const struct proc *)b)->pid;
    return (x > y) - (x < y);
}

/* Signal every descendant of the shim, found through the ppid links in
 * /proc (the subreaper flag keeps orphans attached to us), and the child's
 * process group. Returns the number of descendants signalled.
 *
 * killpg comes first: the kernel signals a whole group atomically with
 * respect to fork, which closes most of the window in which a process forks
 * between our /proc walk and our kill(). The walk then reaches the
 * descendants that left the group (setsid, setpgid). */
static int signal_walk(int sig, pid_t child, int child_reaped);

/* Signal every process in the node's cgroup (-G). Returns the number
 * signalled, or -1 when cgroup.procs cannot be read (the caller walks /proc).
 * A pid read here is alive or a zombie (not reusable) at the time of the
 * read; the kernel drops processes from cgroup.procs as they exit. */
static int signal_cgroup(int sig, pid_t child, int child_reaped)
{
    if (!child_reaped)
        (void)kill(-child, sig);
    int fd;
    do
        fd = open(cg_procs, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return -1;
    int count = 0;
    char buf[4096], num[16];
    size_t nlen = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            close(fd);
            return count ? count : -1;
        }
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] >= '0' && buf[i] <= '9' && nlen < sizeof num - 1) {
                num[nlen++] = buf[i];
                continue;
            }
            if (nlen) {
                num[nlen] = '\0';
                pid_t pid = (pid_t)atol(num);
                nlen = 0;
                if (pid > 0 && pid != shim_pid) {
                    count++;
                    /* Not twice: the group's members had it from killpg above (two quick
                     * SIGTERMs reach a Python handler twice now and then: a traceback in
                     * the handler's own cleanup). */
                    if (!child_reaped && getpgid(pid) == child)
                        continue;
                    if (kill(pid, sig) < 0 && errno != ESRCH)
                        log_note("kill(%d, %d): %s", (int)pid, sig, strerror(errno));
                }
            }
        }
    }
    close(fd);
    return count;
}

static int signal_descendants(int sig, pid_t child, int child_reaped)
{
    if (cg_procs) {
        int n = signal_cgroup(sig, child, child_reaped);
        if (n >= 0)
            return n;
        log_note("cannot read %s: %s; walking /proc instead", cg_procs, strerror(errno));
        free(cg_procs);
        cg_procs = NULL;
    }
    return signal_walk(sig, child, child_reaped);
}

static int signal_walk(int sig, pid_t child, int child_reaped)
{
    /* The child's pid names its group only while the child is unreaped or
     * some member holds the group id; otherwise the number may have been
     * reused, so the group is signalled below only if the walk saw it. */
    if (!child_reaped)
        (void)kill(-child, sig);

    DIR *d = opendir("/proc");
    if (!d) {
        log_note("cannot read /proc: %s", strerror(errno));
        if (!child_reaped)
            (void)kill(child, sig);
        return 0;
    }
    struct proc *ps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end != '\0' || pid <= 0)
            continue;
        char path[64], buf[1024];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue; /* exited meanwhile */
        ssize_t r;
        do
            r = read(fd, buf, sizeof buf - 1);
        while (r < 0 && errno == EINTR);
        close(fd);
        if (r <= 0)
            continue;
        buf[r] = '\0';
        char *p = strrchr(buf, ')');
        char state;
        int ppid, pgrp;
        if (!p || sscanf(p + 1, " %c %d %d", &state, &ppid, &pgrp) != 3)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            struct proc *np = realloc(ps, ncap * sizeof *ps);
            if (!np)
                break; /* signal what we have; the next round retries */
            ps = np;
            cap = ncap;
        }
        ps[n++] = (struct proc){(pid_t)pid, (pid_t)ppid, (pid_t)pgrp, 0};
    }
    closedir(d);

    /* Mark descendants: repeat until no change (depth of the tree passes). */
    if (n > 0)
        qsort(ps, n, sizeof *ps, cmp_pid);
    int changed = 1;
    while (changed) {
        changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (ps[i].mine || ps[i].pid == shim_pid || ps[i].pid == copier_pid)
                continue; /* the copier must outlive the node: it drains its output */
            int parent_mine = ps[i].ppid == shim_pid;
            if (!parent_mine) {
                struct proc key = {.pid = ps[i].ppid};
                struct proc *parent = bsearch(&key, ps, n, sizeof *ps, cmp_pid);
                parent_mine = parent && parent->mine;
            }
            if (parent_mine) {
                ps[i].mine = 1;
                changed = 1;
            }
        }
    }

    int count = 0, group_alive = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ps[i].mine)
            continue;
        count++;
        if (ps[i].pgrp == child)
            group_alive = 1;
        if (!child_reaped && ps[i].pgrp == child)
            continue; /* signalled by killpg above: not twice */
        if (kill(ps[i].pid, sig) < 0 && errno != ESRCH)
            log_note("kill(%d, %d): %s", (int)ps[i].pid, sig, strerror(errno));
    }
    if (child_reaped && group_alive)
        (void)kill(-child, sig);
    free(ps);
    return count;
}

/* ---- the child ---------------------------------------------------------- */

/* Runs in the forked child; never returns. Single-threaded parent, so
 * stdio-free formatting here is safe; messages go to the log (fd 2). */
static void run_child(int null_fd, const char *workdir, char **argv)
{
    /* New session: the node's tree gets its own session and process group
     * (id = our pid), which the controller can kill if the shim is gone. */
    if (setsid() < 0) {
        dprintf(log_fd, "%s: setsid: %s\n", prog, strerror(errno));
        _exit(EXIT_EXEC);
    }
    /* Die with the shim; if it already died before prctl, do it now. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
        dprintf(log_fd, "%s: prctl(PR_SET_PDEATHSIG): %s\n", prog, strerror(errno));
        _exit(EXIT_EXEC);
    }
    if (getppid() != shim_pid)
        _exit(EXIT_EXEC);

    /* Give PROGRAM pristine signal state: ignored dispositions survive
     * exec (nohup, Python's SIGPIPE), and our blocked mask would too. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        (void)sigaction(sig, &dfl, NULL); /* EINVAL for KILL/STOP/reserved */
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0) {
        dprintf(log_fd, "%s: sigprocmask: %s\n", prog, strerror(errno));
        _exit(EXIT_EXEC);
    }

    /* dup2 clears FD_CLOEXEC on the new descriptor; null_fd and out_fd are
     * >= 3 (main() made sure 0-2 were open), so none of these is a no-op. */
    if (dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0) {
        dprintf(log_fd, "%s: dup2: %s\n", prog, strerror(errno));
        _exit(EXIT_EXEC);
    }
    if (child_umask >= 0)
        umask((mode_t)child_umask);
    if (workdir && chdir(workdir) < 0) {
        dprintf(2, "%s: cannot change directory to '%s': %s\n",
                prog, workdir, strerror(errno));
        _exit(EXIT_CHDIR);
    }
    execvp(argv[0], argv);
    dprintf(2, "%s: cannot execute '%s': %s\n", prog, argv[0], strerror(errno));
    _exit(EXIT_EXEC);
}

/* ---- the log copier (-L, -T) ------------------------------------------------ */

/* -T: the index of the file being written (LOG_FILE.times). */
static int times_fd = -1;
static int times_pending;          /* bytes written since the last record */
static int64_t times_pending_ns;   /* when the last of them arrived */
static int64_t times_last_ns;      /* when the last record was written */

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Open (or start afresh) the index of the log open as `fd`. Without it the
 * log is still written: the times are lost, never the output. */
static void times_open(int fd)
{
    struct stat st, ist;
    unsigned char head[24], have[24];
    if (times_fd >= 0)
        close(times_fd);
    times_fd = -1;
    if (fstat(fd, &st) < 0)
        return;
    memcpy(head, "JGTIMES1", 8);
    put64(head + 8, (uint64_t)st.st_dev);
    put64(head + 16, (uint64_t)st.st_ino);
    int t;
    do
        t = open(times_file, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    while (t < 0 && errno == EINTR);
    if (t < 0)
        return;
    if (fstat(t, &ist) < 0 || (ist.st_size >= 24 && (pread(t, have, 24, 0) != 24 ||
                                                    memcmp(have, head, 24) != 0))) {
        if (ftruncate(t, 0) < 0) { /* an index of another file: start again */
            close(t);
            return;
        }
        ist.st_size = 0;
    }
    if (ist.st_size < 24 && (ftruncate(t, 0) < 0 || write_all(t, (char *)head, 24) < 0)) {
        close(t);
        return;
    }
    times_fd = t;
}

/* One record: the log's size now, and when its last bytes arrived. */
static void times_record(int fd, int64_t at)
{
    struct stat st;
    unsigned char rec[16];
    times_pending = 0;
    times_last_ns = at;
    if (times_fd < 0 || fstat(fd, &st) < 0)
        return;
    put64(rec, (uint64_t)st.st_size);
    put64(rec + 8, (uint64_t)at);
    (void)write_all(times_fd, (char *)rec, sizeof rec);
}

/* Bytes just went to the log open as `fd`. */
static void times_wrote(int fd)
{
    if (!log_times)
        return;
    int64_t now = realtime_ns();
    if (now - times_last_ns >= TIMES_EVERY_NS)
        times_record(fd, now);
    else {
        times_pending = 1;
        times_pending_ns = now;
    }
}

/* LOG_FILE -> LOG_FILE.1 (replacing it), then a new LOG_FILE; returns its
 * descriptor, or `fd` itself when no new file can be made (the file then
 * grows past the cap rather than lose output). The index goes with it. */
static int rotate_log(int fd)
{
    if (log_times && times_pending)
        times_record(fd, times_pending_ns);
    if (rename(log_file, log_rotated) < 0 && errno != ENOENT)
        return fd;
    int nfd;
    do
        nfd = open(log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    while (nfd < 0 && errno == EINTR);
    if (nfd < 0)
        return fd;
    close(fd);
    if (log_times) {
        if (rename(times_file, times_rotated) < 0 && errno != ENOENT) {
            close(times_fd); /* the old index under the new file's name: start again */
            times_fd = -1;
        }
        times_open(nfd);
    }
    return nfd;
}

/* The copier: `in` (the node's output) into LOG_FILE, rotated at log_max
 * (-L; never without it), its times recorded (-T). Never returns. */
static void copy_log(int in, int fd)
{
    static char buf[1 << 16]; /* <= the smallest cap: a block fits a new file */
    /* Past `soft`, the file ends at the next line end the cap leaves room for. */
    const long long cap = log_max > 0 ? log_max : LLONG_MAX;
    const long long soft = log_max <= 0 ? LLONG_MAX
                           : log_max - (log_max / 2 < (long long)sizeof buf
                                        ? log_max / 2 : (long long)sizeof buf);
    struct stat st;
    long long size = fstat(fd, &st) == 0 ? (long long)st.st_size : 0;
    int full = 0; /* rotate before the next write (never leave an empty file) */
    if (log_times)
        times_open(fd);
    for (;;) {
        if (times_pending) { /* output paused: its record is due when the wait is over */
            int64_t left = times_last_ns + TIMES_EVERY_NS - realtime_ns();
            struct pollfd pfd = {.fd = in, .events = POLLIN};
            int r = left > 0 ? poll(&pfd, 1, (int)(left / 1000000) + 1) : 0;
            if (r == 0)
                times_record(fd, times_pending_ns);
        }
        ssize_t r = read(in, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* end of file: every writer is gone */
        char *p = buf;
        size_t left = (size_t)r;
        while (left > 0) {
            if (full) {
                fd = rotate_log(fd);
                size = 0;
                full = 0;
            }
            if (size + (long long)left <= soft) {
                (void)write_all(fd, p, left); /* a full disk drops it */
                size += (long long)left;
                break;
            }
            size_t room = size < cap ? (size_t)(cap - size) : 0;
            char *nl = memrchr(p, '\n', left < room ? left : room);
            size_t cut;
            if (nl)
                cut = (size_t)(nl - p) + 1; /* end the file with this line */
            else if (left <= room) {        /* no line end yet, room for it */
                (void)write_all(fd, p, left);
                size += (long long)left;
                break;
            } else
                cut = room; /* a line longer than the room left: split it */
            if (cut)
                (void)write_all(fd, p, cut);
            p += cut;
            left -= cut;
            full = 1;
        }
        times_wrote(fd);
    }
    if (times_pending)
        times_record(fd, times_pending_ns);
    _exit(0);
}

/* Fork the copier; PROGRAM's output then goes to out_fd, the pipe to it. */
static void start_copier(int cg_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        die(EXIT_STARTUP, "cannot create the log pipe: %s", strerror(errno));
    fflush(NULL);
    copier_pid = fork();
    if (copier_pid < 0)
        die(EXIT_STARTUP, "fork: %s", strerror(errno));
    if (copier_pid == 0) {
        /* Signals stay blocked (a stop is not for the copier); no
         * PDEATHSIG: if the shim is killed, the output is still drained. */
        close(p[1]);
        if (cg_fd >= 0)
            close(cg_fd);
        copy_log(p[0], log_fd);
    }
    close(p[0]);
    out_fd = p[1];
}

/* ---- main --------------------------------------------------------------- */

static void split_status_path(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
        die_usage("STATUS_FILE must name a file: '%s'", path);
    char *dir;
    if (!slash)
        dir = concat(".", "");
    else if (slash == path)
        dir = concat("/", "");
    else {
        dir = concat(path, "");
        dir[slash - path] = '\0';
    }
    do
        dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    while (dir_fd < 0 && errno == EINTR);
    if (dir_fd < 0)
        die(EXIT_STARTUP, "cannot open status directory '%s': %s", dir, strerror(errno));
    free(dir);
    status_name = concat(base, "");
    status_rsv = concat(base, ".rsv");
    pid_name = concat(base, ".pid");
    pid_tmp = concat(base, ".pid.tmp");
}

/* Close everything inherited beyond stdio: the shim lives long and must not
 * hold the controller's pipes or sockets open, nor pass them to PROGRAM. */
static void close_inherited_fds(void)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
        return;
#endif
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return; /* nothing better to do; our own fds are O_CLOEXEC anyway */
    int fds[256], n = 0, self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 256) {
        int fd = atoi(e->d_name);
        if (fd > 2 && fd != self)
            fds[n++] = fd;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

int main(int argc, char **argv)
{
    const char *status_path = NULL, *log_path = NULL, *workdir = NULL, *cgroup = NULL;
    double grace = 10.0;
    int opt;

    /* fds 0-2 must be open, or files we open would take their numbers and
     * the child's dup2 onto them would be a no-op that keeps O_CLOEXEC. */
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF &&
            open("/dev/null", O_RDWR) != fd)
            return EXIT_STARTUP; /* cannot even report it */
    }
    close_inherited_fds();

    /* '+': stop at PROGRAM, so its own options are not parsed as ours. */
    while ((opt = getopt(argc, argv, "+s:o:g:C:G:m:L:T")) != -1) {
        switch (opt) {
        case 's': status_path = optarg; break;
        case 'o': log_path = optarg; break;
        case 'C': workdir = optarg; break;
        case 'T': log_times = 1; break;
        case 'G': cgroup = optarg; break;
        case 'm': {
            char *end;
            errno = 0;
            long m = strtol(optarg, &end, 8);
            if (errno || end == optarg || *end != '\0' || m < 0 || m > 0777)
                die_usage("bad umask '%s' (octal, 0 to 777)", optarg);
            child_umask = (int)m;
            break;
        }
        case 'L': {
            char *end;
            errno = 0;
            log_max = strtoll(optarg, &end, 10);
            if (errno || end == optarg || *end != '\0' || log_max < 65536)
                die_usage("bad log cap '%s' (bytes, at least 65536)", optarg);
            break;
        }
        case 'g': {
            char *end;
            errno = 0;
            grace = strtod(optarg, &end);
            if (errno || end == optarg || *end != '\0' || !isfinite(grace) ||
                grace < 0 || grace > 1e6)
                die_usage("bad grace period '%s' (seconds, 0 to 1e6)", optarg);
            break;
        }
        default:
            die_usage("bad option");
        }
    }
    if (!status_path || !log_path)
        die_usage("-s STATUS_FILE and -o LOG_FILE are required");
    if (optind >= argc)
        die_usage("no PROGRAM given");
    char **child_argv = argv + optind;
    const int64_t grace_ns = (int64_t)(grace * 1e9);

    shim_pid = getpid();

    /* Block the signals we wait for before anything can send them; they
     * are then taken synchronously by sigtimedwait (no handlers, no races).
     * SIG_DFL first: an inherited SIG_IGN for SIGCHLD would make the kernel
     * auto-reap our children and hide their exit status. */
    static const int handled[] = {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGALRM};
    sigset_t set;
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof handled / sizeof *handled; i++)
        sigaddset(&set, handled[i]);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        die(EXIT_STARTUP, "sigprocmask: %s", strerror(errno));
    for (size_t i = 0; i < sizeof handled / sizeof *handled; i++)
        signal(handled[i], SIG_DFL);
    signal(SIGPIPE, SIG_IGN); /* a write error is an error, not a death */

    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        die(EXIT_STARTUP, "prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));

    split_status_path(status_path);
    do
        log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    while (log_fd < 0 && errno == EINTR);
    if (log_fd < 0)
        die(EXIT_STARTUP, "cannot open log file '%s': %s", log_path, strerror(errno));
    log_file = log_path;
    out_fd = log_fd;
    if (log_max > 0)
        log_rotated = concat(log_path, ".1");
    if (log_times) {
        times_file = concat(log_path, ".times");
        times_rotated = concat(log_path, ".1.times");
    }
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0)
        die(EXIT_STARTUP, "cannot open /dev/null: %s", strerror(errno));
    /* Files from an earlier run would describe the wrong run. */
    if (unlinkat(dir_fd, status_name, 0) < 0 && errno != ENOENT)
        die(EXIT_STARTUP, "cannot remove stale status file '%s': %s",
                    status_path, strerror(errno));
    if (unlinkat(dir_fd, pid_name, 0) < 0 && errno != ENOENT)
        die(EXIT_STARTUP, "cannot remove stale pid file '%s.pid': %s",
                    status_path, strerror(errno));
    unsigned long long start_time = self_start_time();
    if (reserve_status() < 0)
        die(EXIT_STARTUP, "cannot reserve the status file '%s': %s", status_path, strerror(errno));

    int cg_fd = -1;
    if (cgroup) {
        if (mkdir(cgroup, 0755) < 0 && errno != EEXIST)
            log_note("cannot create cgroup '%s': %s; walking /proc to stop the node",
                     cgroup, strerror(errno));
        else if ((cg_fd = open(cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
            log_note("cannot open cgroup '%s': %s; walking /proc to stop the node",
                     cgroup, strerror(errno));
    }

    if (log_max > 0 || log_times)
        start_copier(cg_fd);
    fflush(NULL);
    pid_t child = -1;
#if defined(SYS_clone3) && defined(CLONE_INTO_CGROUP)
    if (cg_fd >= 0) {
        /* Born inside the cgroup (clone3 + CLONE_INTO_CGROUP): no window in
         * which PROGRAM runs outside, and no migration (which takes a
         * machine-wide lock and can cost milliseconds). */
        struct clone_args ca;
        memset(&ca, 0, sizeof ca);
        ca.flags = CLONE_INTO_CGROUP;
        ca.exit_signal = SIGCHLD;
        ca.cgroup = (uint64_t)cg_fd;
        child = (pid_t)syscall(SYS_clone3, &ca, sizeof ca);
        if (child < 0)
            log_note("cannot start the node in cgroup '%s' (clone3: %s); walking /proc to "
                     "stop it", cgroup, strerror(errno));
        else if (child > 0)
            cg_procs = concat(cgroup, "/cgroup.procs");
        if (child != 0)
            close(cg_fd);
    }
#else /* headers older than Linux 5.7: no tracking cgroup */
    if (cg_fd >= 0) {
        log_note("this shim was built without clone3; walking /proc to stop the node");
        close(cg_fd);
    }
#endif
    if (child < 0)
        child = fork();
    if (child < 0)
        die(EXIT_STARTUP, "fork: %s", strerror(errno));
    if (child == 0)
        run_child(null_fd, workdir, child_argv);
    if (out_fd != log_fd)
        close(out_fd); /* the copier sees the end once the node's tree is gone */

    char line[64];
    snprintf(line, sizeof line, "%d %llu\n", (int)child, start_time);
    if (write_atomic(pid_name, pid_tmp, line) < 0) {
        int saved = errno;
        /* Without the pid file a restarted controller could not find the
         * child: do not let it run unrecorded. */
        signal_descendants(SIGKILL, child, 0);
        while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
            ;
        die(EXIT_STARTUP, "cannot write pid file '%s.pid': %s", status_path, strerror(saved));
    }
    /* Start-up is over: from here on, report only through files. */
    if (dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(null_fd, 2) < 0)
        log_note("cannot redirect stdio to /dev/null: %s", strerror(errno));
    close(null_fd);

    enum { RUNNING, TERMINATING, KILLING } phase = RUNNING;
    int stop_requested = 0, child_reaped = 0, status_written = 0, wstatus = 0;
    int64_t deadline = 0; /* TERMINATING: when to SIGKILL; KILLING: next re-walk */

    for (;;) {
        /* Reap everything that ended: the child, and orphans re-parented
         * to us. SIGCHLD coalesces, so loop until nothing is left. */
        int no_children = 0;
        for (;;) {
            int st;
            pid_t p = waitpid(-1, &st, WNOHANG);
            if (p > 0) {
                if (p == child) {
                    child_reaped = 1;
                    wstatus = st;
                }
                continue;
            }
            if (p < 0 && errno == EINTR)
                continue;
            if (p < 0 && errno == ECHILD)
                no_children = 1;
            else if (p < 0)
                log_note("waitpid: %s", strerror(errno));
            break;
        }

        if (child_reaped && !status_written) {
            char json[160];
            int n;
            if (WIFEXITED(wstatus))
                n = snprintf(json, sizeof json, "{\"exit_code\": %d", WEXITSTATUS(wstatus));
            else
                n = snprintf(json, sizeof json, "{\"signal\": %d, \"core\": %s",
                             WTERMSIG(wstatus), WCOREDUMP(wstatus) ? "true" : "false");
            snprintf(json + n, sizeof json - (size_t)n, "%s, \"pid\": %d}\n",
                     stop_requested ? ", \"stopped\": true" : "", (int)child);
            if (write_status(json) < 0)
                log_note("cannot write status file '%s': %s; the shim's exit code is the only "
                         "record", status_path, strerror(errno));
            status_written = 1;
            /* The node is over; its leftovers must not outlive the shim. */
            if (phase == RUNNING && !no_children) {
                signal_descendants(SIGTERM, child, 1);
                phase = TERMINATING;
                deadline = now_ns() + grace_ns;
            }
        }
        if (child_reaped && no_children)
            break;

        /* Sleep until a signal or the next deadline; no deadline, no timeout. */
        struct timespec ts, *timeout = NULL;
        if (phase != RUNNING) {
            int64_t left = deadline - now_ns();
            if (left < 0)
                left = 0;
            ts.tv_sec = (time_t)(left / 1000000000);
            ts.tv_nsec = (long)(left % 1000000000);
            timeout = &ts;
        }
        siginfo_t info;
        int sig = timeout ? sigtimedwait(&set, &info, timeout) : sigwaitinfo(&set, &info);
        if (sig < 0) {
            if (errno == EAGAIN && phase != RUNNING && now_ns() >= deadline) {
                /* Grace is over (or time to re-walk): kill what is left. */
                phase = KILLING;
                signal_descendants(SIGKILL, child, child_reaped);
                deadline = now_ns() + KILL_REPEAT_NS;
            } else if (errno != EAGAIN && errno != EINTR) {
                log_note("sigtimedwait: %s", strerror(errno));
                sleep(1); /* should not happen; do not spin */
            }
            continue;
        }
        switch (sig) {
        case SIGTERM:
        case SIGINT:
        case SIGHUP:
            if (!child_reaped)
                stop_requested = 1;
            if (phase == RUNNING) {
                signal_descendants(SIGTERM, child, child_reaped);
                phase = TERMINATING;
                deadline = now_ns() + grace_ns;
            }
            break;
        case SIGUSR1:
            if (!child_reaped)
                stop_requested = 1;
            phase = KILLING;
            signal_descendants(SIGKILL, child, child_reaped);
            deadline = now_ns() + KILL_REPEAT_NS;
            break;
        default: /* SIGCHLD: reaped at the top; SIGALRM: nothing to do */
            break;
        }
    }

    if (WIFEXITED(wstatus))
        return WEXITSTATUS(wstatus);
    return 128 + WTERMSIG(wstatus);
}
