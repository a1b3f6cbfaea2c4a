package h2

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// goid is the running goroutine's number (from its stack's first line):
// only to tell in a test whether two handlers ran on one goroutine.
func goid() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := strings.Fields(string(buf))
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// Handlers run on workers: requests one after another run on the same
// goroutine (its stack grown once), as many streams at once as run each
// get one (none waits for another's handler), a handler's panic costs
// neither its stream's reset nor the workers, and no more than
// maxIdleWorkers wait afterwards.
func TestServerRunsHandlersOnWorkers(t *testing.T) {
	var mu sync.Mutex
	ids := map[string]int{}
	var gate chan struct{}
	var running sync.WaitGroup
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("handler panic")
		case "/gate":
			running.Done()
			<-gate
		}
		mu.Lock()
		ids[goid()]++
		mu.Unlock()
		fmt.Fprint(w, "ok")
	}), MaxConcurrentStreams: 1000}
	addr, _ := listen(t, func(c net.Conn) { _ = srv.ServeConn(context.Background(), c) })
	tr := newClient(t)
	get := func(path string) (int, error) {
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+path, nil))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		return resp.StatusCode, nil
	}
	for range 20 {
		if code, err := get("/"); err != nil || code != 200 {
			t.Fatalf("GET /: %d, %v", code, err)
		}
	}
	mu.Lock()
	if len(ids) > 2 { // one worker, maybe two while the first puts itself back
		t.Errorf("20 requests one after another ran on %d goroutines: %v", len(ids), ids)
	}
	mu.Unlock()

	if _, err := get("/panic"); err == nil {
		t.Fatal("a panicking handler's request succeeded")
	}
	// 200 at once, every handler waiting until all 200 run: one worker
	// each, or this never ends.
	gate = make(chan struct{})
	running.Add(200)
	var done sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		done.Add(1)
		go func() {
			defer done.Done()
			if code, err := get("/gate"); err != nil || code != 200 {
				errs <- fmt.Errorf("GET /gate: %d, %v", code, err)
			}
		}()
	}
	all := make(chan struct{})
	go func() { running.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		t.Fatal("200 concurrent handlers did not all start")
	}
	close(gate)
	done.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	workers.mu.Lock()
	idle := len(workers.idle)
	workers.mu.Unlock()
	if idle > maxIdleWorkers {
		t.Errorf("%d workers wait, at most %d should", idle, maxIdleWorkers)
	}
}

// A handler that ends its goroutine (runtime.Goexit: a test's FailNow in
// a handler) did not finish its response: the stream is reset, as for a
// panic (net/http's servers treat it so), never ended as if the response
// were whole — and the worker it ran on is not needed for the next one.
func TestServerHandlerGoexitResetsStream(t *testing.T) {
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/goexit" {
			fmt.Fprint(w, "partial")
			if r.URL.Query().Has("flush") {
				w.(http.Flusher).Flush()
			}
			runtime.Goexit()
		}
		fmt.Fprint(w, "ok")
	})}
	addr, _ := listen(t, func(c net.Conn) { _ = srv.ServeConn(context.Background(), c) })
	tr := newClient(t)
	for _, path := range []string{"/goexit", "/goexit?flush", "/goexit"} {
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+path, nil))
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil {
				t.Fatalf("%s: a handler that called runtime.Goexit: response %d %q read whole, want the stream reset", path, resp.StatusCode, b)
			}
		}
		resp, err = tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+"/", nil))
		if err != nil {
			t.Fatalf("the request after: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "ok" {
			t.Fatalf("the request after: %q, %v", b, err)
		}
	}
}

// A handler that does not return — it panics, panics with
// http.ErrAbortHandler, or ends its goroutine — leaves its request's
// context ended with the reason as its cause, which the goroutines it
// started (still holding the request) read with context.Cause.
func TestServerHandlerEndSaysWhyInTheRequestsContext(t *testing.T) {
	causes := make(chan error, 1)
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started := make(chan struct{})
		go func() {
			close(started)
			<-r.Context().Done()
			causes <- context.Cause(r.Context())
		}()
		<-started
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/abort":
			panic(http.ErrAbortHandler)
		case "/goexit":
			runtime.Goexit()
		}
	})}
	addr, _ := listen(t, func(c net.Conn) { _ = srv.ServeConn(context.Background(), c) })
	tr := newClient(t)
	for path, want := range map[string]string{
		"/panic":  "h2: handler panic: boom",
		"/abort":  "h2: handler aborted",
		"/goexit": "h2: handler exited its goroutine",
	} {
		resp, err := tr.RoundTrip(newRequest(t, context.Background(), "GET", "http://"+addr+path, nil))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		select {
		case cause := <-causes:
			if cause == nil || cause.Error() != want {
				t.Errorf("%s: the request's context's cause %v, want %q", path, cause, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the request's context never ended", path)
		}
	}
}
