package v1alpha1

import "regexp"

// EgressHostPattern is the schema's pattern of an EgressRule's hosts (the
// kubebuilder marker on EgressRule.Hosts spells the same; a test holds
// them together): exact or "*." wildcard, lowercase.
const EgressHostPattern = `^(\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$`

// MaxEgressHostLength is the schema's bound on one of an EgressRule's hosts.
const MaxEgressHostLength = 253

var egressHostRE = regexp.MustCompile(EgressHostPattern)

// ValidEgressHost reports whether h is a host the schema accepts in
// EgressRule.Hosts. The control plane validates policies with it (the API
// server may not have), weftctl egress suggest the names it proposes.
func ValidEgressHost(h string) bool {
	return len(h) <= MaxEgressHostLength && egressHostRE.MatchString(h)
}
