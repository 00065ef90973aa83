// Command leaky is a Go program that leaks goroutines in known ways, for leaktrace's goroutine
// tests (tests/tests/goroutines.rs). `cargo xtask test` (xtask/src/golang.rs) builds it offline,
// standard library only, with two Go versions and once stripped, into target/go/bin/:
// leaky-go1.23.9, leaky-go1.27.3 and leaky-go1.27.3-stripped (-ldflags='-s -w': no symbol table,
// no DWARF; the pclntab, with every function name and line, stays).
//
//	leaky <scenario> [--count N] [--interval-ms MS] [--wait-stdin] [--hold|--no-hold|--hold-ms MS]
//	      [--report]
//	leaky list
//
// # Leak scenarios
//
// Each calls its leak function `--count` times (default 20), `--interval-ms` apart (default 50).
// Every leak function is `//go:noinline` and holds the `go` statement of what it leaks (directly, or
// through the standard library call it makes), so a goroutine's creation site — the `go`
// statement's file:line, i.e. runtime.newproc's caller — is in it, or is a std function called from
// it. Scenario → function → what one call leaks → wait reason (both Go versions unless said):
//
//   - chan-send → leakBlockedSend: 1 goroutine (main.leakBlockedSend.func1) sending on an unbuffered
//     channel nobody receives from. "chan send".
//   - ticker → leakTicker: 1 goroutine (main.leakTicker.func1) ranging over a 10 ms ticker that is
//     never stopped: it wakes every 10 ms and never ends. "chan receive" (runnable for an instant
//     every tick).
//   - context → leakContext: 1 goroutine (main.leakContext.func1) in <-ctx.Done() of a
//     context.WithCancel whose cancel func is dropped. "chan receive". (A WithCancel of Background
//     starts no propagation goroutine.)
//   - waitgroup → leakWaitGroup: 1 goroutine (main.leakWaitGroup.func1) in wg.Wait() on a WaitGroup
//     given Add(2) and one Done. "semacquire" on Go 1.23, "sync.WaitGroup.Wait" on Go ≥ 1.25.
//   - exec → leakExecNoWait: exec.Command("/bin/sleep", "3600") with Stdout a *bytes.Buffer, Start
//     and never Wait. Per call: a child process; 2 fds: the read end of the stdout pipe (pipe2; the
//     write end is closed in Start) and a pidfd; 1 goroutine, the stdout copier, created by
//     os/exec.(*Cmd).Start on the caller's goroutine, starting in os/exec.(*Cmd).Start.gowrap1:
//     "IO wait" (reading the pipe through the netpoller). The pidfd: os.StartProcess (Go ≥ 1.23)
//     forks with clone(2) — not clone3 — flags CLONE_VM|CLONE_VFORK|CLONE_PIDFD|SIGCHLD, stack 0,
//     and the kernel writes the pidfd to clone's parent_tid argument (its third on amd64 and
//     arm64). The first call also checks pidfd support once, leaving nothing: pidfd_open of
//     itself, waitid and pidfd_send_signal on it, then a clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD)
//     of a child that exits at once, reaped by waitid(P_PIDFD, __WCLONE); both pidfds closed. The
//     children get Pdeathsig SIGKILL and are killed when the hold ends, so none outlives us.
//   - http-body → leakHTTPBody: http.Get of the fixture's own server (net/http on 127.0.0.1:0,
//     started before `ready`) through a new Client and Transport each call, the response body never
//     read nor closed. Per call: 3 goroutines and 2 socket fds. Client side, created by
//     net/http.(*Transport).dialConn in the (since ended) dialConnFor goroutine, itself created
//     (net/http.(*Transport).startDialConnForLocked.func1) in the caller's goroutine: the
//     persistConn readLoop and writeLoop (starting in dialConn.gowrap2 and .gowrap3), both
//     "select"; and the client socket, made in the dialConnFor goroutine. Server side (same
//     process): the connection's goroutine, created by net/http.(*Server).Serve (start
//     Serve.gowrap3) in the fixture's serve goroutine (main.startHTTPServer.func2, from before
//     `ready`), "IO wait" for the next request; and the socket accepted there.
//
// `leaked` counts goroutines: 1 per call but for http-body, 3 per call. After every call the
// program checks, polling up to 1 s, that exactly the expected number of goroutines were added
// since the baseline (taken just before the first call) and that each is parked in one of the
// scenario's wait reasons (runtime.Stack of all goroutines), and that the fds it leaks per call
// (/proc/self/fd, by kind) grew as stated; else it exits 1. `--report` prints, on stderr, what
// the last call added: goroutines with wait reason and creator, fds by kind.
//
// # Controls
//
//   - clean → churnRound: `--count` (default 2000) rounds, each starting 50 goroutines that do real
//     work — channel ping-pong, a mutex, waits on a context then cancelled, time.After timers, a
//     ticker stopped after a tick — and joining them all with a WaitGroup. Nothing outlives its
//     round: at the end runtime.NumGoroutine() must be back to the baseline (exit 1 if not). Says
//     only `done leaked=0`, then holds.
//   - churn → churnGoroutines, a benchmark: `--count` (default 200000) goroutines, each created and
//     joined (WaitGroup, batches of 100); prints `churn goroutines=<n> ns_per_goroutine=<f>`,
//     `done leaked=0` and exits (no hold unless `--hold`/`--hold-ms`).
//
// # Protocol
//
// The same as leaktrace-reproducer's (tests/src/bin/leaktrace-reproducer.rs): stdout, one line per
// write: `ready pid=<pid>` (after the fixture, e.g. http-body's server, is up, so its goroutines
// and fds are the baseline); with `--wait-stdin`, one line (or EOF) is read from stdin before the
// scenario starts; `leaked <total goroutines so far>` after each leak call; `done leaked=<total>`.
// Then it holds (the default but for churn): everything leaked stays, nothing new is created; it
// reads stdin to EOF if stdin can hang up (pipe, socket, tty), else sleeps until killed; at most
// `--hold-ms` if given. Then it kills the exec scenario's children and exits 0.
//
// Before `ready` the program also makes what the Go runtime makes once, on first use (see warmUp:
// the netpoller's epoll fd and eventfd, the GC's mark worker goroutines), so a tracer attached
// then does not see it created by the first leak call or check.
//
// Exit codes: 0 success, 1 a check failed or a call erred (message on stderr), 2 usage error.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// A scenario: either a leak (leak, perCall, waits, fds) or a control (run).
type scenario struct {
	name string
	// leak leaks perCall goroutines per call, each parked in one of waits, and fds[kind] fds of
	// each kind (kinds not listed are not checked).
	leak    func(*fixture) error
	perCall int
	waits   []string
	fds     map[string]int
	// run runs a control scenario once; it returns how many goroutines it leaked (0).
	run        func(*options, *fixture) (int, error)
	count      int
	intervalMs int
	hold       bool
	// setup builds the fixture before `ready`.
	setup func(*fixture) error
}

var scenarios = []scenario{
	{name: "chan-send", leak: leakBlockedSend, perCall: 1, waits: []string{"chan send"}},
	{name: "ticker", leak: leakTicker, perCall: 1,
		waits: []string{"chan receive", "runnable", "running"}},
	{name: "context", leak: leakContext, perCall: 1, waits: []string{"chan receive"}},
	{name: "waitgroup", leak: leakWaitGroup, perCall: 1,
		waits: []string{"semacquire", "sync.WaitGroup.Wait"}},
	{name: "exec", leak: leakExecNoWait, perCall: 1, waits: []string{"IO wait"},
		fds: map[string]int{"pipe": 1}},
	{name: "http-body", leak: leakHTTPBody, perCall: 3, waits: []string{"select", "IO wait"},
		fds: map[string]int{"socket": 2}, setup: startHTTPServer},
	{name: "clean", run: runClean, count: 2000, hold: true},
	{name: "churn", run: runChurn, count: 200000},
}

type options struct {
	sc       *scenario
	count    int
	interval time.Duration
	wait     bool
	hold     bool
	holdFor  time.Duration // 0: no bound
	report   bool
}

func usage() string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return "usage: leaky <scenario> [--count N] [--interval-ms MS] [--wait-stdin] " +
		"[--hold|--no-hold|--hold-ms MS] [--report]\n       leaky list\nscenarios: " +
		strings.Join(names, " ")
}

func parseArgs(args []string) (*options, error) {
	if len(args) == 0 {
		return nil, errors.New("missing scenario")
	}
	opts := &options{}
	for i := range scenarios {
		if scenarios[i].name == args[0] {
			opts.sc = &scenarios[i]
		}
	}
	if opts.sc == nil {
		return nil, fmt.Errorf("unknown scenario %q", args[0])
	}
	count, intervalMs, holdMs := -1, -1, -1
	var hold *bool
	yes, no := true, false
	for i := 1; i < len(args); i++ {
		// Both `--flag value` and `--flag=value`.
		flag, inline, hasInline := strings.Cut(args[i], "=")
		number := func() (int, error) {
			v := inline
			if !hasInline {
				if i+1 >= len(args) {
					return 0, fmt.Errorf("%s needs a value", flag)
				}
				i++
				v = args[i]
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return 0, fmt.Errorf("%s: not a count: %q", flag, v)
			}
			return n, nil
		}
		var err error
		switch flag {
		case "--count":
			count, err = number()
		case "--interval-ms":
			intervalMs, err = number()
		case "--hold-ms":
			holdMs, err = number()
		case "--wait-stdin":
			opts.wait = true
		case "--hold":
			hold = &yes
		case "--no-hold":
			hold = &no
		case "--report":
			opts.report = true
		default:
			err = fmt.Errorf("unknown argument %q", flag)
		}
		if err != nil {
			return nil, err
		}
	}
	if holdMs >= 0 {
		if hold == &no {
			return nil, errors.New("--hold-ms holds: it does not go with --no-hold")
		}
		hold = &yes
		opts.holdFor = time.Duration(max(holdMs, 1)) * time.Millisecond
	}
	opts.count = 20
	if opts.sc.count > 0 {
		opts.count = opts.sc.count
	}
	if count >= 0 {
		opts.count = count
	}
	interval := 50
	if opts.sc.leak == nil {
		interval = opts.sc.intervalMs
	}
	if intervalMs >= 0 {
		interval = intervalMs
	}
	opts.interval = time.Duration(interval) * time.Millisecond
	opts.hold = opts.sc.hold || opts.sc.leak != nil
	if hold != nil {
		opts.hold = *hold
	}
	return opts, nil
}

// say prints one protocol line (os.Stdout is unbuffered: one write each).
func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// fail ends the program with exit code 1, after killing any child process.
func fail(fx *fixture, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "leaky: "+format+"\n", args...)
	fx.cleanup()
	os.Exit(1)
}

// runScenario runs the scenario and holds. Not inlined: the frame between every leak function
// and main.main.
//
//go:noinline
func runScenario(opts *options) {
	fx := &fixture{}
	if opts.sc.setup != nil {
		if err := opts.sc.setup(fx); err != nil {
			fail(fx, "%s: setup: %v", opts.sc.name, err)
		}
	}
	warmUp()
	say("ready pid=%d", os.Getpid())
	if opts.wait {
		readLine()
	}
	leaked := 0
	if opts.sc.leak != nil {
		base := snapshot()
		for call := 1; call <= opts.count; call++ {
			if err := opts.sc.leak(fx); err != nil {
				fail(fx, "%s: call %d: %v", opts.sc.name, call, err)
			}
			now, err := awaitLeak(opts.sc, base, call)
			if err != nil {
				fail(fx, "%s: call %d: %v", opts.sc.name, call, err)
			}
			leaked = call * opts.sc.perCall
			say("leaked %d", leaked)
			if opts.report && call == opts.count {
				report(opts.sc, base, now, call)
			}
			if call < opts.count && opts.interval > 0 {
				time.Sleep(opts.interval)
			}
		}
	} else {
		var err error
		if leaked, err = opts.sc.run(opts, fx); err != nil {
			fail(fx, "%s: %v", opts.sc.name, err)
		}
	}
	say("done leaked=%d", leaked)
	if opts.hold {
		hold(opts.holdFor)
	}
	fx.cleanup()
}

// warmUp makes, before `ready`, what the Go runtime makes once and for good on first use, so
// that a tracer attached at `ready` does not see it made by whatever happens to come first: the
// netpoller's epoll fd and eventfd (the first os.Open, here of /proc/self/fd) and the GC's
// background mark workers (the first GC cycle, else started by an allocation of the checks).
func warmUp() {
	snapshot()
	runtime.GC()
}

// readLine reads stdin up to a newline or EOF, a byte at a time so nothing past it is consumed.
func readLine() {
	var b [1]byte
	for {
		n, err := syscall.Read(0, b[:])
		if err == syscall.EINTR {
			continue
		}
		if n <= 0 || b[0] == '\n' {
			return
		}
	}
}

// hold keeps the process, and all it leaked, alive without creating anything: until stdin's EOF
// if stdin can hang up (pipe, socket, tty), else until killed; for at most `limit` if not 0.
// No goroutine is started for it: the main goroutine blocks in read or select(2).
func hold(limit time.Duration) {
	var st syscall.Stat_t
	var termios syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, 0, syscall.TCGETS,
		uintptr(unsafe.Pointer(&termios)))
	canHangUp := errno == 0 || (syscall.Fstat(0, &st) == nil &&
		(st.Mode&syscall.S_IFMT == syscall.S_IFIFO || st.Mode&syscall.S_IFMT == syscall.S_IFSOCK))
	var deadline time.Time
	if limit > 0 {
		deadline = time.Now().Add(limit)
	}
	for {
		left := time.Duration(-1)
		if limit > 0 {
			if left = time.Until(deadline); left <= 0 {
				return
			}
		}
		if !canHangUp {
			if left < 0 {
				left = time.Hour
			}
			time.Sleep(left)
			continue
		}
		if left >= 0 {
			var fds syscall.FdSet
			fds.Bits[0] = 1 // fd 0
			tv := syscall.NsecToTimeval(left.Nanoseconds())
			n, err := syscall.Select(1, &fds, nil, nil, &tv)
			if n <= 0 || err != nil {
				continue // timed out or interrupted
			}
		}
		var buf [4096]byte
		n, err := syscall.Read(0, buf[:])
		if err == syscall.EINTR || err == syscall.EAGAIN {
			continue
		}
		if n <= 0 {
			return // EOF or error: the test hung up
		}
	}
}

// main is not inlined, so it is a real frame under runScenario.
//
//go:noinline
func main() {
	args := os.Args[1:]
	if len(args) > 0 {
		switch args[0] {
		case "list":
			for _, s := range scenarios {
				say("%s", s.name)
			}
			return
		case "-h", "--help":
			say("%s", usage())
			return
		}
	}
	opts, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "leaky: %v\n%s\n", err, usage())
		os.Exit(2)
	}
	runScenario(opts)
}
