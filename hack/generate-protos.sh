#!/usr/bin/env bash
# Regenerates Sources/XDS/Generated/ from proto/ with protoc, swift-protobuf's protoc-gen-swift and
# grpc-swift-protobuf's protoc-gen-grpc-swift-2. Run by hand after editing proto/; the generated files
# are committed, so builds never run it. The plugins are built once into .build-protoc/ (slow: about 10
# minutes on two cores), at the versions the package resolves.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null; }

tools=.build-protoc
mkdir -p "$tools"
cat > "$tools/Package.swift" <<'SWIFT'
// swift-tools-version:6.0
import PackageDescription

// Only here to build the protoc plugins.
let package = Package(
    name: "protoc-plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.28.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.0.0"),
    ]
)
SWIFT
swift build --package-path "$tools" -c release --product protoc-gen-swift >&2
swift build --package-path "$tools" -c release --product protoc-gen-grpc-swift-2 >&2
bin=$(swift build --package-path "$tools" -c release --show-bin-path)

out=Sources/XDS/Generated
rm -rf "$out"
mkdir -p "$out"
protos=$(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
(cd proto && protoc --plugin="$bin/protoc-gen-swift" --swift_out="../$out" \
   --swift_opt=Visibility=Public --swift_opt=FileNaming=PathToUnderscores $protos)
(cd proto && protoc --plugin="$bin/protoc-gen-grpc-swift-2" --grpc-swift-2_out="../$out" \
   --grpc-swift-2_opt=Visibility=Public,Client=true,Server=true,FileNaming=PathToUnderscores \
   envoy/service/discovery/v3/ads.proto envoy/service/secret/v3/sds.proto istio/security/v1alpha1/ca.proto)
echo "hack/generate-protos.sh: $(ls "$out" | wc -l) files in $out"
