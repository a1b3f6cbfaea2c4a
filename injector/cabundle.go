package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/api/names"
)

// WebhookConfiguration is the MutatingWebhookConfiguration weft installs.
const WebhookConfiguration = names.WebhookConfiguration

// EnsureCABundle sets clientConfig.caBundle of every webhook of the
// MutatingWebhookConfiguration name to bundlePEM (weft's roots), so that
// the API server trusts the injector's SVID. It patches only webhooks
// whose caBundle differs, reports whether it changed anything, and guards
// the patch with the object's resourceVersion: a concurrent change makes
// it fail rather than write to the wrong webhook. Needs get and patch on
// that one object.
func EnsureCABundle(ctx context.Context, client kubernetes.Interface, name string, bundlePEM []byte) (bool, error) {
	if b, _ := pem.Decode(bundlePEM); b == nil || b.Type != "CERTIFICATE" {
		return false, fmt.Errorf("injector: caBundle for %s: not a PEM certificate bundle", name)
	}
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("injector: get MutatingWebhookConfiguration %s: %w", name, err)
	}
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	if cfg.ResourceVersion != "" {
		ops = append(ops, op{"test", "/metadata/resourceVersion", cfg.ResourceVersion})
	}
	guards := len(ops)
	for i, wh := range cfg.Webhooks {
		if bytes.Equal(wh.ClientConfig.CABundle, bundlePEM) {
			continue
		}
		p := "/webhooks/" + strconv.Itoa(i)
		ops = append(ops, op{"test", p + "/name", wh.Name}, op{"add", p + "/clientConfig/caBundle", bundlePEM})
	}
	if len(ops) == guards {
		return false, nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return false, fmt.Errorf("injector: caBundle patch: %w", err)
	}
	if _, err := api.Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: "weft-injector"}); err != nil {
		return false, fmt.Errorf("injector: patch caBundle of MutatingWebhookConfiguration %s: %w", name, err)
	}
	return true, nil
}

// CABundleConfig configures [KeepCABundle].
type CABundleConfig struct {
	Client      kubernetes.Interface
	WebhookName string                 // "" means WebhookConfiguration
	Bundle      func() ([]byte, error) // weft's roots as PEM, read before every check
	Changed     <-chan struct{}        // optional: a signal to check now (a new SVID, maybe new roots)
	Interval    time.Duration          // between checks; 0 means a minute
	Logger      *slog.Logger
	Clock       clock.WithTicker // the Interval's ticker; nil: the real clock
}

// KeepCABundle runs EnsureCABundle now, on every signal of Changed and
// every Interval until ctx ends: it repairs a caBundle that a re-install
// cleared and follows root rotation. Failures are logged and retried at
// the next tick.
func KeepCABundle(ctx context.Context, cfg CABundleConfig) {
	if cfg.WebhookName == "" {
		cfg.WebhookName = WebhookConfiguration
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	tick := cfg.Clock.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		bundle, err := cfg.Bundle()
		if err == nil {
			var changed bool
			if changed, err = EnsureCABundle(ctx, cfg.Client, cfg.WebhookName, bundle); changed {
				log.Info("webhook caBundle updated", "webhook_configuration", cfg.WebhookName)
			}
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("cannot ensure the webhook caBundle; retrying", "err", err.Error(), "retry_in", cfg.Interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		case <-cfg.Changed:
		}
	}
}
