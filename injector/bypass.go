package injector

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Capture bypass: the traffic-capture rules (sidecar/capture) send every
// TCP connection and DNS query of the pod's containers through weft-proxy,
// except those of UID ProxyUID (weft-proxy's own). A container escapes
// them, silently, when it can run as that UID, change or delete the rules,
// or put packets on the wire without the IP stack:
//
//  1. it runs as UID 1337 (runAsUser, its own or the pod's);
//  2. it is privileged;
//  3. it adds NET_ADMIN, SYS_ADMIN or ALL (NET_ADMIN deletes the
//     `inet weft` table; SYS_ADMIN can do as much);
//  4. it keeps NET_RAW: added, or not dropped — container runtimes grant
//     it by default — (a packet socket sends frames that no netfilter hook
//     sees, and raw sockets forge the DNS proxy's answers);
//  5. it keeps SETUID (not dropped, nor ALL) and may become root: it runs
//     as UID 0, or sets no runAsUser without runAsNonRoot (the image's
//     USER may be root), or allows privilege escalation (a setuid-root
//     binary makes it root) — root with CAP_SETUID becomes 1337 with one
//     call.
//
// A container that meets the "restricted" Pod Security Standard — drop
// ALL capabilities, runAsNonRoot, allowPrivilegeEscalation false, not
// privileged — and does not run as 1337 cannot bypass capture. What is
// not seen here: an image whose USER is 1337 while the pod sets no
// runAsUser and runAsNonRoot (rule 1 sees only the spec; the kubelet
// resolves the image's USER after admission) — set runAsUser, or use
// images whose USER is not 1337.

// Bypass is one way a container could escape capture.
type Bypass struct {
	Container string `json:"container"`
	Kind      string `json:"kind"` // "container", "initContainer" or "ephemeralContainer"
	Reason    string `json:"reason"`
}

func (b Bypass) String() string {
	return fmt.Sprintf("%s %s %s", b.Kind, b.Container, b.Reason)
}

// CaptureBypasses returns the ways the pod's containers (init, app and
// ephemeral; weft's own excepted) could escape the capture rules, in
// container order, one per container (its first reason).
func CaptureBypasses(pod *corev1.Pod) []Bypass {
	var out []Bypass
	psc := pod.Spec.SecurityContext
	check := func(kind, name string, sc *corev1.SecurityContext) {
		if name == InitName || name == ProxyName {
			return
		}
		if r := bypassReason(psc, sc); r != "" {
			out = append(out, Bypass{Container: name, Kind: kind, Reason: r})
		}
	}
	for _, c := range pod.Spec.InitContainers {
		check("initContainer", c.Name, c.SecurityContext)
	}
	for _, c := range pod.Spec.Containers {
		check("container", c.Name, c.SecurityContext)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		check("ephemeralContainer", c.Name, c.SecurityContext)
	}
	return out
}

// bypassReason is the first rule of the package doc a container with
// security context sc (in a pod with psc) breaks, or "".
func bypassReason(psc *corev1.PodSecurityContext, sc *corev1.SecurityContext) string {
	var uid *int64
	nonRoot := false
	if psc != nil {
		uid = psc.RunAsUser
		nonRoot = psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	}
	var add, drop []string
	privileged, escalation := false, true
	if sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsNonRoot != nil {
			nonRoot = *sc.RunAsNonRoot
		}
		privileged = sc.Privileged != nil && *sc.Privileged
		if sc.AllowPrivilegeEscalation != nil {
			escalation = *sc.AllowPrivilegeEscalation
		}
		if sc.Capabilities != nil {
			for _, c := range sc.Capabilities.Add {
				add = append(add, capName(c))
			}
			for _, c := range sc.Capabilities.Drop {
				drop = append(drop, capName(c))
			}
		}
	}
	has := func(set []string, c string) bool { return slices.Contains(set, c) || slices.Contains(set, "ALL") }
	switch {
	case uid != nil && *uid == ProxyUID:
		return fmt.Sprintf("runs as UID %d, the proxy's, whose traffic is not captured", ProxyUID)
	case privileged:
		return "is privileged: it can change or delete the capture rules"
	case has(add, "NET_ADMIN") || has(add, "SYS_ADMIN"):
		return "adds NET_ADMIN, SYS_ADMIN or ALL: it can change or delete the capture rules"
	case has(add, "NET_RAW") || !has(drop, "NET_RAW"):
		return "keeps NET_RAW (the runtime grants it unless dropped): packet sockets send what capture never sees; drop NET_RAW (or ALL)"
	}
	if !has(drop, "SETUID") {
		switch {
		case uid != nil && *uid == 0:
			return "runs as root and keeps SETUID: it can become the proxy's UID; drop SETUID (or ALL)"
		case uid == nil && !nonRoot:
			return "may run as root (no runAsUser, no runAsNonRoot) and keeps SETUID: it can become the proxy's UID; drop SETUID (or ALL), or set runAsNonRoot"
		case escalation:
			return "allows privilege escalation and keeps SETUID: a setuid-root binary can make it the proxy's UID; set allowPrivilegeEscalation: false or drop SETUID (or ALL)"
		}
	}
	return ""
}

// capName normalises a capability as the runtime reads it: "CAP_NET_RAW"
// and "net_raw" are NET_RAW.
func capName(c corev1.Capability) string {
	return strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_")
}
