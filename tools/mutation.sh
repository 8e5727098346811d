#!/usr/bin/env bash
# Mutation testing (not in CI: hours on two cores). See docs/testing.md.
#
#   tools/mutation.sh MODULE [MODULE ...] -- PYTEST-ARGS...
#   tools/mutation.sh src/auditlock/agent/recovery.py -- tests/test_agent_invariants.py tests/test_agent_ledger.py
#
# Cosmic Ray (pinned, run through `uvx`, nothing added to the lock) mutates each MODULE in place, one mutant at
# a time, and runs `pytest -x PYTEST-ARGS` against it. It does so in a throwaway copy of the committed tree
# (git archive HEAD) with its own virtualenv, because the tests start agent and writer subprocesses that import
# `auditlock` from the source tree: mutating the work tree itself would hand mutants to anything else running
# there. Results: the session database and a `survivors.txt` (every surviving mutant as a diff) under
# $MUTATION_DIR (default /tmp/auditlock-mutation), kept between runs so an interrupted run resumes with
# `MUTATION_DIR=... tools/mutation.sh --resume` (the sources are restored from the run's commit first).
set -euo pipefail

COSMIC_RAY="cosmic-ray==8.7.0"
MUTANT_TIMEOUT_S="${MUTANT_TIMEOUT_S:-120}"
work="${MUTATION_DIR:-/tmp/auditlock-mutation}"
repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
cr() { uvx --from "$COSMIC_RAY" "$@"; }

if [[ "${1:-}" != "--resume" ]]; then
    modules=()
    while [[ $# -gt 0 && "$1" != "--" ]]; do modules+=("$1"); shift; done
    [[ "${1:-}" == "--" && ${#modules[@]} -gt 0 ]] || {
        echo "usage: $0 MODULE... -- PYTEST-ARGS... | $0 --resume" >&2; exit 2; }
    shift
    rm -rf "$work" && mkdir -p "$work/tree"
    git -C "$repo" rev-parse HEAD > "$work/commit"
    git -C "$repo" archive HEAD | tar -x -C "$work/tree"
    (cd "$work/tree" && uv sync --locked --all-extras --quiet)
    module_list=$(printf '"%s", ' "${modules[@]}")
    cat > "$work/cosmic-ray.toml" <<TOML
[cosmic-ray]
module-path = [${module_list%, }]
timeout = ${MUTANT_TIMEOUT_S}
excluded-modules = []
test-command = "$work/tree/.venv/bin/python -m pytest -x -q -p no:cacheprovider -m 'not rgw' $*"

[cosmic-ray.distributor]
name = "local"
TOML
    (cd "$work/tree" && cr cosmic-ray init "$work/cosmic-ray.toml" "$work/session.sqlite")
    (cd "$work/tree" && cr cosmic-ray baseline "$work/cosmic-ray.toml")
else
    # A run stopped mid-mutant leaves that mutant in the copy: restore the sources before going on.
    git -C "$repo" archive "$(cat "$work/commit")" src | tar -x -C "$work/tree"
fi
(cd "$work/tree" && cr cosmic-ray exec "$work/cosmic-ray.toml" "$work/session.sqlite")
cr cr-report "$work/session.sqlite" --show-diff --surviving-only > "$work/survivors.txt" || true
cr cr-report "$work/session.sqlite" | tail -4
echo "surviving mutants: $work/survivors.txt"
