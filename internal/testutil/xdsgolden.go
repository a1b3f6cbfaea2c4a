package testutil

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/sidecar/xds/model"
)

// XDSGoldenFiles are the files of one directory of the control plane
// translator's golden output (controlplane/xds/translate/testdata/golden,
// a directory a sidecar), by the type URL of the resources each lists.
var XDSGoldenFiles = map[string]string{
	model.ListenerType: "listeners.yaml",
	model.ClusterType:  "clusters.yaml",
	model.EndpointType: "endpoints.yaml",
	model.RouteType:    "routes.yaml",
	model.SecretType:   "secrets.yaml",
}

// XDSGolden reads one directory of the translator's golden output: for each
// file of XDSGoldenFiles there (one YAML list of protojson resources), its
// resources in order, as messages of the type registered for the type URL
// (go-control-plane's: the caller imports them). A type whose file is
// missing has no entry; an empty list has an empty one.
func XDSGolden(t testing.TB, dir string) map[string][]proto.Message {
	t.Helper()
	out := map[string][]proto.Message{}
	for typ, file := range XDSGoldenFiles {
		path := filepath.Join(dir, file)
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		js, err := yaml.YAMLToJSON(b)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var items []json.RawMessage
		if err := json.Unmarshal(js, &items); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByURL(typ)
		if err != nil {
			t.Fatal(err)
		}
		msgs := make([]proto.Message, 0, len(items))
		for i, item := range items {
			m := mt.New().Interface()
			if err := protojson.Unmarshal(item, m); err != nil {
				t.Fatalf("%s item %d: %v", path, i, err)
			}
			msgs = append(msgs, m)
		}
		out[typ] = msgs
	}
	return out
}
