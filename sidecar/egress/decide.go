package egress

import (
	"net/netip"
	"strings"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// Action is what happens to an egress connection.
type Action int

// Actions. The zero value is NotEgress: the connection's chain carries no
// egress metadata.
const (
	NotEgress Action = iota // in-mesh, or a plaintext Service outside the mesh: no egress decision, no audit
	Allow                   // forwarded to the original destination
	Deny                    // closed before a byte leaves (TLS, TCP) or answered 403 (HTTP)
	Audit                   // forwarded, and flagged: an Audit-mode policy would deny it
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case Audit:
		return "audit"
	}
	return "not-egress"
}

// Decision is what the configuration decides for one connection and why.
type Decision struct {
	Action Action
	// Policy is the deciding EgressPolicy "<ns>/<name>"; empty when the
	// mesh's outbound policy decided (see Outbound).
	Policy string
	Rule   string // the rule's index in the policy, or "rejected" (fail closed)
	// Outbound is the mesh's outbound policy (ALLOW_ANY or REGISTRY_ONLY)
	// when it decided.
	Outbound string
	// Service and Host, for a name of an ExternalName Service: the Service
	// ("<ns>/<name>") and the name it points at, which decided.
	Service, Host string
	Chain         string // the filter chain that matched; "" if none
	Route         string // HTTP: the virtual host that matched
	Reason        string // one human sentence: what matched, or why it is denied
	// NameUnknown: the connection had no name a rule could judge, and
	// [NameUnknown] decided it (stricter than its chain).
	NameUnknown bool
}

// Conn is what the listener filters learned about a connection.
type Conn struct {
	Dst netip.AddrPort // the original destination
	// Transport is "tls" or "raw_buffer"; empty infers it: "tls" with an
	// SNI, else "raw_buffer".
	Transport string
	SNI       string
	// ALPN is the TLS ALPN or the sniffed HTTP version ("http/1.1",
	// "h2c"); nil infers "http/1.1" for plaintext with a Host.
	ALPN []string
	Host string // HTTP Host (or absolute-form authority); may carry ":port"
	// Connect marks an HTTP CONNECT request: decided as TCP to Dst (Host
	// and ALPN are ignored; see the package doc).
	Connect bool
}

// Decide decides a connection to dst with TLS SNI sni (TLS when not empty)
// or, for plaintext HTTP, Host host; with neither it is raw TCP to dst.
// For TLS without SNI, HTTP CONNECT or explicit ALPN use [DecideConn].
func Decide(cfg *model.Config, dst netip.AddrPort, sni, host string) Decision {
	return DecideConn(cfg, Conn{Dst: dst, SNI: sni, Host: host})
}

// DecideConn decides c under cfg as the proxy does: the chain of the
// destination's listener or else the outbound listener, then for HTTP chains the route configuration's virtual host; a
// connection without a name a rule could judge ([Unnamed]) gets
// [NameUnknown]'s decision where that is stricter.
// Without a configuration or a matching chain the answer is Deny (the proxy
// closes such connections).
func DecideConn(cfg *model.Config, c Conn) Decision {
	if cfg == nil || cfg.Outbound == nil {
		return Decision{Action: Deny, Reason: "egress: no outbound listener configured"}
	}
	c = c.normalise()
	fc := cfg.OutboundFor(c.Dst).Match(c.Dst, c.Transport, c.SNI, c.ALPN)
	if fc == nil {
		return Decision{Action: Deny, Reason: "egress: no filter chain and no default chain for " + c.Dst.String()}
	}
	if Unnamed(fc, c) {
		if d, ok := NameUnknown(cfg, c.Dst, fc); ok {
			return d
		}
	}
	return ForChain(cfg, fc, c.Host)
}

// ForChain reads the decision off the chain fc the proxy chose; for an HTTP
// chain host (the request's Host, normalised here) picks the virtual host.
func ForChain(cfg *model.Config, fc *model.FilterChain, host string) Decision {
	if fc.Egress == nil {
		return Decision{Action: NotEgress, Chain: fc.Name, Reason: "egress: chain " + fc.Name + " is not an egress chain"}
	}
	d := fromMeta(fc.Egress)
	d.Chain = fc.Name
	d.Reason = "egress: chain " + fc.Name + " " + d.Action.String() + "s"
	if rcName := fc.Target.RouteConfig; rcName != "" {
		return forRoute(cfg, d, rcName, HostName(host))
	}
	if cl := cfg.Clusters[fc.Target.Cluster]; cl == nil || cl.Kind == model.KindBlackhole {
		// Fail closed: whatever the metadata says, nothing leaves.
		d.Action = Deny
		d.Reason = "egress: chain " + fc.Name + " goes to " + fc.Target.Cluster
	}
	return d
}

func forRoute(cfg *model.Config, d Decision, rcName, host string) Decision {
	rc := cfg.Routes[rcName]
	switch {
	case rc == nil:
		d.Action, d.Reason = Deny, "egress: chain "+d.Chain+": no route configuration "+rcName
		return d
	case host == "":
		d.Action, d.Reason = Deny, "egress: chain "+d.Chain+": HTTP request without Host"
		return d
	}
	vh := rc.Match(host)
	if vh == nil {
		d.Action, d.Reason = Deny, "egress: route configuration "+rcName+" has no virtual host for "+host
		return d
	}
	return forVirtualHost(cfg, d, rcName, vh, host)
}

// forVirtualHost reads the decision for host off virtual host vh of route
// configuration rcName; d is the chain's.
func forVirtualHost(cfg *model.Config, d Decision, rcName string, vh *model.VirtualHost, host string) Decision {
	if vh.Egress != nil {
		chain := d.Chain
		d = fromMeta(vh.Egress)
		d.Chain = chain
	}
	d.Route = vh.Name
	d.Reason = "egress: " + rcName + " virtual host " + vh.Name + " " + d.Action.String() + "s " + host
	if vh.Deny != nil || vh.Cluster == "" || cfg.Clusters[vh.Cluster] == nil || cfg.Clusters[vh.Cluster].Kind == model.KindBlackhole {
		d.Action = Deny
		if vh.Deny != nil {
			d.Reason = strings.TrimSpace(vh.Deny.Body)
		}
	}
	return d
}

func fromMeta(m *model.EgressMeta) Decision {
	d := Decision{Policy: m.Policy, Rule: m.Rule, Outbound: m.Outbound, Service: m.Service, Host: m.Host}
	switch m.Decision {
	case "allow":
		d.Action = Allow
	case "audit":
		d.Action = Audit
	default: // "deny", or anything the validator should have refused: fail closed
		d.Action = Deny
	}
	return d
}

func (c Conn) normalise() Conn {
	c.Dst = netip.AddrPortFrom(c.Dst.Addr().Unmap().WithZone(""), c.Dst.Port())
	c.SNI = Name(c.SNI)
	c.Host = HostName(c.Host)
	if c.Connect {
		c.Transport, c.SNI, c.ALPN, c.Host = "raw_buffer", "", nil, ""
	}
	if c.Transport == "" {
		c.Transport = "raw_buffer"
		if c.SNI != "" {
			c.Transport = "tls"
		}
	}
	if c.Transport == "raw_buffer" && c.Host != "" && c.ALPN == nil {
		c.ALPN = []string{"http/1.1"}
	}
	return c
}

// Name normalises a DNS name for matching: lower case, surrounding space
// and trailing dots removed ("API.Example.COM." → "api.example.com").
func Name(s string) string {
	return strings.TrimRight(strings.ToLower(strings.TrimSpace(s)), ".")
}

// HostName is the name part of an HTTP Host or authority, normalised by
// [Name]: any ":port" and IPv6 brackets removed ("[::1]:8080" → "::1",
// "Example.com.:80" → "example.com").
func HostName(h string) string {
	h = strings.TrimSpace(h)
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return strings.ToLower(h[1:i])
		}
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.Count(h, ":") == 1 {
		h = h[:i]
	}
	return Name(h)
}
