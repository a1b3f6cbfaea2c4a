// Package injector is weft's mutating admission webhook: it adds the
// capture init step (weft-init) and the proxy (weft-proxy) to pods created
// in namespaces labelled weft.dev/inject=enabled.
//
// The package holds three things, kept apart:
//
//   - a pure handler, [Injector]: AdmissionReview in, AdmissionResponse with
//     an RFC 6902 JSON patch out. No I/O, no clock, no goroutines; tested
//     with YAML fixtures and golden patched pods (go test -update).
//   - the plumbing: [Serve] (HTTPS on [DefaultAddr], the serving certificate
//     fetched per connection so a renewed one is served without a restart),
//     [EnsureCABundle] and [KeepCABundle] (the webhook's caBundle is weft's
//     root bundle), [NativeSidecarSupported] (from the API server's version),
//     and [KubeEvents] (an Event for each skipped pod).
//   - the process, [Run] (weft-injector), beside controlplane.Run and
//     sidecar.Run: it builds the handler, follows the MeshConfig with an
//     informer, waits for the serving certificate, keeps the caBundle and
//     serves until its context ends.
//
// It imports client-go, the Kubernetes API types, go-spiffe, api/names,
// api/v1alpha1 (the MeshConfig) and internal/version. It imports
// neither controlplane/* nor sidecar/*: the serving certificate arrives
// through [Identity] (and [CertificateSource]), and cmd/weft-injector
// wires in sidecar/identity and the clients.
//
// # When a pod is injected
//
// The webhook's namespaceSelector sends only pods of opted-in namespaces
// (and never kube-system or weft's own namespace). The handler itself
// still never injects kube-system or weft's namespace, and skips (allows
// unchanged, logs the reason, records an Event) pods annotated
// weft.dev/inject: disabled, pods on hostNetwork (capture rules would land
// in the node's network namespace) and pods that already carry weft-proxy,
// so injecting an injected pod changes nothing. Every weft.dev/ annotation
// is validated; a bad value refuses the pod with a message naming the
// annotation and the reason.
//
// Every container, init and ephemeral ones included (the webhook also
// receives UPDATEs of pods/ephemeralcontainers, from kubectl debug), is
// checked against the capture-bypass rule (bypass.go): under the
// MeshConfig's captureBypass Refuse the pod is denied, under Warn (the
// default) it is admitted with a warning and a CaptureBypass Event. No
// container but weft-proxy may mount weft's volumes: the projected token
// is what tells the sidecar's control-plane streams from the app's.
// weft-proxy's timeouts come from the pod's weft.dev/proxy-*-timeout
// annotations or the MeshConfig's proxyTimeouts, read at admission
// (Config.Mesh).
//
// # Native and regular sidecar
//
// On Kubernetes >= 1.29 weft-proxy is a native sidecar: an init container
// with restartPolicy Always right after weft-init. The kubelet starts the
// user's init containers and the app only after its startup probe passes,
// so the app never sees a network without its proxy, and Jobs complete
// because the kubelet stops native sidecars when the app containers end.
//
// On older clusters weft-proxy is the first regular container. The trade-
// off: the kubelet starts containers in order but does not wait for one to
// be ready before starting the next, so the app may start before the proxy
// listens, and its first outbound connections (already redirected to 15001)
// are refused until it does; the user's init containers run after weft-init
// with no proxy at all, so they have no outbound network; and a Job's pod
// never completes, because weft-proxy does not exit. A postStart hook
// running "weft-sidecar wait" would hold the app back until the proxy is
// ready, but the sidecar has no such command yet; once it does, add the hook
// here.
//
// # Outbound UDP
//
// weft-init's --outbound-udp is Config.OutboundUDP (weft-injector
// -outbound-udp, default mesh), or the pod's weft.dev/outbound-udp
// annotation (drop or allow) where it has one. The mesh cannot decide UDP:
// under drop, weft-init rejects the pod's outbound UDP other than DNS to
// its nameservers (which the DNS proxy sees), so QUIC falls back to TCP,
// which the sidecar decides; under allow it leaves unaudited. Drop is what
// a REGISTRY_ONLY mesh wants, allow what ALLOW_ANY does: mesh follows the
// MeshConfig's outbound mode at each admission (Config.Mesh, which
// weft-injector backs with an informer on meshconfigs/default). Pods keep
// the choice made at their creation. weft.dev/exclude-outbound-
// ports and weft.dev/exclude-outbound-cidrs apply to UDP as well: a pod
// that may bypass the sidecar for a destination over TCP may do so over
// UDP. Like those, the annotation is the pod author's: it can opt a pod
// out of the drop, as the exclusions can opt it out of TCP capture.
//
// # Resources
//
// weft-proxy requests 10m CPU and 32Mi memory with a 128Mi memory limit and
// no CPU limit (throttling would add latency to every request of the app);
// see [DefaultProxyResources]. weft.dev/proxy-cpu and weft.dev/proxy-memory
// each set both the request and the limit of their resource.
//
// # failurePolicy
//
// The webhook is installed with failurePolicy Fail and a 5 s timeout: when
// the injector is down or slow, pod creation in opted-in namespaces fails
// (controllers retry with backoff) instead of letting pods through
// unmeshed, which under STRICT would be unreachable and would bypass egress
// policy. The price is availability: an injector outage blocks scaling and
// rollouts in meshed namespaces, though running pods are unaffected. The
// namespaceSelector keeps kube-system and weft's namespace out, so the
// injector can always restart itself, and the short timeout bounds how long
// an API request waits. Run more than one replica where that matters.
//
// # Port
//
// The server listens on 15017 (weft's 150xx range, next to the control
// plane's 15012/15014); the Service maps 443 to it. Health is /healthz on
// the same TLS port: the kubelet probes with scheme HTTPS and does not
// verify certificates.
package injector
