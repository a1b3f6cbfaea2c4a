package image

import (
	"archive/tar"
	"errors"
	"io"
	"strings"
	"testing"
)

// layerEntries reads the single layer of img: each entry's header, and
// the data of regular files, in the layer's order.
func layerEntries(t *testing.T, cfg Config) ([]*tar.Header, map[string]string) {
	t.Helper()
	img, err := Build(cfg)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var hdrs []*tar.Header
	data := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return hdrs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, h)
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			data[h.Name] = string(b)
		}
	}
}

// Other files land at their paths with their modes, their parent
// directories made before them, and the binaries' layout unchanged.
func TestBuildFiles(t *testing.T) {
	bin := fakeBinary(t, t.TempDir(), "server", "srv")
	hdrs, data := layerEntries(t, Config{Binaries: []string{bin}, User: "1338", Files: []File{
		{Path: "/cert.crt", Data: []byte("CERT")},
		{Path: "/etc/echo/key.pem", Data: []byte("KEY"), Mode: 0o600},
	}})
	var names []string
	mode := map[string]int64{}
	for _, h := range hdrs {
		names = append(names, h.Name)
		mode[h.Name] = h.Mode
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(Epoch) {
			t.Errorf("%s: uid %d gid %d mtime %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
	}
	want := "etc/ etc/echo/ tmp/ usr/ usr/local/ usr/local/bin/ cert.crt etc/echo/key.pem usr/local/bin/server"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("layer entries:\n got %s\nwant %s", got, want)
	}
	for name, m := range map[string]int64{"cert.crt": 0o644, "etc/echo/key.pem": 0o600, "etc/": 0o755, "etc/echo/": 0o755, "tmp/": 01777, "usr/local/bin/server": 0o755} {
		if mode[name] != m {
			t.Errorf("%s: mode %o, want %o", name, mode[name], m)
		}
	}
	if data["cert.crt"] != "CERT" || data["etc/echo/key.pem"] != "KEY" || data["usr/local/bin/server"] != "srv" {
		t.Errorf("file contents: %q", data)
	}
}

// A file path that is not absolute and clean, or that names a place the
// image already has, is refused.
func TestBuildFilesErrors(t *testing.T) {
	bin := fakeBinary(t, t.TempDir(), "server", "srv")
	for name, files := range map[string][]File{
		"relative":            {{Path: "cert.crt"}},
		"not clean":           {{Path: "/etc/../cert.crt"}},
		"root":                {{Path: "/"}},
		"twice":               {{Path: "/a"}, {Path: "/a"}},
		"a binary's path":     {{Path: "/usr/local/bin/server"}},
		"a directory's path":  {{Path: "/usr/local"}},
		"a file as directory": {{Path: "/a"}, {Path: "/a/b"}},
	} {
		if _, err := Build(Config{Binaries: []string{bin}, Files: files}); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}
