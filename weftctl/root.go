// Package weftctl holds the operator CLI's commands (cobra), one file per
// command. It talks to Kubernetes with client-go and to weft's admin ports;
// it imports deploy, api/* and certs, and, for their names and pure checks
// only, controlplane/identity (the CA Secret's keys) and injector
// (annotation and container names, the capture-bypass rule); never
// sidecar/* or a running part of the control plane.
package weftctl

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weftmesh/weft/internal/version"
)

// globals are the kubectl-style flags every command shares.
type globals struct {
	kubeconfig string
	context    string
	namespace  string
	output     string
	out, err   io.Writer
}

// clients are what a command talks to the cluster with.
type clients struct {
	rest      *rest.Config
	kube      kubernetes.Interface
	dynamic   dynamic.Interface
	namespace string
}

func (g *globals) clients() (*clients, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: g.context})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("weftctl: kubeconfig: %w", err)
	}
	rc.UserAgent = "weftctl/" + version.Version
	rc.Timeout = 30 * time.Second
	ns := g.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			ns = "default"
		}
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return &clients{rest: rc, kube: kube, dynamic: dyn, namespace: ns}, nil
}

// NewRoot returns the weftctl command tree writing to out and errOut.
func NewRoot(out, errOut io.Writer) *cobra.Command {
	g := &globals{out: out, err: errOut}
	root := &cobra.Command{
		Use:           "weftctl",
		Short:         "weftctl operates weft, the mTLS service mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&g.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	pf.StringVar(&g.context, "context", "", "kubeconfig context to use")
	pf.StringVarP(&g.namespace, "namespace", "n", "", "namespace (default: the context's)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	root.AddCommand(newInstall(g), newUninstall(g))
	root.AddCommand(newCheck(g), newStatus(g), newVerify(g), newExplainInjection(g))
	root.AddCommand(newEgress(g), newStat(g), newDashboard(g))
	return root
}

// progress prints one step of a long operation.
func (g *globals) progress(format string, args ...any) {
	fmt.Fprintf(g.err, "• "+format+"\n", args...)
}
