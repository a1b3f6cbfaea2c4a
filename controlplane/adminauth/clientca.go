package adminauth

import (
	"cmp"
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/weftmesh/weft/internal/sleep"
)

// Where the API server publishes the CA of the client certificates it
// accepts (for extension API servers).
const (
	ClientCANamespace = "kube-system"
	ClientCAConfigMap = "extension-apiserver-authentication"
	ClientCAKey       = "client-ca-file"
)

// ClientCAs holds the API server's client CA, read from
// kube-system/extension-apiserver-authentication and re-read every
// Interval (the CA can rotate). Until it is read, or when the API server
// has no client CA, Pool is nil and only bearer tokens authenticate.
type ClientCAs struct {
	Client   kubernetes.Interface
	Interval time.Duration // 0 means 1 minute
	Clock    clock.WithTicker
	Logger   *slog.Logger

	pool atomic.Pointer[x509.CertPool]
	pem  atomic.Pointer[string]
}

// Pool returns the current client CA pool, nil if there is none.
func (c *ClientCAs) Pool() *x509.CertPool { return c.pool.Load() }

// Load reads the ConfigMap once. A missing ConfigMap or key empties the
// pool; any other error keeps the last one.
func (c *ClientCAs) Load(ctx context.Context) error {
	cm, err := c.Client.CoreV1().ConfigMaps(ClientCANamespace).Get(ctx, ClientCAConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		c.set("")
		return nil
	}
	if err != nil {
		return fmt.Errorf("adminauth: read %s/%s: %w", ClientCANamespace, ClientCAConfigMap, err)
	}
	c.set(cm.Data[ClientCAKey])
	return nil
}

func (c *ClientCAs) set(pemData string) {
	if old := c.pem.Load(); old != nil && *old == pemData {
		return
	}
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var pool *x509.CertPool
	if pemData != "" {
		p := x509.NewCertPool()
		if p.AppendCertsFromPEM([]byte(pemData)) {
			pool = p
		} else {
			log.Warn("the API server's client CA holds no certificate: client certificates are not accepted", "configmap", ClientCANamespace+"/"+ClientCAConfigMap)
		}
	}
	c.pool.Store(pool)
	c.pem.Store(&pemData)
	if pool == nil {
		log.Info("no client CA from the API server: the admin endpoints accept bearer tokens only")
	} else {
		log.Info("client CA loaded: the admin endpoints accept the cluster's client certificates")
	}
}

// retryInterval is how soon Run tries again after a failed read (the
// control plane may start before its RoleBinding in kube-system).
const retryInterval = 5 * time.Second

// Run re-reads the client CA every Interval, or retryInterval after a
// failed read, until ctx ends. failed says whether the read before Run
// failed.
func (c *ClientCAs) Run(ctx context.Context, failed bool) {
	clk := c.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	for {
		wait := cmp.Or(c.Interval, time.Minute)
		if failed {
			wait = retryInterval
		}
		if !sleep.For(ctx, clk, wait) {
			return
		}
		err := c.Load(ctx)
		failed = err != nil
		if err != nil && ctx.Err() == nil && c.Logger != nil {
			c.Logger.Warn("reloading the client CA", "err", err)
		}
	}
}
