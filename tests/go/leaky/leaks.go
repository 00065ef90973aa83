package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// fixture holds what a scenario sets up before `ready` and what must be undone at exit.
type fixture struct {
	// http-body: the server's URL.
	url string
	// exec: every command started, killed at exit.
	children []*exec.Cmd
}

// cleanup kills and reaps the exec scenario's children, so no `sleep` outlives the program
// (Pdeathsig covers a program killed by a signal).
func (fx *fixture) cleanup() {
	for _, cmd := range fx.children {
		_ = cmd.Process.Kill()
		// Reaps the child; the stdout copier then reads EOF and ends.
		_ = cmd.Wait()
	}
	fx.children = nil
}

// leakBlockedSend leaks a goroutine blocked for good sending on an unbuffered channel nobody
// receives from ("chan send").
//
//go:noinline
func leakBlockedSend(*fixture) error {
	ch := make(chan int)
	v := 42
	go func() {
		ch <- v
	}()
	return nil
}

// leakTicker leaks a goroutine ranging over a ticker that is never stopped: it never ends
// ("chan receive" between ticks).
//
//go:noinline
func leakTicker(*fixture) error {
	t := time.NewTicker(10 * time.Millisecond)
	go func() {
		for range t.C {
		}
	}()
	return nil
}

// leakContext leaks a goroutine waiting for the end of a context that never ends: its cancel
// func is dropped ("chan receive").
//
//go:noinline
func leakContext(*fixture) error {
	ctx, cancel := context.WithCancel(context.Background())
	_ = cancel // the bug: never called
	go func() {
		<-ctx.Done()
	}()
	return nil
}

// leakWaitGroup leaks a goroutine waiting on a WaitGroup that is one Done short ("semacquire"
// on Go 1.23, "sync.WaitGroup.Wait" on newer).
//
//go:noinline
func leakWaitGroup(*fixture) error {
	wg := new(sync.WaitGroup)
	wg.Add(2)
	go func() {
		wg.Wait()
	}()
	wg.Done()
	return nil
}

// leakExecNoWait starts a command and never waits for it: the child, its stdout pipe, its pidfd
// and os/exec's stdout copier goroutine ("IO wait") stay.
//
//go:noinline
func leakExecNoWait(fx *fixture) error {
	cmd := exec.Command("/bin/sleep", "3600")
	// Not an *os.File: os/exec makes a pipe and a goroutine copying it into the buffer.
	cmd.Stdout = &bytes.Buffer{}
	// The child dies with us (with the thread that forked it, strictly; Go keeps its threads).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	// Kept only to kill it at exit; Wait is never called.
	fx.children = append(fx.children, cmd)
	return nil
}

// leakHTTPBody gets a page from the fixture's server through a client of its own and never
// reads nor closes the body: the connection, its transport's readLoop and writeLoop goroutines
// and the server's goroutine for it stay.
//
//go:noinline
func leakHTTPBody(fx *fixture) error {
	// A transport per call: no connection is ever reused.
	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Get(fx.url)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", fx.url, resp.Status)
	}
	// The bug: resp.Body is never read nor closed.
	return nil
}

// startHTTPServer starts http-body's server on 127.0.0.1 before `ready`: its listener and
// serve goroutine are the baseline.
func startHTTPServer(fx *fixture) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "leaky says hello\n")
		}),
	}
	go func() {
		_ = srv.Serve(ln)
	}()
	fx.url = "http://" + ln.Addr().String() + "/"
	return nil
}
