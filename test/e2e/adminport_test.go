//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/weftctl"
)

// The control plane's admin port (15014): /metrics and /healthz open,
// /audit/* and /debug/* over TLS to callers RBAC allows
// (controlplane/adminauth).

// cpAdminGet GETs path from the admin port of the control plane at podIP
// over TLS, verifying it against weft's bundle, as the test's kubeconfig
// user (cluster admin): what weftctl does, minus the port-forward.
func cpAdminGet(podIP, path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cm, err := kube.CoreV1().ConfigMaps(weftNS).Get(ctx, "weft-trust-bundle", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	c := rest.CopyConfig(restConfig)
	c.TLSClientConfig.Insecure, c.TLSClientConfig.CAFile = false, ""
	c.TLSClientConfig.CAData = []byte(cm.Data["bundle.pem"])
	c.TLSClientConfig.ServerName = "weft-controlplane." + weftNS + ".svc"
	c.TLSClientConfig.NextProtos = []string{"http/1.1"}
	c.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	c.Dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", net.JoinHostPort(podIP, "15014"))
	}
	rt, err := rest.TransportFor(c)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://weft-controlplane."+weftNS+".svc:15014"+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		return string(b), err
	case http.StatusUnauthorized, http.StatusForbidden:
		return string(b), fmt.Errorf("GET %s from %s: %s: %w", path, podIP, resp.Status, errAdminRefused)
	default:
		return string(b), fmt.Errorf("GET %s from %s: %s", path, podIP, resp.Status)
	}
}

// errAdminRefused: the admin port refused the test's cluster admin, which
// no retry mends.
var errAdminRefused = errors.New("refused by the control plane's admin port")

// TestAdminPortRefusesOtherPods: a pod of another namespace reaches the
// control plane's admin port through its Service. It reads /metrics; it
// gets 403 for /audit and /debug over plain HTTP, 401 over TLS without a
// credential, and 403 with its own ServiceAccount token (authenticated, no
// RBAC). The test's cluster admin, over TLS with its client certificate,
// gets 200.
func TestAdminPortRefusesOtherPods(t *testing.T) {
	const ns = "e2e-adminport"
	namespace(t, ns, nil)
	pod := deployTestapp(t, ns, "prober", "serve", "-addr", ":8080")
	if injected(pod) {
		t.Fatal("the prober was injected in an unlabelled namespace")
	}
	const (
		base  = "weft-controlplane." + weftNS + ".svc:15014"
		token = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	)
	sa := "system:serviceaccount:" + ns + ":default"
	for _, tc := range []struct {
		args       []string
		status     string
		bodySubstr string
	}{
		{[]string{"http://" + base + "/metrics"}, "200", "weft_"},
		{[]string{"http://" + base + "/healthz"}, "200", "ok"},
		{[]string{"http://" + base + "/audit/events"}, "403", "served over TLS only"},
		{[]string{"-token-file", token, "http://" + base + "/audit/events"}, "403", "served over TLS only"},
		{[]string{"http://" + base + "/audit/summary"}, "403", "served over TLS only"},
		{[]string{"http://" + base + "/audit/store"}, "403", "served over TLS only"},
		{[]string{"http://" + base + "/debug/status"}, "403", "served over TLS only"},
		{[]string{"-k", "https://" + base + "/metrics"}, "200", "weft_"},
		{[]string{"-k", "https://" + base + "/audit/events"}, "401", "no credentials"},
		{[]string{"-k", "https://" + base + "/debug/status"}, "401", "no credentials"},
		{[]string{"-k", "-token-file", "/etc/hostname", "https://" + base + "/audit/events"}, "401", "token refused"},
		{[]string{"-k", "-token-file", token, "https://" + base + "/audit/events"}, "403", `user "` + sa + `" cannot get auditevents.weft.dev`},
		{[]string{"-k", "-token-file", token, "https://" + base + "/audit/summary"}, "403", "cannot get auditevents.weft.dev"},
		{[]string{"-k", "-token-file", token, "https://" + base + "/audit/store"}, "403", "cannot get auditevents.weft.dev"},
		{[]string{"-k", "-token-file", token, "https://" + base + "/debug/status"}, "403", `user "` + sa + `" cannot get debug.weft.dev`},
	} {
		out, _ := kubectlExec(t, ns, pod.Name, "app", append([]string{"/usr/local/bin/testapp", "get"}, tc.args...)...)
		// testapp prints "<status> <body>" on stdout; its error line on
		// stderr may come first in the combined output.
		var first string
		for _, l := range strings.Split(out, "\n") {
			if len(l) > 4 && l[3] == ' ' && l[0] >= '1' && l[0] <= '5' && l[1] >= '0' && l[1] <= '9' && l[2] >= '0' && l[2] <= '9' {
				first = l
				break
			}
		}
		if !strings.HasPrefix(first, tc.status+" ") || !strings.Contains(out, tc.bodySubstr) {
			t.Errorf("testapp get %s: %q, want %s containing %q", strings.Join(tc.args, " "), out, tc.status, tc.bodySubstr)
		}
	}
	cp := controlPlanePod(t)
	for _, path := range []string{"/audit/events?limit=1", "/audit/summary", "/audit/store", "/debug/status"} {
		if body, err := cpAdminGet(cp.Status.PodIP, path); err != nil {
			t.Errorf("cluster admin over TLS, %s: %v\n%s", path, err, body)
		}
	}
}

// TestWeftctlAuditNeedsTheReaderRole: weftctl egress audit as a user with a
// ServiceAccount token and as a user with a client certificate (issued
// through the CSR API by the cluster's CA). Without RBAC the API server
// refuses; with everything weftctl needs to reach a replica but the
// virtual resource, the control plane refuses (403, get
// auditevents.weft.dev); bound to the ClusterRole weft-audit-reader in
// weft-system, it works.
func TestWeftctlAuditNeedsTheReaderRole(t *testing.T) {
	const ns = "e2e-auditors"
	namespace(t, ns, nil)
	ctx := context.Background()
	serviceAccounts(t, ns, "auditor")
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "auditor", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := clientCertificate(t, "e2e-cert-auditor")
	// Everything weftctl needs to reach a replica, without the virtual
	// resource.
	tunnel := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "e2e-weft-tunnel", Namespace: weftNS},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
			{APIGroups: []string{""}, Resources: []string{"pods/portforward"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"weft-trust-bundle"}, Verbs: []string{"get"}},
		}}
	if _, err := kube.RbacV1().Roles(weftNS).Create(ctx, tunnel, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.RbacV1().Roles(weftNS).Delete(context.Background(), tunnel.Name, metav1.DeleteOptions{})
	})

	for i, u := range []struct {
		name    string
		subject rbacv1.Subject
		auth    *clientcmdapi.AuthInfo
	}{
		{"system:serviceaccount:" + ns + ":auditor", rbacv1.Subject{Kind: "ServiceAccount", Name: "auditor", Namespace: ns},
			&clientcmdapi.AuthInfo{Token: tr.Status.Token}},
		{"e2e-cert-auditor", rbacv1.Subject{Kind: "User", APIGroup: rbacv1.GroupName, Name: "e2e-cert-auditor"},
			&clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}},
	} {
		kc := userKubeconfig(t, u.auth)
		audit := func() (string, error) { return weftctlAs(kc, "egress", "audit", "-n", ns) }
		if out, err := audit(); err == nil {
			t.Fatalf("%s without RBAC: weftctl egress audit succeeded:\n%s", u.name, out)
		}
		bind := func(name, kind, role string) {
			t.Helper()
			rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: weftNS},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role}, Subjects: []rbacv1.Subject{u.subject}}
			if _, err := kube.RbacV1().RoleBindings(weftNS).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = kube.RbacV1().RoleBindings(weftNS).Delete(context.Background(), name, metav1.DeleteOptions{})
			})
		}
		bind(fmt.Sprintf("e2e-tunnel-%d", i), "Role", tunnel.Name)
		forbidden := `weft: forbidden: user "` + u.name + `" cannot get auditevents.weft.dev in namespace ` + weftNS
		var out string
		if perr := pollFor(time.Minute, func() bool {
			out, err = audit()
			return err != nil && strings.Contains(err.Error(), forbidden)
		}); perr != nil {
			t.Fatalf("%s with the tunnel but not the virtual resource: want the control plane's %q, got %v\n%s", u.name, forbidden, err, out)
		}
		bind(fmt.Sprintf("e2e-audit-reader-%d", i), "ClusterRole", "weft-audit-reader")
		// The control plane keeps a denial for 10s.
		if perr := pollFor(time.Minute, func() bool {
			out, err = audit()
			return err == nil
		}); perr != nil {
			t.Fatalf("%s bound to weft-audit-reader: weftctl egress audit: %v\n%s", u.name, err, out)
		}
	}
}

// weftctlAs runs weftctl in-process with the kubeconfig at path.
func weftctlAs(path string, args ...string) (string, error) {
	var out strings.Builder
	root := weftctl.NewRoot(&out, &out)
	root.SetArgs(append([]string{"--kubeconfig", path}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// userKubeconfig writes a kubeconfig for the test cluster's API server
// with auth as its only user.
func userKubeconfig(t *testing.T, auth *clientcmdapi.AuthInfo) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		t.Fatal(err)
	}
	cur := cfg.Contexts[cfg.CurrentContext]
	if cur == nil {
		t.Fatalf("kubeconfig %s has no current context", kubeconfig)
	}
	out := clientcmdapi.NewConfig()
	out.Clusters["e2e"] = cfg.Clusters[cur.Cluster]
	out.AuthInfos["e2e-user"] = auth
	out.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e-user", Namespace: "default"}
	out.CurrentContext = "e2e"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*out, path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// clientCertificate has the cluster's CA sign a client certificate for user
// through the CSR API (signer kubernetes.io/kube-apiserver-client), as an
// administrator issues one to a person.
func clientCertificate(t *testing.T, user string) (certPEM, keyPEM []byte) {
	t.Helper()
	ctx := context.Background()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: user}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-" + user + "-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName:        certificatesv1.KubeAPIServerClientSignerName,
			ExpirationSeconds: ptr.To[int32](3600),
			Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		},
	}
	csr, err = kube.CertificatesV1().CertificateSigningRequests().Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := csr.Name
	t.Cleanup(func() {
		_ = kube.CertificatesV1().CertificateSigningRequests().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "E2E", Message: "weft e2e: a user of the admin port"})
	if _, err := kube.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, name, csr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "CSR "+name+" signed", func(ctx context.Context) (bool, error) {
		c, err := kube.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		certPEM = c.Status.Certificate
		return len(certPEM) > 0, nil
	})
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}
