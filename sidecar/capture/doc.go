// Package capture holds the traffic-capture rules that `weft-sidecar init`
// (the weft-init container) installs in a pod's network namespace, the
// function that removes them, and OriginalDst, with which the sidecar reads a
// redirected connection's original destination.
//
// The package imports nothing of weft's. It programs the kernel directly over
// netlink with github.com/google/nftables, so the static sidecar image needs
// no iptables or nft binary; the init container needs CAP_NET_ADMIN only.
//
// # The table
//
// Everything lives in one nftables table, `inet weft`. The inet family serves
// IPv4 and IPv6 with the same chains (inet nat needs Linux >= 5.2). Install
// replaces an existing weft table in one netlink batch (add table, delete
// table, add table, chains, rules: one transaction), so re-running init never
// duplicates rules and no packet ever sees a half-built table. Remove deletes
// that table and nothing else; other tables (kube-proxy's, the CNI's, an
// operator's) are never touched. Rules carries the same rule set as
// nft(8) text, with the same comments Install stores in the kernel, so
// `nft list table inet weft` inside the pod shows what Rules printed.
//
// # The rule set
//
// TCP is redirected, and DNS (UDP and TCP port 53) to the pod's own
// nameservers; other UDP, ICMP and SCTP are never touched. Each rule's
// matches are evaluated in order; `return` ends the chain for that packet
// (policy accept, no rewrite). Only a connection's first packet is
// evaluated: nat chains act per connection.
//
// Chain prerouting (type nat hook prerouting priority dstnat) - inbound, i.e.
// connections arriving from other hosts and pods:
//
//  1. tcp dport InboundPort return  - a peer sidecar's mTLS to 15006 is
//     already where it belongs (redirecting would only rewrite its address).
//  2. tcp dport OutboundPort return - the outbound listener is not for
//     peers; not redirecting it keeps it unreachable (the proxy binds it on
//     loopback) instead of handing peers an open relay through 15006.
//  3. tcp dport AdminPort (15000) return - the admin listener (loopback only)
//     must not become reachable through the inbound proxy.
//  4. tcp dport HealthPort (15020) return - the kubelet's probes reach the
//     sidecar's /healthz/ready directly, in plaintext, even in STRICT mode.
//  5. tcp dport DNSPort (15053) return, unless DNSPort is 0 - the DNS proxy
//     (loopback only) must not become reachable through the inbound proxy,
//     as for rule 3. (Inbound UDP is never redirected anyway.)
//  6. tcp dport P return for every P in ExcludeInboundPorts.
//  7. meta l4proto tcp redirect to :InboundPort - or, when IncludeInboundPorts
//     is set, one `tcp dport P redirect to :InboundPort` per listed port.
//
// Rules 1-5 are installed whatever the exclusion lists say: the caller does
// not have to list 15020 (it may; duplicates are dropped), and forgetting it
// cannot make every injected pod unready. An exclusion always wins over an
// inclusion.
// Traffic an app sends to itself never passes prerouting (see below).
//
// Chain output (type nat hook output priority -100, i.e. dstnat) - outbound, i.e.
// connections opened by processes in the pod:
//
//  1. meta skuid ProxyUID return - the sidecar's own connections (to peers,
//     to the control plane, to egress destinations) are never captured.
//  2. oifname "lo" return - loopback traffic is not captured: 127.0.0.0/8,
//     ::1, and also an app connecting to its own pod IP, which the kernel
//     routes over lo. Such traffic stays inside the pod, so there is no mTLS
//     to add and no egress to audit; Istio leaves it alone too (for UIDs other
//     than the proxy's).
//  3. ip daddr 127.0.0.0/8 return, ip6 daddr ::1 return - redundant with rule
//     2 in every sane routing setup, kept so loopback is never captured even if
//     someone routes it oddly.
//  4. For every nameserver S in DNSServers (unless DNSPort is 0):
//     ip daddr S udp dport 53 redirect to :DNSPort and
//     ip daddr S tcp dport 53 redirect to :DNSPort (ip6 daddr for IPv6) -
//     the pod's DNS goes to the sidecar's DNS proxy (see DNS below).
//  5. tcp dport P return for every P in ExcludeOutboundPorts.
//  6. ip daddr C return / ip6 daddr C return for every C in
//     ExcludeOutboundCIDRs.
//  7. meta l4proto tcp redirect to :OutboundPort.
//
// A redirect rewrites the destination to the pod's own address: for inbound,
// the primary address of the interface the packet arrived on; for outbound,
// 127.0.0.1 or ::1. So the proxy must listen on 0.0.0.0/[::] for InboundPort
// and may (should) listen on loopback only for OutboundPort. The original
// destination stays in the connection's conntrack entry; OriginalDst reads it
// with getsockopt(SOL_IP, SO_ORIGINAL_DST) or, for IPv6,
// getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST).
//
// # DNS
//
// The sidecar binds egress names to addresses: a connection allowed by its
// TLS SNI or HTTP Host is allowed only to an address that name resolved to
// for this pod. It learns those addresses from the answers the pod's DNS
// got, so the pod's DNS must pass through it: output rule 4 redirects DNS
// (UDP and TCP port 53) addressed to one of the pod's nameservers - the
// nameserver lines of its /etc/resolv.conf, which the kubelet writes
// (ParseResolvConf) - to the DNS proxy on 127.0.0.1:DNSPort or
// [::1]:DNSPort. Conntrack undoes the rewrite on the way back, so the app
// sees the answer come from the nameserver it asked.
//
// Only DNS to those nameservers is redirected, and only its answers may be
// trusted. DNS to any other server is ordinary egress: UDP goes out
// untouched and TCP/53 meets the outbound listener like any other TCP, and
// what such a server answers is never recorded. Were it otherwise, an app
// could run (or reach) its own DNS server claiming that api.example.com is
// at an address of its choice, and by asking it first make the sidecar
// accept SNI api.example.com to that address: the binding would bind
// nothing. The same holds for DNS-over-TLS and DNS-over-HTTPS, which are
// just egress. The nameservers the kubelet configured are the cluster's
// (or the node's); the app does not choose their answers.
//
// The proxy forwards to the same nameservers. Its own queries run as
// ProxyUID, which rule 1 returns before rule 4, so they leave the pod
// instead of looping back into the proxy.
//
// The DNS rules come before the exclusions (rules 5 and 6) on purpose:
// excluding port 53, or a CIDR that holds the cluster DNS service (the
// service CIDR often is excluded), must not silently turn DNS capture off.
// DNSPort 0 (weft-sidecar init --dns-port=0) is the one way to.
//
// A nameserver on a loopback address (127.0.0.0/8 or ::1, e.g. a resolver
// container in the same pod on 127.0.0.1 under dnsPolicy None; 0.0.0.0 and
// ::, which mean the local host, likewise) cannot be captured this way:
// its traffic leaves on lo, and rules 2 and 3 return loopback before rule
// 4. Such nameservers get no rule; Install logs a warning for each and
// Rules prints a comment line. The same goes for a nameserver on the pod's
// own address, which the kernel routes over lo as well. (A hostNetwork pod,
// whose node-local resolver may sit on 127.0.0.53, is never injected.)
//
// weft-sidecar init reads the nameservers from /etc/resolv.conf. If it
// cannot read or parse it, it logs a warning and installs the rules without
// DNS capture rather than fail the pod: the pod's DNS then goes straight to
// its nameservers and the sidecar does not see the answers.
//
// # Port lists
//
// ParsePorts and ParseCIDRs read the comma lists of the weft.dev/exclude-*
// pod annotations. ParsePorts returns nil for "" and for "*": nil means "all
// ports" for IncludeInboundPorts but "no ports" for the Exclude lists, so a
// caller parsing an exclude annotation should refuse "*" itself if a user
// could mean "exclude everything" by it.
package capture
