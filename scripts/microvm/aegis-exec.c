/*
 * aegis-exec: the guest init's last step (scripts/microvm/init), built static at guest build time.
 *   aegis-exec STATUS ROOT CWD UID GID NOFILE NPROC SECCOMP NENV NAME=value... PROGRAM ARGS...
 * chroot(ROOT), rlimits (NOFILE, NPROC for the agent's uid, no core), no supplementary groups,
 * gid then uid (real, effective and saved), PR_SET_NO_NEW_PRIVS, chdir(CWD), the seccomp filter
 * of file SECCOMP (a BPF program the host compiled from the bundle's profile, read before the
 * chroot, installed last: see load_filter), then execvp PROGRAM
 * with exactly the NENV given variables (PATH among them is used for the lookup). "started" is
 * written to STATUS (the status port, opened before the chroot, close-on-exec) only once PROGRAM
 * is found executable, so an entrypoint that cannot run is reported as not started. Exits 125 if a
 * step fails before the exec (fail secure: nothing runs), 127 if PROGRAM cannot be executed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

extern char **environ;

static long num(const char *s) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *s == '\0' || *end != '\0' || v < 0) {
    fprintf(stderr, "aegis-exec: bad number %s\n", s);
    exit(125);
  }
  return v;
}

static void die(const char *what) {
  fprintf(stderr, "aegis-exec: %s: %s\n", what, strerror(errno));
  exit(125);
}

/* --- seccomp (defence in depth: the same profile the OCI drivers get) --- */

/*
 * The BPF program (struct sock_filter[], host order) the host wrote into the spec share
 * (src/sandbox/spec/seccomp-bpf.ts). Read whole before the chroot; a missing, empty, misaligned
 * or oversized file stops the run (fail secure: never run without the filter).
 */
static struct sock_fprog load_filter(const char *path) {
  struct sock_fprog prog = {0, NULL};
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) die("seccomp program");
  if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) != 0 || st.st_size > BPF_MAXINSNS * (off_t)sizeof(struct sock_filter)) {
    fprintf(stderr, "aegis-exec: the seccomp program has a bad size (%lld bytes)\n", (long long)st.st_size);
    exit(125);
  }
  struct sock_filter *f = malloc((size_t)st.st_size);
  if (f == NULL) die("malloc");
  size_t got = 0;
  while (got < (size_t)st.st_size) {
    ssize_t n = read(fd, (char *)f + got, (size_t)st.st_size - got);
    if (n <= 0) die("seccomp program read");
    got += (size_t)n;
  }
  close(fd);
  prog.len = (unsigned short)(st.st_size / sizeof(struct sock_filter));
  prog.filter = f;
  return prog;
}

/* Installs the filter (needs PR_SET_NO_NEW_PRIVS, set before: no privilege is needed then). */
static void install_filter(const struct sock_fprog *prog) {
  if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) != 0) die("seccomp");
}

/* The program as execvp would find it with this PATH: 1 if it is an executable regular file. */
static int runnable(const char *prog, const char *path) {
  struct stat st;
  char buf[4096];
  if (strchr(prog, '/') != NULL) return stat(prog, &st) == 0 && S_ISREG(st.st_mode) && access(prog, X_OK) == 0;
  if (path == NULL) path = "/usr/local/bin:/usr/bin:/bin";
  while (*path != '\0') {
    const char *end = strchr(path, ':');
    size_t n = end == NULL ? strlen(path) : (size_t)(end - path);
    if (snprintf(buf, sizeof buf, "%.*s/%s", (int)n, n == 0 ? "." : path, prog) < (int)sizeof buf &&
        stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0)
      return 1;
    if (end == NULL) break;
    path = end + 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 11) {
    fprintf(stderr, "usage: aegis-exec STATUS ROOT CWD UID GID NOFILE NPROC SECCOMP NENV NAME=value... PROGRAM ARGS...\n");
    return 125;
  }
  int status = open(argv[1], O_WRONLY | O_CLOEXEC);
  if (status < 0) die("status port");
  argv++;
  argc--;
  uid_t uid = (uid_t)num(argv[3]);
  gid_t gid = (gid_t)num(argv[4]);
  rlim_t nofile = (rlim_t)num(argv[5]);
  rlim_t nproc = (rlim_t)num(argv[6]);
  struct sock_fprog filter = load_filter(argv[7]);
  long nenv = num(argv[8]);
  if (uid == 0 || gid == 0) { fprintf(stderr, "aegis-exec: refusing uid/gid 0\n"); return 125; }
  if (9 + nenv >= argc) { fprintf(stderr, "aegis-exec: no program\n"); return 125; }
  char **env = calloc((size_t)nenv + 1, sizeof(char *));
  if (env == NULL) die("calloc");
  for (long i = 0; i < nenv; i++) env[i] = argv[9 + i];
  char **prog = &argv[9 + nenv];

  if (chroot(argv[1]) != 0) die("chroot");
  if (chdir("/") != 0) die("chdir /");
  struct rlimit r;
  r.rlim_cur = r.rlim_max = nofile;
  if (setrlimit(RLIMIT_NOFILE, &r) != 0) die("RLIMIT_NOFILE");
  r.rlim_cur = r.rlim_max = nproc;
  if (setrlimit(RLIMIT_NPROC, &r) != 0) die("RLIMIT_NPROC");
  r.rlim_cur = r.rlim_max = 0;
  if (setrlimit(RLIMIT_CORE, &r) != 0) die("RLIMIT_CORE");
  if (setgroups(0, NULL) != 0) die("setgroups");
  if (setresgid(gid, gid, gid) != 0) die("setresgid");
  if (setresuid(uid, uid, uid) != 0) die("setresuid");
  if (setuid(0) == 0) { fprintf(stderr, "aegis-exec: uid 0 could be regained\n"); return 125; }
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs");
  if (chdir(argv[2]) != 0) die("chdir");
  environ = env;
  if (!runnable(prog[0], getenv("PATH"))) {
    fprintf(stderr, "aegis-exec: cannot execute %s: not found or not executable\n", prog[0]);
    return 127;
  }
  install_filter(&filter);
  if (write(status, "started\n", 8) != 8) die("status port");
  execvp(prog[0], prog);
  fprintf(stderr, "aegis-exec: cannot execute %s: %s\n", prog[0], strerror(errno));
  return errno == ENOENT ? 127 : 126;
}
