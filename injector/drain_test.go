package injector

import (
	"context"
	"encoding/json"
	"io"
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
func TestServeDrainsAReviewInFlight(t *testing.T) {
	ca := newTestCA(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc, errc := make(chan string, 1), make(chan error, 1)
	go func() {
		errc <- Serve(ctx, ServerConfig{Addr: "127.0.0.1:0", Injector: newInjector(t, true), Certificates: SVIDCertificates(ca.source(t, 1)),
			Ready: func(a net.Addr) { addrc <- a.String() }})
	}()
	var addr string
	select {
	case addr = <-addrc:
	case err := <-errc:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Ready was never called")
	}

	body := reviewBody(t, loadPod(t, "plain"), "demo")
	half := len(body) / 2
	pr, pw := io.Pipe()
	req, err := http.NewRequest("POST", "https://"+addr+"/inject", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	type result struct {
		resp *http.Response
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		resp, err := client(ca).Do(req)
		resc <- result{resp, err}
	}()
	if _, err := pw.Write(body[:half]); err != nil { // the pipe returns once the transport took it
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the server read the head and start on the body

	cancel()
	// Serve waits for the review: it has not returned while the body is
	// half sent, and the listener is closed.
	select {
	case err := <-errc:
		t.Fatalf("Serve returned %v with a review in flight", err)
	case <-time.After(500 * time.Millisecond):
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("a new connection was accepted after the context ended")
	}
	if _, err := pw.Write(body[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	res := <-resc
	if res.err != nil {
		t.Fatalf("the review in flight: %v", res.err)
	}
	defer res.resp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(res.resp.Body).Decode(&review); err != nil || res.resp.StatusCode != http.StatusOK ||
		review.Response == nil || !review.Response.Allowed {
		t.Fatalf("the review in flight: %s, %+v, %v", res.resp.Status, review.Response, err)
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
