#!/bin/sh
# Generates the Go package for proto/tollgate/v1/entitlements.proto into
# OUT/tollgatepb (OUT defaults to this directory), as the Go module
# example.com/tollgate-example that main.go imports it from. Needs protoc,
# protoc-gen-go and protoc-gen-go-grpc on PATH. The proto has no
# go_package option: the M flags say which Go package it becomes, so your
# own module can map it wherever it wants.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
module=example.com/tollgate-example
map=Mtollgate/v1/entitlements.proto=$module/tollgatepb
protoc -I "$here/../../proto" \
  --go_out="$out" --go_opt=module=$module --go_opt="$map" \
  --go-grpc_out="$out" --go-grpc_opt=module=$module --go-grpc_opt="$map" \
  tollgate/v1/entitlements.proto
