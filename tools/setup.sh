#!/usr/bin/env bash
# One-time (and cached) setup of a tagstream checkout: .venv, the jars of the local stack, redis-server.
#
# Idempotent: each step leaves a stamp in .cache/stamps/ keyed on a hash of its inputs, so a rerun with
# unchanged requirements.txt, constraints.txt and deps/pom.xml only checks and returns.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
STAMPS=.cache/stamps
JARS=.cache/jars
mkdir -p "$STAMPS"
T0=$(date +%s)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }

# --- checks -------------------------------------------------------------------------------------------
command -v java >/dev/null 2>&1 || die "Java 17 is required (no java on PATH): apt-get install -y openjdk-17-jdk-headless"
java_major=$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n1)
[[ "${java_major:-0}" -ge 17 ]] || die "Java 17 is required (found: ${java_major:-unknown})"
free_kb=$(df -Pk "$REPO" | awk 'NR==2 {print $4}')
(( free_kb >= 2 * 1024 * 1024 )) || die "less than 2 GB free on $(df -P "$REPO" | awk 'NR==2 {print $6}')"

PYTHON=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
      && [[ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" == "3.11" ]]; then
    PYTHON="$candidate"; break
  fi
done
[[ -n "$PYTHON" ]] || die "Python 3.11 is required (python3.11 not found)"

# --- Python venv --------------------------------------------------------------------------------------
venv_key=$(hash_of requirements.txt constraints.txt)
if [[ -x .venv/bin/python ]] && stamp_ok venv "$venv_key"; then
  say "venv up to date"
else
  say "creating .venv and installing requirements (a few minutes the first time)"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
  echo "$venv_key" > "$STAMPS/venv"
  say "venv ready"
fi

# --- jars (Maven Central) -----------------------------------------------------------------------------
jars_key=$(hash_of deps/pom.xml)
if stamp_ok jars "$jars_key" && compgen -G "$JARS/flink/*.jar" >/dev/null && compgen -G "$JARS/kafka/*.jar" >/dev/null \
    && compgen -G "$JARS/dynamodb/native/*.so" >/dev/null; then
  say "jars up to date"
else
  command -v mvn >/dev/null 2>&1 || die "Maven is required to fetch the jars (apt-get install -y maven)"
  say "fetching jars with Maven into $JARS/"
  rm -rf "$JARS/flink" "$JARS/kafka" "$JARS/dynamodb"   # no stale versions on a wildcard classpath
  mvn_log=.cache/maven.log
  : > "$mvn_log"
  for profile in flink kafka dynamodb; do
    goals=(dependency:copy-dependencies)
    [[ "$profile" != dynamodb ]] || goals+=(dependency:copy-dependencies@native)   # the JNI library
    mvn -q -B -f deps/pom.xml -P "$profile" "${goals[@]}" >>"$mvn_log" 2>&1 \
      || { tail -n 40 "$mvn_log" >&2; die "maven failed for profile $profile (full log: $mvn_log)"; }
  done
  echo "$jars_key" > "$STAMPS/jars"
  say "jars ready ($(du -sh "$JARS" | cut -f1))"
fi

# --- redis-server -------------------------------------------------------------------------------------
if command -v redis-server >/dev/null 2>&1; then
  say "redis-server present"
else
  [[ "$(id -u)" -eq 0 ]] || die "redis-server is missing; install it as root: sudo apt-get install -y redis-server"
  say "installing redis-server (apt)"
  # Keep the package from starting a system redis on 6379 (the dev profile's port).
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  [[ -z "$own_policy" ]] || rm -f "$policy"
  command -v redis-server >/dev/null 2>&1 || die "redis-server still not on PATH after apt-get install"
fi

say "done in $(( $(date +%s) - T0 )) s"
