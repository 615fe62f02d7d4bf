#!/usr/bin/env bash
# What the test suite needs beyond Python packages, from Debian's packages: `make test` runs this
# first, so a fresh machine (and CI) gets them; a part that cannot be had stops here, loudly,
# instead of failing (or worse, skipping) tests one by one.
set -euo pipefail

# tests/e2e/test_deployment.py runs a federation across Linux network namespaces: it needs
# iproute2 and the right to make namespaces. Install the one, prove the other, or stop loudly.
if ! command -v ip >/dev/null 2>&1; then
    echo "make test: installing iproute2 for the network namespace tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
probe="shoal-ci-probe-$$"
if ! ip netns add "$probe"; then
    echo "make test: cannot create a network namespace (root and CAP_SYS_ADMIN needed): the deployment tests cannot run" >&2
    exit 1
fi
ip netns del "$probe"

# The job store's contract and e2e tests start a throwaway PostgreSQL server of their own
# (tests/pgserver.py) from Debian's packages; runuser (util-linux) runs it as nobody under root.
# Install it when missing, and fail here rather than let the PostgreSQL tests fail one by one.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "make test: installing PostgreSQL for the job store tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "make test: PostgreSQL is not installed (/usr/lib/postgresql/<version>/bin/initdb): the store tests cannot run" >&2
    exit 1
fi

# tests/e2e/test_terminal_views.py runs the generated completion scripts in real bash and zsh.
if ! command -v zsh >/dev/null 2>&1; then
    echo "make test: installing zsh for the shell completion tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zsh >/dev/null
fi


# tests/e2e/test_dashboard.py drives the dashboard in a real headless browser: Debian's
# chromium through Playwright (never a browser Playwright downloads itself).
if ! command -v chromium >/dev/null 2>&1; then
    echo "make test: installing chromium for the dashboard's browser tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
    echo "make test: chromium is not installed (Debian's chromium package, /usr/bin/chromium): the dashboard tests cannot run" >&2
    exit 1
fi

# tests/faults/test_replicas.py puts Debian's HAProxy (TCP mode, TLS passed through) in front of
# two server replicas (tests/haproxy.py).
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    echo "make test: installing haproxy for the server replica tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    echo "make test: haproxy is not installed (Debian's haproxy package): the replica tests cannot run" >&2
    exit 1
fi
