// Command pause is the pod sandbox ("infra") container of the local test
// cluster: it holds the pod's namespaces, reaps zombies when it runs as PID 1,
// and exits 0 on SIGTERM or SIGINT. Build it static: CGO_ENABLED=0.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Println("weft pause v0")
		return
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	pid1 := os.Getpid() == 1
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			if pid1 {
				reap()
			}
		default:
			os.Exit(0)
		}
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
