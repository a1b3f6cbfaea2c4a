// Package image builds small container images from static binaries without a
// container engine or registry, writes them as docker-archive tarballs that
// `ctr images import` accepts, and pushes them to a registry when one exists.
//
// Images are deterministic: the same binaries and Config give the same digest
// (fixed mtimes, fixed ownership, sorted entries, no build timestamps).
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BinDir is where binaries are placed inside the image.
const BinDir = "/usr/local/bin"

// Epoch is the modification time of every file in a built image and the
// image's creation time; fixed so that builds are reproducible.
var Epoch = time.Unix(0, 0).UTC()

// Config describes an image made of static binaries.
type Config struct {
	// Binaries are host paths of static executables. Each is stored at
	// /usr/local/bin/<base name>, mode 0755, owned by 0:0.
	Binaries []string
	// Entrypoint of the image; default: the first binary.
	Entrypoint []string
	// Cmd are default arguments.
	Cmd []string
	// Env adds environment variables ("K=V"); PATH is always set.
	Env []string
	// User the container runs as (e.g. "65532" or "1337:1337"); empty means root.
	User string
	// Ref is the image reference, e.g. "weft/weft-sidecar:dev". Build only
	// validates it; WriteTar and Push use it.
	Ref string
	// Platform of the image; default linux/amd64.
	Platform *v1.Platform
	// Labels are added to the image config.
	Labels map[string]string
	// Files are other regular files, each at its absolute path in the
	// image (parent directories are made, mode 0755), owned by 0:0.
	Files []File
}

// File is a regular file of an image.
type File struct {
	Path string // absolute and clean, e.g. "/cert.crt"
	Data []byte
	Mode int64 // permission bits; 0 means 0644
}

// Build makes a single-layer image holding cfg.Binaries.
func Build(cfg Config) (v1.Image, error) {
	if len(cfg.Binaries) == 0 {
		return nil, errors.New("image: no binaries")
	}
	if cfg.Ref != "" {
		if _, err := name.ParseReference(cfg.Ref); err != nil {
			return nil, fmt.Errorf("image: bad reference %q: %w", cfg.Ref, err)
		}
	}
	plat := v1.Platform{OS: "linux", Architecture: "amd64"}
	if cfg.Platform != nil {
		plat = *cfg.Platform
	}

	layerTar, err := layerBytes(cfg.Binaries, cfg.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Author:    "weft",
			Created:   v1.Time{Time: Epoch},
			CreatedBy: "weft internal/image.Build",
			Comment:   "static binaries in " + BinDir,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("image: append layer: %w", err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = plat.OS
	cf.Architecture = plat.Architecture
	cf.Variant = plat.Variant
	cf.OSVersion = plat.OSVersion
	cf.Created = v1.Time{Time: Epoch}
	cf.Author = "weft"
	cf.Config.Entrypoint = cfg.Entrypoint
	if len(cf.Config.Entrypoint) == 0 {
		cf.Config.Entrypoint = []string{path.Join(BinDir, filepath.Base(cfg.Binaries[0]))}
	}
	cf.Config.Cmd = cfg.Cmd
	cf.Config.Env = append([]string{"PATH=" + BinDir + ":/usr/bin:/bin"}, cfg.Env...)
	cf.Config.User = cfg.User
	cf.Config.WorkingDir = "/"
	if len(cfg.Labels) > 0 {
		cf.Config.Labels = make(map[string]string, len(cfg.Labels))
		for k, v := range cfg.Labels {
			cf.Config.Labels[k] = v
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image: set config: %w", err)
	}
	return img, nil
}

// layerBytes returns an uncompressed tar holding the directories up to
// BinDir, an empty /tmp, the binaries, and the other files with their
// parent directories.
func layerBytes(binaries []string, extra []File) ([]byte, error) {
	type file struct {
		name string
		data []byte
		mode int64
	}
	seen := map[string]string{}
	files := make([]file, 0, len(binaries))
	for _, b := range binaries {
		base := filepath.Base(b)
		if prev, ok := seen[base]; ok {
			return nil, fmt.Errorf("image: %s and %s have the same name in the image", prev, b)
		}
		seen[base] = b
		st, err := os.Stat(b)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("image: %s is not a regular file", b)
		}
		data, err := os.ReadFile(b)
		if err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
		files = append(files, file{name: path.Join(BinDir, base)[1:], data: data, mode: 0o755})
	}
	dirs := []struct {
		name string
		mode int64
	}{{"tmp/", 01777}, {"usr/", 0o755}, {"usr/local/", 0o755}, {"usr/local/bin/", 0o755}}
	made := map[string]bool{}
	for _, d := range dirs {
		made[d.name] = true
	}
	named := map[string]bool{}
	for _, f := range files {
		named[f.name] = true
	}
	for _, f := range extra {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("image: file path %q: want an absolute, clean path", f.Path)
		}
		n := f.Path[1:]
		if named[n] || made[n+"/"] {
			return nil, fmt.Errorf("image: %s is in the image twice", f.Path)
		}
		named[n] = true
		for d := path.Dir(n); d != "."; d = path.Dir(d) {
			if named[d] {
				return nil, fmt.Errorf("image: %s is a file and a directory", "/"+d)
			}
			if !made[d+"/"] {
				made[d+"/"] = true
				dirs = append(dirs, struct {
					name string
					mode int64
				}{d + "/", 0o755})
			}
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		files = append(files, file{name: n, data: f.Data, mode: mode})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	sort.SliceStable(dirs, func(i, j int) bool { return dirs[i].name < dirs[j].name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(name string, typ byte, mode int64, size int64) *tar.Header {
		return &tar.Header{
			Typeflag: typ, Name: name, Mode: mode, Size: size,
			Uid: 0, Gid: 0, Uname: "root", Gname: "root",
			ModTime: Epoch, AccessTime: Epoch, ChangeTime: Epoch,
			Format: tar.FormatPAX,
		}
	}
	for _, d := range dirs {
		if err := tw.WriteHeader(hdr(d.name, tar.TypeDir, d.mode, 0)); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if err := tw.WriteHeader(hdr(f.name, tar.TypeReg, f.mode, int64(len(f.data)))); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteTar writes img as a docker-archive tarball tagged ref (manifest.json
// with RepoTags, the config, one gzip layer) to path, atomically.
func WriteTar(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("image: tag %q: %w", ref, err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".image-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tarball.Write(tag, img, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("image: write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// PushOptions tune Push.
type PushOptions struct {
	// Insecure allows plain HTTP (go-containerregistry's name package already
	// picks HTTP for localhost, loopback and RFC 1918 registries).
	Insecure bool
	// Username and Password, if set, are sent as HTTP basic auth.
	Username, Password string
	// Client sends the requests; default http.DefaultClient.
	Client *http.Client
}

// Push uploads img to the registry named in ref, e.g.
// "127.0.0.1:5000/weft/weft-sidecar:dev", using the OCI distribution API
// (blob uploads, then the manifest). It speaks to anonymous or basic-auth
// registries such as a local test registry; bearer-token registries are out
// of scope (go-containerregistry's remote package handles those, but it needs
// github.com/docker/cli and friends listed in the root go.mod).
func Push(ctx context.Context, ref string, img v1.Image, opts PushOptions) error {
	var nopts []name.Option
	if opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return fmt.Errorf("image: reference %q: %w", ref, err)
	}
	repo := r.Context()
	p := pusher{
		ctx:    ctx,
		opts:   opts,
		client: opts.Client,
		base:   fmt.Sprintf("%s://%s/v2/%s", repo.Registry.Scheme(), repo.RegistryStr(), repo.RepositoryStr()),
	}
	if p.client == nil {
		p.client = http.DefaultClient
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("image: push %s: %w", ref, err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return fmt.Errorf("image: push %s: %w", ref, err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("image: push %s: %w", ref, err)
		}
		if err := p.blob(d, size, l.Compressed); err != nil {
			return fmt.Errorf("image: push %s: layer %s: %w", ref, d, err)
		}
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("image: push %s: %w", ref, err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("image: push %s: %w", ref, err)
	}
	if err := p.blob(cfgName, int64(len(cfg)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(cfg)), nil
	}); err != nil {
		return fmt.Errorf("image: push %s: config: %w", ref, err)
	}
	mf, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("image: push %s: %w", ref, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return fmt.Errorf("image: push %s: %w", ref, err)
	}
	resp, err := p.do(http.MethodPut, p.base+"/manifests/"+r.Identifier(), string(mt), int64(len(mf)), bytes.NewReader(mf))
	if err != nil {
		return fmt.Errorf("image: push %s: manifest: %w", ref, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("image: push %s: manifest: %s", ref, resp.Status)
	}
	return nil
}

type pusher struct {
	ctx    context.Context
	opts   PushOptions
	client *http.Client
	base   string
}

func (p *pusher) do(method, url, contentType string, size int64, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(p.ctx, method, url, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", contentType)
	}
	if p.opts.Username != "" || p.opts.Password != "" {
		req.SetBasicAuth(p.opts.Username, p.opts.Password)
	}
	return p.client.Do(req)
}

// blob uploads one blob unless the registry already has it (monolithic upload).
func (p *pusher) blob(d v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
	resp, err := p.do(http.MethodHead, p.base+"/blobs/"+d.String(), "", 0, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	resp, err = p.do(http.MethodPost, p.base+"/blobs/uploads/", "", 0, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("start upload: %s", resp.Status)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("start upload: bad Location %q", resp.Header.Get("Location"))
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	resp, err = p.do(http.MethodPut, loc.String(), "application/octet-stream", size, rc)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("upload: %s", resp.Status)
	}
	return nil
}
