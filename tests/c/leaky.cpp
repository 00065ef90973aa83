// leakypp: the C++ twin of leaky.c (read its header for the protocol): leaks made in methods,
// so the tests check demangled names. tests/build.rs builds it -O2 without frame pointers.
//
//   leakypp <scenario> [--count N] [--wait-stdin]
//   leakypp list        one line per scenario: <scenario> <leaking function> <caller>
//
//   scenario   leaking function       caller          leaks per call
//   fopen      Pool::grow             Pool::fill      a std::FILE on /dev/null: 1 file fd
//   socket     Pool::connect          Pool::dial      1 UDP socket (::socket)
//   thread     Workers::spawn         Workers::start  1 std::thread asleep in pause() for good
//   cond_wait  Workers::wait_for_job  Workers::run    1 std::thread in std::condition_variable::wait
//
// cond_wait's caller is the threads' entry (Workers::run, started by Workers::start_idle); it says
// `done` once /proc shows every waiter asleep in futex. Every named method is KEEP_FRAME (see
// protocol.h) and checks what its call returned, so no call is a tail call.
#include <sys/socket.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "protocol.h"

namespace {
// Never set: the loops waiting for it are endless in practice, not provably.
std::atomic<bool> never_set{false};
}  // namespace

class Pool {
  public:
    KEEP_FRAME long grow();
    KEEP_FRAME long fill(long count);
    KEEP_FRAME long connect();
    KEEP_FRAME long dial(long count);

  private:
    // Held and never closed: the leak.
    std::vector<std::FILE *> files_;
    std::vector<int> sockets_;
};

long Pool::grow() {
    std::FILE *f = std::fopen("/dev/null", "r");
    if (f == nullptr)
        die("fopen");
    files_.push_back(f);
    return 1;
}

long Pool::fill(long count) {
    long leaked = 0;
    for (long i = 0; i < count; i++)
        leaked += grow();
    return leaked;
}

long Pool::connect() {
    int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket");
    sockets_.push_back(fd);
    return 1;
}

long Pool::dial(long count) {
    long leaked = 0;
    for (long i = 0; i < count; i++)
        leaked += connect();
    return leaked;
}

class Workers {
  public:
    KEEP_FRAME long spawn();
    KEEP_FRAME long start(long count);
    KEEP_FRAME void wait_for_job();
    KEEP_FRAME void run();
    KEEP_FRAME long start_idle(long count);

  private:
    static void asleep_for_good() {
        while (!never_set.load())
            pause();
    }

    std::mutex mutex_;
    std::condition_variable job_posted_;  // never notified
};

long Workers::spawn() {
    std::thread t(asleep_for_good);
    t.detach();  // alive until the process exits; a joinable std::thread must not be destroyed
    return 1;
}

long Workers::start(long count) {
    long leaked = 0;
    for (long i = 0; i < count; i++)
        leaked += spawn();
    return leaked;
}

void Workers::wait_for_job() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!never_set.load())
        job_posted_.wait(lock);
}

void Workers::run() {
    wait_for_job();
    std::atomic_signal_fence(std::memory_order_seq_cst);  // keeps the call above a call
}

long Workers::start_idle(long count) {
    for (long i = 0; i < count; i++)
        std::thread(&Workers::run, this).detach();
    await_futex_sleepers(static_cast<int>(count));
    return count;
}

namespace {
// Alive for the whole process: what they hold is what leaks.
Pool pool;
Workers workers;

struct Scenario {
    const char *name;
    const char *leaking;
    const char *caller;
    long (*run)(long count);
};

const Scenario scenarios[] = {
    {"fopen", "Pool::grow", "Pool::fill", [](long n) { return pool.fill(n); }},
    {"socket", "Pool::connect", "Pool::dial", [](long n) { return pool.dial(n); }},
    {"thread", "Workers::spawn", "Workers::start", [](long n) { return workers.start(n); }},
    {"cond_wait", "Workers::wait_for_job", "Workers::run",
     [](long n) { return workers.start_idle(n); }},
};
}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s <scenario>|list [--count N] [--wait-stdin]\n", argv[0]);
        return 2;
    }
    if (std::strcmp(argv[1], "list") == 0) {
        for (const Scenario &s : scenarios)
            std::printf("%s %s %s\n", s.name, s.leaking, s.caller);
        return 0;
    }
    const Scenario *scenario = nullptr;
    for (const Scenario &s : scenarios)
        if (std::strcmp(argv[1], s.name) == 0)
            scenario = &s;
    if (scenario == nullptr) {
        std::fprintf(stderr, "unknown scenario %s (try: %s list)\n", argv[1], argv[0]);
        return 2;
    }
    long count = 20;
    int wait_stdin = 0;
    parse_options(argc, argv, &count, &wait_stdin);

    say_ready();
    if (wait_stdin)
        wait_for_go();
    say_done(scenario->run(count));
    hold_until_eof();
}
