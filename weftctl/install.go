package weftctl

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/weftmesh/weft/api/names"
	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/controlplane/identity"
	"github.com/weftmesh/weft/deploy"
)

type installOptions struct {
	values  deploy.Values
	caDir   string
	render  bool
	dryRun  string
	wait    bool
	timeout time.Duration
}

func newInstall(g *globals) *cobra.Command {
	o := installOptions{values: deploy.Defaults()}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install weft into the cluster and wait until it is ready",
		Long: `Renders weft's manifests (namespace, control plane, injector, RBAC), applies
them with server-side apply and waits until every weft Deployment is available.

  weftctl install --render            print the manifests, touch nothing
  weftctl install --dry-run=server    let the API server validate them, persist nothing`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context(), g) },
	}
	f := cmd.Flags()
	f.StringVar(&o.values.Tag, "tag", o.values.Tag, "image tag of weft's images")
	f.StringVar(&o.values.Image, "image-prefix", o.values.Image, `image name prefix ("weft/" or "registry:5000/weft/")`)
	f.StringVar(&o.values.PullPolicy, "pull-policy", o.values.PullPolicy, "image pull policy: IfNotPresent, Never or Always")
	f.StringVar(&o.values.TrustDomain, "trust-domain", o.values.TrustDomain, "SPIFFE trust domain; set once, changing it changes every identity")
	f.IntVar(&o.values.Replicas, "replicas", o.values.Replicas, "control plane replicas")
	f.IntVar(&o.values.InjectorReplica, "injector-replicas", o.values.InjectorReplica, "injector replicas")
	f.StringVar(&o.values.AuditPVC, "audit-pvc", "", "PersistentVolumeClaim (in the weft namespace) for the egress audit store; default an emptyDir")
	f.BoolVar(&o.values.NetworkPolicy, "network-policy", o.values.NetworkPolicy, "add NetworkPolicies that admit to weft's pods only the ports weft serves (enforced only by a CNI that implements NetworkPolicy)")
	f.BoolVar(&o.values.HTTPRouting, "http-routing", o.values.HTTPRouting, "route the requests of Service ports that declare http, http2 or grpc one by one between sidecars (HTTP/2 over mTLS: per-request balancing, retries, timeouts); in development, off by default. Run install again without it to turn it off")
	f.StringVar(&o.values.LogLevel, "log-level", o.values.LogLevel, "log level of weft's components")
	f.StringVar(&o.values.Namespace, "weft-namespace", o.values.Namespace, "namespace weft is installed in")
	f.StringVar(&o.caDir, "ca-dir", "", "intermediate-only CA: a directory with roots.pem, intermediate.pem and intermediate-key.pem (signed where the root key lives); the cluster never holds the root key. Run again with a new intermediate to renew it")
	f.BoolVar(&o.render, "render", false, "print the rendered manifests and exit")
	f.StringVar(&o.dryRun, "dry-run", "none", `"server" sends everything as a dry run: validated and admitted, nothing persisted`)
	f.BoolVar(&o.wait, "wait", true, "wait until weft is ready")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for weft to become ready")
	return cmd
}

func (o *installOptions) run(ctx context.Context, g *globals) error {
	manifests, err := deploy.Render(o.values)
	if err != nil {
		return err
	}
	if o.render {
		_, err := g.out.Write(manifests)
		return err
	}
	if o.dryRun != "none" && o.dryRun != "server" {
		return fmt.Errorf(`weftctl install: --dry-run=%q: only "none" and "server" are supported`, o.dryRun)
	}
	objs, err := decodeManifests(manifests)
	if err != nil {
		return err
	}
	c, err := g.clients()
	if err != nil {
		return err
	}
	dry := o.dryRun == "server"
	var ca *certs.CA
	caChanged := false
	if o.caDir != "" {
		td, err := spiffeid.TrustDomainFromString(o.values.TrustDomain)
		if err != nil {
			return fmt.Errorf("weftctl install: trust domain %q: %w", o.values.TrustDomain, err)
		}
		var m certs.Material
		if m, ca, err = readCADir(o.caDir, td, time.Now()); err != nil {
			return err
		}
		g.progress("CA: intermediate-only from %s (intermediate %s, expires %s); the cluster holds no root key", o.caDir, ca.Intermediate().Subject, ca.Intermediate().NotAfter.UTC().Format(time.RFC3339))
		if caChanged, err = installCA(ctx, c.kube, o.values.Namespace, identity.CASecretName, m, ca, dry); err != nil {
			return err
		}
	}
	g.progress("installing weft %s (trust domain %s) into %s", o.values.Tag, o.values.TrustDomain, o.values.Namespace)
	if err := c.apply(ctx, objs, dry, g.progress); err != nil {
		return err
	}
	if caChanged && !dry {
		g.progress("CA: new intermediate in %s/%s; restarting the control plane to load it", o.values.Namespace, identity.CASecretName)
		if err := restartForCA(ctx, c.kube, o.values.Namespace, names.ControlPlane, ca); err != nil {
			return err
		}
	}
	if dry {
		fmt.Fprintf(g.out, "weft: %d objects pass server-side validation (dry run, nothing persisted)\n", len(objs))
		return nil
	}
	if !o.wait {
		return nil
	}
	start := time.Now()
	for _, d := range kindOf(objs, "Deployment") {
		g.progress("waiting for deployment %s", qualified(d))
		if err := waitDeployment(ctx, c.kube, d.GetNamespace(), d.GetName(), o.timeout); err != nil {
			return err
		}
	}
	fmt.Fprintf(g.out, "weft is installed and ready in namespace %s (%.1fs)\n", o.values.Namespace, time.Since(start).Seconds())
	return nil
}

func kindOf(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range objs {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

// waitDeployment waits until every replica of the newest revision is
// available; on timeout it says what its pods are stuck on.
func waitDeployment(ctx context.Context, kube kubernetes.Interface, ns, name string, timeout time.Duration) error {
	var last *appsv1.Deployment
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // transient; keep polling until the timeout
		}
		last = d
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		s := d.Status
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want, nil
	})
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf("weftctl: deployment %s/%s not ready after %s", ns, name, timeout)
	if last != nil {
		msg += fmt.Sprintf(" (%d/%d available)", last.Status.AvailableReplicas, last.Status.Replicas)
		msg += podTrouble(ctx, kube, ns, last.Spec.Selector.MatchLabels)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// podTrouble summarises why the selected pods are not ready.
func podTrouble(ctx context.Context, kube kubernetes.Interface, ns string, sel map[string]string) string {
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: strings.Join(parts, ",")})
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "\n  pod %s: %s", p.Name, p.Status.Phase)
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if w := cs.State.Waiting; w != nil {
				fmt.Fprintf(&b, "; %s waiting: %s %s", cs.Name, w.Reason, w.Message)
			}
			if t := cs.LastTerminationState.Terminated; t != nil {
				fmt.Fprintf(&b, "; %s last exit %d: %s", cs.Name, t.ExitCode, strings.TrimSpace(t.Message))
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue && c.Message != "" {
				fmt.Fprintf(&b, "; %s: %s", c.Type, c.Message)
			}
		}
	}
	return b.String()
}
