// Command imagetool packs static binaries into container images without a
// container engine: one docker-archive tarball per image (for
// `ctr -n k8s.io images import`), or a push to a registry.
//
//	imagetool -out DIR -tag TAG [-prefix weft/] [-registry HOST:PORT] [-user UID]
//	          [-file /IMAGE/PATH=HOSTPATH ...] NAME=PATH[,PATH...] ...
//
// Each NAME=PATH makes image <prefix><NAME>:<TAG> holding PATH at
// /usr/local/bin/<base name of PATH> (entrypoint: the first PATH), and
// every -file at its path in the image; -user sets the user it runs as. Without
// -registry it writes DIR/<NAME>.tar; with -registry it pushes
// HOST:PORT/<prefix><NAME>:<TAG>. It prints "<ref> <digest> <destination>" per image.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/weftmesh/weft/internal/image"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagetool:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("imagetool", flag.ContinueOnError)
	out := fs.String("out", "_output/images", "directory for the image tarballs")
	tag := fs.String("tag", "dev", "image tag")
	prefix := fs.String("prefix", "weft/", "repository prefix of every image")
	reg := fs.String("registry", "", "push to this registry (host:port) instead of writing tarballs")
	insecure := fs.Bool("insecure", true, "allow plain HTTP to the registry")
	user := fs.String("user", "", "user the images run as (default root)")
	var files []image.File
	fs.Func("file", "/IMAGE/PATH=HOSTPATH: a file to add to every image (repeatable)", func(v string) error {
		at, host, ok := strings.Cut(v, "=")
		if !ok || at == "" || host == "" {
			return fmt.Errorf("want /IMAGE/PATH=HOSTPATH, got %q", v)
		}
		data, err := os.ReadFile(host)
		if err != nil {
			return err
		}
		files = append(files, image.File{Path: at, Data: data})
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: imagetool -out DIR -tag TAG [-registry HOST:PORT] NAME=PATH[,PATH...] ...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("no images given")
	}
	for _, spec := range fs.Args() {
		nm, paths, ok := strings.Cut(spec, "=")
		if !ok || nm == "" || paths == "" {
			return fmt.Errorf("bad image spec %q, want NAME=PATH[,PATH...]", spec)
		}
		ref := *prefix + nm + ":" + *tag
		if *reg != "" {
			ref = strings.TrimSuffix(*reg, "/") + "/" + ref
		}
		img, err := image.Build(image.Config{Binaries: strings.Split(paths, ","), Ref: ref, User: *user, Files: files})
		if err != nil {
			return err
		}
		dgst, err := img.Digest()
		if err != nil {
			return err
		}
		dest := ""
		if *reg != "" {
			if err := image.Push(context.Background(), ref, img, image.PushOptions{Insecure: *insecure}); err != nil {
				return err
			}
			dest = "pushed"
		} else {
			dest = filepath.Join(*out, nm+".tar")
			if err := image.WriteTar(dest, ref, img); err != nil {
				return err
			}
		}
		fmt.Printf("%s %s %s\n", ref, dgst, dest)
	}
	return nil
}
