package identity

import (
	"context"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
)

// TokenCredentials sends the pod's projected ServiceAccount token (audience
// weft-ca, mounted into weft-proxy only) as "authorization: Bearer
// <token>" on every call and stream of a connection: the control plane
// accepts ADS and audit streams only with it besides the SVID, which the
// pod's apps hold too (the Workload API gives it to them). The file is
// read afresh for each stream, so the kubelet's rotation applies.
func TokenCredentials(path string) credentials.PerRPCCredentials { return tokenCreds(path) }

type tokenCreds string

func (p tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	token, err := readToken(string(p))
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

// RequireTransportSecurity: the token never goes over plaintext.
func (tokenCreds) RequireTransportSecurity() bool { return true }

// readToken reads the projected ServiceAccount token afresh.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("identity: read token: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("identity: read token: %s is empty", path)
	}
	return token, nil
}
