package l7

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/sidecar/balance"
)

// scriptedCluster is a cluster of n endpoints that are addresses only:
// its Transport answers every try with answer, nothing is dialled. For
// tests of what the forwarder decides from an answer, whatever the wire.
func scriptedCluster(name string, n int, answer func(*http.Request) (*http.Response, error)) *Cluster {
	b := balance.New(balance.Config{})
	b.Update(testAddrs(n))
	return &Cluster{Name: name, Balancer: b, Transport: answers(answer), Scheme: "https"}
}

// answers is a Transport that answers each request with answer, the
// response naming its request as http.Transport's do.
func answers(answer func(*http.Request) (*http.Response, error)) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		resp, err := answer(r)
		if resp != nil {
			resp.Request = r
		}
		return resp, err
	})
}

// testAddrs are n addresses of TEST-NET-1 (RFC 5737): never reached.
func testAddrs(n int) []netip.AddrPort {
	var addrs []netip.AddrPort
	for i := range n {
		addrs = append(addrs, netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 8080))
	}
	return addrs
}

// reply is an endpoint's answer: code, header fields as key, value pairs,
// and the status text as body.
func reply(code int, kv ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader(http.StatusText(code)))}
}

var errStreamReset = errors.New("stream error: stream ID 1; INTERNAL_ERROR")

// What each retry_on condition retries, and what it must not: the first
// try ends as the row says, a second try would answer 200. Observe sees
// the first try's status and whether another follows.
func TestRetryConditions(t *testing.T) {
	type answer struct {
		status int
		grpc   string
		err    error
	}
	for _, tc := range []struct {
		name    string
		policy  RetryPolicy
		method  string
		first   answer
		retried bool
	}{
		{"gateway-error retries a 502", RetryPolicy{On: GatewayError}, "GET", answer{status: 502}, true},
		{"gateway-error retries a 503", RetryPolicy{On: GatewayError}, "GET", answer{status: 503}, true},
		{"gateway-error retries a 504", RetryPolicy{On: GatewayError}, "GET", answer{status: 504}, true},
		{"gateway-error does not retry a 500", RetryPolicy{On: GatewayError}, "GET", answer{status: 500}, false},
		{"5xx retries a 500", RetryPolicy{On: Status5xx}, "GET", answer{status: 500}, true},
		{"5xx retries a 599", RetryPolicy{On: Status5xx}, "GET", answer{status: 599}, true},
		{"5xx does not retry a 499", RetryPolicy{On: Status5xx}, "GET", answer{status: 499}, false},
		{"retriable-status-codes retries a listed 409", RetryPolicy{On: RetriableStatusCodes, StatusCodes: []int{409}}, "GET", answer{status: 409}, true},
		{"retriable-status-codes does not retry an unlisted 503", RetryPolicy{On: RetriableStatusCodes, StatusCodes: []int{409}}, "GET", answer{status: 503}, false},
		{"listed codes without retriable-status-codes are not retried", RetryPolicy{On: GatewayError, StatusCodes: []int{409}}, "GET", answer{status: 409}, false},
		{"a POST's 503 is not retried", RetryPolicy{On: GatewayError | Status5xx}, "POST", answer{status: 503}, false},
		{"a POST's 503 is retried when the route allows it", RetryPolicy{On: GatewayError, NonIdempotent: true}, "POST", answer{status: 503}, true},
		{"unavailable retries gRPC status 14, even for a POST", RetryPolicy{On: Unavailable}, "POST", answer{status: 200, grpc: "14"}, true},
		{"unavailable does not retry another gRPC status", RetryPolicy{On: Unavailable}, "POST", answer{status: 200, grpc: "13"}, false},
		{"a 200 is never retried", RetryPolicy{On: GatewayError | Status5xx | Unavailable | Reset | ConnectFailure}, "GET", answer{status: 200}, false},
		{"connect-failure retries a POST", RetryPolicy{On: ConnectFailure}, "POST", answer{err: &ConnectError{Err: errors.New("connection refused")}}, true},
		{"connect-failure is not reset", RetryPolicy{On: Reset}, "GET", answer{err: &ConnectError{Err: errors.New("connection refused")}}, false},
		{"reset retries a PUT", RetryPolicy{On: Reset}, "PUT", answer{err: errStreamReset}, true},
		{"reset does not retry a POST", RetryPolicy{On: Reset}, "POST", answer{err: errStreamReset}, false},
		{"reset is not connect-failure", RetryPolicy{On: ConnectFailure}, "GET", answer{err: errStreamReset}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			c := scriptedCluster("c", 2, func(r *http.Request) (*http.Response, error) {
				if r.Body != nil {
					io.Copy(io.Discard, r.Body)
				}
				tries++
				if tries > 1 {
					return reply(200), nil
				}
				if tc.first.err != nil {
					return nil, tc.first.err
				}
				if tc.first.grpc != "" {
					return reply(tc.first.status, "Content-Type", "application/grpc", "Grpc-Status", tc.first.grpc), nil
				}
				return reply(tc.first.status), nil
			})
			tc.policy.Retries = 1
			var seen []Try
			f := &Forwarder{Observe: func(tr Try) { seen = append(seen, tr) }}
			body := ""
			if tc.method != "GET" {
				body = "payload"
			}
			code, _, err := forward(t, f, &Route{Name: "r", Retry: tc.policy, Backends: []Backend{{Cluster: c, Weight: 1}}}, request(t, tc.method, body))
			want, wantTries := tc.first.status, 1
			if tc.retried {
				want, wantTries = 200, 2
			}
			if tries != wantTries {
				t.Fatalf("%d tries, want %d", tries, wantTries)
			}
			if tc.first.err == nil || tc.retried {
				if err != nil || code != want {
					t.Fatalf("answer %d %v, want %d", code, err, want)
				}
			} else if le := (*Error)(nil); !errors.As(err, &le) || !errors.Is(err, tc.first.err) {
				t.Fatalf("answer %d %v, want the first try's error", code, err)
			}
			if len(seen) != wantTries || seen[0].Status != tc.first.status || seen[0].Retry != tc.retried || !errors.Is(seen[0].Err, tc.first.err) {
				t.Fatalf("Observe saw %+v, want the first try with status %d, Retry %v", seen, tc.first.status, tc.retried)
			}
			if tc.retried && (seen[1].Status != 200 || seen[1].Attempt != 1 || seen[1].Endpoint == seen[0].Endpoint) {
				t.Fatalf("Observe saw %+v, want a second try answered 200 by the other endpoint", seen)
			}
		})
	}
}

// A split draws one integer in [0, the sum of the weights of backends
// that have a cluster) and gives each backend exactly its weight's share
// of the draws; a backend without a cluster, or of weight 0, gets none.
func TestWeightedSplitByDraw(t *testing.T) {
	hits := map[string]int{}
	mk := func(name string) *Cluster {
		return scriptedCluster(name, 1, func(*http.Request) (*http.Response, error) { hits[name]++; return reply(200), nil })
	}
	route := &Route{Name: "split", Backends: []Backend{{Cluster: mk("a"), Weight: 3}, {Weight: 5}, {Cluster: mk("b"), Weight: 1}, {Cluster: mk("zero"), Weight: 0}}}
	draws := 0
	f := &Forwarder{Rand: func(n int) int {
		if n != 4 {
			t.Fatalf("a draw in [0, %d), want [0, 4): weights 3 and 1", n)
		}
		draws++
		return (draws - 1) % n
	}}
	for range 8 {
		if code, _, err := forward(t, f, route, request(t, "GET", "")); err != nil || code != 200 {
			t.Fatalf("GET: %d %v", code, err)
		}
	}
	if hits["a"] != 6 || hits["b"] != 2 || hits["zero"] != 0 {
		t.Fatalf("draws 0..3 twice sent %v, want a:6 b:2 (draw 3 is b's)", hits)
	}
}

// The retry budget counts the requests in flight, not every request ever
// made: after a hundred finished requests, two in flight allow the
// budget's minimum of one retry, so a second request that fails while the
// first one's retry is out gets its connect failure, not a retry. The
// finished requests are plain ones, or upgrades (which count in flight
// too, upgrade.go).
func TestRetryBudgetCountsRequestsInFlightOnly(t *testing.T) {
	for _, warmUp := range []string{"requests", "upgrades"} {
		t.Run(warmUp, func(t *testing.T) {
			release, holding := make(chan struct{}), make(chan struct{})
			var mu sync.Mutex
			tries := map[string]int{}
			c := scriptedCluster("c", 2, func(r *http.Request) (*http.Response, error) {
				id := r.Header.Get("X-Request")
				mu.Lock()
				n := tries[id]
				tries[id]++
				mu.Unlock()
				switch {
				case id == "warm-up":
				case n == 0:
					return nil, &ConnectError{Err: errors.New("connection refused")}
				case id == "holder":
					close(holding)
					<-release
				}
				return reply(200), nil
			})
			c.Budget = Budget{Percent: 20, MinConcurrent: 1}
			c.DialTunnel = pipeTunnel(t, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			route := &Route{Name: "r", Retry: RetryPolicy{Retries: 1, On: ConnectFailure}, Backends: []Backend{{Cluster: c, Weight: 1}}}
			f := &Forwarder{}
			h := &Handler{Route: static(route), Forwarder: f}
			req := func(id string) *http.Request {
				r := request(t, "GET", "")
				r.Header.Set("X-Request", id)
				return r
			}
			for range 100 {
				if warmUp == "requests" {
					if code, _, err := forward(t, f, route, req("warm-up")); err != nil || code != 200 {
						t.Fatalf("warm-up request: %d %v", code, err)
					}
					continue
				}
				r := req("warm-up")
				r.Header.Set("Connection", "Upgrade")
				r.Header.Set("Upgrade", "echo")
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 400 {
					t.Fatalf("warm-up upgrade: %d, want the endpoint's 400", w.Code)
				}
			}
			done := make(chan error, 1)
			go func() {
				resp, err := f.Forward(route, req("holder"))
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			select {
			case <-holding:
			case err := <-done:
				t.Fatalf("the first request ended before its retry: %v", err)
			}
			_, _, err := forward(t, f, route, req("second"))
			close(release)
			var le *Error
			if !errors.As(err, &le) || le.Status != 503 || le.Reason != "connect_failure" {
				t.Errorf("a failure while the budget's one retry is out: %v, want 503 connect_failure without a retry", err)
			}
			if err := <-done; err != nil {
				t.Errorf("the request holding the retry: %v", err)
			}
		})
	}
}

// A retry whose cluster lost its endpoints meanwhile (an EDS update) is
// answered 503 no_endpoint, and gives its slot of the retry budget back:
// five of them leave the default budget's three slots for later retries.
func TestRetryToAnEmptiedClusterFreesItsBudget(t *testing.T) {
	tries := map[string]int{}
	var c *Cluster
	c = scriptedCluster("c", 2, func(r *http.Request) (*http.Response, error) {
		id := r.Header.Get("X-Request")
		tries[id]++
		if tries[id] > 1 {
			return reply(200), nil
		}
		if id == "emptied" {
			c.Balancer.Update(nil)
		}
		return nil, &ConnectError{Err: errors.New("connection refused")}
	})
	route := &Route{Name: "r", Retry: RetryPolicy{Retries: 1, On: ConnectFailure}, Backends: []Backend{{Cluster: c, Weight: 1}}}
	f := &Forwarder{}
	for i := range 5 {
		c.Balancer.Update(testAddrs(2))
		tries["emptied"] = 0
		r := request(t, "GET", "")
		r.Header.Set("X-Request", "emptied")
		_, _, err := forward(t, f, route, r)
		var le *Error
		if !errors.As(err, &le) || le.Status != 503 || le.Reason != "no_endpoint" || !errors.Is(err, balance.ErrNoEndpoints) {
			t.Fatalf("request %d, its retry to an emptied cluster: %v, want 503 no_endpoint", i, err)
		}
	}
	c.Balancer.Update(testAddrs(2))
	r := request(t, "GET", "")
	r.Header.Set("X-Request", "later")
	if code, _, err := forward(t, f, route, r); err != nil || code != 200 {
		t.Fatalf("a later request's retry: %d %v, want it retried and answered 200 (the budget's slots given back)", code, err)
	}
}

// What the balancer learns of a try decides ejection: with one
// consecutive failure ejecting, a try that failed ejects its endpoint
// (5xx, gRPC UNAVAILABLE, a connect failure, a reset, the route's
// timeout) and one that did not (2xx, 4xx, another gRPC status, the
// caller gone: nothing learned) leaves it in rotation.
func TestWhatEjectsAnEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answer  func(r *http.Request, cancelCaller func()) (*http.Response, error)
		timeout time.Duration
		ejected bool
	}{
		{"a 500", func(*http.Request, func()) (*http.Response, error) { return reply(500), nil }, 0, true},
		{"a 503", func(*http.Request, func()) (*http.Response, error) { return reply(503), nil }, 0, true},
		{"a 499", func(*http.Request, func()) (*http.Response, error) { return reply(499), nil }, 0, false},
		{"a 200", func(*http.Request, func()) (*http.Response, error) { return reply(200), nil }, 0, false},
		{"gRPC UNAVAILABLE", func(*http.Request, func()) (*http.Response, error) {
			return reply(200, "Content-Type", "application/grpc", "Grpc-Status", "14"), nil
		}, 0, true},
		{"gRPC NOT_FOUND", func(*http.Request, func()) (*http.Response, error) {
			return reply(200, "Content-Type", "application/grpc", "Grpc-Status", "5"), nil
		}, 0, false},
		{"a connect failure", func(*http.Request, func()) (*http.Response, error) {
			return nil, &ConnectError{Err: errors.New("connection refused")}
		}, 0, true},
		{"a reset", func(*http.Request, func()) (*http.Response, error) { return nil, errStreamReset }, 0, true},
		{"the route's timeout", func(r *http.Request, _ func()) (*http.Response, error) {
			<-r.Context().Done()
			return nil, r.Context().Err()
		}, 50 * time.Millisecond, true},
		{"the caller gone", func(r *http.Request, cancelCaller func()) (*http.Response, error) {
			cancelCaller()
			return nil, r.Context().Err()
		}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := scriptedCluster("c", 1, func(r *http.Request) (*http.Response, error) { return tc.answer(r, cancel) })
			var ejected []netip.AddrPort
			c.Balancer = balance.New(balance.Config{Outlier: balance.Outlier{Consecutive: 1, MaxEjectionPercent: 100},
				OnEject: func(a netip.AddrPort, _ time.Duration) { ejected = append(ejected, a) }})
			c.Balancer.Update(testAddrs(1))
			resp, err := (&Forwarder{}).Forward(&Route{Name: "r", Timeout: tc.timeout, Backends: []Backend{{Cluster: c, Weight: 1}}}, request(t, "GET", "").WithContext(ctx))
			if err == nil {
				resp.Body.Close()
			}
			if got := len(ejected) == 1 && ejected[0] == testAddrs(1)[0]; got != tc.ejected {
				t.Fatalf("ejected %v (answer %v), want ejected %v", ejected, err, tc.ejected)
			}
		})
	}
}

// A body of exactly RetryBodyLimit bytes is kept for a retry, and the
// retry sends the same bytes.
func TestBodyOfTheLimitRetried(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", RetryBodyLimit/16)
	var got []string
	c := scriptedCluster("c", 2, func(r *http.Request) (*http.Response, error) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		got = append(got, string(b))
		if len(got) == 1 {
			return reply(503), nil
		}
		return reply(200), nil
	})
	route := &Route{Name: "r", Retry: RetryPolicy{Retries: 1, On: GatewayError, NonIdempotent: true}, Backends: []Backend{{Cluster: c, Weight: 1}}}
	code, _, err := forward(t, &Forwarder{}, route, request(t, "POST", body))
	if err != nil || code != 200 || len(got) != 2 || got[0] != body || got[1] != body {
		t.Fatalf("POST of %d bytes: %d %v, %d tries, want the 503 retried with the same body", len(body), code, err, len(got))
	}
}

// truncatedBody is an app's request body cut short, as net/http's server
// reads one: its bytes, then io.ErrUnexpectedEOF, then io.EOF on every
// later read.
type truncatedBody struct {
	data  string
	reads int
}

func (b *truncatedBody) Read(p []byte) (int, error) {
	b.reads++
	switch b.reads {
	case 1:
		return copy(p, b.data), nil
	case 2:
		return 0, io.ErrUnexpectedEOF
	}
	return 0, io.EOF
}

func (b *truncatedBody) Close() error { return nil }

// A request body that broke off (the app's connection cut mid-body) is
// never delivered as a whole one: its first try fails, and its retry
// fails the same way instead of sending the bytes read so far as the
// complete body.
func TestTruncatedBodyNeverCompletedByARetry(t *testing.T) {
	var mu sync.Mutex
	var complete []string
	ep := newEndpoint(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		mu.Lock()
		complete = append(complete, string(b))
		mu.Unlock()
		fmt.Fprintf(w, "got %q", b)
	})
	route := &Route{Name: "r", Retry: RetryPolicy{Retries: 1, On: Reset}, Backends: []Backend{{Cluster: cluster(t, "c", []*endpoint{ep}), Weight: 1}}}
	req := request(t, "PUT", "")
	req.Body, req.ContentLength = &truncatedBody{data: "part of a body"}, -1
	var seen []Try
	code, body, err := forward(t, &Forwarder{Observe: func(tr Try) { seen = append(seen, tr) }}, route, req)
	var le *Error
	if !errors.As(err, &le) || le.Status != 502 {
		t.Errorf("a truncated body: %d %q %v, want 502", code, body, err)
	}
	if len(seen) != 2 {
		t.Errorf("%d tries, want 2 (the reset retried)", len(seen))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(complete) != 0 {
		t.Errorf("the endpoint received %q as complete bodies", complete)
	}
}

// roundTripper is a RoundTripper made of a function.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A request with trailers is tried once: its trailers come after its body
// into one map, which every try's request would share — one try filling
// it while the next reads it.
func TestRequestWithTrailersNotRetried(t *testing.T) {
	tries := 0
	c := scriptedCluster("c", 2, func(r *http.Request) (*http.Response, error) {
		io.Copy(io.Discard, r.Body)
		tries++
		if tries == 1 {
			return reply(503), nil
		}
		return reply(200), nil
	})
	route := &Route{Name: "r", Retry: RetryPolicy{Retries: 2, On: GatewayError, NonIdempotent: true}, Backends: []Backend{{Cluster: c, Weight: 1}}}
	req := request(t, "POST", "body")
	req.Trailer = http.Header{"X-Sum": nil}
	code, _, err := forward(t, &Forwarder{}, route, req)
	if err != nil || code != 503 || tries != 1 {
		t.Fatalf("a POST with trailers: %d %v after %d tries, want its 503 after one", code, err, tries)
	}
	// The same request without trailers is retried (the test's control).
	tries = 0
	code, _, err = forward(t, &Forwarder{}, route, request(t, "POST", "body"))
	if err != nil || code != 200 || tries != 2 {
		t.Fatalf("a POST without trailers: %d %v after %d tries, want 200 after two", code, err, tries)
	}
}
