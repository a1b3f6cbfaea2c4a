package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"

	"github.com/weftmesh/weft/sidecar/capture"
)

// initCapture installs (or with --cleanup removes) the traffic-capture rules
// in the pod's network namespace: the weft-init container.
func initCapture(args []string) error {
	cfg, cleanup, err := initConfig(args, flag.ExitOnError, logger)
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
	if err := capture.Install(cfg); err != nil {
		return err
	}
	fmt.Fprint(os.Stdout, capture.Rules(cfg))
	return nil
}

// initConfig turns init's flags into a validated capture.Config (or says
// --cleanup). newLogger builds the logger from --log-level.
//
// With --dns-port other than 0 (the default is capture.DefaultDNSPort) it
// reads the pod's nameservers from --resolv-conf: the kubelet writes the
// same resolv.conf into every container of the pod, weft-init's included.
// A resolv.conf that cannot be read or parsed does not fail the pod: init
// logs a warning and installs the rules without DNS capture (DNSPort stays
// reserved, no DNS is redirected), so the pod's DNS goes straight to its
// nameservers and the sidecar does not see the answers; under
// --outbound-udp=drop it then lets UDP port 53 leave to any server, so the
// pod still resolves names.
//
// --outbound-udp is the injector's to set: drop for pods of a
// REGISTRY_ONLY mesh, allow (the default) otherwise.
func initConfig(args []string, onErr flag.ErrorHandling, newLogger func(level string) (*slog.Logger, error)) (capture.Config, bool, error) {
	cfg := capture.DefaultConfig()
	var (
		inbound, outbound, uid, dnsPort         uint
		include, exclIn, exclOut, exclCIDRs, lv string
		resolvConf, udp                         string
		cleanup                                 bool
	)
	fs := flag.NewFlagSet("init", onErr)
	fs.UintVar(&inbound, "inbound-port", uint(cfg.InboundPort), "port inbound TCP is redirected to")
	fs.UintVar(&outbound, "outbound-port", uint(cfg.OutboundPort), "port outbound TCP is redirected to")
	fs.UintVar(&uid, "proxy-uid", uint(cfg.ProxyUID), "UID whose traffic is never captured")
	fs.StringVar(&include, "include-inbound-ports", "*", `inbound ports to capture ("*" = all)`)
	fs.StringVar(&exclIn, "exclude-inbound-ports", "", "inbound ports never captured (15020 always is)")
	fs.StringVar(&exclOut, "exclude-outbound-ports", "", "outbound ports never captured")
	fs.StringVar(&exclCIDRs, "exclude-outbound-cidrs", "", "outbound destinations never captured")
	fs.UintVar(&dnsPort, "dns-port", uint(cfg.DNSPort), "port DNS to the pod's nameservers (UDP and TCP 53) is redirected to; 0 = no DNS capture")
	fs.StringVar(&resolvConf, "resolv-conf", "/etc/resolv.conf", "the pod's resolv.conf, whose nameservers' DNS is captured")
	fs.StringVar(&udp, "outbound-udp", string(capture.UDPAllow), "outbound UDP other than DNS to the pod's nameservers: allow (leaves, unaudited: ALLOW_ANY) "+
		"or drop (rejected and counted per destination: REGISTRY_ONLY); --exclude-outbound-ports and --exclude-outbound-cidrs let it leave")
	fs.BoolVar(&cleanup, "cleanup", false, "remove weft's rules instead of installing them")
	fs.StringVar(&lv, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, false, fmt.Errorf("init: %w", err)
	}
	log, err := newLogger(lv)
	if err != nil {
		return cfg, false, err
	}
	if cleanup {
		return cfg, true, nil
	}
	if inbound > 65535 || outbound > 65535 || dnsPort > 65535 || uid > 1<<31 {
		return cfg, false, fmt.Errorf("init: --inbound-port %d, --outbound-port %d, --dns-port %d or --proxy-uid %d out of range", inbound, outbound, dnsPort, uid)
	}
	cfg.InboundPort, cfg.OutboundPort, cfg.ProxyUID, cfg.Logger = uint16(inbound), uint16(outbound), uint32(uid), log
	cfg.DNSPort = uint16(dnsPort)
	if cfg.OutboundUDP, err = capture.ParseUDPPolicy(udp); err != nil {
		return cfg, false, fmt.Errorf("init: --outbound-udp: %w", err)
	}
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
			return cfg, false, fmt.Errorf("init: %s: \"*\" is not allowed in an exclusion list", p.flag)
		}
		if *p.out, err = capture.ParsePorts(p.in); err != nil {
			return cfg, false, fmt.Errorf("init: %s: %w", p.flag, err)
		}
	}
	if cfg.ExcludeOutboundCIDRs, err = capture.ParseCIDRs(exclCIDRs); err != nil {
		return cfg, false, fmt.Errorf("init: --exclude-outbound-cidrs: %w", err)
	}
	if cfg.DNSPort != 0 {
		servers, err := readResolvConf(resolvConf)
		switch {
		case err != nil:
			log.Warn("DNS capture off: cannot read the pod's nameservers, so its DNS is not redirected to the sidecar",
				"resolv_conf", resolvConf, "err", err.Error())
		case len(servers) == 0:
			log.Warn("DNS capture off: the pod's resolv.conf lists no nameserver", "resolv_conf", resolvConf)
		}
		cfg.DNSServers = servers
	}
	if err := cfg.Validate(); err != nil {
		return cfg, false, err
	}
	return cfg, false, nil
}

// readResolvConf returns the nameservers of the resolv.conf at path.
func readResolvConf(path string) ([]netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// A resolv.conf is a few hundred bytes; the limit only bounds the read.
	servers, err := capture.ParseResolvConf(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return servers, nil
}
