/*
 * jobgroup-slurm-agent: jobgroup's agent on a Slurm node (supervision near the work).
 *
 * usage: jobgroup-slurm-agent DIR TASK NAME
 *
 * One runs per node: the group's batch script starts one step per task, one task per
 * node (this node's rank is SLURM_PROCID). The controller, on the submit host, never
 * runs a process per node: it asks this agent, through files in DIR (the job's folder on
 * the filesystem the nodes share), to run each of the node's phases, and the agent runs
 * each under jobgroup's shim (DIR/jobgroup-shim), here on the node:
 *
 *   DIR/n/TASK-RANK/PHASE.ATTEMPT.start  a request: NUL-separated (tag, value) pairs,
 *                                        "status" (the shim's status file), "id" (the
 *                                        phase's tracking cgroup name), "opt" (the shim's
 *                                        options, in order), "cmd" (the command), "env"
 *                                        (its variables, K=V); started once, at once
 *   DIR/n/TASK-RANK/PHASE.ATTEMPT.stop   SIGTERM to that phase's shim (it stops the phase's
 *                                        whole process tree: SIGTERM, SIGKILL after the
 *                                        grace)
 *   DIR/n/TASK-RANK/PHASE.ATTEMPT.kill   SIGUSR1: the shim kills the tree now
 *   DIR/end                              the group ended: leave (the batch script then
 *                                        exits with the group's result, this file's number)
 *
 * When a phase's shim has exited (the node's processes of that phase all gone, its status
 * file written), the agent writes STATUS.exit (the shim's exit code, one short write)
 * beside the status file. A restarted node's next attempt therefore never meets the
 * previous attempt's processes.
 *
 * Wake-ups: DIR/n/TASK-RANK/wake (a FIFO) is written by the controller after each request,
 * and DIR/wake by the agent after each exit, where both run on one machine; elsewhere (the
 * controller on another host, over NFS) the agent looks every second and the controller
 * every half second.
 *
 * The node's view: where the kernel allows it (root, or unprivileged user namespaces) the
 * agent takes a mount and UTS namespace of its own before anything else, so every phase it
 * starts has the host name NAME-RANK and the group's hosts file (DIR/../hosts, bound over
 * /etc/hosts before the first phase starts): `{task}-{rank}.{group}` resolves. Where it does
 * not, each phase's log says so and only the SKYPILOT_* variables work.
 *
 * Phases get the request's variables and this node's Slurm and GPU variables (SLURM_*,
 * CUDA_VISIBLE_DEVICES, ...; not those of the agent's own step), nothing else of the
 * agent's environment.
 *
 * Where Slurm does not track the step's processes itself (proctrack/cgroup puts them in a
 * freezer cgroup under /slurm...; its cgroup/v2 in a step cgroup) and a cgroup2 hierarchy
 * is writable, each phase gets a tracking cgroup (the shim's -G), removed after it.
 *
 * On SIGTERM, SIGINT or SIGHUP (the job cancelled, its time limit) every phase gets
 * SIGTERM and the agent waits for them; on DIR/end, what still runs is killed (SIGUSR1).
 * Exit code 0; 1 when it cannot start (its message on stderr: the job's batch output).
 *
 * Why C and not a shell: on the 2-core dev machine that emulates 100 nodes, a bash agent
 * (its unshare, mount, subshells) cost ~14 ms of CPU per node; this one well under 1 ms.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE agent.c (it includes ../die.h)
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static const char *prog = "jobgroup-slurm-agent";
#include "../die.h" /* die(code, ...): needs prog; the shim shares it */
static const char *dir, *task, *name;
static int rank;
static char me[PATH_MAX], shim[PATH_MAX], end_path[PATH_MAX], wake_ctl[PATH_MAX];
static char hosts[PATH_MAX], log_path[PATH_MAX], cg[PATH_MAX];
static int view, bound;
static char **pass;
static size_t npass;

struct phase {
    char *name;       /* PHASE.ATTEMPT */
    char *status;     /* the shim's status file */
    char *track;      /* tracking cgroup made for it, or NULL */
    pid_t pid;        /* its shim; 0 once ended */
    int stop_sent, kill_sent;
};
static struct phase *phases;
static size_t nphases, cap_phases;

/* A path (or other text) that must fit `size`: a longer one is an error, never cut. */
static void fmt(char *buf, size_t size, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int n = vsnprintf(buf, size, format, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        die(EXIT_FAILURE, "path too long: %.80s...", buf);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die(EXIT_FAILURE, "out of memory");
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    ssize_t n = write(fd, text, len);
    close(fd);
    return n == (ssize_t)len ? 0 : -1;
}

static void wake(const char *fifo)
{
    int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return; /* no reader on this machine: it looks by itself */
    ssize_t n = write(fd, "x\n", 2);
    (void)n;
    close(fd);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls > lx && strcmp(s + ls - lx, suffix) == 0;
}

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- the node's view ---------------------------------------------------- */

static int map_ids(const char *file, unsigned id)
{
    char buf[64];
    snprintf(buf, sizeof buf, "0 %u 1\n", id);
    return write_file(file, buf);
}

static void take_view(void)
{
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (uid == 0) {
        if (unshare(CLONE_NEWNS | CLONE_NEWUTS) < 0)
            return;
    } else {
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS) < 0)
            return;
        if (write_file("/proc/self/setgroups", "deny") < 0 ||
            map_ids("/proc/self/uid_map", uid) < 0 || map_ids("/proc/self/gid_map", gid) < 0)
            return;
    }
    /* Nothing mounted here may reach the node's own mounts. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return;
    char host[HOST_NAME_MAX + 1];
    int n = snprintf(host, sizeof host, "%s-%d", name, rank);
    if (n < 0 || sethostname(host, strlen(host)) < 0)
        return;
    view = 1;
}

static void bind_hosts(void)
{
    if (!view || bound || access(hosts, R_OK) < 0)
        return;
    if (mount(hosts, "/etc/hosts", NULL, MS_BIND, NULL) == 0)
        bound = 1;
    else
        fprintf(stderr, "%s: cannot bind %s over /etc/hosts: %s\n", prog, hosts,
                strerror(errno));
}

/* ---- environment and cgroups ------------------------------------------ */

static int own_step_variable(const char *kv)
{
    static const char *own[] = {
        "SLURM_PROCID=", "SLURM_LOCALID=", "SLURM_STEP", "SLURM_TASK_PID=", "SLURM_SRUN_COMM",
        "SLURM_LAUNCH_NODE_IPADDR=", "SLURM_GTIDS=", "SLURM_UMASK=", "SLURM_PRIO_PROCESS=",
        "SLURM_TASKS_PER_NODE=", "SLURM_NTASKS=", "SLURM_NPROCS=", "SLURM_DISTRIBUTION=",
        "SLURM_CPU_BIND", "SLURM_JOB_NAME=", "SLURM_SPANK", NULL};
    for (const char **p = own; *p; p++)
        if (starts_with(kv, *p))
            return 1;
    return 0;
}

static void collect_pass(void)
{
    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    pass = xmalloc((n + 1) * sizeof *pass);
    for (char **e = environ; *e; e++) {
        const char *kv = *e;
        if ((starts_with(kv, "SLURM") && !own_step_variable(kv)) ||
            starts_with(kv, "CUDA_VISIBLE_DEVICES=") || starts_with(kv, "GPU_DEVICE_ORDINAL=") ||
            starts_with(kv, "ROCR_VISIBLE_DEVICES=") || starts_with(kv, "ZE_AFFINITY_MASK="))
            pass[npass++] = xstrdup(kv);
    }
}

static void find_tracking(void)
{
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return;
    char line[4096];
    int slurm = 0, v2_root = 0;
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, ":freezer:/slurm"))
            slurm = 1;
        if (strcmp(line, "0::/\n") == 0)
            v2_root = 1;
    }
    fclose(f);
    if (slurm || !v2_root)
        return;
    static const char *roots[] = {"/sys/fs/cgroup/unified", "/sys/fs/cgroup", NULL};
    for (const char **r = roots; *r; r++) {
        char probe[PATH_MAX];
        fmt(probe, sizeof probe, "%s/cgroup.controllers", *r);
        if (access(probe, F_OK) == 0) {
            fmt(cg, sizeof cg, "%s/jobgroup-slurm", *r);
            (void)mkdir(cg, 0755);
            fmt(probe, sizeof probe, "%s/cgroup.procs", cg);
            if (access(probe, W_OK) < 0)
                cg[0] = 0;
            return;
        }
    }
}

/* ---- phases ------------------------------------------------------------- */

static struct phase *find(const char *phase_name)
{
    for (size_t i = 0; i < nphases; i++)
        if (strcmp(phases[i].name, phase_name) == 0)
            return &phases[i];
    return NULL;
}

static char *read_all(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 8192, n = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            char *more = realloc(buf, cap + 1);
            if (!more)
                die(EXIT_FAILURE, "out of memory");
            buf = more;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *len = n;
    return buf;
}

static void start(const char *phase_name)
{
    if (find(phase_name))
        return;
    if (nphases == cap_phases) {
        cap_phases = cap_phases ? 2 * cap_phases : 8;
        phases = realloc(phases, cap_phases * sizeof *phases);
        if (!phases)
            die(EXIT_FAILURE, "out of memory");
    }
    struct phase *ph = &phases[nphases++];
    memset(ph, 0, sizeof *ph);
    ph->name = xstrdup(phase_name);

    char path[PATH_MAX];
    fmt(path, sizeof path, "%s/%s.start", me, phase_name);
    size_t len = 0;
    char *req = read_all(path, &len);
    if (!req) {
        fprintf(stderr, "%s: cannot read %s: %s\n", prog, path, strerror(errno));
        return;
    }
    /* (tag, value) pairs: at most len/2 of each kind. */
    size_t most = len / 2 + 8;
    char **opts = xmalloc(most * sizeof *opts), **cmd = xmalloc(most * sizeof *cmd);
    char **envs = xmalloc((most + npass) * sizeof *envs);
    size_t nopts = 0, ncmd = 0, nenv = 0;
    const char *status = NULL, *id = NULL;
    for (size_t i = 0; i < len;) {
        const char *tag = req + i;
        i += strlen(tag) + 1;
        if (i >= len)
            break;
        char *value = req + i;
        i += strlen(value) + 1;
        if (strcmp(tag, "status") == 0)
            status = value;
        else if (strcmp(tag, "id") == 0)
            id = value;
        else if (strcmp(tag, "opt") == 0)
            opts[nopts++] = value;
        else if (strcmp(tag, "cmd") == 0)
            cmd[ncmd++] = value;
        else if (strcmp(tag, "env") == 0)
            envs[nenv++] = value;
    }
    if (!status || !ncmd) {
        fprintf(stderr, "%s: %s: no status file or command\n", prog, path);
        free(req), free(opts), free(cmd), free(envs);
        return;
    }
    ph->status = xstrdup(status);
    bind_hosts();

    static const char *no_view[] = {
        "/bin/sh", "-c",
        "echo \"jobgroup: this node allows no private namespaces: peer names do not resolve "
        "here; use the SKYPILOT_* variables\" >&2; exec \"$@\"",
        "jobgroup-node"};
    size_t nargv = 0;
    char **argv = xmalloc((nopts + ncmd + 10) * sizeof *argv);
    argv[nargv++] = shim;
    for (size_t k = 0; k < nopts; k++)
        argv[nargv++] = opts[k];
    char track[PATH_MAX];
    if (cg[0] && id && *id && !strchr(id, '/')) {
        fmt(track, sizeof track, "%s/%s", cg, id);
        ph->track = xstrdup(track);
        argv[nargv++] = "-G";
        argv[nargv++] = ph->track;
    }
    argv[nargv++] = "--";
    if (!view)
        for (size_t k = 0; k < 4; k++)
            argv[nargv++] = (char *)no_view[k];
    for (size_t k = 0; k < ncmd; k++)
        argv[nargv++] = cmd[k];
    argv[nargv] = NULL;
    /* The node's variables first: the request's come after them and win. */
    char **envp = xmalloc((npass + nenv + 1) * sizeof *envp);
    size_t ne = 0;
    for (size_t k = 0; k < npass; k++)
        envp[ne++] = pass[k];
    for (size_t k = 0; k < nenv; k++)
        envp[ne++] = envs[k];
    envp[ne] = NULL;

    pid_t pid = fork();
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        setsid(); /* a signal to the agent's group never reaches the phase directly */
        int in = open("/dev/null", O_RDONLY);
        int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (in >= 0)
            dup2(in, 0);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        execve(shim, argv, envp);
        fprintf(stderr, "%s: cannot run %s: %s\n", prog, shim, strerror(errno));
        _exit(126);
    }
    if (pid < 0)
        fprintf(stderr, "%s: fork: %s\n", prog, strerror(errno));
    else
        ph->pid = pid;
    free(argv), free(envp), free(req), free(opts), free(cmd), free(envs);
    /* A phase that could not be forked is reported as its shim's start-up failure. */
    if (pid < 0) {
        char exit_path[PATH_MAX];
        fmt(exit_path, sizeof exit_path, "%s.exit", ph->status);
        (void)write_file(exit_path, "126\n");
        wake(wake_ctl);
    }
}

static void ended(struct phase *ph, int wstatus)
{
    int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    ph->pid = 0;
    if (ph->track)
        (void)rmdir(ph->track);
    char exit_path[PATH_MAX], text[16];
    fmt(exit_path, sizeof exit_path, "%s.exit", ph->status);
    snprintf(text, sizeof text, "%d\n", code);
    if (write_file(exit_path, text) < 0)
        fprintf(stderr, "%s: cannot write %s: %s\n", prog, exit_path, strerror(errno));
    wake(wake_ctl);
}

static void reap(void)
{
    int wstatus;
    pid_t pid;
    while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0)
        for (size_t i = 0; i < nphases; i++)
            if (phases[i].pid == pid)
                ended(&phases[i], wstatus);
}

static void scan(void)
{
    DIR *d = opendir(me);
    if (!d)
        return;
    /* Starts first (a stop may come for a phase asked for in the same breath). */
    for (int pass_no = 0; pass_no < 2; pass_no++) {
        rewinddir(d);
        struct dirent *e;
        while ((e = readdir(d))) {
            char phase_name[256];
            const char *n = e->d_name;
            if (pass_no == 0 && ends_with(n, ".start")) {
                snprintf(phase_name, sizeof phase_name, "%.*s", (int)(strlen(n) - 6), n);
                start(phase_name);
            } else if (pass_no == 1 && (ends_with(n, ".stop") || ends_with(n, ".kill"))) {
                int kill_now = ends_with(n, ".kill");
                snprintf(phase_name, sizeof phase_name, "%.*s", (int)(strlen(n) - 5), n);
                struct phase *ph = find(phase_name);
                if (!ph || !ph->pid)
                    continue;
                if (kill_now && !ph->kill_sent) {
                    kill(ph->pid, SIGUSR1);
                    ph->kill_sent = 1;
                } else if (!kill_now && !ph->stop_sent) {
                    kill(ph->pid, SIGTERM);
                    ph->stop_sent = 1;
                }
            }
        }
    }
    closedir(d);
}

static size_t running(void)
{
    size_t n = 0;
    for (size_t i = 0; i < nphases; i++)
        n += phases[i].pid != 0;
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        die(EXIT_FAILURE, "usage: %s DIR TASK NAME", prog);
    dir = argv[1], task = argv[2], name = argv[3];
    const char *procid = getenv("SLURM_PROCID");
    rank = procid ? atoi(procid) : 0;
    fmt(me, sizeof me, "%s/n/%s-%d", dir, task, rank);
    fmt(shim, sizeof shim, "%s/jobgroup-shim", dir);
    fmt(end_path, sizeof end_path, "%s/end", dir);
    fmt(wake_ctl, sizeof wake_ctl, "%s/wake", dir);
    fmt(hosts, sizeof hosts, "%s/../hosts", dir);
    fmt(log_path, sizeof log_path, "%s/agent.log", me);

    char nd[PATH_MAX];
    fmt(nd, sizeof nd, "%s/n", dir);
    (void)mkdir(nd, 0700);
    if (mkdir(me, 0700) < 0 && errno != EEXIST)
        die(EXIT_FAILURE, "cannot make %s: %s", me, strerror(errno));
    char fifo[PATH_MAX];
    fmt(fifo, sizeof fifo, "%s/wake", me);
    if (mkfifo(fifo, 0600) < 0 && errno != EEXIST)
        die(EXIT_FAILURE, "cannot make the FIFO %s: %s", fifo, strerror(errno));
    int wfd = open(fifo, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (wfd < 0)
        die(EXIT_FAILURE, "cannot open %s: %s", fifo, strerror(errno));

    take_view();
    collect_pass();
    find_tracking();

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        die(EXIT_FAILURE, "signalfd: %s", strerror(errno));

    char note[PATH_MAX], text[512];
    fmt(note, sizeof note, "%s/agent", me);
    const char *node = getenv("SLURMD_NODENAME");
    snprintf(text, sizeof text, "%s %d %s\n", node ? node : "?", (int)getpid(),
             view ? "private" : "none");
    (void)write_file(note, text); /* for people, and tests */

    int term = 0;
    for (;;) {
        scan();
        if (access(end_path, F_OK) == 0)
            break;
        struct pollfd fds[2] = {{wfd, POLLIN, 0}, {sfd, POLLIN, 0}};
        int r = poll(fds, 2, 1000);
        if (r < 0 && errno != EINTR)
            die(EXIT_FAILURE, "poll: %s", strerror(errno));
        char buf[4096];
        while (read(wfd, buf, sizeof buf) > 0)
            ;
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == sizeof si)
            if (si.ssi_signo != SIGCHLD)
                term = 1;
        reap();
        if (term)
            break;
    }
    /* Leaving: every phase has normally ended already (kill what has not), or Slurm ends the
     * job (SIGTERM: every phase stops as a stop asks; Slurm kills after its KillWait). */
    for (size_t i = 0; i < nphases; i++)
        if (phases[i].pid)
            kill(phases[i].pid, term ? SIGTERM : SIGUSR1);
    while (running()) {
        int wstatus;
        pid_t pid = waitpid(-1, &wstatus, 0);
        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0)
            break;
        for (size_t i = 0; i < nphases; i++)
            if (phases[i].pid == pid)
                ended(&phases[i], wstatus);
    }
    return 0;
}
