package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// goroutine is one goroutine of a runtime.Stack dump.
type goroutine struct {
	// state is the wait reason of a parked goroutine ("chan send"), else its status
	// ("runnable", "running"), without the ", N minutes" or ", locked to thread" suffixes.
	state string
	// top is the innermost frame's function (runtime frames are not shown in dumps).
	top string
	// createdBy is the function holding the `go` statement that created it.
	createdBy string
}

// state is what the process holds at one moment: its goroutines by id (ids are never reused),
// runtime.NumGoroutine(), and its fds by kind.
type state struct {
	goroutines map[int64]goroutine
	num        int
	fds        map[string]int
}

func snapshot() state {
	return state{goroutines: goroutines(), num: runtime.NumGoroutine(), fds: fdKinds()}
}

// goroutines parses runtime.Stack's dump of every goroutine (system goroutines are left out, as
// runtime.NumGoroutine leaves them out).
func goroutines() map[int64]goroutine {
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	all := make(map[int64]goroutine)
	for _, block := range strings.Split(string(buf), "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		// goroutine 18 [chan send, 2 minutes]:
		header, ok := strings.CutPrefix(lines[0], "goroutine ")
		if !ok {
			continue
		}
		idText, _, _ := strings.Cut(header, " ")
		id, err := strconv.ParseInt(idText, 10, 64)
		open, end := strings.IndexByte(header, '['), strings.LastIndexByte(header, ']')
		if err != nil || open < 0 || end < open {
			continue
		}
		g := goroutine{}
		g.state, _, _ = strings.Cut(header[open+1:end], ", ")
		if len(lines) > 1 {
			g.top = frameFunction(lines[1])
		}
		for _, l := range lines {
			if by, ok := strings.CutPrefix(l, "created by "); ok {
				g.createdBy, _, _ = strings.Cut(by, " in goroutine ")
			}
		}
		all[id] = g
	}
	return all
}

// frameFunction is the function of a dump's frame line: `main.f(0x1, ...)` → `main.f`.
func frameFunction(line string) string {
	if i := strings.LastIndexByte(line, '('); i > 0 {
		return line[:i]
	}
	return line
}

// fdKinds counts the process's fds by kind, from their /proc/self/fd links. The scan's own
// directory fd is a "file" in every count.
func fdKinds() map[string]int {
	kinds := make(map[string]int)
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return kinds
	}
	defer dir.Close()
	names, _ := dir.Readdirnames(-1)
	for _, name := range names {
		target, err := os.Readlink("/proc/self/fd/" + name)
		if err != nil {
			continue
		}
		kinds[fdKind(target)]++
	}
	return kinds
}

func fdKind(target string) string {
	switch {
	case strings.HasPrefix(target, "socket:"):
		return "socket"
	case strings.HasPrefix(target, "pipe:"):
		return "pipe"
	case strings.Contains(target, "pidfd"):
		// anon_inode:[pidfd] (pidfs, Linux ≥ 6.9: still so named)
		return "pidfd"
	case strings.HasPrefix(target, "anon_inode:"):
		return strings.Trim(strings.TrimPrefix(target, "anon_inode:"), "[]")
	case strings.HasPrefix(target, "/"):
		return "file"
	default:
		return "other"
	}
}

// added returns the goroutines of now that were not in base.
func added(base, now state) map[int64]goroutine {
	out := make(map[int64]goroutine)
	for id, g := range now.goroutines {
		if _, ok := base.goroutines[id]; !ok {
			out[id] = g
		}
	}
	return out
}

// checkLeak says what is wrong with now, `calls` calls of the scenario after base, if anything.
func checkLeak(sc *scenario, base, now state, calls int) error {
	want := sc.perCall * calls
	if got := now.num - base.num; got != want {
		return fmt.Errorf("runtime.NumGoroutine() grew by %d, not %d", got, want)
	}
	newer := added(base, now)
	if len(newer) != want {
		return fmt.Errorf("%d goroutines in the dump are new, not %d", len(newer), want)
	}
	for id, g := range newer {
		if !slices.Contains(sc.waits, g.state) {
			return fmt.Errorf("goroutine %d (%s, created by %s) is %q, not one of %q",
				id, g.top, g.createdBy, g.state, sc.waits)
		}
	}
	for kind, per := range sc.fds {
		if got := now.fds[kind] - base.fds[kind]; got != per*calls {
			return fmt.Errorf("%s fds grew by %d, not %d", kind, got, per*calls)
		}
	}
	return nil
}

// awaitLeak waits up to 1 s for the goroutines of call number `calls` to be created and parked.
func awaitLeak(sc *scenario, base state, calls int) (state, error) {
	deadline := time.Now().Add(time.Second)
	for {
		now := snapshot()
		err := checkLeak(sc, base, now, calls)
		if err == nil || time.Now().After(deadline) {
			return now, err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// report prints on stderr what `calls` calls added: goroutines (grouped by wait reason, function
// and creator) and fds by kind, each per call.
func report(sc *scenario, base, now state, calls int) {
	w := os.Stderr
	fmt.Fprintf(w, "leaky: %s, %s, %d calls: %d goroutines per call\n", sc.name,
		runtime.Version(), calls, (now.num-base.num)/calls)
	groups := make(map[string]int)
	for _, g := range added(base, now) {
		groups[fmt.Sprintf("[%s] %s, created by %s", g.state, g.top, g.createdBy)]++
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %g per call: %s\n", float64(groups[k])/float64(calls), k)
	}
	var fds []string
	for kind, n := range now.fds {
		if d := n - base.fds[kind]; d != 0 {
			fds = append(fds, fmt.Sprintf("%s %+g", kind, float64(d)/float64(calls)))
		}
	}
	sort.Strings(fds)
	fmt.Fprintf(w, "  fds per call: %s\n", strings.Join(fds, ", "))
}
