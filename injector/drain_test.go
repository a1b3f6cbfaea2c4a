package injector

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

// TestServeDrainsAReviewInFlight: when Serve's context ends, a review the
// API server is still sending is answered before Serve returns — a
// rolling update of the injector does not fail the pod being admitted —
// and no new connection is accepted meanwhile.
//
// The request is written by hand on a TLS connection, the head and half
// the body flushed, so the server has begun reading it (an http.Client
// would hold a small request in its buffer until the body ends). Serve is
// then given longer than net/http's 5 s grace for a connection that has
// sent nothing, so a server that dropped connections in flight on
// shutdown would be caught, and the rest of the body still arrives within
// the server's 10 s read timeout.
func TestServeDrainsAReviewInFlight(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc, errc := make(chan string, 1), make(chan error, 1)
	go func() {
		errc <- Serve(ctx, ServerConfig{Addr: "127.0.0.1:0", Injector: newInjector(t, true), Certificates: SVIDCertificates(ca.source(t, 1)),
			Ready: func(a net.Addr) { addrc <- a.String() }})
	}()
	addr := awaitReady(t, addrc, errc)

	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool, ServerName: serverName})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := reviewBody(t, loadPod(t, "plain"), "demo")
	half := len(body) / 2
	head := fmt.Sprintf("POST /inject HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", serverName, len(body))
	if _, err := conn.Write(append([]byte(head), body[:half]...)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the server read the head and start on the body

	cancel()
	// Serve waits for the review: it has not returned while the body is
	// half sent, and the listener is closed (once Serve has seen the
	// context end: polled, the cancel is not synchronous).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections still accepted 5s after the context ended")
		}
	}
	select {
	case err := <-errc:
		t.Fatalf("Serve returned %v with a review in flight", err)
	case <-time.After(5500 * time.Millisecond):
	}
	if _, err := conn.Write(body[half:]); err != nil {
		t.Fatalf("the rest of the review in flight: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the review in flight: %v", err)
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || resp.StatusCode != http.StatusOK ||
		review.Response == nil || !review.Response.Allowed {
		t.Fatalf("the review in flight: %s, %+v, %v", resp.Status, review.Response, err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return once the review was answered")
	}
}
