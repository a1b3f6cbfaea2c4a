package audit

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/testutil"
)

// sample is an event at the fixed instant: its JSON is compared with a
// literal.
func sample() Event {
	return Event{ID: "a1b2-7", Time: testutil.Fixed,
		SourceID: "spiffe://cluster.local/ns/shop/sa/web", Pod: "web-1", Namespace: "shop",
		DstHost: "api.example.com", DstIP: netip.MustParseAddr("198.51.100.4"), DstPort: 443,
		SNI: "api.example.com", Protocol: ProtocolTLS, Decision: "allow", Policy: "shop/egress", Rule: "0",
		Chain: "egress-tls", BytesSent: 1200, BytesReceived: 48000, Duration: 1500 * time.Millisecond}
}

func TestJSONRoundTrip(t *testing.T) {
	e := sample()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"id":"a1b2-7","time":"2001-09-09T01:46:40Z","sourceSpiffeId":"spiffe://cluster.local/ns/shop/sa/web",` +
		`"pod":"web-1","namespace":"shop","dstHost":"api.example.com","dstIp":"198.51.100.4","dstPort":443,` +
		`"sni":"api.example.com","protocol":"tls","decision":"allow","policy":"shop/egress","rule":"0",` +
		`"chain":"egress-tls","bytesSent":1200,"bytesReceived":48000,"duration":"1.5s"}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, e) {
		t.Errorf("round trip\n got %+v\nwant %+v", back, e)
	}
}

// The sidecar's JSON line is the event with "log" first; reading it back
// ignores "log".
func TestMarshalLine(t *testing.T) {
	e := sample()
	line, err := MarshalLine(e)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(line, []byte(`{"log":"weft-egress","id":"a1b2-7",`)) || !bytes.HasSuffix(line, []byte("\"duration\":\"1.5s\"}\n")) ||
		bytes.Count(line, []byte("\n")) != 1 {
		t.Errorf("line %q", line)
	}
	var fields map[string]any
	if err := json.Unmarshal(line, &fields); err != nil || fields["log"] != LogName {
		t.Fatalf("line is not one JSON object with log=%s: %v %v", LogName, err, fields)
	}
	var back Event
	if err := json.Unmarshal(line, &back); err != nil || !reflect.DeepEqual(back, e) {
		t.Errorf("read back %+v, %v", back, err)
	}
}

func TestUnmarshalErrors(t *testing.T) {
	for _, in := range []string{
		`{"duration":"soon"}`,
		`{"dstIp":"not-an-ip"}`,
		`{"dstPort":70000}`,
		`{"time":"yesterday"}`,
		`[]`,
	} {
		var e Event
		if err := json.Unmarshal([]byte(in), &e); err == nil {
			t.Errorf("%s: accepted as %+v", in, e)
		}
	}
}

func TestDestination(t *testing.T) {
	for _, tc := range []struct {
		e    Event
		want string
	}{
		{Event{DstHost: "api.example.com", DstIP: netip.MustParseAddr("198.51.100.4"), DstPort: 443}, "api.example.com:443"},
		{Event{DstIP: netip.MustParseAddr("198.51.100.4"), DstPort: 5432}, "198.51.100.4:5432"},
		{Event{DstIP: netip.MustParseAddr("::ffff:198.51.100.4"), DstPort: 80}, "198.51.100.4:80"},
		{Event{DstIP: netip.MustParseAddr("2001:db8::1"), DstPort: 443}, "[2001:db8::1]:443"},
		{Event{DstPort: 9}, "unknown:9"},
	} {
		if got := tc.e.Destination(); got != tc.want {
			t.Errorf("%+v: Destination() = %q, want %q", tc.e, got, tc.want)
		}
	}
}

// FuzzEventJSON: whatever JSON is accepted as an event is written back as
// JSON that reads as the same event.
func FuzzEventJSON(f *testing.F) {
	b, _ := json.Marshal(sample())
	f.Add(b)
	line, _ := MarshalLine(sample())
	f.Add(line)
	f.Add([]byte(`{"dstIp":"::ffff:1.2.3.4","duration":"-3h0.5s"}`))
	f.Add([]byte(`{"time":"2026-01-01T00:00:00.123456789+05:30","dstIp":""}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var e Event
		if err := json.Unmarshal(in, &e); err != nil {
			return
		}
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("accepted %q but cannot write it back: %v", in, err)
		}
		var back Event
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("wrote %q, which does not read back: %v", out, err)
		}
		if !back.Time.Equal(e.Time) {
			t.Fatalf("time %v became %v", e.Time, back.Time)
		}
		back.Time, e.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(back, e) {
			t.Fatalf("%q -> %+v -> %q -> %+v", in, e, out, back)
		}
	})
}
