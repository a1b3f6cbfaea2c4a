package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/weftmesh/weft/internal/testutil"
)

// fakeBinary writes a file standing in for a static binary.
func fakeBinary(t *testing.T, dir, base, content string) string {
	t.Helper()
	p := filepath.Join(dir, base)
	if err := os.WriteFile(p, []byte(content), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func digest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestBuildDeterministic(t *testing.T) {
	dir := t.TempDir()
	bin := fakeBinary(t, dir, "weft-sidecar", "\x7fELF pretend static binary")
	cfg := Config{Binaries: []string{bin}, Ref: "weft/weft-sidecar:dev"}

	a, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Same content, different mtime and host mode: the digest must not change.
	if err := os.Chtimes(bin, time.Now(), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, a) != digest(t, b) {
		t.Fatalf("same inputs, different digests: %s vs %s", digest(t, a), digest(t, b))
	}

	// Different content: different digest.
	other := fakeBinary(t, t.TempDir(), "weft-sidecar", "\x7fELF another binary")
	c, err := Build(Config{Binaries: []string{other}, Ref: cfg.Ref})
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, a) == digest(t, c) {
		t.Fatal("different binaries gave the same digest")
	}
}

func TestBuildLayout(t *testing.T) {
	dir := t.TempDir()
	one := fakeBinary(t, dir, "weft-controlplane", "cp")
	two := fakeBinary(t, dir, "weftctl", "ctl")
	cfg := Config{Binaries: []string{one, two}, Ref: "weft/weft-controlplane:v1"}
	img, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("platform = %s/%s, want linux/amd64", cf.OS, cf.Architecture)
	}
	if got := strings.Join(cf.Config.Entrypoint, " "); got != "/usr/local/bin/weft-controlplane" {
		t.Errorf("entrypoint = %q", got)
	}
	if !cf.Created.Time.Equal(Epoch) {
		t.Errorf("created = %v, want %v", cf.Created.Time, Epoch)
	}
	hdrs, _ := layerEntries(t, cfg)
	files := map[string]*tar.Header{}
	for _, h := range hdrs {
		files[h.Name] = h
	}
	for _, want := range []string{"usr/local/bin/weft-controlplane", "usr/local/bin/weftctl"} {
		h, ok := files[want]
		if !ok {
			t.Fatalf("%s missing from layer (have %v)", want, files)
		}
		if h.Mode != 0o755 || h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(Epoch) {
			t.Errorf("%s: mode %o uid %d gid %d mtime %v", want, h.Mode, h.Uid, h.Gid, h.ModTime)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	if _, err := Build(Config{}); err == nil {
		t.Error("no binaries: want error")
	}
	if _, err := Build(Config{Binaries: []string{"/does/not/exist"}}); err == nil {
		t.Error("missing binary: want error")
	}
	dir := t.TempDir()
	a := fakeBinary(t, dir, "x", "a")
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	b := fakeBinary(t, sub, "x", "b")
	if _, err := Build(Config{Binaries: []string{a, b}}); err == nil {
		t.Error("two binaries with one name: want error")
	}
	if _, err := Build(Config{Binaries: []string{a}, Ref: "Bad Ref!"}); err == nil {
		t.Error("bad ref: want error")
	}
}

func TestWriteTarReadBack(t *testing.T) {
	dir := t.TempDir()
	bin := fakeBinary(t, dir, "pause", "pause binary")
	const ref = "weft/pause:v0"
	img, err := Build(Config{Binaries: []string{bin}, Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "pause.tar")
	if err := WriteTar(out, ref, img); err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	back, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	if digest(t, back) != digest(t, img) {
		t.Fatalf("read back %s, wrote %s", digest(t, back), digest(t, img))
	}
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(out) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != ref {
		t.Fatalf("manifest.json = %+v, want one image tagged %s", m, ref)
	}
}

func TestPushPullRoundTrip(t *testing.T) {
	// A real registry (go-containerregistry's in-process implementation).
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	bin := fakeBinary(t, t.TempDir(), "weft-injector", "injector binary")
	ref := host + "/weft/weft-injector:dev"
	img, err := Build(Config{Binaries: []string{bin}, Ref: ref})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := Push(ctx, ref, img, PushOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	// Pushing again is a no-op for the blobs and succeeds.
	if err := Push(ctx, ref, img, PushOptions{Insecure: true}); err != nil {
		t.Fatalf("second push: %v", err)
	}

	// Pull it back over the distribution API and check every digest.
	get := func(path, accept string) []byte {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/v2/weft/weft-injector/"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, body := testutil.Do(t, srv.Client(), req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		return []byte(body)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	rawMF := get("manifests/dev", string(mt))
	gotDigest, _, err := v1.SHA256(bytes.NewReader(rawMF))
	if err != nil {
		t.Fatal(err)
	}
	if gotDigest != digest(t, img) {
		t.Fatalf("pulled manifest %s, pushed %s", gotDigest, digest(t, img))
	}
	mf, err := v1.ParseManifest(bytes.NewReader(rawMF))
	if err != nil {
		t.Fatal(err)
	}
	blobs := append([]v1.Descriptor{mf.Config}, mf.Layers...)
	for _, desc := range blobs {
		b := get("blobs/"+desc.Digest.String(), "")
		h, n, err := v1.SHA256(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if h != desc.Digest || n != desc.Size {
			t.Fatalf("blob %s: got %s (%d bytes), want %d bytes", desc.Digest, h, n, desc.Size)
		}
	}

	// The pulled layer holds the binary's bytes at /usr/local/bin.
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(get("blobs/"+mf.Layers[0].Digest.String(), ""))), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatal("usr/local/bin/weft-injector not in pulled image")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "usr/local/bin/weft-injector" {
			continue
		}
		got, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "injector binary" {
			t.Fatalf("pulled binary = %q", got)
		}
		return
	}
}

func TestPushErrors(t *testing.T) {
	img, err := Build(Config{Binaries: []string{fakeBinary(t, t.TempDir(), "x", "x")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := Push(context.Background(), "Bad Ref!", img, PushOptions{}); err == nil {
		t.Error("bad ref: want error")
	}
	// A server that is not a registry.
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/weft/x:dev"
	if err := Push(context.Background(), ref, img, PushOptions{Insecure: true}); err == nil {
		t.Error("push to a non-registry: want error")
	}
}
