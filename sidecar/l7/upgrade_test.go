package l7

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
	"github.com/weftmesh/weft/sidecar/balance"
)

func TestIsUpgrade(t *testing.T) {
	for _, tc := range []struct {
		req  string
		want bool
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\nUpgrade: echo\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: UPGRADE\r\nUpgrade: echo\r\n\r\n", true},
		{"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", false},                 // not a hop-by-hop request to switch
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n", false},                // to nothing
		{"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrades\r\nUpgrade: x\r\n\r\n", false}, // a token, not a substring
		{"GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", false},
	} {
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.req)))
		if err != nil {
			t.Fatal(err)
		}
		if got := isUpgrade(r); got != tc.want {
			t.Errorf("isUpgrade(%q) = %v, want %v", tc.req, got, tc.want)
		}
	}
}

// An upgrade goes on a connection of its own (DialTunnel), its head as the
// app sent it and its body after it; after the 101 the app's connection
// is a byte tunnel to the endpoint's, which outlives the request: the
// ConnServer is not done with the connection until the tunnel ends.
func TestUpgradeTunnel(t *testing.T) {
	heads := make(chan string, 1)
	ep := testutil.ServeTCP(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		head, err := readHead(br, 64<<10)
		if err != nil {
			return
		}
		body := make([]byte, 5)
		io.ReadFull(br, body)
		heads <- string(head) + string(body)
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\nX-Odd-Case: Yes\r\n\r\nready ")
		buf := make([]byte, 64)
		for {
			n, err := br.Read(buf)
			if n > 0 {
				c.Write([]byte(strings.ToUpper(string(buf[:n]))))
			}
			if err != nil {
				return
			}
		}
	})
	b := balance.New(balance.Config{})
	b.Update([]netip.AddrPort{ep})
	dialed := 0
	c := &Cluster{Name: "c", Balancer: b, Scheme: "https", DialTunnel: func(ctx context.Context, addr string) (net.Conn, error) {
		dialed++
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, &ConnectError{Err: err}
		}
		return c, nil
	}}
	addr := app(t, static(&Route{Name: "r", Backends: []Backend{{Cluster: c, Weight: 1}}}))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "POST /up?x=1 HTTP/1.1\r\nHost: svc.demo\r\nConnection: Upgrade\r\nUpgrade: echo\r\nx-lower: v\r\nContent-Length: 5\r\n\r\nhello")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("X-Odd-Case") != "Yes" {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	head := <-heads
	for _, want := range []string{"POST /up?x=1 HTTP/1.1\r\nHost: svc.demo\r\n", "Connection: Upgrade\r\n", "Upgrade: echo\r\n", "X-Lower: v\r\n",
		"Content-Length: 5\r\n", "\r\n\r\nhello"} {
		if !strings.Contains(head, want) {
			t.Errorf("the endpoint got %q: no %q", head, want)
		}
	}
	got := make([]byte, len("ready "))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ready " {
		t.Fatalf("bytes after the 101: %q %v", got, err)
	}
	for _, msg := range []string{"one", "two", "three"} {
		io.WriteString(conn, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != strings.ToUpper(msg) {
			t.Fatalf("through the tunnel: %q %v", got, err)
		}
	}
	if dialed != 1 {
		t.Errorf("%d tunnel connections, want 1", dialed)
	}
	if st := b.State()[0]; st.Pending != 1 {
		t.Errorf("the endpoint has %d requests in flight during the tunnel, want 1", st.Pending)
	}
	conn.Close()
	testutil.Eventually(t, "the tunnel to end", func() bool { return b.State()[0].Pending == 0 })
}
