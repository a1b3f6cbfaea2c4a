package main

import (
	"bytes"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/weftmesh/weft/sidecar/capture"
)

// initConfigFor runs initConfig with a logger into the returned buffer.
func initConfigFor(t *testing.T, args ...string) (capture.Config, bool, string, error) {
	t.Helper()
	var logs bytes.Buffer
	cfg, cleanup, err := initConfig(args, flag.ContinueOnError, func(level string) (*slog.Logger, error) {
		if _, err := logger(level); err != nil {
			return nil, err
		}
		return slog.New(slog.NewTextHandler(&logs, nil)), nil
	})
	return cfg, cleanup, logs.String(), err
}

func writeResolvConf(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The injector's arguments (injector/containers.go) and a kubelet's
// ClusterFirst resolv.conf.
var injectorArgs = []string{"--inbound-port=15006", "--outbound-port=15001", "--proxy-uid=1337",
	"--include-inbound-ports=*", "--exclude-inbound-ports=15020,9100", "--exclude-outbound-ports=5432",
	"--exclude-outbound-cidrs="}

const clusterFirst = "search demo.svc.cluster.local svc.cluster.local cluster.local\nnameserver 198.18.0.10\noptions ndots:5\n"

func TestInitConfigDNS(t *testing.T) {
	resolv := writeResolvConf(t, clusterFirst)
	cfg, cleanup, logs, err := initConfigFor(t, append(injectorArgs, "--resolv-conf="+resolv)...)
	if err != nil || cleanup {
		t.Fatalf("initConfig: cleanup %v, err %v", cleanup, err)
	}
	if want := []netip.Addr{netip.MustParseAddr("198.18.0.10")}; cfg.DNSPort != capture.DefaultDNSPort || !reflect.DeepEqual(cfg.DNSServers, want) {
		t.Errorf("DNSPort %d, DNSServers %v; want %d, %v", cfg.DNSPort, cfg.DNSServers, capture.DefaultDNSPort, want)
	}
	if logs != "" {
		t.Errorf("logged %q", logs)
	}
	if rules := capture.Rules(cfg); !strings.Contains(rules, "ip daddr 198.18.0.10 udp dport 53 redirect to :15053") {
		t.Errorf("Rules:\n%s", rules)
	}

	t.Run("other port", func(t *testing.T) {
		cfg, _, _, err := initConfigFor(t, "--dns-port=5353", "--resolv-conf="+resolv)
		if err != nil || cfg.DNSPort != 5353 || len(cfg.DNSServers) != 1 {
			t.Errorf("--dns-port=5353: DNSPort %d, DNSServers %v, err %v", cfg.DNSPort, cfg.DNSServers, err)
		}
	})

	t.Run("off", func(t *testing.T) {
		// resolv.conf is not even read.
		cfg, _, logs, err := initConfigFor(t, "--dns-port=0", "--resolv-conf="+filepath.Join(t.TempDir(), "absent"))
		if err != nil || cfg.DNSPort != 0 || cfg.DNSServers != nil || logs != "" {
			t.Errorf("--dns-port=0: DNSPort %d, DNSServers %v, err %v, logs %q", cfg.DNSPort, cfg.DNSServers, err, logs)
		}
	})

	for _, tc := range []struct {
		name, resolv, wantLog string
	}{
		{"unreadable", filepath.Join(t.TempDir(), "absent"), "no such file or directory"},
		{"unparsable", writeResolvConf(t, "nameserver 198.18.0.10\nnameserver dns.example.com\n"),
			`line 2: nameserver \"dns.example.com\": not an IP address`},
		{"no nameserver", writeResolvConf(t, "search cluster.local\n"), "lists no nameserver"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The pod still starts, without DNS capture.
			cfg, _, logs, err := initConfigFor(t, "--resolv-conf="+tc.resolv)
			if err != nil {
				t.Fatalf("initConfig: %v", err)
			}
			if cfg.DNSServers != nil || cfg.DNSPort != capture.DefaultDNSPort {
				t.Errorf("DNSPort %d, DNSServers %v; want %d, none", cfg.DNSPort, cfg.DNSServers, capture.DefaultDNSPort)
			}
			if !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "DNS capture off") || !strings.Contains(logs, tc.wantLog) {
				t.Errorf("logs %q lack a warning with %q", logs, tc.wantLog)
			}
			if strings.Contains(capture.Rules(cfg), "dport 53 redirect") {
				t.Errorf("DNS redirected:\n%s", capture.Rules(cfg))
			}
		})
	}

	t.Run("loopback nameserver", func(t *testing.T) {
		cfg, _, _, err := initConfigFor(t, "--resolv-conf="+writeResolvConf(t, "nameserver 127.0.0.53\n"))
		if err != nil {
			t.Fatal(err)
		}
		if rules := capture.Rules(cfg); strings.Contains(rules, "dport 53 redirect") || !strings.Contains(rules, "# nameserver 127.0.0.53 is not captured") {
			t.Errorf("Rules:\n%s", rules)
		}
	})
}

func TestInitConfigErrors(t *testing.T) {
	resolv := writeResolvConf(t, clusterFirst)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dns-port=70000"}, "init: --inbound-port 15006, --outbound-port 15001, --dns-port 70000 or --proxy-uid 1337 out of range"},
		{[]string{"--dns-port=15001"}, "capture: DNSPort 15001 is also OutboundPort"},
		{[]string{"--dns-port=15020"}, "capture: DNSPort 15020 is also the sidecar's health port"},
		{[]string{"--dns-port=x"}, `init: invalid value "x" for flag -dns-port: parse error`},
		{[]string{"--exclude-outbound-ports=*"}, `init: --exclude-outbound-ports: "*" is not allowed in an exclusion list`},
		{[]string{"--log-level=loud"}, `--log-level: slog: level string "loud": unknown name`},
		{[]string{"--outbound-udp=reject"}, `init: --outbound-udp: capture: outbound UDP policy "reject" is not allow or drop`},
		{[]string{"--outbound-udp="}, `init: --outbound-udp: capture: outbound UDP policy "" is not allow or drop`},
	} {
		_, _, _, err := initConfigFor(t, append(tc.args, "--resolv-conf="+resolv)...)
		if err == nil || err.Error() != tc.want {
			t.Errorf("initConfig(%v) = %v, want %q", tc.args, err, tc.want)
		}
	}
	if _, cleanup, _, err := initConfigFor(t, "--cleanup", "--dns-port=70000"); err != nil || !cleanup {
		t.Errorf("--cleanup: cleanup %v, err %v", cleanup, err)
	}
}

func TestInitConfigOutboundUDP(t *testing.T) {
	resolv := writeResolvConf(t, clusterFirst)
	// Without the flag (an injector older than it): allow, as before.
	cfg, _, _, err := initConfigFor(t, append(injectorArgs, "--resolv-conf="+resolv)...)
	if err != nil || cfg.OutboundUDP != capture.UDPAllow {
		t.Fatalf("default: OutboundUDP %q, err %v; want allow", cfg.OutboundUDP, err)
	}
	if rules := capture.Rules(cfg); strings.Contains(rules, "reject") {
		t.Errorf("allow rejects:\n%s", rules)
	}

	cfg, _, logs, err := initConfigFor(t, append(injectorArgs, "--resolv-conf="+resolv, "--outbound-udp=drop")...)
	if err != nil || cfg.OutboundUDP != capture.UDPDrop || logs != "" {
		t.Fatalf("drop: OutboundUDP %q, err %v, logs %q", cfg.OutboundUDP, err, logs)
	}
	rules := capture.Rules(cfg)
	for _, want := range []string{
		"ip daddr 198.18.0.10 udp dport 53 redirect to :15053", // DNS still goes to the DNS proxy
		"udp dport 5432 return",                                // the injector's excluded port covers UDP
		"counter reject comment \"weft: outbound UDP dropped\"",
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("drop: Rules lacks %q:\n%s", want, rules)
		}
	}
	if strings.Contains(rules, "DNS, not captured") {
		t.Errorf("drop with DNS captured lets UDP 53 out:\n%s", rules)
	}

	// The pod's nameservers unknown: DNS leaves rather than break.
	cfg, _, _, err = initConfigFor(t, "--outbound-udp=drop", "--resolv-conf="+filepath.Join(t.TempDir(), "absent"))
	if err != nil {
		t.Fatal(err)
	}
	if rules := capture.Rules(cfg); !strings.Contains(rules, "udp dport 53 return comment \"weft: DNS, not captured\"") {
		t.Errorf("drop without nameservers:\n%s", rules)
	}
}
