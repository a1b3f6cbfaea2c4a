package controlplane

// KubeQPS and KubeBurst are the default client-side limits of the control
// plane's Kubernetes API client (weft-controlplane --kube-api-qps,
// --kube-api-burst). Each pod whose token the certificate service has not
// reviewed yet costs a TokenReview (and a pod GET when the registry's
// informer does not hold the pod yet), shared with the informers and
// status writes: client-go's own default (5/s, burst 10) would cap a
// storm at about 5 SVIDs a second, a rolling restart of 100 pods waiting
// 20s for identities; at 50/s a storm of 1,000 pods gets them in about
// 19s (BenchmarkIssuanceStorm, docs/scale.md). Measured against the real
// API server by test/e2e TestCertificateServiceAgainstTheAPIServer.
const (
	KubeQPS   = 50
	KubeBurst = 100
)
