/*
 * jobgroup-nodehost: makes the calling process a node of its own on this
 * machine, then execs the node's program. Started by the shim (shim.c) as the
 * node's first process, as root, at isolation level `namespaces`.
 *
 * usage: jobgroup-nodehost [OPTIONS] -- PROGRAM [ARGS...]
 *   -n NETNS       join the network namespace NETNS (a file: /run/netns/NAME)
 *   -h HOSTNAME    own UTS namespace with this hostname
 *   -r DIR         a private root (below); its writable layers live in DIR
 *   -s SIZE        /dev/shm is a tmpfs of its own of SIZE (tmpfs's `size=`:
 *                  bytes with k/m/g, or a percentage of RAM); "-" for the
 *                  tmpfs default (half of RAM)
 *   -b SRC DST     bind SRC at DST, read-write: writes there land in SRC
 *   -B SRC DST     bind SRC at DST, read-only
 *   -f FILE DST    FILE at DST, replacing what DST is in the node (a symlink
 *                  included): /etc/hosts
 *   -F FILE DST    the same, read-only: /etc/resolv.conf
 *   -o PATH        (with -r, after the binds) PATH, inside a bound directory,
 *                  gets an overlay of its own: the node's writes stay in DIR
 *   -x PATH        hide PATH (an empty read-only tmpfs over it), last
 *   -C DIR         working directory of PROGRAM
 *   -j PID         instead of all of the above: join the network, UTS, IPC
 *                  and mount namespaces of PID (a running node: probes)
 *
 * Every node gets its own mount and IPC namespaces (SysV IPC and POSIX
 * message queues are per host on a cluster too); nothing it mounts is seen
 * outside, and all of it vanishes with the node's last process: there is
 * nothing to unmount afterwards.
 *
 * The private root (-r). Reads see the host; writes stay with the node. The
 * new root is an overlay whose lower layer is the host's root file system
 * and whose upper layer is DIR/upper (DIR/work is overlayfs's scratch
 * space, DIR/mnt the mount point: empty on the host). Every other mount of
 * the host is shown at its place: a writable data file system (ext4, xfs,
 * btrfs, tmpfs, nfs, ...) through an overlay of its own (upper layer
 * DIR/m/KEY/upper, KEY the escaped mount point), a read-only one or any
 * other kind (pseudo file systems, FAT) as it is (a bind). /proc, /sys and
 * /dev are the host's (recursive binds), then /dev/shm is replaced. /tmp and
 * /var/tmp are part of the root's overlay (or overlays of their own where
 * they are mounts): the host's files as they were, the node's writes its
 * own. The binds (volumes, file mounts, the workdir, the
 * state directory) come after the root is switched (pivot_root), their
 * sources opened beforehand, so a mount point missing on the host is
 * created in the node's upper layer, never on the host. DIR/upper is kept
 * after the node ends: the next phase of the node (setup, then run, then a
 * restart) finds its files, and its size says what the node wrote.
 *
 * Why C and one exec: the light view this replaces (nsenter, unshare, sh,
 * two mounts, hostname) cost ~7 ms a node in six execs; the mounts
 * themselves cost tens of microseconds each.
 *
 * Exit: PROGRAM's (exec), or 126 with a message on stderr (the node's log)
 * when the node could not be made; 125 on bad arguments.
 *
 * Build: cc -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE nodehost.c
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define EXIT_USAGE 125
#define EXIT_STARTUP 126
#define MAX_ITEMS 256

static const char *prog = "jobgroup-nodehost";

#include "../die.h" /* vwarn, die(code, ...): shared with the shim and the Slurm agent */

struct bind {
    const char *src, *dst;
    int kind; /* 'b' read-write, 'B' read-only, 'f'/'F' own file (read-only) */
    int fd;
};

static struct bind binds[MAX_ITEMS];
static int nbinds;
static const char *overlays[MAX_ITEMS], *hides[MAX_ITEMS];
static int noverlays, nhides;
static const char *netns, *hostname, *root_dir, *shm_size, *workdir, *join_pid;

static void warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vwarn(fmt, ap);
    va_end(ap);
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s)
        die(EXIT_STARTUP, "out of memory");
    memcpy(s, a, la);
    size_t at = la;
    if (lb && b[0] != '/' && (la == 0 || a[la - 1] != '/'))
        s[at++] = '/';
    memcpy(s + at, b, lb + 1);
    return s;
}

/* Whether `path` is `top` or below it. */
static int under(const char *path, const char *top)
{
    size_t n = strlen(top);
    while (n > 1 && top[n - 1] == '/')
        n--;
    if (n == 1 && top[0] == '/')
        return 1;
    return strncmp(path, top, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* mkdir -p; mode for what is created. */
static int mkdir_p(const char *path, mode_t mode)
{
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(buf, path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* An overlayfs option value: ',' ':' and '\' escaped. */
static char *esc(const char *s)
{
    char *out = malloc(2 * strlen(s) + 1), *o = out;
    if (!out)
        die(EXIT_STARTUP, "out of memory");
    for (; *s; s++) {
        if (*s == ',' || *s == ':' || *s == '\\')
            *o++ = '\\';
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

/* A mount point as a single file name: '/' -> "%2F", '%' -> "%25". */
static char *key_of(const char *path)
{
    char *out = malloc(3 * strlen(path) + 1), *o = out;
    if (!out)
        die(EXIT_STARTUP, "out of memory");
    for (const char *s = path + (path[0] == '/'); *s; s++) {
        if (*s == '/' || *s == '%') {
            sprintf(o, "%%%02X", (unsigned char)*s);
            o += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
    return out;
}

static int mount_overlay(const char *lower, const char *upper, const char *work,
                         const char *target)
{
    if (mkdir_p(upper, 0755) < 0 || mkdir_p(work, 0700) < 0)
        return -1;
    char *l = esc(lower), *u = esc(upper), *w = esc(work);
    size_t n = strlen(l) + strlen(u) + strlen(w) + 64;
    char *opts = malloc(n);
    if (!opts)
        die(EXIT_STARTUP, "out of memory");
    snprintf(opts, n, "lowerdir=%s,upperdir=%s,workdir=%s", l, u, w);
    int rc = mount("overlay", target, "overlay", 0, opts);
    free(l), free(u), free(w), free(opts);
    return rc;
}

/* The upper layer's root takes the attributes of the host's directory (an
 * overlay's root directory shows its upper layer's). */
static void copy_attrs(const char *from, const char *to)
{
    struct stat st;
    if (stat(from, &st) == 0) {
        if (chown(to, st.st_uid, st.st_gid) < 0) { /* best effort */ }
        if (chmod(to, st.st_mode & 07777) < 0) { /* best effort */ }
    }
}

/* ---- the host's mounts ---------------------------------------------------- */

struct mnt {
    char *point, *fstype;
    int ro;
};

static void unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
            p[3] >= '0' && p[3] <= '7') {
            *o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
            p += 3;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

static struct mnt *read_mounts(int *count)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        die(EXIT_STARTUP, "cannot read /proc/self/mountinfo: %s", strerror(errno));
    size_t cap = 64, n = 0;
    struct mnt *out = malloc(cap * sizeof *out);
    char *line = NULL;
    size_t len = 0;
    while (out && getline(&line, &len, f) > 0) {
        /* id parent maj:min root POINT OPTIONS [optional...] - FSTYPE SOURCE SUPER */
        char *fields[6] = {0}, *save = NULL, *tok = strtok_r(line, " \n", &save);
        int i = 0;
        for (; tok && i < 6; tok = strtok_r(NULL, " \n", &save))
            fields[i++] = tok;
        while (tok && strcmp(tok, "-") != 0)
            tok = strtok_r(NULL, " \n", &save);
        char *fstype = tok ? strtok_r(NULL, " \n", &save) : NULL;
        if (i < 6 || !fstype)
            continue;
        if (n == cap) {
            cap *= 2;
            struct mnt *grown = realloc(out, cap * sizeof *out);
            if (!grown)
                break;
            out = grown;
        }
        unescape(fields[4]);
        out[n].point = strdup(fields[4]);
        out[n].fstype = strdup(fstype);
        out[n].ro = strncmp(fields[5], "ro", 2) == 0 && (fields[5][2] == ',' ||
                                                         fields[5][2] == '\0');
        n++;
    }
    free(line);
    fclose(f);
    if (!out)
        die(EXIT_STARTUP, "out of memory");
    *count = (int)n;
    return out;
}

/* File systems whose writes the node keeps to itself (an overlay of their
 * own); every other kind is shown as it is. */
static int overlayable(const char *fstype)
{
    static const char *const kinds[] = {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "jfs", "reiserfs",
        "bcachefs", "tmpfs", "nfs", "nfs4", "cifs", "smb3", "9p", "virtiofs", "ceph",
        NULL};
    for (int i = 0; kinds[i]; i++)
        if (strcmp(fstype, kinds[i]) == 0)
            return 1;
    return 0;
}

static int skipped(const char *point)
{
    static const char *const system[] = {"/", "/proc", "/sys", "/dev", "/run/netns", NULL};
    if (strcmp(point, "/") == 0)
        return 1;
    for (int i = 1; system[i]; i++)
        if (under(point, system[i]))
            return 1;
    for (int i = 0; i < nbinds; i++)
        if ((binds[i].kind == 'b' || binds[i].kind == 'B') && under(point, binds[i].src) &&
            strcmp(binds[i].src, binds[i].dst) == 0)
            return 1; /* bound recursively below, submounts included */
    return under(point, root_dir);
}

static void show_host_mounts(struct mnt *m, int n, const char *merged)
{
    for (int i = 0; i < n; i++) {
        if (skipped(m[i].point))
            continue;
        int seen = 0;
        for (int j = i + 1; j < n && !seen; j++)
            seen = strcmp(m[j].point, m[i].point) == 0; /* a later mount hides this one */
        if (seen)
            continue;
        char *target = join(merged, m[i].point);
        int rc;
        if (!m[i].ro && overlayable(m[i].fstype)) {
            char *key = key_of(m[i].point), *base = join(root_dir, "m"), *top = join(base, key);
            char *upper = join(top, "upper"), *work = join(top, "work");
            rc = mount_overlay(m[i].point, upper, work, target);
            free(key), free(base), free(top), free(upper), free(work);
        } else {
            rc = mount(m[i].point, target, NULL, MS_BIND, NULL);
            if (rc == 0 && m[i].ro)
                rc = mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
        }
        if (rc < 0)
            warn("%s (%s) is not shown in this node: %s", m[i].point, m[i].fstype,
                 strerror(errno));
        free(target);
    }
}

/* ---- binds ------------------------------------------------------------------ */

/* Each bind's source as a detached copy of its mount tree (open_tree, Linux
 * 5.2), taken in the host's view before the root is switched, and attached in
 * the node's view afterwards (move_mount): a destination is resolved inside
 * the node, so a symlink there never leads outside it. */
static void open_sources(void)
{
    for (int i = 0; i < nbinds; i++) {
        binds[i].fd = (int)syscall(SYS_open_tree, AT_FDCWD, binds[i].src,
                                   1 /* OPEN_TREE_CLONE */ | O_CLOEXEC | 0x8000 /* AT_RECURSIVE */);
        if (binds[i].fd < 0)
            die(EXIT_STARTUP, "cannot open %s: %s", binds[i].src, strerror(errno));
    }
}

static void make_point(const char *dst, int is_dir, int replace)
{
    struct stat st;
    if (replace && lstat(dst, &st) == 0 && S_ISLNK(st.st_mode))
        unlink(dst);
    if (stat(dst, &st) == 0)
        return;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dst);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        if (mkdir_p(parent, 0755) < 0)
            die(EXIT_STARTUP, "cannot create %s: %s", parent, strerror(errno));
    }
    if (is_dir) {
        if (mkdir(dst, 0755) < 0 && errno != EEXIST)
            die(EXIT_STARTUP, "cannot create %s: %s", dst, strerror(errno));
    } else {
        int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            die(EXIT_STARTUP, "cannot create %s: %s", dst, strerror(errno));
        close(fd);
    }
}

/* A detached mount tree made read-only, submounts included. */
static void read_only(int tree, const char *what)
{
    struct {
        unsigned long long set, clr, propagation, userns;
    } attr = {0x00000001 /* MOUNT_ATTR_RDONLY */, 0, 0, 0};
    if (syscall(SYS_mount_setattr, tree, "", 0x1000 /* AT_EMPTY_PATH */ | 0x8000 /* AT_RECURSIVE */,
                &attr, sizeof attr) < 0)
        die(EXIT_STARTUP, "cannot make %s read-only: %s", what, strerror(errno));
}

static void do_binds(int private_root)
{
    for (int i = 0; i < nbinds; i++) {
        struct bind *b = &binds[i];
        struct stat st;
        if (fstat(b->fd, &st) < 0)
            die(EXIT_STARTUP, "cannot stat %s: %s", b->src, strerror(errno));
        if (private_root)
            make_point(b->dst, S_ISDIR(st.st_mode), b->kind == 'f' || b->kind == 'F');
        if (b->kind == 'B' || b->kind == 'F')
            read_only(b->fd, b->src);
        if (syscall(SYS_move_mount, b->fd, "", AT_FDCWD, b->dst,
                    0x00000004 /* MOVE_MOUNT_F_EMPTY_PATH */ |
                        0x00000010 /* MOVE_MOUNT_T_SYMLINKS: as mount --bind */) < 0)
            die(EXIT_STARTUP, "cannot mount %s at %s: %s", b->src, b->dst, strerror(errno));
        close(b->fd);
    }
}

/* ---- the node --------------------------------------------------------------- */

static void join_node(const char *pid)
{
    static const char *const kinds[] = {"net", "uts", "ipc", "mnt", NULL};
    int fds[4];
    for (int i = 0; kinds[i]; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%s/ns/%s", pid, kinds[i]);
        fds[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (fds[i] < 0)
            die(EXIT_STARTUP, "cannot open %s: %s", path, strerror(errno));
    }
    for (int i = 0; kinds[i]; i++)
        if (setns(fds[i], 0) < 0)
            die(EXIT_STARTUP, "cannot join the %s namespace of %s: %s", kinds[i], pid,
                strerror(errno));
}

static void private_root(struct mnt *host, int nhost)
{
    char *upper = join(root_dir, "upper"), *work = join(root_dir, "work");
    char *merged = join(root_dir, "mnt");
    if (mkdir_p(upper, 0755) < 0 || mkdir_p(merged, 0700) < 0)
        die(EXIT_STARTUP, "cannot create %s: %s", root_dir, strerror(errno));
    copy_attrs("/", upper);
    if (mount_overlay("/", upper, work, merged) < 0)
        die(EXIT_STARTUP, "cannot mount the node's root (an overlay of / with its upper "
            "layer in %s): %s", upper, strerror(errno));
    static const char *const system[] = {"/proc", "/sys", "/dev", NULL};
    for (int i = 0; system[i]; i++) {
        char *target = join(merged, system[i]);
        if (mount(system[i], target, NULL, MS_BIND | MS_REC, NULL) < 0)
            die(EXIT_STARTUP, "cannot show %s in the node: %s", system[i], strerror(errno));
        free(target);
    }
    show_host_mounts(host, nhost, merged);
    if (chdir(merged) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
        umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        die(EXIT_STARTUP, "cannot switch to the node's root: %s", strerror(errno));
    free(upper), free(work), free(merged);
}

/* A size tmpfs takes: "-", digits with an optional k/m/g, or 1-3 digits and '%'. */
static int valid_size(const char *s)
{
    if (strcmp(s, "-") == 0)
        return 1;
    size_t n = strspn(s, "0123456789");
    if (n == 0)
        return 0;
    if (s[n] == '\0')
        return 1;
    if (s[n + 1] != '\0')
        return 0;
    return strchr("kKmMgG", s[n]) != NULL || (s[n] == '%' && n <= 3);
}

static void own_shm(void)
{
    char opts[128];
    if (strcmp(shm_size, "-") == 0)
        snprintf(opts, sizeof opts, "mode=1777");
    else
        snprintf(opts, sizeof opts, "mode=1777,size=%s", shm_size);
    if (mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
        die(EXIT_STARTUP, "cannot mount /dev/shm (%s): %s", opts, strerror(errno));
    struct stat st;
    if (stat("/dev/mqueue", &st) == 0 && S_ISDIR(st.st_mode))
        (void)mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

static void usage(const char *what)
{
    die(EXIT_USAGE, "%s\nusage: %s [-n NETNS] [-h HOSTNAME] [-r DIR] [-s SIZE] "
        "[-b|-B|-f|-F SRC DST]... [-o PATH]... [-x PATH]... [-C DIR] [-j PID] -- PROGRAM "
        "[ARGS...]", what, prog);
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--") == 0) {
            i++;
            break;
        }
        if (o[0] != '-' || strlen(o) != 2)
            usage("unknown argument");
        int two = o[1] == 'b' || o[1] == 'B' || o[1] == 'f' || o[1] == 'F';
        if (i + 1 + two >= argc)
            usage("missing operand");
        const char *a = argv[i + 1], *b = two ? argv[i + 2] : NULL;
        switch (o[1]) {
        case 'n': netns = a; break;
        case 'h': hostname = a; break;
        case 'r': root_dir = a; break;
        case 's':
            shm_size = a;
            if (!valid_size(a))
                die(EXIT_STARTUP, "/dev/shm: JOBGROUP_SHM_SIZE=%s: give bytes with an optional "
                    "k/m/g suffix (e.g. 8g) or a percentage of RAM (e.g. 50%%)", a);
            break;
        case 'C': workdir = a; break;
        case 'j': join_pid = a; break;
        case 'o': case 'x': {
            int *n = o[1] == 'o' ? &noverlays : &nhides;
            const char **list = o[1] == 'o' ? overlays : hides;
            if (*n == MAX_ITEMS || a[0] != '/')
                usage("too many paths, or a relative one");
            list[(*n)++] = a;
            break;
        }
        case 'b': case 'B': case 'f': case 'F':
            if (nbinds == MAX_ITEMS || b[0] != '/')
                usage("too many binds, or a relative destination");
            binds[nbinds++] = (struct bind){a, b, o[1], -1};
            break;
        default:
            usage("unknown option");
        }
        i += 1 + two;
    }
    if (i >= argc)
        usage("no program");
    if (join_pid) {
        join_node(join_pid);
    } else {
        if (netns) {
            int fd = open(netns, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
                die(EXIT_STARTUP, "cannot join the network namespace %s: %s", netns,
                    strerror(errno));
            close(fd);
        }
        if (unshare(CLONE_NEWNS | CLONE_NEWIPC | (hostname ? CLONE_NEWUTS : 0)) < 0)
            die(EXIT_STARTUP, "cannot make the node's namespaces: %s", strerror(errno));
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            die(EXIT_STARTUP, "cannot make the node's mounts private: %s", strerror(errno));
        if (hostname && sethostname(hostname, strlen(hostname)) < 0)
            die(EXIT_STARTUP, "cannot set the hostname %s: %s", hostname, strerror(errno));
        open_sources();
        if (root_dir) {
            int nhost = 0;
            struct mnt *host = read_mounts(&nhost);
            private_root(host, nhost);
        }
        if (shm_size)
            own_shm();
        do_binds(root_dir != NULL);
        for (int k = 0; k < noverlays && root_dir; k++) {
            char *key = key_of(overlays[k]), *base = join(root_dir, "o"), *top = join(base, key);
            char *upper = join(top, "upper"), *work = join(top, "work");
            if (mount_overlay(overlays[k], upper, work, overlays[k]) < 0)
                die(EXIT_STARTUP, "cannot keep %s the node's own: %s", overlays[k],
                    strerror(errno));
            free(key), free(base), free(top), free(upper), free(work);
        }
        for (int k = 0; k < nhides; k++)
            if (mount("hidden", hides[k], "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      "size=4k,mode=0555") < 0 && errno != ENOENT)
                die(EXIT_STARTUP, "cannot hide %s: %s", hides[k], strerror(errno));
    }
    if (workdir && chdir(workdir) < 0)
        die(EXIT_STARTUP, "cannot enter %s: %s", workdir, strerror(errno));
    execvp(argv[i], argv + i);
    die(errno == ENOENT ? 127 : 126, "cannot run %s: %s", argv[i], strerror(errno));
}
