package testutil

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/weftmesh/weft/internal/manifests"
)

// Objects decodes a multi-document YAML (or JSON) stream, such as the
// rendered install manifests, into its objects, skipping empty documents.
func Objects(t testing.TB, b []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifests.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}
