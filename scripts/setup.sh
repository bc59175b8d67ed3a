#!/usr/bin/env bash
# Installs what salespulse needs on a fresh Debian machine and is a no-op when it is there:
# Prometheus (with promtool) and Chromium from Debian's packages; checks Java 17+, Maven and cargo.
set -euo pipefail

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# librdkafka 2.12 includes curl.h even when built without curl support.
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || need_apt+=(libcurl4-openssl-dev)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
# OpenSSL: librdkafka's SSL support links it; scripts/kafka.sh makes the local CA with it.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# Headless Chromium renders the quarterly report in its test (and prints it to PDF or PNG).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The Debian package starts a system Prometheus on :9090 where a service manager runs; the
# project runs its own with its own config, so stop that one if it is there.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi

for tool in java mvn cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup: $tool is required but missing" >&2; exit 1; }
done
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [ "${java_major:-0}" -lt 17 ]; then
  echo "setup: Kafka 4 needs Java 17 or newer (found ${java_major:-none})" >&2
  exit 1
fi
