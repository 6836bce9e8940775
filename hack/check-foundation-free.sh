#!/usr/bin/env bash
# Fails if a capstan binary links Foundation or carries ICU: no libFoundation*/ICU libraries among the
# shared objects it needs, no symbol of the Foundation or FoundationInternationalization modules or of ICU,
# and no ICU data. FoundationEssentials (Foundation's ICU-free core, which swift-certificates and
# SwiftProtobuf use) is allowed.
#
#   hack/check-foundation-free.sh BINARY
set -euo pipefail
binary=${1:?usage: hack/check-foundation-free.sh BINARY}
problems=()

needed=$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
for library in $needed; do
  case $library in
    libFoundation.so*|libFoundationInternationalization.so*|libFoundationNetworking.so*|libFoundationXML.so*|lib_FoundationICU.so*|libicu*)
      problems+=("links $library") ;;
  esac
done

# Swift mangles a module's name with its length: 10Foundation, 26FoundationInternationalization, 14_FoundationICU.
symbols=$(nm --defined-only "$binary" 2>/dev/null | grep -cE '\$s(10Foundation|26FoundationInternationalization|14_FoundationICU)[0-9A-Z_]' || true)
[ "$symbols" = 0 ] || problems+=("$symbols symbols of Foundation, FoundationInternationalization or _FoundationICU")
icu=$(nm --defined-only "$binary" 2>/dev/null | grep -cE ' (ucol_open|ubrk_open|udat_open|u_strToUpper)(_[0-9]+)?$' || true)
[ "$icu" = 0 ] || problems+=("$icu ICU functions")
if grep -qa 'icudt[0-9][0-9]' "$binary"; then problems+=("ICU data (icudt)"); fi

if ((${#problems[@]})); then
  for problem in "${problems[@]}"; do echo "hack/check-foundation-free.sh: $binary: $problem" >&2; done
  exit 1
fi
echo "hack/check-foundation-free.sh: $binary: no Foundation, no ICU ($(du -m "$binary" | cut -f1) MB)"
