#!/usr/bin/env bash
# Regenerates the Go code of weft's .proto files:
#   api/certificate/v1     the certificate service (messages and gRPC service)
#   sidecar/internal/envoy the sidecar's subset of Envoy's v3 API (messages only)
#
# Usage: hack/genproto.sh [OUTDIR]
# OUTDIR defaults to the repository itself; the freshness test
# (sidecar/internal/envoy/generate_test.go) generates into a temporary
# directory and compares.
#
# Needs protoc 3.21.12 with the well-known types (Debian: protobuf-compiler,
# libprotobuf-dev). The plugins are go.mod's tool dependencies
# (protoc-gen-go v1.36.12, protoc-gen-go-grpc v1.6.2), built from the module
# cache: no network once `go mod download` has run.
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/..}")
cd "$(dirname "$0")/.."

command -v protoc >/dev/null || { echo "genproto: protoc is not on PATH (apt-get install protobuf-compiler libprotobuf-dev)" >&2; exit 1; }

bin=$(mktemp -d)
trap 'rm -rf "${bin}"' EXIT
go build -o "${bin}/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
export PATH="${bin}:${PATH}"

mkdir -p "${out}"
if [[ "${out}" == "$(pwd -P)" ]]; then
  # Generated code of .proto files that no longer exist goes too.
  find sidecar/internal/envoy -name '*.pb.go' -delete
fi

protoc -I . \
  --go_out="${out}" --go_opt=paths=source_relative \
  --go-grpc_out="${out}" --go-grpc_opt=paths=source_relative \
  api/certificate/v1/certificate.proto

mapfile -t envoy < <(find sidecar/internal/envoy -name '*.proto' | LC_ALL=C sort)
protoc -I . --go_out="${out}" --go_opt=paths=source_relative "${envoy[@]}"
