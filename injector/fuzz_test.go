package injector

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
)

// FuzzReview feeds arbitrary bodies to the handler: it never panics, always
// answers with a well-formed AdmissionReview, explains every denial, and
// every patch it returns applies to the pod (as the API server serialises
// it) and makes a pod it would then leave alone.
func FuzzReview(f *testing.F) {
	for _, name := range []string{"plain", "existing", "probes", "annotated", "optedout", "hostnetwork", "job"} {
		f.Add(reviewBody(f, loadPod(f, name), "demo"))
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE",` +
		`"resource":{"version":"v1","resource":"pods"},"object":{"spec":{"containers":[null]}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`))
	f.Add([]byte(`{`))
	inj := newInjector(f, true)
	regular := newInjector(f, false)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, h := range []*Injector{inj, regular} {
			review, o := h.Review(body)
			r := review.Response
			if r == nil || review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
				t.Fatalf("bad review %+v", review)
			}
			if _, err := json.Marshal(review); err != nil {
				t.Fatalf("response does not encode: %v", err)
			}
			if !r.Allowed {
				if r.Result == nil || !strings.HasPrefix(r.Result.Message, "injector: ") || r.Patch != nil {
					t.Fatalf("denial without a reason: %+v", r)
				}
				continue
			}
			if r.Patch == nil {
				continue
			}
			pod, err := json.Marshal(o.Pod) // what the API server patches
			if err != nil {
				t.Fatal(err)
			}
			p, err := jsonpatch.DecodePatch(r.Patch)
			if err != nil {
				t.Fatalf("patch does not decode: %v", err)
			}
			patched, err := p.Apply(pod)
			if err != nil {
				t.Fatalf("patch does not apply: %v\npod %s\npatch %s", err, pod, r.Patch)
			}
			again, o2 := h.Review(reviewBody(t, patched, o.Namespace))
			if !again.Response.Allowed || again.Response.Patch != nil || o2.Action != Skipped {
				t.Fatalf("injected pod injected again: %+v %+v", again.Response, o2)
			}
		}
	})
}

// BenchmarkReview measures admission latency for a typical pod (three
// containers with probes) and reports its p50 and p99.
func BenchmarkReview(b *testing.B) {
	inj := newInjector(b, true)
	body := reviewBody(b, loadPod(b, "probes"), "demo")
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		review, _ := inj.Review(body)
		if _, err := json.Marshal(review); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Nanoseconds())/1e3, "p99-µs")
}
