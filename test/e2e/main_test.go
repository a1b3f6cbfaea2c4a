//go:build e2e

// Package e2e runs weft's end-to-end tests against a real Kubernetes
// cluster: the one test/cluster brings up (make e2e), or any cluster that
// KUBECONFIG names with weft's images loaded. TestMain installs weft with
// weftctl, runs the tests, keeps every weft pod's logs in WEFT_ARTIFACTS on
// failure, and uninstalls weft.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftmesh/weft/weftctl"
)

const weftNS = "weft-system"

var (
	kube       kubernetes.Interface
	restConfig *rest.Config
	kubeconfig = os.Getenv("KUBECONFIG")
	tag        = envOr("WEFT_TAG", "dev")
	artifacts  = envOr("WEFT_ARTIFACTS", filepath.Join(os.TempDir(), "weft-e2e-artifacts"))
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "e2e: KUBECONFIG is not set; run `make e2e` (it brings up test/cluster)")
		return 1
	}
	var err error
	restConfig, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	kube = kubernetes.NewForConfigOrDie(restConfig)
	start := time.Now()
	if out, err := weftctlRun("install", "--tag", tag, "--pull-policy", "Never", "--timeout", "3m",
		// Two replicas start together: both race to create the CA Secret.
		"--replicas", "2"); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: weftctl install: %v\n%s", err, out)
		dumpWeftLogs("install")
		return 1
	}
	fmt.Printf("e2e: weft installed in %.1fs\n", time.Since(start).Seconds())
	code := m.Run()
	if code != 0 {
		dumpWeftLogs("failure")
	}
	if out, err := weftctlRun("uninstall", "--timeout", "2m"); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: weftctl uninstall: %v\n%s", err, out)
		if code == 0 {
			code = 1
		}
	} else if left := weftLeftovers(); left != "" {
		fmt.Fprintf(os.Stderr, "e2e: weftctl uninstall left objects behind:\n%s", left)
		if code == 0 {
			code = 1
		}
	} else {
		fmt.Println("e2e: weftctl uninstall removed everything weft created")
	}
	return code
}

// weftctlRun runs weftctl in-process against the test cluster.
func weftctlRun(args ...string) (string, error) {
	var out bytes.Buffer
	root := weftctl.NewRoot(&out, &out)
	root.SetArgs(append([]string{"--kubeconfig", kubeconfig}, args...))
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// dumpWeftLogs keeps the logs of every pod in weft-system.
func dumpWeftLogs(why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := filepath.Join(artifacts, why)
	_ = os.MkdirAll(dir, 0o755)
	pods, err := kube.CoreV1().Pods(weftNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: list weft pods:", err)
		return
	}
	for _, p := range pods.Items {
		for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			b, err := kube.CoreV1().Pods(weftNS).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
			if err != nil {
				b = []byte(err.Error())
			}
			_ = os.WriteFile(filepath.Join(dir, p.Name+"_"+c.Name+".log"), b, 0o644)
		}
	}
	fmt.Fprintf(os.Stderr, "e2e: weft pod logs kept in %s\n", dir)
}

// weftLeftovers lists weft objects that survive an uninstall.
func weftLeftovers() string {
	ctx := context.Background()
	var out bytes.Buffer
	if _, err := kube.CoreV1().Namespaces().Get(ctx, weftNS, metav1.GetOptions{}); err == nil {
		out.WriteString("namespace " + weftNS + "\n")
	}
	if _, err := kube.RbacV1().ClusterRoles().Get(ctx, "weft-controlplane", metav1.GetOptions{}); err == nil {
		out.WriteString("clusterrole weft-controlplane\n")
	}
	if _, err := kube.RbacV1().ClusterRoleBindings().Get(ctx, "weft-controlplane", metav1.GetOptions{}); err == nil {
		out.WriteString("clusterrolebinding weft-controlplane\n")
	}
	for _, name := range []string{"weft-audit-reader", "weft-status-reader"} {
		if _, err := kube.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{}); err == nil {
			out.WriteString("clusterrole " + name + "\n")
		}
	}
	if _, err := kube.RbacV1().RoleBindings("kube-system").Get(ctx, "weft-controlplane-authentication-reader", metav1.GetOptions{}); err == nil {
		out.WriteString("rolebinding kube-system/weft-controlplane-authentication-reader\n")
	}
	cms, err := kube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=weft"})
	if err == nil {
		for _, cm := range cms.Items {
			out.WriteString("configmap " + cm.Namespace + "/" + cm.Name + "\n")
		}
	}
	return out.String()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
