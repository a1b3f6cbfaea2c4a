// Package capture holds the traffic-capture rules that `weft-sidecar init`
// (the weft-init container) installs in a pod's network namespace, the
// function that removes them, and OriginalDst, with which the sidecar reads a
// redirected connection's original destination.
//
// The package imports nothing of weft's but the sidecar's port numbers
// (api/names). It programs the kernel directly over netlink with
// github.com/google/nftables, so the static sidecar image needs no iptables
// or nft binary; the init container needs CAP_NET_ADMIN only.
//
// # The table
//
// Everything lives in one nftables table, `inet weft`. The inet family serves
// IPv4 and IPv6 with the same chains (inet nat needs Linux >= 5.2). Install
// replaces an existing weft table in one netlink batch (add table, delete
// table, add table, sets, chains, rules: one transaction), so re-running init never
// duplicates rules and no packet ever sees a half-built table. Remove deletes
// that table and nothing else; other tables (kube-proxy's, the CNI's, an
// operator's) are never touched. Rules carries the same rule set as
// nft(8) text, with the same comments Install stores in the kernel, so
// `nft list table inet weft` inside the pod shows what Rules printed (with
// the counters' values, and the sets' elements, which Rules leaves out).
//
// # The rule set
//
// TCP is redirected, and DNS (UDP and TCP port 53) to the pod's own
// nameservers. Other outbound UDP is left alone (Config.OutboundUDP
// UDPAllow, weft-sidecar init --outbound-udp=allow) or rejected and
// counted (UDPDrop, --outbound-udp=drop: chain output_udp below). ICMP,
// SCTP and inbound UDP are never touched. Each rule's matches are
// evaluated in order; `return` ends the chain for that packet (policy
// accept, no rewrite). Chains prerouting and output are nat chains: only a
// connection's first packet is evaluated.
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
//  0. ip saddr 127.0.0.6 oifname "lo" return, ip6 saddr ::6 oifname "lo"
//     return - the sidecar's delivery of inbound connections to the app
//     (see "Inbound delivery" below) is never captured. Rules 1 and 2
//     already let it through (the sidecar runs as ProxyUID, and the
//     delivery goes over lo); this rule, Istio's `-A ISTIO_OUTPUT -s
//     127.0.0.6/32 -o lo -j RETURN`, keeps it so whatever becomes of them.
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
// Chain output_udp (type filter hook output priority filter, i.e. 0) -
// only with UDPDrop; outbound UDP, every packet:
//
//  1. meta l4proto != udp return - this chain judges UDP only.
//  2. meta skuid ProxyUID return - the sidecar's own UDP (its DNS
//     forwarder's queries) leaves.
//  3. ct direction reply return - answers of a UDP server in the pod to
//     its clients: a flow someone else opened is not egress (who may open
//     one is NetworkPolicy's business).
//  4. oifname "lo" return, ip daddr 127.0.0.0/8 return, ip6 daddr ::1
//     return - loopback, and DNS that output rule 4 redirected to the DNS
//     proxy: this chain runs after output (0 > -100) and sees the
//     rewritten destination, but the output interface the hook was called
//     with, the original one.
//  5. udp dport 53 return, only when no DNS is redirected (DNSPort 0, or
//     no nameserver known, or only loopback ones): the pod must still
//     resolve names, and which servers it asks is unknown. Install logs a
//     warning: DNS to any server then leaves, unaudited.
//  6. udp dport P return for every P in ExcludeOutboundPorts, and
//     ip daddr C return / ip6 daddr C return for every C in
//     ExcludeOutboundCIDRs - the exclusions cover UDP as they cover TCP: a
//     destination the pod may reach past the sidecar over TCP it may
//     reach over UDP (a port excluded for TCP already lets anything out
//     through it, so covering UDP grants nothing new; STUN/TURN, NTP or a
//     database's UDP port are excluded once, not twice).
//  7. update @udp_dropped_ipv4 { ip daddr . udp dport counter } and the same
//     for IPv6 into udp_dropped_ipv6 - the count per destination (below).
//  8. counter reject - ICMP (ICMPv6) port unreachable. The send itself
//     fails with EPERM, as for any locally generated packet netfilter
//     drops, and a connected socket's next call with ECONNREFUSED (the
//     ICMP error), so the app learns at once: a QUIC client (HTTP/3 to 443)
//     falls back to TCP, which output rule 7 hands to the sidecar, which
//     decides it.
//
// A filter chain rather than more rules in output: a nat chain sees only
// a flow's first packet, and none of a packet conntrack could not track,
// which would then leave unjudged; this one sees every packet and lets
// through only what rules 2-6 name (an untracked packet matches no
// direction and is rejected).
//
// What the mesh cannot decide, it cannot audit: under UDPAllow (the
// default, what ALLOW_ANY asks for) the pod's UDP leaves unaudited, and
// DNS to servers other than its nameservers with it. Under UDPDrop the
// pod's UDP egress is what the exclusions allow. Neither covers raw
// sockets (CAP_NET_RAW) or other protocols: ICMP and SCTP are never
// touched.
//
// # Counting rejected UDP
//
// Rule 8's counter totals the rejected packets. Sets udp_dropped_ipv4
// (ipv4_addr . inet_service) and udp_dropped_ipv6 (ipv6_addr .
// inet_service) hold a counter per destination address and port, each
// element until an hour after its last packet (UDPDroppedTimeout), at
// most 1024 per family (UDPDroppedSetSize; a full set adds no element, the
// packet is still rejected and totalled). Reading them takes CAP_NET_ADMIN
// in the pod's network namespace: nfnetlink refuses every request, a
// listing included, without it (TestUDPDrop checks that UID 1337 gets
// EPERM). weft-proxy runs as 1337 with no capabilities, so it cannot
// export them (there is no weft_sidecar_udp_dropped_total), and granting
// it NET_ADMIN would let it rewrite the rules it is subject to. An
// operator reads them as weft-init would, from a container with NET_ADMIN
// in the pod's network namespace and an nft binary (weft's images have
// none), e.g.
//
//	kubectl debug -n NS POD -it --profile=netadmin --image=IMAGE_WITH_NFT -- nft list table inet weft
//
// or on the node, nsenter -t PID_OF_A_POD_PROCESS -n nft list table inet
// weft. The sets list as
//
//	elements = { 198.18.0.7 . 443 counter packets 1 bytes 128 expires 59m59s976ms }
//
// # Where redirected connections arrive
//
// A redirect rewrites the destination to the pod's own address: for inbound,
// the primary address of the interface the packet arrived on; for outbound,
// 127.0.0.1 or ::1. So the proxy must listen on 0.0.0.0/[::] for InboundPort
// and may (should) listen on loopback only for OutboundPort - on 127.0.0.1
// and on [::1], or the pod's IPv6 TCP is refused. The original
// destination stays in the connection's conntrack entry; OriginalDst reads it
// with getsockopt(SOL_IP, SO_ORIGINAL_DST) or, for IPv6,
// getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST).
//
// # Inbound delivery
//
// After mTLS and authorization the sidecar hands an inbound connection to
// the app at its original destination - the pod's own address and the
// port the peer asked for - from the source address InboundSourceIPv4
// (127.0.0.6) or InboundSourceIPv6 (::6), as Istio has since 1.10. So an
// app listening on 127.0.0.1 (or ::1) only stays private to the pod, and
// the app sees the sidecar's connections come from 127.0.0.6 (::6). The
// kernel routes the pod's own address over lo, so output rule 0 (and 1
// and 2) return it, and a connection the pod opens itself never meets the
// prerouting chain: delivery does not come back to InboundPort. 127.0.0.6
// is a loopback address lo always has; ::6 is not, so Install adds
// ::6/128 to lo (without duplicate address detection; adding it again
// changes nothing, and Remove leaves it). Where the pod has no IPv6
// (switched off on lo, or not in the kernel) Install skips it and logs
// so: there is no IPv6 to deliver then either. Which ports are delivered
// to 127.0.0.1 instead is the control plane's business (the inbound
// clusters it sends the sidecar), not the capture rules'.
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
