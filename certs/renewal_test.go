package certs_test

import (
	"math"
	"testing"
	"time"

	"github.com/weftmesh/weft/certs"
	"github.com/weftmesh/weft/internal/testutil"
)

func TestRenewalTime(t *testing.T) {
	nb := testutil.Epoch(t)
	day := nb.Add(24 * time.Hour)
	tests := []struct {
		name      string
		notBefore time.Time
		notAfter  time.Time
		jitter    float64
		want      time.Time
	}{
		{"half-life", nb, day, 0.5, nb.Add(12 * time.Hour)},
		{"earliest", nb, day, 0, nb.Add(12*time.Hour - 144*time.Minute)},
		{"latest", nb, day, 1, nb.Add(12*time.Hour + 144*time.Minute)},
		{"three quarters of the jitter", nb, day, 0.75, nb.Add(12*time.Hour + 72*time.Minute)},
		{"below range clamps to 0", nb, day, -3, nb.Add(12*time.Hour - 144*time.Minute)},
		{"above range clamps to 1", nb, day, 7, nb.Add(12*time.Hour + 144*time.Minute)},
		{"NaN is half-life", nb, day, math.NaN(), nb.Add(12 * time.Hour)},
		{"one year", nb, nb.Add(365 * 24 * time.Hour), 0.5, nb.Add(182*24*time.Hour + 12*time.Hour)},
		{"empty lifetime", nb, nb, 0.5, nb},
		{"inverted lifetime", day, nb, 0.5, day},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := certs.RenewalTime(tc.notBefore, tc.notAfter, tc.jitter); !got.Equal(tc.want) {
				t.Fatalf("RenewalTime(%v, %v, %v) = %v, want %v", tc.notBefore, tc.notAfter, tc.jitter, got, tc.want)
			}
		})
	}
}
