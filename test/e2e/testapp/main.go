// Command testapp is the workload of weft's end-to-end tests (image
// weft/testapp). It is an ordinary app: it knows nothing of weft beyond the
// SPIFFE Workload API socket that the pod gives it.
//
//	testapp svid            fetch the pod's X.509-SVID from the Workload API, print it, keep watching
//	testapp serve -addr :8080
//	                        HTTP server: logs every request body line, answers "hello from <pod>"
//	testapp get URL [-body S] [-n N]
//	                        HTTP client: N requests, prints status and body, exit 1 on failure
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testapp svid|serve|get ...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch os.Args[1] {
	case "svid":
		err = svid(ctx)
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "get":
		err = get(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}

type watcher struct{}

func (watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	s := c.DefaultSVID()
	fmt.Printf("SVID %s serial %s notAfter %s\n", s.ID, s.Certificates[0].SerialNumber.Text(16), s.Certificates[0].NotAfter.Format(time.RFC3339))
}

func (watcher) OnX509ContextWatchError(err error) {
	fmt.Fprintln(os.Stderr, "watch error:", err)
}

// svid watches the Workload API at SPIFFE_ENDPOINT_SOCKET until ctx ends.
func svid(ctx context.Context) error {
	client, err := workloadapi.New(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	err = client.WatchX509Context(ctx, watcher{})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen address")
	_ = fs.Parse(args)
	pod := os.Getenv("POD_NAME")
	srv := &http.Server{Addr: *addr, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		fmt.Printf("request %s %s from %s body=%q\n", r.Method, r.URL.Path, r.RemoteAddr, strings.TrimSpace(string(body)))
		fmt.Fprintf(w, "hello from %s\n", pod)
	})}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Printf("serving on %s\n", *addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func get(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	body := fs.String("body", "", "request body (POST when set)")
	n := fs.Int("n", 1, "requests")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return fmt.Errorf("get: want one URL")
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; i < *n; i++ {
		method := http.MethodGet
		if *body != "" {
			method = http.MethodPost
		}
		req, err := http.NewRequestWithContext(ctx, method, fs.Arg(0), strings.NewReader(*body))
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%d %s", resp.StatusCode, b)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("get: %s", resp.Status)
		}
	}
	return nil
}
