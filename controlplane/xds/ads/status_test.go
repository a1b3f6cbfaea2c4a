package ads

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"

	wefttest "github.com/weftmesh/weft/internal/testutil"
)

func TestTypeState(t *testing.T) {
	nack := func(v string) *NACK { return &NACK{Version: v, Message: "bad"} }
	cases := []struct {
		name string
		ts   typeState
		want string
		st   State
	}{
		{"nothing sent", typeState{}, "v1", StateStale},
		{"sent, no answer", typeState{sent: "v1"}, "v1", StateStale},
		{"ACKed", typeState{sent: "v1", acked: "v1"}, "v1", StateSynced},
		{"ACKed an older one", typeState{sent: "v2", acked: "v1"}, "v2", StateStale},
		{"NACKed the latest", typeState{sent: "v2", acked: "v1", nack: nack("v2")}, "v2", StateNacked},
		{"NACK of an older one, newer sent", typeState{sent: "v3", acked: "v1", nack: nack("v2")}, "v3", StateStale},
		{"NACKed then fixed", typeState{sent: "v3", acked: "v3", nack: nack("v2")}, "v3", StateSynced},
		{"no snapshot", typeState{}, "", StateStale},
	}
	for _, tc := range cases {
		if got := tc.ts.state(tc.want); got != tc.st {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.st)
		}
	}
}

func TestTypeNamesCoverEveryType(t *testing.T) {
	for i := range types.UnknownType {
		url, err := cachev3.GetResponseTypeURL(i)
		if err != nil {
			t.Fatal(err)
		}
		if typeName(url) == "other" {
			t.Errorf("%s has no short name", url)
		}
	}
	if typeName("type.googleapis.com/made.Up") != "other" {
		t.Error("a client-chosen type URL became a label value")
	}
}

func TestStatusJSON(t *testing.T) {
	at := wefttest.Fixed
	b, err := json.Marshal([]NodeStatus{{
		Node: "app-1.demo", Pod: "app-1", Namespace: "demo", SPIFFEID: "spiffe://cluster.local/ns/demo/sa/app", Streams: 1, Connected: at,
		Types: []TypeStatus{{Type: "listener", TypeURL: "type.googleapis.com/envoy.config.listener.v3.Listener", State: StateNacked,
			Version: "b", Sent: "b", SentAt: at, Acked: "a", AckedAt: at, NACKs: 1,
			LastNACK: &NACK{Version: "b", Message: "unsupported filter", Time: at}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"node":"app-1.demo","pod":"app-1","namespace":"demo","spiffeID":"spiffe://cluster.local/ns/demo/sa/app","streams":1,` +
		`"connected":"2001-09-09T01:46:40Z","types":[{"type":"listener","typeURL":"type.googleapis.com/envoy.config.listener.v3.Listener",` +
		`"state":"NACKED","version":"b","sent":"b","sentAt":"2001-09-09T01:46:40Z","acked":"a","ackedAt":"2001-09-09T01:46:40Z","nacks":1,` +
		`"lastNack":{"version":"b","message":"unsupported filter","time":"2001-09-09T01:46:40Z"}}]}]`
	if string(b) != want {
		t.Fatalf("got\n%s\nwant\n%s", b, want)
	}
}

func TestNACKMessageIsBounded(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	connectSotW(h, saID("demo", "app"), "app-1.demo")
	// Drive track directly: the wire path is covered by the round trips.
	h.srv.mu.Lock()
	var st *stream
	for _, s := range h.srv.streams {
		st = s
	}
	st.sent["x"] = sent{nonce: "9", version: "v9"}
	h.srv.track(st, "x", "9", "", statusWith(strings.Repeat("e", 10*maxNACKMessage)))
	got := st.node.types["x"].nack.Message
	h.srv.mu.Unlock()
	if len(got) > maxNACKMessage+len("...(truncated)") || !strings.HasSuffix(got, "...(truncated)") {
		t.Fatalf("NACK message of %d bytes kept", len(got))
	}
}

func statusWith(msg string) *statuspb.Status { return &statuspb.Status{Code: 3, Message: msg} }
