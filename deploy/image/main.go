package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	repo := flag.String("repo", "../..", "the tkms repository (holding the Dockerfile)")
	version := flag.String("version", "dev", "the version the binary reports (the Dockerfile's VERSION)")
	out := flag.String("out", "", "write the image as a tarball for docker load or podman load to this `file`")
	tag := flag.String("tag", "ghcr.io/tkms-dev/tkms:dev", "the image's name in the tarball")
	flag.Parse()
	if err := run(*repo, *version, *out, *tag); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(repo, version, out, tag string) error {
	img, err := Build(repo, version)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "tkms-rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	v, err := Check(img, dir)
	if err != nil {
		return err
	}
	d, _ := img.Digest()
	fmt.Printf("image %s: checked; tkms version from its file system:\n%s", d, v)
	if out == "" {
		return nil
	}
	return writeTarball(img, out, tag)
}

// writeTarball writes img as a tarball that docker load and podman load
// read, named tag.
func writeTarball(img v1.Image, out, tag string) error {
	ref, err := name.ParseReference(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}
