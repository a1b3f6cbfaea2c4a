//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane"
	"github.com/weftmesh/weft/controlplane/identity"
)

// apiRequests reads the API server's own count of requests for resource
// with verb (apiserver_request_total, every code and scope summed).
func apiRequests(t *testing.T, resource, verb string) float64 {
	t.Helper()
	raw, err := kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("API server /metrics: %v", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatalf("API server /metrics: %v", err)
	}
	var sum float64
	for _, m := range fams["apiserver_request_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["resource"] == resource && labels["verb"] == verb && labels["subresource"] == "" {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestCertificateServiceAgainstTheAPIServer measures the certificate
// service's authentication against the real API server: 1,000 renewals
// from 10 pods (each with its own pod-bound weft-ca token), signed by the
// control plane's certificate service (identity.Service, in this process,
// with the real TokenReviewer), first without the TokenReview cache, then
// with it (as the control plane runs it), through an API client with the
// control plane's client-side limits (controlplane.KubeQPS). The rate limits are lifted for
// the measurement: it is the cost of authentication, not of the limiter.
// Asserted: the API server's own request counts (TokenReviews and pod
// GETs) — one per renewal without the cache, one per pod with it
// (allowing a little noise from the cluster's other clients). Reported,
// not asserted: SVIDs per second of each.
func TestCertificateServiceAgainstTheAPIServer(t *testing.T) {
	const (
		ns       = "e2e-certload"
		pods     = 10
		renewals = 1000
	)
	namespace(t, ns, nil)
	ctx := context.Background()
	var holders []*corev1.Pod
	for i := range pods {
		holders = append(holders, deployTestapp(t, ns, fmt.Sprintf("holder-%d", i), "serve", "-addr", ":8080"))
	}
	tokens := make([]string, pods)
	for i, p := range holders {
		tokens[i] = podToken(t, p, identity.Audience)
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	ca, err := certs.NewCA(certs.CAConfig{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}

	run := func(name string, authn identity.Authenticator) (perSecond, reviews, podGets float64) {
		t.Helper()
		svc, err := identity.New(identity.Config{CA: ca, Authenticator: authn,
			RateLimit: rate.Inf, SourceRateLimit: rate.Inf})
		if err != nil {
			t.Fatal(err)
		}
		tr0, pg0 := apiRequests(t, "tokenreviews", "POST"), apiRequests(t, "pods", "GET")
		start := time.Now()
		for i := range renewals {
			p := holders[i%pods]
			c := metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+tokens[i%pods]))
			c = peer.NewContext(c, &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(p.Status.PodIP), Port: 40000}})
			resp, err := svc.Sign(c, &certificatev1.SignRequest{Csr: csr, TtlSeconds: 3600})
			if err != nil {
				t.Fatalf("%s: renewal %d for %s: %v", name, i, p.Name, err)
			}
			if want := "spiffe://cluster.local/ns/" + ns + "/sa/default"; resp.GetSpiffeId() != want {
				t.Fatalf("%s: renewal %d: %s, want %s", name, i, resp.GetSpiffeId(), want)
			}
		}
		elapsed := time.Since(start)
		reviews = apiRequests(t, "tokenreviews", "POST") - tr0
		podGets = apiRequests(t, "pods", "GET") - pg0
		perSecond = renewals / elapsed.Seconds()
		t.Logf("%s: %d renewals from %d pods in %v: %.0f SVIDs/s; the API server counted %.0f TokenReviews and %.0f pod GETs (%.1f and %.1f per 1,000 renewals)",
			name, renewals, pods, elapsed.Round(time.Millisecond), perSecond, reviews, podGets, reviews*1000/renewals, podGets*1000/renewals)
		return perSecond, reviews, podGets
	}
	// The control plane's API client and its client-side limits.
	rc := rest.CopyConfig(restConfig)
	rc.QPS, rc.Burst = controlplane.KubeQPS, controlplane.KubeBurst
	reviewer := &identity.TokenReviewer{Client: kubernetes.NewForConfigOrDie(rc)}
	rateBefore, trBefore, pgBefore := run("without the cache", reviewer)
	rateAfter, trAfter, pgAfter := run("with the 30s TokenReview cache", &identity.CachingAuthenticator{Next: reviewer})
	// Other clients of the cluster (the control plane, the kubelet) make
	// a few requests of their own meanwhile: a little slack, no more.
	const noise = 20
	if trBefore < renewals || pgBefore < renewals {
		t.Fatalf("without the cache: %.0f TokenReviews and %.0f pod GETs for %d renewals, want at least one each per renewal", trBefore, pgBefore, renewals)
	}
	if trAfter > pods+noise || pgAfter > pods+noise {
		t.Fatalf("with the cache: %.0f TokenReviews and %.0f pod GETs for %d renewals from %d pods, want about %d each", trAfter, pgAfter, renewals, pods, pods)
	}
	t.Logf("the cache: %.1fx the SVIDs per second (%.0f -> %.0f), API requests per 1,000 renewals %.0f -> %.0f",
		rateAfter/rateBefore, rateBefore, rateAfter, (trBefore+pgBefore)*1000/renewals, (trAfter+pgAfter)*1000/renewals)
}
