package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// servedByHeader is the response header in which grpc-serve names the pod
// that answered.
const servedByHeader = "x-served-by"

// grpcServe: testapp grpc-serve -addr :9000 [-fail]. A plaintext (h2c)
// gRPC server of the standard health service whose every answer carries
// the pod's name in header x-served-by; -fail answers every call
// UNAVAILABLE, trailers-only (a replica that is up but broken).
func grpcServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("grpc-serve", flag.ContinueOnError)
	addr := fs.String("addr", ":9000", "listen address")
	fail := fs.Bool("fail", false, "answer every call UNAVAILABLE")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _ := os.Hostname()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	var served int64
	var mu sync.Mutex
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		mu.Lock()
		served++
		n := served
		mu.Unlock()
		if n == 1 || n%100 == 0 {
			fmt.Printf("served %d calls\n", n)
		}
		if *fail {
			// No header first: a trailers-only answer, as a server that
			// fails before it starts a response sends (and the only
			// UNAVAILABLE a proxy can retry: Envoy's retry_on unavailable).
			return nil, status.Error(codes.Unavailable, "testapp: -fail")
		}
		_ = grpc.SetHeader(ctx, metadata.Pairs(servedByHeader, host))
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	go func() {
		<-ctx.Done()
		s.GracefulStop()
	}()
	fmt.Printf("grpc-serve on %s as %s (fail=%v)\n", lis.Addr(), host, *fail)
	return s.Serve(lis)
}

// callReport is what grpc-call prints: how many calls each pod answered,
// and the failures by gRPC code.
type callReport struct {
	Calls    int            `json:"calls"`
	ServedBy map[string]int `json:"served_by"`
	Errors   map[string]int `json:"errors,omitempty"`
	Seconds  float64        `json:"seconds"`
}

// grpcCall: testapp grpc-call -addr HOST:PORT [-n N] [-c C] [-timeout D].
// N health checks over ONE gRPC client connection (plaintext h2c, as an app
// in a meshed pod speaks), C at a time; prints a callReport as JSON. Exit 1
// when no call succeeded.
func grpcCall(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("grpc-call", flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port of the gRPC server")
	n := fs.Int("n", 300, "calls")
	c := fs.Int("c", 4, "calls in flight at once")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of each call")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *n < 1 || *c < 1 {
		return errors.New("grpc-call: -addr, -n >= 1 and -c >= 1 are required")
	}
	conn, err := grpc.NewClient("passthrough:///"+*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	rep := callReport{ServedBy: map[string]int{}, Errors: map[string]int{}}
	var mu sync.Mutex
	next := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	for range *c {
		wg.Go(func() {
			for range next {
				cctx, cancel := context.WithTimeout(ctx, *timeout)
				var md metadata.MD
				_, err := client.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
				cancel()
				mu.Lock()
				rep.Calls++
				if err != nil {
					rep.Errors[status.Code(err).String()]++
				} else if v := md.Get(servedByHeader); len(v) == 1 {
					rep.ServedBy[v[0]]++
				} else {
					rep.Errors["no "+servedByHeader]++
				}
				mu.Unlock()
			}
		})
	}
	for range *n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	out, _ := json.Marshal(rep)
	fmt.Println(string(out))
	if len(rep.ServedBy) == 0 {
		return fmt.Errorf("grpc-call: no call succeeded (%v)", rep.Errors)
	}
	return nil
}
