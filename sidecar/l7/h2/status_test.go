package h2

import (
	"net/http"
	"strconv"
	"testing"
)

// A response's Status is what net/http's transports make of its code:
// the code, a space and its text, the text empty for a code without one.
func TestResponseStatus(t *testing.T) {
	for code := 100; code <= 999; code++ {
		if got, want := responseStatus(code), strconv.Itoa(code)+" "+http.StatusText(code); got != want {
			t.Fatalf("responseStatus(%d) = %q, want %q", code, got, want)
		}
	}
}
