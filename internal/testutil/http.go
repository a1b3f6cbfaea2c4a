package testutil

import (
	"io"
	"net/http"
	"testing"
)

// Get fetches url and returns the response's status code and body; a
// request that fails fails the test.
func Get(t testing.TB, url string) (status int, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, b := Do(t, http.DefaultClient, req)
	return resp.StatusCode, b
}

// Do sends req with c and returns the response with its body, read to the
// end and closed; a request or a read that fails fails the test.
func Do(t testing.TB, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}
