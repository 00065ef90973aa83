/*
 * leaky: a deliberately leaky C program for leaktrace's unwinding tests (tests/tests/unwind.rs).
 * tests/build.rs builds it with and without frame pointers, and stripped: the tests check that
 * each leak is attributed to the function that made the call, however the program was built.
 *
 *   leaky <scenario> [--count N] [--wait-stdin]
 *   leaky list          one line per scenario: <scenario> <leaking function> <caller>
 *
 * Protocol (leaktrace-reproducer's): stdout, one flushed line each: `ready pid=<pid>`; with
 * --wait-stdin it then waits for one line (or EOF) on stdin, so a test can attach first; it
 * leaks; `done leaked=<objects>`; then it holds everything until stdin's EOF and exits 0 (with
 * stdin at /dev/null, at once). Exit 1 when a call fails (the error on stderr), 2 on bad usage.
 *
 * Each scenario calls its leaking function --count times (default 20) from a caller of its
 * own, so a stack must read  <libc> <- leaking function <- caller <- run_scenario <- main.
 *
 *   scenario    leaking function  caller              leaks per call
 *   fopen       leak_fopen        loop_fopen          a FILE on /dev/null: 1 file fd
 *   socket      leak_socket       loop_socket         1 UDP socket
 *   pipe2       leak_pipe2        loop_pipe2          2 pipe fds
 *   eventfd     leak_eventfd      loop_eventfd        1 eventfd
 *   dup         leak_dup          loop_dup            1 dup of stdout (the test's pipe)
 *   thread      leak_thread       loop_thread         1 thread asleep in pause() for good
 *   cond_wait   wait_on_cond      cond_waiter_main    1 thread in pthread_cond_wait, never signalled
 *   mutex_lock  lock_held_mutex   mutex_waiter_main   1 thread in pthread_mutex_lock on a mutex main holds
 *
 * The two waiter scenarios' callers are the threads' entry functions (started from
 * start_cond_waiters / start_mutex_waiters); they say `done` only once /proc shows every waiter
 * asleep in futex. `leaked` counts fds for the fd scenarios, threads for the others.
 *
 * Why the code looks as it does: every named function is KEEP_FRAME (see protocol.h), and each
 * leaking function checks its call's result, so the call is never a tail call that would take
 * the leaking function off the stack. Nothing else here routes calls through frames of its own:
 * that the frameless glibc wrappers hide their caller from a frame-pointer walk is the point.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "protocol.h"

KEEP_FRAME static long leak_fopen(void) {
    FILE *f = fopen("/dev/null", "r");
    if (!f)
        die("fopen");
    return 1;
}

KEEP_FRAME static long leak_socket(void) {
    if (socket(AF_INET, SOCK_DGRAM, 0) < 0)
        die("socket");
    return 1;
}

KEEP_FRAME static long leak_pipe2(void) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        die("pipe2");
    return 2;
}

KEEP_FRAME static long leak_eventfd(void) {
    if (eventfd(0, EFD_CLOEXEC) < 0)
        die("eventfd");
    return 1;
}

KEEP_FRAME static long leak_dup(void) {
    if (dup(STDOUT_FILENO) < 0)
        die("dup");
    return 1;
}

/* Never set; atomic so the compiler cannot prove the loops waiting for it endless. */
static atomic_int never_set;

static void *asleep_for_good(void *arg) {
    (void)arg;
    while (!atomic_load(&never_set))
        pause();
    return NULL;
}

KEEP_FRAME static long leak_thread(void) {
    pthread_t t;
    check_pthread(pthread_create(&t, NULL, asleep_for_good, NULL), "pthread_create");
    return 1;
}

/* The callers: one per leaking function, so the test can check the frame below it. */
#define LOOP(caller, leak)                                                                        \
    KEEP_FRAME static long caller(long count) {                                                   \
        long leaked = 0;                                                                          \
        for (long i = 0; i < count; i++)                                                          \
            leaked += leak();                                                                     \
        return leaked;                                                                            \
    }
LOOP(loop_fopen, leak_fopen)
LOOP(loop_socket, leak_socket)
LOOP(loop_pipe2, leak_pipe2)
LOOP(loop_eventfd, leak_eventfd)
LOOP(loop_dup, leak_dup)
LOOP(loop_thread, leak_thread)

static pthread_mutex_t cond_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never_signalled = PTHREAD_COND_INITIALIZER;
KEEP_FRAME static void wait_on_cond(void) {
    check_pthread(pthread_mutex_lock(&cond_mutex), "pthread_mutex_lock");
    while (!atomic_load(&never_set))
        check_pthread(pthread_cond_wait(&never_signalled, &cond_mutex), "pthread_cond_wait");
    check_pthread(pthread_mutex_unlock(&cond_mutex), "pthread_mutex_unlock");
}

KEEP_FRAME static void *cond_waiter_main(void *arg) {
    (void)arg;
    wait_on_cond();
    return NULL;
}

/* Locked by main before any waiter starts, and never unlocked. */
static pthread_mutex_t held_mutex = PTHREAD_MUTEX_INITIALIZER;

KEEP_FRAME static void lock_held_mutex(void) {
    check_pthread(pthread_mutex_lock(&held_mutex), "pthread_mutex_lock");
    check_pthread(pthread_mutex_unlock(&held_mutex), "pthread_mutex_unlock");
}

KEEP_FRAME static void *mutex_waiter_main(void *arg) {
    (void)arg;
    lock_held_mutex();
    return NULL;
}

static long start_waiters(long count, void *(*entry)(void *)) {
    for (long i = 0; i < count; i++) {
        pthread_t t;
        check_pthread(pthread_create(&t, NULL, entry, NULL), "pthread_create");
    }
    await_futex_sleepers((int)count);
    return count;
}

KEEP_FRAME static long start_cond_waiters(long count) {
    return start_waiters(count, cond_waiter_main);
}

KEEP_FRAME static long start_mutex_waiters(long count) {
    check_pthread(pthread_mutex_lock(&held_mutex), "pthread_mutex_lock");
    return start_waiters(count, mutex_waiter_main);
}

struct scenario {
    const char *name;
    const char *leaking;
    const char *caller;
    long (*run)(long count);
};

static const struct scenario scenarios[] = {
    {"fopen", "leak_fopen", "loop_fopen", loop_fopen},
    {"socket", "leak_socket", "loop_socket", loop_socket},
    {"pipe2", "leak_pipe2", "loop_pipe2", loop_pipe2},
    {"eventfd", "leak_eventfd", "loop_eventfd", loop_eventfd},
    {"dup", "leak_dup", "loop_dup", loop_dup},
    {"thread", "leak_thread", "loop_thread", loop_thread},
    {"cond_wait", "wait_on_cond", "cond_waiter_main", start_cond_waiters},
    {"mutex_lock", "lock_held_mutex", "mutex_waiter_main", start_mutex_waiters},
};
#define SCENARIOS (sizeof scenarios / sizeof scenarios[0])

KEEP_FRAME static long run_scenario(const struct scenario *s, long count) {
    long leaked = s->run(count);
    if (leaked != count && leaked != 2 * count)
        die("leaked count");
    return leaked; /* checked after the call: no tail call drops this frame */
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <scenario>|list [--count N] [--wait-stdin]\n", argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "list") == 0) {
        for (size_t i = 0; i < SCENARIOS; i++)
            printf("%s %s %s\n", scenarios[i].name, scenarios[i].leaking, scenarios[i].caller);
        return 0;
    }
    const struct scenario *s = NULL;
    for (size_t i = 0; i < SCENARIOS; i++)
        if (strcmp(argv[1], scenarios[i].name) == 0)
            s = &scenarios[i];
    if (!s) {
        fprintf(stderr, "unknown scenario %s (try: %s list)\n", argv[1], argv[0]);
        return 2;
    }
    long count = 20;
    int wait_stdin = 0;
    parse_options(argc, argv, &count, &wait_stdin);

    say_ready();
    if (wait_stdin)
        wait_for_go();
    say_done(run_scenario(s, count));
    hold_until_eof();
}
