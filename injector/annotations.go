package injector

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/weftmesh/weft/api/names"
)

// Pod annotations (docs/architecture.md, "Pod annotations and labels").
// Users set all but the last two, which the injector writes.
//
// weft.dev/exclude-outbound-ports and weft.dev/exclude-outbound-cidrs
// exclude destinations from capture whatever the protocol: TCP to them is
// not redirected to the sidecar, and where outbound UDP is dropped
// (weft.dev/outbound-udp: drop), UDP to them still leaves.
// weft.dev/outbound-udp (drop or allow) overrides the injector's
// Config.OutboundUDP for one pod.
const (
	AnnotationInject               = names.InjectLabel
	AnnotationExcludeInboundPorts  = "weft.dev/exclude-inbound-ports"
	AnnotationExcludeOutboundPorts = "weft.dev/exclude-outbound-ports"
	AnnotationExcludeOutboundCIDRs = "weft.dev/exclude-outbound-cidrs"
	AnnotationProxyCPU             = "weft.dev/proxy-cpu"
	AnnotationProxyMemory          = "weft.dev/proxy-memory"
	AnnotationLogLevel             = "weft.dev/log-level"
	AnnotationOutboundUDP          = "weft.dev/outbound-udp"
	// AnnotationPprof "true" makes weft-proxy serve Go's profiles on its
	// admin port (weft-sidecar run --pprof); off otherwise, since the app
	// could run them and burn the sidecar's CPU.
	AnnotationPprof = "weft.dev/pprof"
	// AnnotationXDSDestinations "false" makes weft-proxy hold a chain for
	// every Service address and endpoint instead of looking each
	// destination (address and port) up when a connection first goes to
	// it (weft-sidecar run --xds-destinations=false); "true", the
	// default, looks them up: the sidecar's memory does not grow with
	// Services it never reaches (docs/scale.md).
	AnnotationXDSDestinations = "weft.dev/xds-destinations"
	// AnnotationProxyHandshakeTimeout, AnnotationProxyIdleTimeout and
	// AnnotationProxyWriteTimeout (Go durations: 5s, 30m, 2h) bound the
	// pod's proxied connections before they are established, while idle,
	// and per write (weft-sidecar run --handshake-timeout, --idle-timeout,
	// --write-timeout), over the MeshConfig's proxyTimeouts.
	AnnotationProxyHandshakeTimeout = "weft.dev/proxy-handshake-timeout"
	AnnotationProxyIdleTimeout      = "weft.dev/proxy-idle-timeout"
	AnnotationProxyWriteTimeout     = "weft.dev/proxy-write-timeout"
	// AnnotationInboundLoopbackPorts ("8080,9090") names the ports the
	// pod's apps listen on at 127.0.0.1 only: the sidecar delivers inbound
	// connections for them to 127.0.0.1 instead of the pod's address
	// (which keeps localhost-only listeners private). The control plane
	// reads it (controlplane/registry); the injector refuses a malformed
	// list.
	AnnotationInboundLoopbackPorts = names.AnnotationInboundLoopbackPorts
	AnnotationInjected             = names.AnnotationInjected
	AnnotationProbes               = "weft.dev/probes"
)

const annotationPrefix = "weft.dev/"

// Values of weft.dev/inject.
const (
	InjectEnabled  = names.InjectEnabled
	InjectDisabled = names.InjectDisabled
)

// logLevels are the values weft.dev/log-level accepts.
var logLevels = []string{"debug", "info", "warn", "error"}

// Values of weft.dev/outbound-udp and Config.OutboundUDP: what weft-init
// does with the pod's outbound UDP other than DNS to its nameservers
// (weft-sidecar init --outbound-udp).
const (
	// OutboundUDPAllow lets it leave, unaudited: the mesh cannot decide
	// UDP. Right for ALLOW_ANY, the default outbound mode.
	OutboundUDPAllow = "allow"
	// OutboundUDPDrop rejects it (ICMP port unreachable, so QUIC falls
	// back to TCP, which the sidecar decides) and counts it per
	// destination. Right for REGISTRY_ONLY.
	OutboundUDPDrop = "drop"
	// OutboundUDPMesh (Config.OutboundUDP only, the default) follows the
	// mesh: drop when the MeshConfig's outbound mode is REGISTRY_ONLY
	// (Config.Mesh), allow otherwise.
	OutboundUDPMesh = "mesh"
)

var outboundUDPModes = []string{OutboundUDPAllow, OutboundUDPDrop}

// options is what a pod's annotations ask for, validated and normalised.
type options struct {
	excludeInboundPorts  []string // always starts with the health port
	excludeOutboundPorts []string
	excludeOutboundCIDRs []string // canonical (masked) prefixes
	cpu, memory          *resource.Quantity
	logLevel             string
	pprof                bool
	xdsDestinations      string // "true", "false" or "" (weft-sidecar's default)
	outboundUDP          string
	// weft.dev/proxy-*-timeout, normalised ("1h0m0s"); "" when not set.
	handshakeTimeout, idleTimeout, writeTimeout string
}

// parseAnnotations validates every weft.dev/ annotation of a pod. Unknown
// keys under weft.dev/ are refused too: a misspelt exclusion silently
// ignored would capture traffic the user meant to exclude (or the reverse).
// All problems are reported, in key order, one "injector: annotation ..."
// clause each.
func parseAnnotations(ann map[string]string, defaultLogLevel, defaultOutboundUDP string) (options, error) {
	opts := options{excludeInboundPorts: []string{strconv.Itoa(HealthPort)}, logLevel: defaultLogLevel, outboundUDP: defaultOutboundUDP}
	keys := make([]string, 0, len(ann))
	for k := range ann {
		if strings.HasPrefix(k, annotationPrefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var problems []string
	for _, k := range keys {
		if err := opts.set(k, ann[k]); err != nil {
			problems = append(problems, fmt.Sprintf("injector: annotation %s: %v", k, err))
		}
	}
	if len(problems) > 0 {
		return options{}, refusal(strings.Join(problems, "; "))
	}
	return opts, nil
}

// set validates one annotation and records it in o.
func (o *options) set(key, value string) error {
	var err error
	switch key {
	case AnnotationInject:
		if value != InjectEnabled && value != InjectDisabled {
			return fmt.Errorf("%q is not %s or %s", value, InjectEnabled, InjectDisabled)
		}
	case AnnotationExcludeInboundPorts:
		var ports []string
		ports, err = parsePorts(value)
		for _, p := range ports {
			if !slices.Contains(o.excludeInboundPorts, p) {
				o.excludeInboundPorts = append(o.excludeInboundPorts, p)
			}
		}
	case AnnotationExcludeOutboundPorts:
		o.excludeOutboundPorts, err = parsePorts(value)
	case AnnotationExcludeOutboundCIDRs:
		o.excludeOutboundCIDRs, err = parseCIDRs(value)
	case AnnotationProxyCPU:
		o.cpu, err = parseQuantity(value)
	case AnnotationProxyMemory:
		o.memory, err = parseQuantity(value)
	case AnnotationLogLevel:
		if !slices.Contains(logLevels, value) {
			return fmt.Errorf("%q is not one of %s", value, strings.Join(logLevels, ", "))
		}
		o.logLevel = value
	case AnnotationOutboundUDP:
		if !slices.Contains(outboundUDPModes, value) {
			return fmt.Errorf("%q is not %s or %s", value, OutboundUDPDrop, OutboundUDPAllow)
		}
		o.outboundUDP = value
	case AnnotationInboundLoopbackPorts:
		_, err = parsePorts(value)
	case AnnotationPprof:
		switch value {
		case "true":
			o.pprof = true
		case "false":
		default:
			return fmt.Errorf("%q is not true or false", value)
		}
	case AnnotationXDSDestinations:
		if value != "true" && value != "false" {
			return fmt.Errorf("%q is not true or false", value)
		}
		o.xdsDestinations = value
	case AnnotationProxyHandshakeTimeout:
		o.handshakeTimeout, err = parseTimeout(value)
	case AnnotationProxyIdleTimeout:
		o.idleTimeout, err = parseTimeout(value)
	case AnnotationProxyWriteTimeout:
		o.writeTimeout, err = parseTimeout(value)
	case AnnotationInjected, AnnotationProbes:
		// Written by the injector; overwritten on injection.
	default:
		return fmt.Errorf("unknown weft annotation (known: %s)", strings.Join(userAnnotations, ", "))
	}
	return err
}

var userAnnotations = []string{AnnotationInject, AnnotationExcludeInboundPorts, AnnotationExcludeOutboundPorts,
	AnnotationExcludeOutboundCIDRs, AnnotationProxyCPU, AnnotationProxyMemory, AnnotationLogLevel, AnnotationOutboundUDP, AnnotationPprof, AnnotationXDSDestinations,
	AnnotationProxyHandshakeTimeout, AnnotationProxyIdleTimeout, AnnotationProxyWriteTimeout, AnnotationInboundLoopbackPorts}

// parseTimeout checks a proxy timeout (weft.dev/proxy-*-timeout, the
// MeshConfig's proxyTimeouts): a Go duration from 100ms to 168h. It
// returns it normalised, "" for "".
func parseTimeout(value string) (string, error) {
	if value == "" {
		return "", nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(value))
	if err != nil || d < 100*time.Millisecond || d > 168*time.Hour {
		return "", fmt.Errorf("%q is not a duration from 100ms to 168h (like 10s, 30m, 2h)", value)
	}
	return d.String(), nil
}

// list splits a comma list, trimming blanks around items. An empty or
// all-blank value is an empty list; an empty item between commas is not.
func list(value string) ([]string, error) {
	if strings.TrimSpace(value) == "" {
		return nil, nil
	}
	items := strings.Split(value, ",")
	for i, it := range items {
		items[i] = strings.TrimSpace(it)
		if items[i] == "" {
			return nil, fmt.Errorf("%q has an empty item", value)
		}
	}
	return items, nil
}

func parsePorts(value string) ([]string, error) {
	return parseList(value, func(it string) (string, error) {
		n, err := strconv.Atoi(it)
		if err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q is not a port (1-65535)", it)
		}
		return strconv.Itoa(n), nil
	})
}

func parseCIDRs(value string) ([]string, error) {
	return parseList(value, func(it string) (string, error) {
		p, err := netip.ParsePrefix(it)
		if err != nil {
			return "", fmt.Errorf("%q is not a CIDR", it)
		}
		return p.Masked().String(), nil
	})
}

// parseList reads value as a list and returns its items as canonical
// says, each once, in order.
func parseList(value string, canonical func(string) (string, error)) ([]string, error) {
	items, err := list(value)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, it := range items {
		c, err := canonical(it)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

func parseQuantity(value string) (*resource.Quantity, error) {
	q, err := resource.ParseQuantity(strings.TrimSpace(value))
	if err != nil {
		return nil, fmt.Errorf("%q is not a quantity (like 100m, 1, 64Mi)", value)
	}
	if q.Sign() <= 0 {
		return nil, fmt.Errorf("%q must be positive", value)
	}
	return &q, nil
}
