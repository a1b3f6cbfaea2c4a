package controlplane

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/controlplane/adminauth"
)

// The admin port (15014) speaks plain HTTP and HTTPS on one socket, told
// apart by the connection's first byte (a TLS record of type handshake is
// 0x16; an HTTP request starts with a method's letter). Plain HTTP is for
// scrapers and probes (/metrics, /healthz); /audit and /debug answer only
// over TLS, where a caller's token or certificate cannot be read on the
// way (adminauth). The TLS side presents the control plane's serving
// certificate (weft-controlplane.<ns>.svc, signed by weft's CA) and
// verifies a client certificate, if one is sent, against the API server's
// client CA.

// adminTLS is the TLS configuration of the admin port.
func adminTLS(cert *servingCert, cas *adminauth.ClientCAs) *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		Time:           cert.clock.Now,
		GetCertificate: cert.get,
		NextProtos:     []string{"http/1.1"},
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		if p := cas.Pool(); p != nil {
			c.ClientCAs, c.ClientAuth = p, tls.VerifyClientCertIfGiven
		}
		return c, nil
	}
	return cfg
}

// sniffListener hands out each accepted connection as it is (plain HTTP)
// or wrapped in TLS, by its first byte. The first byte is read off the
// accept path, so a client that sends nothing holds up no one; it is
// closed after timeout.
type sniffListener struct {
	net.Listener
	tls     *tls.Config
	timeout time.Duration
	clock   clock.Clock // the accept backoff waits on it
	conns   chan net.Conn
	done    chan struct{}
	once    sync.Once
	err     error // set before done is closed
}

func newSniffListener(inner net.Listener, cfg *tls.Config, timeout time.Duration, clk clock.Clock) *sniffListener {
	l := &sniffListener{Listener: inner, tls: cfg, timeout: timeout, clock: clk, conns: make(chan net.Conn), done: make(chan struct{})}
	go l.loop()
	return l
}

func (l *sniffListener) loop() {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if errors.Is(err, net.ErrClosed) {
			l.stop(err)
			return
		}
		if err != nil {
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-l.clock.After(backoff):
			case <-l.done:
				return
			}
			continue
		}
		backoff = 0
		go l.sniff(c)
	}
}

func (l *sniffListener) stop(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
	})
}

func (l *sniffListener) sniff(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(l.timeout))
	br := bufio.NewReaderSize(c, 512)
	first, err := br.Peek(1)
	if err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	var out net.Conn = &peekedConn{Conn: c, r: br}
	if first[0] == 0x16 {
		out = tls.Server(out, l.tls)
	}
	select {
	case l.conns <- out:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next sniffed connection.
func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close stops accepting.
func (l *sniffListener) Close() error {
	err := l.Listener.Close()
	l.stop(net.ErrClosed)
	return err
}

// peekedConn reads first what was peeked.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
