package manifests

import (
	"strings"
	"testing"
)

func TestDecodeSkipsEmptyDocuments(t *testing.T) {
	objs, err := Decode([]byte("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# only a comment\n---\n{}\n---\nkind: Secret\nmetadata:\n  name: b\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range objs {
		got = append(got, u.GetKind()+"/"+u.GetName())
	}
	if strings.Join(got, " ") != "ConfigMap/a Secret/b" {
		t.Errorf("objects = %v, want [ConfigMap/a Secret/b]", got)
	}
}

func TestDecodeRefusesGarbage(t *testing.T) {
	objs, err := Decode([]byte("kind: a\n---\nkind: [unclosed"))
	if err == nil || !strings.HasPrefix(err.Error(), "manifests: ") || objs != nil {
		t.Fatalf("Decode = %v, %v; want no objects and a manifests: error", objs, err)
	}
}
