package l7

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// Each connection's requests see the value it was served with (the
// sidecar's route configuration of the connection's chain), HTTP/1.1 and
// h2c alike; Shutdown lets a kept-alive connection go and ServeConnWith
// returns.
func TestServeConnWithValue(t *testing.T) {
	var s *ConnServer
	route := func(r *http.Request) *Route {
		return &Route{Name: fmt.Sprint(ConnValue(r))} // no backend: 503, and the route's name is not shown
	}
	h := &Handler{Route: route, Forwarder: &Forwarder{}}
	seen := make(chan any, 4)
	s = NewConnServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- ConnValue(r)
		h.ServeHTTP(w, r)
	}), ServerLimits{HeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}, nil)
	t.Cleanup(func() { s.Close() })
	served := make(chan error, 2)
	var n atomic.Int32
	addr := testutil.ServeTCP(t, func(c net.Conn) {
		served <- s.ServeConnWith(c, fmt.Sprintf("outbound|80|svc%d", n.Add(1)))
	}).String()
	for i, h2c := range []bool{false, true} {
		c := oneConn(t, h2c)
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if v := <-seen; v != fmt.Sprintf("outbound|80|svc%d", i+1) || resp.StatusCode != 503 {
			t.Fatalf("connection %d: value %v, status %d", i+1, v, resp.StatusCode)
		}
	}
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-served; err != nil {
			t.Fatalf("ServeConnWith: %v", err)
		}
	}
}
