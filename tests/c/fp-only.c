/* A program whose every frame has a frame pointer, down to its entry point: no libc (glibc's own
 * frames have none on Debian), raw system calls, and `_start` clearing the frame pointer so the
 * chain ends there. The kernel's frame-pointer walk then gives the whole stack, as it does on
 * distributions built with frame pointers, and leaktrace should stop copying the stack for it
 * (tests/tests/unwind.rs, `a_complete_frame_pointer_stack_stops_the_copies`).
 *
 * Same protocol as leaky.c, one scenario: `eventfd` leaks --count (default 20) eventfds from
 * leak_eventfd, called by loop_eventfd, one every --interval-ms (default 50), so the tracer
 * learns the stack is complete while the leak goes on. Built freestanding and static, x86_64 and aarch64. */


#if defined(__x86_64__)
enum {
    SYS_read = 0,
    SYS_write = 1,
    SYS_nanosleep = 35,
    SYS_getpid = 39,
    SYS_exit_group = 231,
    SYS_eventfd2 = 290
};

static inline long sys3(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

/* Entry: the frame pointer is zeroed (the end of the chain) and the stack aligned for the call. */
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  xor %ebp, %ebp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start_c\n"
        "  ud2\n");
#elif defined(__aarch64__)
enum {
    SYS_read = 63,
    SYS_write = 64,
    SYS_nanosleep = 101,
    SYS_getpid = 172,
    SYS_exit_group = 94,
    SYS_eventfd2 = 19
};

static inline long sys3(long nr, long a, long b, long c) {
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc #0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
}

__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "  mov x29, #0\n"
        "  mov x30, #0\n"
        "  mov x0, sp\n"
        "  bl start_c\n"
        "  brk #0\n");
#else
#error "x86_64 and aarch64 only"
#endif

static void say(const char *s) {
    long n = 0;
    while (s[n])
        n++;
    sys3(SYS_write, 1, (long)s, n);
}

static void say_number(const char *before, long v) {
    char buf[32];
    int i = sizeof buf;
    buf[--i] = 0;
    buf[--i] = '\n';
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    say(before);
    say(buf + i);
}

static int same(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* Reads stdin until a newline (wait_line) or end of file. */
static void read_stdin(int wait_line) {
    char c;
    while (sys3(SYS_read, 0, (long)&c, 1) == 1)
        if (wait_line && c == '\n')
            return;
}

__attribute__((noipa)) static long leak_eventfd(void) {
    /* gcc 12 keeps leaf functions frameless even with -mno-omit-leaf-frame-pointer; taking the
     * frame address makes it set the frame up, as a leaf of a frame-pointer build has. */
    __asm__ volatile("" : : "r"(__builtin_frame_address(0)));
    long fd = sys3(SYS_eventfd2, 0, 0, 0);
    if (fd < 0)
        sys3(SYS_exit_group, 1, 0, 0);
    return fd;
}

__attribute__((noipa)) static long loop_eventfd(long count, long interval_ms) {
    struct {
        long sec, nsec;
    } pause = {interval_ms / 1000, interval_ms % 1000 * 1000000};
    long leaked = 0;
    for (long i = 0; i < count; i++) {
        leaked += leak_eventfd() >= 0;
        sys3(SYS_nanosleep, (long)&pause, 0, 0);
    }
    return leaked;
}

static long number(const char *p) {
    long v = 0;
    for (; *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (*p - '0');
    return v;
}

__attribute__((used, noreturn)) void start_c(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    long count = 20, interval_ms = 50;
    int wait = 0;
    if (argc < 2) {
        say("usage: fp-only eventfd|list [--count N] [--interval-ms MS] [--wait-stdin]\n");
        sys3(SYS_exit_group, 2, 0, 0);
    }
    if (same(argv[1], "list")) {
        say("eventfd leak_eventfd loop_eventfd\n");
        sys3(SYS_exit_group, 0, 0, 0);
    }
    for (long i = 2; i < argc; i++) {
        if (same(argv[i], "--wait-stdin"))
            wait = 1;
        else if (same(argv[i], "--count") && i + 1 < argc)
            count = number(argv[++i]);
        else if (same(argv[i], "--interval-ms") && i + 1 < argc)
            interval_ms = number(argv[++i]);
    }
    if (!same(argv[1], "eventfd")) {
        say("unknown scenario\n");
        sys3(SYS_exit_group, 2, 0, 0);
    }
    say_number("ready pid=", sys3(SYS_getpid, 0, 0, 0));
    if (wait)
        read_stdin(1);
    say_number("done leaked=", loop_eventfd(count, interval_ms));
    read_stdin(0);
    sys3(SYS_exit_group, 0, 0, 0);
    __builtin_unreachable();
}
