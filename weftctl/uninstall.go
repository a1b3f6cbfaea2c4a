package weftctl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/weftmesh/weft/deploy"
)

func newUninstall(g *globals) *cobra.Command {
	values := deploy.Defaults()
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove weft from the cluster: its namespace, CA, RBAC, webhook and trust bundles",
		Long: `Removes everything weft installed or created: the webhook first (so pod
creation never waits on an injector that is going away), then the rest in
reverse order, the trust-bundle ConfigMaps weft wrote into injected namespaces,
and the weft namespace with the CA Secret. Pods already injected keep their
sidecars until they are recreated.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return uninstall(cmd.Context(), g, values, timeout)
		},
	}
	cmd.Flags().StringVar(&values.Namespace, "weft-namespace", values.Namespace, "namespace weft is installed in")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Minute, "how long to wait for the namespace and the CRDs to be gone")
	return cmd
}

func uninstall(ctx context.Context, g *globals, v deploy.Values, timeout time.Duration) error {
	manifests, err := deploy.Render(v)
	if err != nil {
		return err
	}
	objs, err := decodeManifests(manifests)
	if err != nil {
		return err
	}
	// Webhooks go first; remove() walks the list backwards.
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int {
		return boolInt(isWebhook(a)) - boolInt(isWebhook(b))
	})
	c, err := g.clients()
	if err != nil {
		return err
	}
	g.progress("uninstalling weft from %s", v.Namespace)
	errs := []error{c.remove(ctx, objs, g.progress)}
	cms, err := c.kube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=weft"})
	if err != nil {
		errs = append(errs, fmt.Errorf("weftctl: list weft ConfigMaps: %w", err))
	} else {
		for _, cm := range cms.Items {
			if err := c.kube.CoreV1().ConfigMaps(cm.Namespace).Delete(ctx, cm.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
			} else {
				g.progress("deleted ConfigMap %s/%s", cm.Namespace, cm.Name)
			}
		}
	}
	// The namespace and the CRDs go asynchronously (their contents first):
	// "uninstalled" means they are gone, so that an install right after
	// does not meet them terminating.
	var crds []string
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, o.GetName())
		}
	}
	g.progress("waiting for namespace %s and %d CRDs to be gone", v.Namespace, len(crds))
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	left := func(ctx context.Context) []string {
		var out []string
		if _, err := c.kube.CoreV1().Namespaces().Get(ctx, v.Namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			out = append(out, "namespace "+v.Namespace)
		}
		for _, name := range crds {
			if _, err := c.dynamic.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				out = append(out, "CRD "+name)
			}
		}
		return out
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		return len(left(ctx)) == 0, nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("weftctl: %s still there after %s: %w", strings.Join(left(ctx), ", "), timeout, err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintln(g.out, "weft is uninstalled")
	return nil
}

func isWebhook(u *unstructured.Unstructured) bool {
	return u.GetKind() == "MutatingWebhookConfiguration" || u.GetKind() == "ValidatingWebhookConfiguration"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
