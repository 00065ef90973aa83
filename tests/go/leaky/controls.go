package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// runClean is the `clean` control: `--count` rounds of churnRound, `--interval-ms` apart; then
// the goroutine count must be back to where it was.
func runClean(opts *options, _ *fixture) (int, error) {
	base := runtime.NumGoroutine()
	for round := 0; round < opts.count; round++ {
		churnRound(round)
		if opts.interval > 0 && round+1 < opts.count {
			time.Sleep(opts.interval)
		}
	}
	// Every goroutine has called wg.Done(); the last ones may still be exiting.
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() != base {
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d goroutines outlived their round",
				runtime.NumGoroutine()-base)
		}
		time.Sleep(time.Millisecond)
	}
	return 0, nil
}

// churnRound starts 50 goroutines doing real, correct work and joins them all:
//   - 9 pingers and 9 pongers trading 10 messages each over two unbuffered channels;
//   - 8 goroutines taking a mutex 100 times each;
//   - 8 waiting on a context that is cancelled once the ones above are done;
//   - 8 each waiting on a time.After of 10-80 µs (or the context);
//   - 8 each taking a tick of a 100 µs ticker, then stopping it.
//
//go:noinline
func churnRound(round int) {
	const n = 50
	ctx, cancel := context.WithCancel(context.Background())
	var work, waiters sync.WaitGroup
	var mu sync.Mutex
	counter := 0
	ping, pong := make(chan int), make(chan int)
	for i := 0; i < n; i++ {
		switch i % 6 {
		case 0:
			work.Add(1)
			go func() {
				defer work.Done()
				for j := 0; j < 10; j++ {
					ping <- j
					<-pong
				}
			}()
		case 1:
			work.Add(1)
			go func() {
				defer work.Done()
				for j := 0; j < 10; j++ {
					pong <- 1 + <-ping
				}
			}()
		case 2:
			work.Add(1)
			go func() {
				defer work.Done()
				for j := 0; j < 100; j++ {
					mu.Lock()
					counter++
					mu.Unlock()
				}
			}()
		case 3:
			waiters.Add(1)
			go func() {
				defer waiters.Done()
				<-ctx.Done()
			}()
		case 4:
			waiters.Add(1)
			d := time.Duration(10*(1+(i+round)%8)) * time.Microsecond
			go func() {
				defer waiters.Done()
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}()
		case 5:
			work.Add(1)
			go func() {
				defer work.Done()
				t := time.NewTicker(100 * time.Microsecond)
				defer t.Stop()
				<-t.C
			}()
		}
	}
	work.Wait()
	cancel()
	waiters.Wait()
	mu.Lock()
	defer mu.Unlock()
	if counter != 8*100 {
		panic(fmt.Sprintf("mutex counter %d", counter))
	}
}

// runChurn is the `churn` benchmark.
func runChurn(opts *options, _ *fixture) (int, error) {
	elapsed := churnGoroutines(opts.count)
	perGoroutine := 0.0
	if opts.count > 0 {
		perGoroutine = float64(elapsed.Nanoseconds()) / float64(opts.count)
	}
	say("churn goroutines=%d ns_per_goroutine=%.1f", opts.count, perGoroutine)
	return 0, nil
}

// churnGoroutines creates and joins n goroutines, in batches of 100, and returns how long that
// took.
//
//go:noinline
func churnGoroutines(n int) time.Duration {
	var wg sync.WaitGroup
	var sum atomic.Int64
	start := time.Now()
	for done := 0; done < n; {
		batch := min(100, n-done)
		wg.Add(batch)
		for i := 0; i < batch; i++ {
			go func() {
				sum.Add(int64(i))
				wg.Done()
			}()
		}
		wg.Wait()
		done += batch
	}
	elapsed := time.Since(start)
	if want := int64(n/100) * 4950; n%100 == 0 && sum.Load() != want {
		panic(fmt.Sprintf("churn sum %d, want %d", sum.Load(), want))
	}
	return elapsed
}
