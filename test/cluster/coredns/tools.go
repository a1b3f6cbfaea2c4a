//go:build tools

// Package tools pins CoreDNS for the local test cluster's DNS.
package tools

import _ "github.com/coredns/coredns"
