package weftctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/weftmesh/weft/internal/manifests"
)

const fieldManager = "weftctl"

// decodeManifests splits a multi-document YAML stream into objects.
func decodeManifests(b []byte) ([]*unstructured.Unstructured, error) {
	objs, err := manifests.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("weftctl: %w", err)
	}
	return objs, nil
}

// resourceFor maps an object to its dynamic client.
func (c *clients) resourceFor(mapper meta.RESTMapper, u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("weftctl: %s %s: %w", gvk.Kind, u.GetName(), err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dynamic.Resource(m.Resource).Namespace(u.GetNamespace()), nil
	}
	return c.dynamic.Resource(m.Resource), nil
}

func (c *clients) mapper() meta.ResettableRESTMapper {
	return restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.kube.Discovery()))
}

// apply server-side applies every object in order. With dryRun the API
// server validates and admits them without persisting anything.
func (c *clients) apply(ctx context.Context, objs []*unstructured.Unstructured, dryRun bool, progress func(string, ...any)) error {
	mapper := c.mapper()
	opts := metav1.ApplyOptions{FieldManager: fieldManager, Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	for _, u := range objs {
		ri, err := c.resourceFor(mapper, u)
		if err != nil && meta.IsNoMatchError(err) && !dryRun {
			// A CRD applied earlier in this run: wait until the API server
			// serves it (established), refreshing discovery.
			err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 60*time.Second, true, func(context.Context) (bool, error) {
				mapper.Reset()
				ri, err = c.resourceFor(mapper, u)
				return err == nil, nil
			})
			if err != nil {
				err = fmt.Errorf("weftctl: %s %s: its API is not served 60s after applying its CRD: %w", u.GetKind(), u.GetName(), err)
			}
		}
		if err != nil {
			return err
		}
		if _, err := ri.Apply(ctx, u.GetName(), u, opts); err != nil {
			return fmt.Errorf("weftctl: apply %s %s: %w", u.GetKind(), qualified(u), err)
		}
		progress("%s %s %s", map[bool]string{true: "validated", false: "applied"}[dryRun], u.GetKind(), qualified(u))
	}
	return nil
}

// remove deletes objects in reverse order; absent ones are fine.
func (c *clients) remove(ctx context.Context, objs []*unstructured.Unstructured, progress func(string, ...any)) error {
	mapper := c.mapper()
	policy := metav1.DeletePropagationForeground
	var errs []error
	for i := len(objs) - 1; i >= 0; i-- {
		u := objs[i]
		ri, err := c.resourceFor(mapper, u)
		if meta.IsNoMatchError(err) {
			continue // its CRD is gone already
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{PropagationPolicy: &policy})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			errs = append(errs, fmt.Errorf("weftctl: delete %s %s: %w", u.GetKind(), qualified(u), err))
		default:
			progress("deleted %s %s", u.GetKind(), qualified(u))
		}
	}
	return errors.Join(errs...)
}

func qualified(u *unstructured.Unstructured) string {
	return types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()}.String()
}
