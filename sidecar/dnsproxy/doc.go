// Package dnsproxy is the sidecar's DNS proxy and the table it keeps of
// which addresses each name resolved to for this pod: what binds an egress
// name (a TLS SNI, an HTTP Host) to the addresses a connection by that name
// may go to.
//
// # Why
//
// An egress rule names hosts, but a connection goes to an address, and the
// app chooses both: with only the name checked, an app allowed to reach
// api.example.com reaches any address on earth by sending SNI or Host
// api.example.com to it (domain fronting works the same way). A connection
// allowed by a name is therefore allowed only to an address that name
// resolved to for this pod (Cilium's toFQDNs binds names to the addresses
// its DNS proxy saw in the same way).
//
// # The proxy
//
// The capture rules (sidecar/capture) redirect the pod's DNS to its
// configured nameservers (the nameserver lines of /etc/resolv.conf), UDP
// and TCP port 53, to this proxy on 127.0.0.1:15053 and [::1]:15053. The
// proxy forwards each query, byte for byte except its ID, to those same
// nameservers (its own traffic runs as the proxy's UID and is not
// captured), and returns the answer byte for byte with the app's ID: search
// domains, ndots, truncation and the TCP retry, AAAA, NXDOMAIN, EDNS and
// DNSSEC records all pass through as the nameserver sent them. From each
// answer to a well-formed query it records the A and AAAA records of the
// name asked (following its CNAME chain) in [Names].
//
// What is recorded is what the pod's nameservers said, never what the app
// said: queries to any other server are not redirected (they are ordinary
// egress, and their answers are not trusted), an answer is recorded only
// from the nameserver the proxy itself asked, over its own socket, under a
// query ID the proxy chose at random (an app that forges replies blind has
// to guess it). A container holding CAP_NET_RAW can sniff and forge packets
// in the pod's network namespace, this proxy's included; drop NET_RAW from
// the app's containers where egress names must hold against the app
// (weft's docs list it with NET_ADMIN).
//
// # The table
//
// [Names] holds, per name, each address with the time it stops counting:
// the record's TTL (at least [Config.MinTTL]) plus [Config.Grace], because
// apps cache answers past their TTL and a connection opened a little after
// its lookup is the common case. A name not in the table (the app read
// /etc/hosts, which the pod's hostAliases write, or cached its answer past
// the grace, or resolved it over DNS-over-HTTPS) is resolved by the
// sidecar itself through the pod's resolv.conf and /etc/hosts
// ([Config.Lookup]); its answers are recorded too. Both bounds of the table
// ([Config.MaxNames], [Config.MaxAddrsPerName]) hold against a pod that
// floods it.
package dnsproxy
