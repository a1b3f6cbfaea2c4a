package injector

import (
	"context"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func webhookConfig(bundles ...[]byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: WebhookConfiguration}}
	for i, b := range bundles {
		cfg.Webhooks = append(cfg.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name: []string{"inject.weft.dev", "other.weft.dev"}[i], ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: b}})
	}
	return cfg
}

func pemOf(t *testing.T, ca *testCA) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

func countPatches(cs *fake.Clientset) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == "patch" {
			n++
		}
	}
	return n
}

func TestEnsureCABundle(t *testing.T) {
	ctx := context.Background()
	bundle, other := pemOf(t, newTestCA(t)), pemOf(t, newTestCA(t))
	cs := fake.NewClientset(webhookConfig(nil, other))
	changed, err := EnsureCABundle(ctx, cs, WebhookConfiguration, bundle)
	if err != nil || !changed {
		t.Fatalf("EnsureCABundle = %v, %v", changed, err)
	}
	got, _ := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfiguration, metav1.GetOptions{})
	for _, wh := range got.Webhooks {
		if string(wh.ClientConfig.CABundle) != string(bundle) {
			t.Errorf("webhook %s caBundle not set", wh.Name)
		}
	}
	// Already right: no patch.
	before := countPatches(cs)
	if changed, err := EnsureCABundle(ctx, cs, WebhookConfiguration, bundle); err != nil || changed || countPatches(cs) != before {
		t.Errorf("second EnsureCABundle = %v, %v, patches %d -> %d", changed, err, before, countPatches(cs))
	}
}

func TestEnsureCABundleErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := EnsureCABundle(ctx, fake.NewClientset(), WebhookConfiguration, []byte("junk")); err == nil ||
		err.Error() != "injector: caBundle for weft-injector: not a PEM certificate bundle" {
		t.Errorf("junk bundle: %v", err)
	}
	_, err := EnsureCABundle(ctx, fake.NewClientset(), WebhookConfiguration, pemOf(t, newTestCA(t)))
	if err == nil || !strings.HasPrefix(err.Error(), "injector: get MutatingWebhookConfiguration weft-injector: ") {
		t.Errorf("missing config: %v", err)
	}
	// A concurrent change (the patch's resourceVersion test fails) is an error, not a blind write.
	cs := fake.NewClientset(webhookConfig(nil))
	cs.PrependReactor("get", "mutatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		cfg := webhookConfig(nil)
		cfg.ResourceVersion = "41"
		return true, cfg, nil
	})
	if _, err := EnsureCABundle(ctx, cs, WebhookConfiguration, pemOf(t, newTestCA(t))); err == nil ||
		!strings.HasPrefix(err.Error(), "injector: patch caBundle of MutatingWebhookConfiguration weft-injector: ") {
		t.Errorf("stale resourceVersion: %v", err)
	}
}

func TestKeepCABundleFollowsRotation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cs := fake.NewClientset(webhookConfig(nil))
	bundles := make(chan []byte, 1)
	cur := pemOf(t, newTestCA(t))
	changed := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		KeepCABundle(ctx, CABundleConfig{Client: cs, Changed: changed, Interval: time.Hour, Bundle: func() ([]byte, error) {
			select {
			case b := <-bundles:
				cur = b
			default:
			}
			return cur, nil
		}})
	}()
	defer func() { cancel(); <-done }()
	waitFor := func(want []byte) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			got, _ := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookConfiguration, metav1.GetOptions{})
			if string(got.Webhooks[0].ClientConfig.CABundle) == string(want) {
				return
			}
		}
		t.Fatal("caBundle not updated")
	}
	waitFor(cur)
	next := pemOf(t, newTestCA(t))
	bundles <- next
	changed <- struct{}{}
	waitFor(next)
}

func TestNativeSidecarSupported(t *testing.T) {
	for _, tc := range []struct {
		git, major, minor string
		want              bool
	}{
		{"v1.28.5", "1", "28", false},
		{"v1.29.0", "1", "29", true},
		{"v1.37.2", "1", "37", true},
		{"v1.30.1-gke.100", "1", "30", true},
		{"v1.29.0-alpha.1", "1", "29", true},
		{"weird", "1", "28+", false},
		{"weird", "1", "31+", true},
	} {
		d := &fakediscovery.FakeDiscovery{Fake: &k8stesting.Fake{}, FakedServerVersion: &version.Info{GitVersion: tc.git, Major: tc.major, Minor: tc.minor}}
		got, err := NativeSidecarSupported(d)
		if err != nil || got != tc.want {
			t.Errorf("%s (%s.%s): %v, %v; want %v", tc.git, tc.major, tc.minor, got, err, tc.want)
		}
	}
	d := &fakediscovery.FakeDiscovery{Fake: &k8stesting.Fake{}, FakedServerVersion: &version.Info{GitVersion: "x"}}
	if _, err := NativeSidecarSupported(d); err == nil || !strings.Contains(err.Error(), `injector: server version "x"`) {
		t.Errorf("unparsable version: %v", err)
	}
}

func TestKubeEventsForSkippedPods(t *testing.T) {
	cs := fake.NewClientset()
	ev := NewKubeEvents(cs, "weft-injector-abc", nil)
	inj := newInjector(t, true)
	_, skipped := inj.Review(reviewBody(t, loadPod(t, "optedout"), "demo"))
	_, injected := inj.Review(reviewBody(t, loadPod(t, "plain"), "demo"))
	_, rsSkipped := inj.Review(reviewBody(t, podWith(t, func(p *corev1.Pod) { p.Spec.HostNetwork = true }), "demo"))
	_, unserved := inj.Review(reviewBody(t, loadPod(t, "optedout"), "kube-system"))
	ev.Observe(unserved) // no Event: kube-system is never served, whatever the request says
	ev.Observe(injected) // a Warning Event: its container keeps NET_RAW (captureBypass Warn)
	dry := skipped
	dry.DryRun = true
	ev.Observe(dry) // no Event
	ev.Observe(skipped)
	ev.Observe(rsSkipped)
	runEvents(t, ev)
	ctx := context.Background()
	var list *corev1.EventList
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		list, _ = cs.CoreV1().Events("demo").List(ctx, metav1.ListOptions{})
		if len(list.Items) == 3 {
			break
		}
	}
	if len(list.Items) != 3 {
		t.Fatalf("%d events, want 3", len(list.Items))
	}
	if l, _ := cs.CoreV1().Events("kube-system").List(ctx, metav1.ListOptions{}); len(l.Items) != 0 {
		t.Fatalf("events in kube-system: %+v", l.Items)
	}
	got := map[string]corev1.Event{}
	for _, e := range list.Items {
		got[e.InvolvedObject.Kind+"/"+e.InvolvedObject.Name+"/"+e.Reason] = e
	}
	if e, ok := got["Pod/legacy/"+EventReason]; !ok || e.Reason != EventReason || e.Message != "weft: pod legacy not injected: annotation weft.dev/inject: disabled" {
		t.Errorf("pod event %+v", e)
	}
	var bypass corev1.Event
	for k, e := range got {
		if strings.HasSuffix(k, "/"+EventReasonCaptureBypass) {
			bypass = e
		}
	}
	if e := bypass; e.Reason != EventReasonCaptureBypass || e.Type != corev1.EventTypeWarning ||
		!strings.Contains(e.Message, "keeps NET_RAW") {
		t.Errorf("capture-bypass event %+v (have %v)", e, got)
	}
	if e, ok := got["ReplicaSet/web-7d9f8b6c5/"+EventReason]; !ok || !strings.Contains(e.Message, "weft: pod web-7d9f8b6c5-* not injected: the pod uses hostNetwork") {
		t.Errorf("replicaset event %+v (have %v)", e, got)
	}
}
