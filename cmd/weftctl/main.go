// Command weftctl is the operator's CLI for weft.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/weftmesh/weft/weftctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := weftctl.NewRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
