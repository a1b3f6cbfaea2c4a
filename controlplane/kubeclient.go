package controlplane

// KubeQPS and KubeBurst are the default client-side limits of the control
// plane's Kubernetes API client (weft-controlplane --kube-api-qps,
// --kube-api-burst). client-go's own default (5/s, burst 10) would cap the
// certificate service at about 2.5 SVIDs a second for pods whose tokens it
// has not reviewed yet (each costs a TokenReview and a pod GET), shared with
// the informers and status writes: a rolling restart of 100 pods would wait
// 40s for identities. Measured against the real API server by
// test/e2e TestCertificateServiceAgainstTheAPIServer.
const (
	KubeQPS   = 50
	KubeBurst = 100
)
