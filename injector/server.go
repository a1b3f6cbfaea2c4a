package injector

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// DefaultAddr is where the webhook listens; the Service maps 443 to it.
const DefaultAddr = ":15017"

// MaxBodyBytes bounds an AdmissionReview. The API server's own limit for a
// pod is larger (3 MiB objects), but a pod spec beyond 1 MiB is not one a
// sidecar belongs in, and the bound keeps a bad client from holding memory.
const MaxBodyBytes = 1 << 20

// CertificateSource hands out the serving certificate for each new TLS
// connection, so a renewed certificate is served from the next handshake
// on without a restart. *tls.Config's GetCertificate has this shape.
type CertificateSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// SVIDCertificates serves the current X509-SVID of src (with its
// intermediates): the injector's serving certificate comes from weft's
// certificate service, with the DNS name of its Service next to its SPIFFE
// ID.
func SVIDCertificates(src x509svid.Source) CertificateSource { return svidCertificates{src} }

type svidCertificates struct{ src x509svid.Source }

func (s svidCertificates) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	svid, err := s.src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("injector: serving certificate: %w", err)
	}
	if svid == nil || len(svid.Certificates) == 0 {
		return nil, errors.New("injector: serving certificate: the source has no X509-SVID")
	}
	c := &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, x := range svid.Certificates {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// Observer is told the outcome of every admission request. [KubeEvents]
// is one.
type Observer interface{ Observe(Outcome) }

// ServerConfig configures [Serve].
type ServerConfig struct {
	Addr         string            // "" means DefaultAddr
	Injector     *Injector         // required
	Certificates CertificateSource // required
	Observer     Observer          // optional
	Logger       *slog.Logger      // nil discards
	// Ready, if set, is called with the listening address once the
	// listener is open (tests use it with Addr "127.0.0.1:0").
	Ready func(net.Addr)
}

// Serve serves the webhook over HTTPS until ctx ends, then shuts down
// gracefully and returns nil. Routes: POST /inject (an AdmissionReview as
// application/json, at most MaxBodyBytes) and GET /healthz.
func Serve(ctx context.Context, cfg ServerConfig) error {
	if cfg.Injector == nil || cfg.Certificates == nil {
		return errors.New("injector: ServerConfig.Injector and ServerConfig.Certificates are required")
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("injector: listen %s: %w", cfg.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/inject", &webhook{inj: cfg.Injector, obs: cfg.Observer, log: log})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	srv := newHTTPServer(mux, cfg.Certificates, log)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("injector serving", "addr", lis.Addr().String())
	if cfg.Ready != nil {
		cfg.Ready(lis.Addr())
	}
	err = srv.ServeTLS(lis, "", "")
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("injector: serve: %w", err)
}

// newHTTPServer is Serve's server: TLS 1.2 or later, and a client that
// stalls is cut off: 5s for the request headers (the TLS handshake too),
// 10s for the whole request and for the response, 90s idle.
func newHTTPServer(h http.Handler, certs CertificateSource, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: certs.GetCertificate,
		},
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       90 * time.Second,
		// Handshake failures (a scanner, a client that distrusts the CA)
		// are the client's problem: log them, at debug.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// webhook is the /inject handler: HTTP in, [Injector.Review], HTTP out.
type webhook struct {
	inj *Injector
	obs Observer
	log *slog.Logger
}

func (h *webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "injector: /inject takes POST", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, fmt.Sprintf("injector: content type %q, want application/json", r.Header.Get("Content-Type")),
			http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			http.Error(w, fmt.Sprintf("injector: request body over %d bytes", MaxBodyBytes), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "injector: read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	review, outcome := h.inj.Review(body)
	if h.obs != nil {
		h.obs.Observe(outcome)
	}
	b, err := json.Marshal(review)
	if err != nil {
		h.log.Error("encode response", "err", err)
		http.Error(w, "injector: encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}
