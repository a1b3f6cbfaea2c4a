package identity

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/weftmesh/weft/api/names"
)

// Names of the trust bundle ConfigMap, its key and the namespace label that
// turns injection on.
const (
	BundleConfigMap = names.TrustBundleConfigMap
	BundleKey       = names.TrustBundleKey
	InjectLabel     = names.InjectLabel
	InjectEnabled   = names.InjectEnabled
)

// BundlePublisher keeps the ConfigMap weft-trust-bundle, holding every root
// the trust domain trusts, in each namespace with injection on and in weft's
// own namespace. Sidecars mount it to verify the control plane before they
// have an SVID of their own.
type BundlePublisher struct {
	Client        kubernetes.Interface
	Bundle        func() []byte // PEM roots; called on every reconcile
	HomeNamespace string        // weft-system: always published
	Logger        *slog.Logger
	Resync        time.Duration // 0: 5m; also how soon a rotated root reaches every namespace
}

// Run publishes until ctx ends.
func (p *BundlePublisher) Run(ctx context.Context) error {
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	resync := p.Resync
	if resync == 0 {
		resync = 5 * time.Minute
	}
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	factory := informers.NewSharedInformerFactory(p.Client, resync)
	nsInformer := factory.Core().V1().Namespaces().Informer()
	enqueue := func(obj any) {
		ns, ok := obj.(*corev1.Namespace)
		if ok && (ns.Name == p.HomeNamespace || ns.Labels[InjectLabel] == InjectEnabled) && ns.DeletionTimestamp == nil {
			queue.Add(ns.Name)
		}
	}
	if _, err := nsInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return fmt.Errorf("identity: bundle publisher: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nsInformer.HasSynced) {
		return ctx.Err()
	}
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for {
		ns, quit := queue.Get()
		if quit {
			return nil
		}
		if err := p.Publish(ctx, ns); err != nil {
			log.Warn("publishing trust bundle", "namespace", ns, "err", err)
			queue.AddRateLimited(ns)
		} else {
			queue.Forget(ns)
		}
		queue.Done(ns)
	}
}

// Publish makes namespace ns hold the current bundle.
func (p *BundlePublisher) Publish(ctx context.Context, ns string) error {
	want := p.Bundle()
	cms := p.Client.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(ctx, BundleConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMap, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/part-of": "weft"}},
			Data:       map[string]string{BundleKey: string(want)},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("identity: ConfigMap %s/%s appeared while creating it; will retry", ns, BundleConfigMap)
		}
	} else if err == nil && !bytes.Equal([]byte(cm.Data[BundleKey]), want) {
		cm = cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[BundleKey] = string(want)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("identity: publish %s/%s: %w", ns, BundleConfigMap, err)
	}
	return nil
}
