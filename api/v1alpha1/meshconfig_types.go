package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// MeshConfig holds the mesh-wide settings. It is cluster-scoped and only the
// object named "default" is honoured: the API server refuses any other name.
// Without a MeshConfig, weft uses the trust domain it was installed with,
// STRICT mTLS and ALLOW_ANY outbound traffic.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=weft
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="self.metadata.name == 'default'",message="only one MeshConfig, named default, is allowed"
// +kubebuilder:printcolumn:name="Trust Domain",type=string,JSONPath=`.spec.trustDomain`
// +kubebuilder:printcolumn:name="mTLS",type=string,JSONPath=`.spec.mtls.mode`
// +kubebuilder:printcolumn:name="Outbound",type=string,JSONPath=`.spec.outboundTrafficPolicy.mode`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MeshConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec holds the mesh-wide settings.
	// +kubebuilder:default={}
	// +optional
	Spec MeshConfigSpec `json:"spec,omitempty"`

	// status is written by the control plane.
	// +optional
	Status Status `json:"status,omitempty"`
}

// MeshConfigSpec holds the mesh-wide settings.
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.trustDomain) || has(self.trustDomain)",message="trustDomain cannot be removed once set"
type MeshConfigSpec struct {
	// trustDomain is the SPIFFE trust domain of every workload identity
	// (spiffe://<trustDomain>/ns/<namespace>/sa/<service-account>). It is
	// set once at install and cannot change afterwards; it must equal the
	// control plane's -trust-domain flag, or the MeshConfig is rejected.
	// Empty means the control plane's trust domain.
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[a-z0-9._-]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="trustDomain is immutable"
	// +optional
	TrustDomain string `json:"trustDomain,omitempty"`

	// mtls sets the mesh-wide default mTLS mode; MTLSPolicies override it
	// per namespace or workload.
	// +kubebuilder:default={}
	// +optional
	MTLS MeshMTLS `json:"mtls,omitempty"`

	// outboundTrafficPolicy decides egress connections (to destinations
	// outside the mesh) that no EgressPolicy rule matches and no
	// EgressPolicy in Enforce mode refuses by its defaultAction Deny.
	// +kubebuilder:default={}
	// +optional
	OutboundTrafficPolicy OutboundTrafficPolicy `json:"outboundTrafficPolicy,omitempty"`

	// captureBypass is what the injector does with a pod that has a
	// container able to escape the traffic capture (it runs as the proxy's
	// UID 1337, is privileged, adds NET_ADMIN or SYS_ADMIN, keeps NET_RAW,
	// or keeps SETUID while it may become root): Warn admits it with an
	// admission warning and an Event (weftctl check lists it), Refuse
	// denies it. A container that meets the "restricted" Pod Security
	// Standard (drop ALL, runAsNonRoot, no privilege escalation) cannot
	// escape. An explicit runAsUser 1337 is refused either way.
	// +kubebuilder:default=Warn
	// +optional
	CaptureBypass CaptureBypassAction `json:"captureBypass,omitempty"`

	// proxyTimeouts bound every sidecar's proxied connections; a pod's
	// weft.dev/proxy-handshake-timeout, weft.dev/proxy-idle-timeout and
	// weft.dev/proxy-write-timeout annotations override them. The injector
	// passes them to the sidecar when it admits a pod: pods admitted
	// before a change keep theirs until they are recreated.
	// +optional
	ProxyTimeouts ProxyTimeouts `json:"proxyTimeouts,omitempty"`
}

// ProxyTimeouts bound a sidecar's proxied connections. Each is a Go
// duration from 100ms to 168h (10s, 30m, 2h); empty means the sidecar's
// default.
type ProxyTimeouts struct {
	// handshake bounds what a client does before its connection is
	// established, from accept: its first bytes, its first HTTP request
	// head, its TLS handshake. Default 10s.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +optional
	Handshake string `json:"handshake,omitempty"`
	// idle closes a connection that moved no byte either way for that
	// long, a keep-alive HTTP connection waiting for its next request
	// included. Default 1h (Envoy's idle_timeout).
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +optional
	Idle string `json:"idle,omitempty"`
	// write closes a connection whose peer did not take a write for that
	// long (it stopped reading and the buffers are full). Default 5m.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:MaxLength=32
	// +optional
	Write string `json:"write,omitempty"`
}

// CaptureBypassAction is what the injector does with a pod that could
// escape the traffic capture.
// +kubebuilder:validation:Enum=Warn;Refuse
type CaptureBypassAction string

const (
	// CaptureBypassWarn admits the pod with a warning and an Event.
	CaptureBypassWarn CaptureBypassAction = "Warn"
	// CaptureBypassRefuse denies the pod.
	CaptureBypassRefuse CaptureBypassAction = "Refuse"
)

// MeshMTLS is the mesh-wide mTLS setting.
type MeshMTLS struct {
	// mode is the default for every injected workload: STRICT (only mTLS
	// from the mesh is accepted) or PERMISSIVE (plaintext is accepted too).
	// +kubebuilder:default=STRICT
	// +optional
	Mode MTLSMode `json:"mode,omitempty"`
}

// OutboundMode decides unmatched egress.
// +kubebuilder:validation:Enum=ALLOW_ANY;REGISTRY_ONLY
type OutboundMode string

const (
	// OutboundAllowAny lets unmatched egress through; it is still audited.
	OutboundAllowAny OutboundMode = "ALLOW_ANY"
	// OutboundRegistryOnly denies egress that no EgressPolicy in Enforce
	// mode allows.
	OutboundRegistryOnly OutboundMode = "REGISTRY_ONLY"
)

// OutboundTrafficPolicy decides egress that no EgressPolicy rule matches
// (see EgressPolicySpec.defaultAction).
type OutboundTrafficPolicy struct {
	// mode is ALLOW_ANY (let it through, audited) or REGISTRY_ONLY (deny it).
	// +kubebuilder:default=ALLOW_ANY
	// +optional
	Mode OutboundMode `json:"mode,omitempty"`
}

// MeshConfigList is a list of MeshConfigs.
// +kubebuilder:object:root=true
type MeshConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshConfig `json:"items"`
}
