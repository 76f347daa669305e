#!/usr/bin/env bash
# Runs every example against a Sticky Calls server that is ALREADY RUNNING: this script does
# not start one. Give it the server and a key of a tenant there:
#
#   STICKY_URL=http://127.0.0.1:8080 STICKY_API_KEY=sc_... examples/run-all.sh
#
# Whatever an example needs and the machine lacks (curl, jq, python3, node, a JDK, ruby,
# php-cli, mono) is installed with apt-get first (as root, Debian). It stops at the first
# example that fails, with a non-zero exit.
set -euo pipefail

: "${STICKY_URL:?set STICKY_URL to the running server, such as http://127.0.0.1:8080}"
: "${STICKY_API_KEY:?set STICKY_API_KEY to an API key of that server}"
export STICKY_URL STICKY_API_KEY
cd "$(dirname "$0")"

# Debian packages to install when their command is missing (apt-get update at most once).
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("${@:2}"); }
need curl curl
need jq jq
need python3 python3
need node nodejs
need java openjdk-17-jdk-headless
need ruby ruby
need php php-cli
need mcs mono-mcs
need mono mono-runtime
# The C# example's assemblies: Debian ships each one in a package of its own.
for package in libmono-system-net-http4.0-cil libmono-system-runtime-serialization4.0-cil \
  libmono-system-xml-linq4.0-cil; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

example() {
  echo
  echo "== $1"
  shift
  "$@"
}

example "cURL: examples/curl/example.sh" bash curl/example.sh
example "Python: examples/python/example.py" python3 python/example.py
example "Node.js: examples/node/example.mjs" node node/example.mjs
example "Ruby: examples/ruby/example.rb" ruby ruby/example.rb
example "PHP: examples/php/example.php" php php/example.php
example "C#: examples/csharp/Example.cs" \
  mcs -r:System.Net.Http -r:System.Runtime.Serialization -r:System.Xml.Linq \
  -out:"$build/Example.exe" csharp/Example.cs
mono "$build/Example.exe"
example "Java: examples/java/Example.java" java java/Example.java

echo
echo "All seven examples passed against $STICKY_URL."
