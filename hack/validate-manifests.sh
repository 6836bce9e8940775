#!/usr/bin/env bash
# Validates deploy/: every Kubernetes manifest against the Kubernetes schema (PyPI's kubernetes-validate,
# strict: unknown fields are errors), every kustomization's resources exist, and every CNI
# configuration is JSON with a capstan-cni entry.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubernetes-validate >/dev/null || python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
validator=(kubernetes-validate)
command -v kubernetes-validate >/dev/null || validator=(python3 -m kubernetes_validate)

manifests=()
while IFS= read -r file; do
  [[ $(basename "$file") == kustomization.yaml ]] || manifests+=("$file")
done < <(find deploy -name '*.yaml' | sort)
"${validator[@]}" --strict --quiet "${manifests[@]}"

python3 - <<'PY'
import json, pathlib, sys
failures = []
for kustomization in pathlib.Path("deploy").rglob("kustomization.yaml"):
    for line in kustomization.read_text().splitlines():
        item = line.strip()
        if item.startswith("- ") and item.endswith(".yaml") and not (kustomization.parent / item[2:]).exists():
            failures.append(f"{kustomization}: resource {item[2:]} does not exist")
for conflist in pathlib.Path("deploy").rglob("*.conflist"):
    try:
        types = [plugin["type"] for plugin in json.loads(conflist.read_text())["plugins"]]
        if "capstan-cni" not in types:
            failures.append(f"{conflist}: no capstan-cni plugin")
    except Exception as error:
        failures.append(f"{conflist}: {error}")
print("\n".join(failures) or f"deploy/: {sum(1 for _ in pathlib.Path('deploy').rglob('*.yaml'))} manifests and their kustomizations valid")
sys.exit(1 if failures else 0)
PY
