package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/weftmesh/weft/sidecar/capture"
)

// initCapture installs (or with --cleanup removes) the traffic-capture rules
// in the pod's network namespace: the weft-init container.
func initCapture(args []string) error {
	cfg := capture.DefaultConfig()
	var (
		inbound, outbound, uid                  uint
		include, exclIn, exclOut, exclCIDRs, lv string
		cleanup                                 bool
	)
	fs := flag.NewFlagSet("init", flag.ExitOnError)
	fs.UintVar(&inbound, "inbound-port", uint(cfg.InboundPort), "port inbound TCP is redirected to")
	fs.UintVar(&outbound, "outbound-port", uint(cfg.OutboundPort), "port outbound TCP is redirected to")
	fs.UintVar(&uid, "proxy-uid", uint(cfg.ProxyUID), "UID whose traffic is never captured")
	fs.StringVar(&include, "include-inbound-ports", "*", `inbound ports to capture ("*" = all)`)
	fs.StringVar(&exclIn, "exclude-inbound-ports", "", "inbound ports never captured (15020 always is)")
	fs.StringVar(&exclOut, "exclude-outbound-ports", "", "outbound ports never captured")
	fs.StringVar(&exclCIDRs, "exclude-outbound-cidrs", "", "outbound destinations never captured")
	fs.BoolVar(&cleanup, "cleanup", false, "remove weft's rules instead of installing them")
	fs.StringVar(&lv, "log-level", "info", "debug, info, warn or error")
	_ = fs.Parse(args)
	log, err := logger(lv)
	if err != nil {
		return err
	}
	if cleanup {
		if err := capture.Remove(); err != nil {
			return err
		}
		fmt.Println("weft-init: removed nftables table", capture.TableName)
		return nil
	}
	if inbound > 65535 || outbound > 65535 || uid > 1<<31 {
		return fmt.Errorf("init: --inbound-port %d, --outbound-port %d or --proxy-uid %d out of range", inbound, outbound, uid)
	}
	cfg.InboundPort, cfg.OutboundPort, cfg.ProxyUID, cfg.Logger = uint16(inbound), uint16(outbound), uint32(uid), log
	for _, p := range []struct {
		flag string
		in   string
		out  *[]uint16
	}{
		{"--include-inbound-ports", include, &cfg.IncludeInboundPorts},
		{"--exclude-inbound-ports", exclIn, &cfg.ExcludeInboundPorts},
		{"--exclude-outbound-ports", exclOut, &cfg.ExcludeOutboundPorts},
	} {
		if p.flag != "--include-inbound-ports" && p.in == "*" {
			return fmt.Errorf("init: %s: \"*\" is not allowed in an exclusion list", p.flag)
		}
		if *p.out, err = capture.ParsePorts(p.in); err != nil {
			return fmt.Errorf("init: %s: %w", p.flag, err)
		}
	}
	if cfg.ExcludeOutboundCIDRs, err = capture.ParseCIDRs(exclCIDRs); err != nil {
		return fmt.Errorf("init: --exclude-outbound-cidrs: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := capture.Install(cfg); err != nil {
		return err
	}
	fmt.Fprint(os.Stdout, capture.Rules(cfg))
	return nil
}
