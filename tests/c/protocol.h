/*
 * The stdout/stdin protocol of leaktrace-reproducer, shared by leaky.c and leaky.cpp (both
 * compile it; it is C that is also valid C++). See leaky.c for the protocol itself.
 */
#ifndef LEAKY_PROTOCOL_H
#define LEAKY_PROTOCOL_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/*
 * What the tests look for in a stack must be a frame of its own, under its own name: no
 * inlining, no `.constprop`/`.isra` clones, no identical-code folding with a twin, and no
 * noreturn inference that would let the compiler drop the code after a call. gcc's noipa says
 * all of that; clang has no cloning or ICF at this level and knows only noinline.
 */
#if defined(__clang__)
#define KEEP_FRAME __attribute__((noinline))
#else
#define KEEP_FRAME __attribute__((noipa))
#endif

/* Prints `what: <errno text>` and exits 1: every failure is fatal, the test reads the status.
 * _exit, as in hold_until_eof. */
__attribute__((noreturn)) static inline void die(const char *what) {
    perror(what);
    fflush(stdout);
    _exit(1);
}

/* pthread calls return the error instead of setting errno. */
static inline void check_pthread(int err, const char *what) {
    if (err != 0) {
        errno = err;
        die(what);
    }
}

/* One line on stdout, flushed at once: the test reads it while we keep running. */
static inline void say(const char *line) {
    if (printf("%s\n", line) < 0 || fflush(stdout) != 0)
        die("stdout");
}

static inline void say_ready(void) {
    char line[64];
    snprintf(line, sizeof line, "ready pid=%d", (int)getpid());
    say(line);
}

static inline void say_done(long leaked) {
    char line[64];
    snprintf(line, sizeof line, "done leaked=%ld", leaked);
    say(line);
}

/* Waits for one line (or EOF) on stdin. Bytewise read(2): no stdio buffer may swallow input. */
static inline void wait_for_go(void) {
    char c;
    for (;;) {
        ssize_t n = read(STDIN_FILENO, &c, 1);
        if (n == 0 || (n == 1 && c == '\n'))
            return;
        if (n < 0 && errno != EINTR)
            die("read stdin");
    }
}

/* Holds everything until the test hangs up (stdin EOF), then exits 0. _exit: no destructors or
 * atexit handlers, which would wait for the blocked threads (glibc's pthread_cond_destroy waits
 * for a condition's waiters). stdout is flushed after every line already. */
__attribute__((noreturn)) static inline void hold_until_eof(void) {
    char buf[256];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0)
            _exit(0);
        if (n < 0 && errno != EINTR)
            die("read stdin");
    }
}

/* Threads of this process asleep in the futex syscall: /proc/self/task/TID/syscall starts with
 * the number of the syscall a blocked task is in. */
static inline int threads_in_futex(void) {
    DIR *tasks = opendir("/proc/self/task");
    if (!tasks)
        die("/proc/self/task");
    int n = 0;
    struct dirent *e;
    while ((e = readdir(tasks)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300]; /* d_name is at most 255 bytes */
        snprintf(path, sizeof path, "/proc/self/task/%s/syscall", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* the task just exited */
        long nr = -1;
        if (fscanf(f, "%ld", &nr) == 1 && nr == SYS_futex)
            n++;
        fclose(f);
    }
    closedir(tasks);
    return n;
}

/* Returns once `n` threads sleep in a futex wait, so `done` means the waiters are really blocked
 * (as leaktrace-reproducer's waiter scenarios do); fails after 10 s. */
static inline void await_futex_sleepers(int n) {
    for (int tries = 0; tries < 1000; tries++) {
        if (threads_in_futex() >= n)
            return;
        struct timespec ten_ms = {0, 10 * 1000 * 1000};
        nanosleep(&ten_ms, NULL);
    }
    errno = ETIMEDOUT;
    die("waiting for the threads to block in futex");
}

/* `--count N` (default `count`) and `--wait-stdin`, after the scenario in argv[1]. */
static inline void parse_options(int argc, char **argv, long *count, int *wait_stdin) {
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--wait-stdin") == 0) {
            *wait_stdin = 1;
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            char *end;
            *count = strtol(argv[++i], &end, 10);
            if (*end != '\0' || *count < 1 || *count > 10000) {
                fprintf(stderr, "--count: 1..10000, not %s\n", argv[i]);
                exit(2);
            }
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            exit(2);
        }
    }
}

#endif
