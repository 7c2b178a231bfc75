#!/usr/bin/env bash
# Shared set-up for scripts/test and scripts/demo: installs what the build and the tests need
# when it is missing (Debian packages, the Python JOSE library of the interop tests), and
# nothing else. Sourced, not run.

set -euo pipefail

SNODO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SNODO_ROOT

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages: libxmlsec1 and libxml2 headers for the `xmlsec` bindings (bindgen needs
# libclang), OpenSSL headers, the xmlsec1 tool for interoperability tests; make for jemalloc.
SNODO_DEB_PACKAGES=(curl make pkg-config libssl-dev libxml2-dev libxmlsec1-dev libxmlsec1-openssl libclang-dev xmlsec1 python3-pip)

install_debian_packages() {
    local missing=()
    for p in "${SNODO_DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    # python3-pip only matters when no pip exists at all (a pyenv Python brings its own).
    if python3 -m pip --version >/dev/null 2>&1; then
        local kept=()
        for p in "${missing[@]}"; do [ "$p" = python3-pip ] || kept+=("$p"); done
        missing=("${kept[@]+"${kept[@]}"}")
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

install_python_packages() {
    if ! python3 -c 'import jwcrypto, cryptography' >/dev/null 2>&1; then
        echo "setup: installing jwcrypto" >&2
        python3 -m pip install --quiet --disable-pip-version-check jwcrypto 2>/dev/null \
            || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages jwcrypto
    fi
}

# The SMTP server the connectors' mail test sends through (connectors/tests/smtp/smtp_sink.py):
# Python's aiosmtpd, a real SMTP implementation, listening on 127.0.0.1 only while the test runs.
install_smtp_test_server() {
    if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
        echo "setup: installing aiosmtpd" >&2
        python3 -m pip install --quiet --disable-pip-version-check aiosmtpd 2>/dev/null \
            || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages aiosmtpd
    fi
}

install_rust_components() {
    command -v cargo >/dev/null || { echo "setup: cargo is missing; install Rust (rustup) first" >&2; exit 1; }
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        rustup component add rustfmt clippy
    fi
}

# RabbitMQ on 127.0.0.1:5672 (guest/guest) for the amqp transport's tests: used when one
# answers there (or at SNODO_AMQP_URL), else installed when missing and started.
amqp_answers() {
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

start_rabbitmq() {
    if [ -n "${SNODO_AMQP_URL:-}" ] || amqp_answers; then
        return
    fi
    if ! command -v rabbitmq-server >/dev/null 2>&1; then
        echo "setup: installing rabbitmq-server" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
    fi
    # Installing may have started it as a service already.
    for _ in $(seq 1 50); do amqp_answers && return; sleep 0.2; done
    echo "setup: starting rabbitmq-server" >&2
    as_root rabbitmq-server -detached
    for _ in $(seq 1 300); do
        amqp_answers && return
        sleep 0.2
    done
    echo "setup: RabbitMQ did not open 127.0.0.1:5672 within a minute; see /var/log/rabbitmq" >&2
    exit 1
}

snodo_setup() {
    install_debian_packages
    install_python_packages
    install_smtp_test_server
    install_rust_components
    start_rabbitmq
}
