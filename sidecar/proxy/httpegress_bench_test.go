package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// BenchmarkEgressHTTPRequest: what deciding every request costs. One
// keep-alive connection, a 1 KiB POST and a 1 KiB answer per op, to an
// "external" server on loopback:
//
//	direct     the app to the server, no sidecar (the floor)
//	tcp_chain  through the client's sidecar on an opaque egress chain: what
//	           every request after the first cost before requests were
//	           decided one by one (bytes copied, nothing parsed)
//	http_chain through an HTTP egress chain: each request parsed, routed by
//	           its Host, its name bound to the address, audited
//
// Compare http_chain with tcp_chain and direct of the same run
// (benchstat); ns/op is the round trip.
func BenchmarkEgressHTTPRequest(b *testing.B) {
	body := strings.Repeat("x", 1024)
	req := []byte("POST /echo HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 1024\r\n\r\n" + body)
	resp := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	srv := &reqServer{app: startApp(b, func(c *net.TCPConn, a *app) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				return
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})}
	for _, mode := range []string{"direct", "tcp_chain", "http_chain"} {
		b.Run(mode, func(b *testing.B) {
			var c net.Conn
			switch mode {
			case "direct":
				d, err := net.Dial("tcp", srv.app.addr().String())
				if err != nil {
					b.Fatal(err)
				}
				c = d
			default:
				pd, events := reqPod(b, "Enforce", false, srv)
				go func() {
					for range events { // the audit sink
					}
				}()
				if mode == "tcp_chain" {
					cfg := pd.cfg.Load()
					cfg.Outbound.Chains = slices.DeleteFunc(cfg.Outbound.Chains, func(fc *model.FilterChain) bool { return fc.Target.RouteConfig != "" })
					pd.cfg.Store(cfg)
				}
				c = pd.dialOutbound(srv.app.addr())
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 4096)
			buf := make([]byte, len(resp))
			b.SetBytes(int64(len(req) + len(resp)))
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(br, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if !bytes.Equal(buf, resp) {
				b.Fatalf("answer %q", buf[:64])
			}
		})
	}
}
