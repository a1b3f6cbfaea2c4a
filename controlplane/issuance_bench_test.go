package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	certificatev1 "github.com/weftmesh/weft/api/certificate/v1"
	"github.com/weftmesh/weft/controlplane/identity"
)

var stormPods = flag.Int("storm.pods", 200,
	"BenchmarkIssuanceStorm: pods that start at once, each asking for its first SVID")

// stormAPI is an API server over HTTP on loopback that answers what the
// certificate service asks of the real one: TokenReview (token "storm-<i>"
// is pod i's, bound to it) and GET of a pod. It answers at once and
// counts the requests, so what a storm costs the API server, and what the
// control plane's own client-side limit makes of it, can be read off.
type stormAPI struct {
	srv      *httptest.Server
	reviews  atomic.Int64
	podGets  atomic.Int64
	inFlight atomic.Int64
	peak     atomic.Int64
}

func stormPod(i int) (ns, sa, name, uid string) {
	return fmt.Sprintf("ns-%d", i%20), fmt.Sprintf("sa-%d", i), fmt.Sprintf("pod-%d", i), fmt.Sprintf("uid-%d", i)
}

func stormPodObject(i int) *corev1.Pod {
	ns, sa, name, uid := stormPod(i)
	return &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{ServiceAccountName: sa}}
}

func newStormAPI(tb testing.TB) *stormAPI {
	a := &stormAPI{}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	tb.Cleanup(a.srv.Close)
	return a
}

func (a *stormAPI) serve(w http.ResponseWriter, r *http.Request) {
	n := a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
	var out any
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/apis/authentication.k8s.io/v1/tokenreviews":
		a.reviews.Add(1)
		// As client-go sends it (protobuf for built-in types); the
		// answer goes back as JSON, which it accepts too.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil)
		tr, ok := obj.(*authenticationv1.TokenReview)
		if err != nil || !ok {
			http.Error(w, fmt.Sprintf("not a TokenReview (%s): %v", r.Header.Get("Content-Type"), err), http.StatusBadRequest)
			return
		}
		var i int
		if _, err := fmt.Sscanf(tr.Spec.Token, "storm-%d", &i); err != nil {
			tr.Status = authenticationv1.TokenReviewStatus{Error: "unknown token"}
		} else {
			ns, sa, name, uid := stormPod(i)
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences,
				User: authenticationv1.UserInfo{Username: "system:serviceaccount:" + ns + ":" + sa, Extra: map[string]authenticationv1.ExtraValue{
					"authentication.kubernetes.io/pod-name": {name}, "authentication.kubernetes.io/pod-uid": {uid}}}}
		}
		tr.TypeMeta = metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"}
		out = tr
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/"):
		a.podGets.Add(1)
		// /api/v1/namespaces/<ns>/pods/<name>
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v1/namespaces/"), "/")
		var i int
		if len(parts) != 3 || parts[1] != "pods" {
			http.NotFound(w, r)
			return
		}
		if _, err := fmt.Sscanf(parts[2], "pod-%d", &i); err != nil {
			http.NotFound(w, r)
			return
		}
		out = stormPodObject(i)
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// BenchmarkIssuanceStorm: -storm.pods pods start at once and each asks the
// certificate service for its first SVID, over TLS from its own address
// (127.1.x.y: the service limits requests per source address, as per pod
// IP), with its own token. The service is wired as Run wires it: its
// Kubernetes client is a real client-go clientset with the control plane's
// client-side limit (KubeQPS, KubeBurst) or none, the TokenReview cache in
// front of TokenReviewer (its pod check in an informer's cache, as Run
// does, or by a GET), the gRPC server's options. After the storm each
// pod's token is authenticated twice more, as its ADS and audit streams
// are (the cache answers). Reports:
//
//	svids/s                   pods / the time until the last has its SVID
//	p50-ms, p99-ms, max-ms    start → SVID, per pod
//	api-req/pod               TokenReviews and pod GETs per pod, storm
//	streams-api-req/pod       the same for the two stream authentications
//	api-req/s                 the storm's API requests / its wall time
//	api-peak-inflight         most API requests in flight at once
//	retries                   Sign calls made again after Unavailable
//
// The API server here answers at once: the figures are the control plane's
// own (CPU, its client-side limit), not an API server's latency.
//
//	go test ./controlplane/ -run=NONE -bench=IssuanceStorm -benchtime=1x -args -storm.pods=1000
func BenchmarkIssuanceStorm(b *testing.B) {
	limit := fmt.Sprintf("client-limit=%g/s,burst=%d", float32(KubeQPS), KubeBurst)
	for _, c := range []struct {
		name       string
		qps, burst float32
		informer   bool
	}{
		{limit + "/pod-check=get", KubeQPS, KubeBurst, false},
		{limit + "/pod-check=informer", KubeQPS, KubeBurst, true}, // as Run
		{"client-limit=none/pod-check=get", -1, 0, false},
		{"client-limit=none/pod-check=informer", -1, 0, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N { // not b.Loop: the set-up of each storm is not timed
				stormOnce(b, *stormPods, c.qps, int(c.burst), c.informer)
			}
		})
	}
}

// stormOnce runs one storm. With informer the pod a token is bound to is
// checked in a cache that holds every pod (Run's is the registry's
// informer, which sees a pod when it is created, before its sidecar runs);
// without it, by a GET.
func stormOnce(b *testing.B, pods int, qps float32, burst int, informer bool) {
	b.StopTimer()
	if pods > 250*250 {
		b.Fatalf("-storm.pods=%d: at most %d source addresses", pods, 250*250)
	}
	api := newStormAPI(b)
	kube, err := kubernetes.NewForConfig(&rest.Config{Host: api.srv.URL, QPS: qps, Burst: burst})
	if err != nil {
		b.Fatal(err)
	}
	ca, serving, serverNames := testServingCert(b, spiffeid.RequireTrustDomainFromString("cluster.local"))
	reviewer := &identity.TokenReviewer{Client: kube}
	if informer {
		cache := map[string]*corev1.Pod{}
		for i := range pods {
			p := stormPodObject(i)
			cache[p.Namespace+"/"+p.Name] = p
		}
		reviewer.Pods = func(ns, name string) (*corev1.Pod, bool) {
			p, ok := cache[ns+"/"+name]
			return p, ok
		}
	}
	authn := &identity.CachingAuthenticator{Next: reviewer}
	svc, err := identity.New(identity.Config{CA: ca, Authenticator: authn, ServerNames: serverNames})
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer(serverOptions(credentials.NewTLS(serverTLS(ca, serving)))...)
	certificatev1.RegisterCertificateServiceServer(gs, svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()

	// Each pod: its key and CSR (the sidecar's work, not timed), its
	// connection from its own address.
	csrs := make([][]byte, pods)
	conns := make([]*grpc.ClientConn, pods)
	clientTLS := tlsconfig.TLSClientConfig(ca.Bundle(), tlsconfig.AuthorizeID(serving.id))
	for i := range pods {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		if csrs[i], err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key); err != nil {
			b.Fatal(err)
		}
		src := &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(i%250+1))}
		conns[i], err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				d := net.Dialer{LocalAddr: src}
				return d.DialContext(ctx, "tcp", addr)
			}))
		if err != nil {
			b.Fatal(err)
		}
		defer conns[i].Close()
	}

	var retries atomic.Int64
	lat := make([]time.Duration, pods)
	errs := make([]error, pods)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", fmt.Sprintf("Bearer storm-%d", i))
			<-start
			t := time.Now()
			// As a sidecar does: a call the server could not take
			// (Unavailable: a connection reset, a handshake past its
			// deadline under the storm) is made again, and counted.
			resp, err := certificatev1.NewCertificateServiceClient(conns[i]).Sign(ctx, &certificatev1.SignRequest{Csr: csrs[i]})
			for try := 1; grpcstatus.Code(err) == codes.Unavailable && try < 5; try++ {
				retries.Add(1)
				resp, err = certificatev1.NewCertificateServiceClient(conns[i]).Sign(ctx, &certificatev1.SignRequest{Csr: csrs[i]})
			}
			lat[i] = time.Since(t)
			if err == nil && len(resp.GetCertChain()) == 0 {
				err = fmt.Errorf("pod %d: an empty chain", i)
			}
			errs[i] = err
		})
	}
	b.StartTimer()
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0)
	b.StopTimer()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("pod %d: %v", i, err)
		}
	}
	stormReq := api.reviews.Load() + api.podGets.Load()

	// The pods' ADS and audit streams present the same tokens.
	for range 2 {
		for i := range pods {
			if _, err := authn.Authenticate(context.Background(), fmt.Sprintf("storm-%d", i)); err != nil {
				b.Fatalf("pod %d's stream: %v", i, err)
			}
		}
	}
	streamReq := api.reviews.Load() + api.podGets.Load() - stormReq

	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(pods)/wall.Seconds(), "svids/s")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(stormReq)/float64(pods), "api-req/pod")
	b.ReportMetric(float64(streamReq)/float64(pods), "streams-api-req/pod")
	b.ReportMetric(float64(stormReq)/wall.Seconds(), "api-req/s")
	b.ReportMetric(float64(api.peak.Load()), "api-peak-inflight")
	b.ReportMetric(float64(retries.Load()), "retries")
	b.ReportMetric(float64(pods), "pods")
}
