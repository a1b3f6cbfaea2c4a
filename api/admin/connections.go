package admin

import "time"

// ConnectionsPath is where the sidecar's admin port (127.0.0.1:15000)
// serves Connections.
const ConnectionsPath = "/connections"

// Connections is the sidecar's /connections (127.0.0.1:15000): every
// connection it is forwarding, by ID. Connections is never null.
type Connections struct {
	Connections []ConnInfo `json:"connections"`
}

// ConnInfo is one entry of /connections: a connection the proxy is
// forwarding (those still being sniffed or handshaken are not listed).
// BytesIn flowed from the downstream (the side that connected to the
// sidecar) to the upstream (the side the sidecar dialled), BytesOut the
// other way.
type ConnInfo struct {
	ID          uint64    `json:"id"`
	Direction   string    `json:"direction"` // "inbound" or "outbound"
	Source      string    `json:"source"`
	Destination string    `json:"destination"` // the original destination
	Chain       string    `json:"chain"`
	Cluster     string    `json:"cluster"`
	Upstream    string    `json:"upstream"`
	MTLS        bool      `json:"mtls"`
	*TLSInfo              // present when MTLS
	BytesIn     int64     `json:"bytesIn"`
	BytesOut    int64     `json:"bytesOut"`
	Start       time.Time `json:"start"`
}

// TLSInfo describes the mTLS leg of a connection: inbound, the session the
// sidecar terminated; outbound, the one it originated to the peer sidecar.
type TLSInfo struct {
	PeerID       string    `json:"peerSpiffeId"`
	Version      string    `json:"tlsVersion"`
	Cipher       string    `json:"cipher"`
	ALPN         string    `json:"alpn,omitempty"`
	PeerNotAfter time.Time `json:"peerCertNotAfter"`
}
