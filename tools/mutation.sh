#!/usr/bin/env bash
# Mutation testing (not in CI: hours on two cores). See docs/testing.md and docs/mutation-survivors.md.
#
#   tools/mutation.sh --preset core [GROUP ...]      the modules issue #14 names, each group with its fast tests
#   tools/mutation.sh --list                          the groups of the core preset and their test commands
#   tools/mutation.sh MODULE [MODULE ...] -- PYTEST-ARGS...
#   tools/mutation.sh --resume                        finish an interrupted MODULE... run (same MUTATION_DIR)
#
# Cosmic Ray (pinned, run through `uvx`, nothing added to the lock) mutates each MODULE in place, one mutant at
# a time, and runs `pytest -x PYTEST-ARGS` against it. It does so in a throwaway copy of the committed tree
# (git archive HEAD) with its own virtualenv, because the tests start agent and writer subprocesses that import
# `auditlock` from the source tree: mutating the work tree itself would hand mutants to anything else running
# there. After `init`, tools/mutation_filter.py marks the mutants that are equivalent by construction (inside
# annotations; `|` -> `+`/`^` between disjoint flag bits) as skipped, and samples the comparison and binary
# operator replacements (MUTATION_ALL_OPERATORS=1 runs them all). Each mutant's tests run in a child forked from
# tools/mutation_runner.py, which has pytest and the third-party imports loaded once per run. Results: the session database and a
# `survivors.txt` (every surviving mutant as a diff) under $MUTATION_DIR (default /tmp/auditlock-mutation; with
# --preset, one directory per group under it). A preset group whose directory already holds a session resumes
# it (delete the directory to start that group afresh at the current commit).
set -euo pipefail

COSMIC_RAY="cosmic-ray==8.7.0"
MUTANT_TIMEOUT_S="${MUTANT_TIMEOUT_S:-120}"
SERVER_START_S=1800  # preloading imports and building the coverage map (one test run); the machine may be loaded
base="${MUTATION_DIR:-/tmp/auditlock-mutation}"
repo="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
filter="$repo/tools/mutation_filter.py"
cr() { uvx --from "$COSMIC_RAY" "$@"; }

# The core preset: GROUP|MODULES|TESTS. The tests are the fastest in-process ones that exercise each group
# (a few seconds a mutant); the cheapest file comes first so that `-x` stops a killed mutant early.
CORE_GROUPS=(
"recovery|src/auditlock/agent/recovery.py|tests/test_agent_recovery.py tests/test_spool_reader.py \
tests/test_agent_invariants.py::TestRecoveryLeavesLiveWritersAlone \
tests/test_agent_invariants.py::TestRecoveryOfStagingFiles"
"reader|src/auditlock/spool/reader.py|tests/test_spool_shipping_check.py tests/test_spool_reader_invariants.py \
tests/test_spool_reader.py tests/test_agent_recovery.py"
"spool|src/auditlock/spool/lines.py src/auditlock/spool/chain.py src/auditlock/spool/segment.py \
src/auditlock/spool/format.py src/auditlock/spool/files.py|tests/test_spool_shipping_check.py \
tests/test_spool_chain_invariants.py tests/test_spool_reader_invariants.py tests/test_spool_reader.py \
tests/test_agent_recovery.py tests/test_spool_writer.py tests/test_spool_enospc.py tests/test_verify_spool.py"
"writer|src/auditlock/spool/writer.py|tests/test_spool_writer.py tests/test_spool_writer_promises.py \
tests/test_spool_writer_durability.py tests/test_spool_enospc.py tests/test_spool_reader.py"
"verify-spool|src/auditlock/verify/spool.py src/auditlock/verify/findings.py|tests/test_verify_spool.py \
tests/test_verify_report.py tests/test_verify_cli.py"
"verify-archive|src/auditlock/verify/events.py src/auditlock/verify/archive.py src/auditlock/verify/digests.py \
src/auditlock/verify/objects.py src/auditlock/verify/source.py src/auditlock/verify/versions.py|\
tests/test_verify_spool.py tests/test_verify_invariants.py tests/test_verify_archive_edges.py \
tests/test_verify_archive_mutants.py"
"shipper|src/auditlock/agent/shipper.py|tests/test_agent_sink_lost.py tests/test_agent_batch_due.py \
tests/test_agent_content_md5.py tests/test_agent_delivery_outcomes.py tests/test_agent_quarantine_counts.py \
tests/test_agent_invariants.py::TestUploadingIntent tests/test_agent_invariants.py::TestSegmentsKeptUntilConfirmed \
tests/test_agent_invariants.py::TestObjectKeysAreDeterministic"
)

init_run() {  # WORK "MODULES" "TESTS": a fresh copy of HEAD, a session, equivalents skipped, a baseline
    local work="$1" modules="$2" tests="$3"
    rm -rf "$work" && mkdir -p "$work/tree"
    git -C "$repo" rev-parse HEAD > "$work/commit"
    git -C "$repo" archive HEAD | tar -x -C "$work/tree"
    (cd "$work/tree" && uv sync --locked --all-extras --quiet)
    "$work/tree/.venv/bin/python" "$repo/tools/mutation_exception_name.py" > /dev/null  # an honest exception replacer
    printf '%s\n' "$tests" > "$work/tests"
    local module_list
    module_list=$(printf '"%s", ' $modules)
    cat > "$work/cosmic-ray.toml" <<TOML
[cosmic-ray]
module-path = [${module_list%, }]
timeout = ${MUTANT_TIMEOUT_S}
excluded-modules = []
test-command = "$work/tree/.venv/bin/python $work/tree/tools/mutation_runner.py run $work/runner.sock"

[cosmic-ray.distributor]
name = "local"
TOML
    (cd "$work/tree" && cr cosmic-ray init "$work/cosmic-ray.toml" "$work/session.sqlite")
    local sample=()
    [[ "${MUTATION_ALL_OPERATORS:-}" == 1 ]] && sample=(--all-operators)
    (cd "$work/tree" && cr python "$filter" "$work/session.sqlite" "$work/tree" "${sample[@]}")
}

start_runner() {  # WORK: the fork server for this run's tests, listening on $work/runner.sock
    local work="$1" tests waited=0 select=()
    unset AUDITLOCK_TEST_ARCHIVE_CACHE
    tests=$(cat "$work/tests")
    rm -f "$work/runner.sock"
    # Per-mutant test selection by coverage (MUTATION_SELECT=0: every test for every mutant). The module list is
    # read from the session's config, so a resumed run selects for the modules it was initialised with.
    [[ "${MUTATION_SELECT:-1}" == 0 ]] || mapfile -t select < <(modules_of "$work")
    [[ ${#select[@]} -eq 0 ]] || select=(--select "${select[@]}")
    # A group that mutates only verify/ cannot change the archive the agent builds for the verify tests: build it
    # once and reuse it (tests/test_verify_invariants.py::pristine).
    if ! modules_of "$work" | grep -qv '^src/auditlock/verify/'; then
        mkdir -p "$work/archive-cache" && export AUDITLOCK_TEST_ARCHIVE_CACHE="$work/archive-cache"
    fi
    # shellcheck disable=SC2086  # the test list is words
    (cd "$work/tree" && exec .venv/bin/python tools/mutation_runner.py serve "$work/runner.sock" \
        "$MUTANT_TIMEOUT_S" "${select[@]}" -- -m "not rgw" $tests) > "$work/runner.log" 2>&1 &
    runner_pid=$!
    trap 'kill "$runner_pid" 2>/dev/null || true' EXIT
    until [[ -S "$work/runner.sock" ]]; do
        kill -0 "$runner_pid" 2>/dev/null || { echo "runner died: $work/runner.log" >&2; exit 1; }
        (( waited++ < SERVER_START_S )) || { echo "runner not up after ${SERVER_START_S}s" >&2; exit 1; }
        sleep 1
    done
}

modules_of() {  # WORK: the modules the session mutates, one a line (from its cosmic-ray.toml)
    sed -n 's/^module-path = \[\(.*\)\]$/\1/p' "$1/cosmic-ray.toml" | tr -d '" ' | tr ',' '\n'
}

exec_run() {  # WORK: run the pending mutants, then write survivors.txt
    local work="$1"
    # A run stopped mid-mutant leaves that mutant in the copy: restore the sources before going on.
    git -C "$repo" archive "$(cat "$work/commit")" src | tar -x -C "$work/tree"
    start_runner "$work"
    (cd "$work/tree" && cr cosmic-ray baseline "$work/cosmic-ray.toml")
    (cd "$work/tree" && cr cosmic-ray exec "$work/cosmic-ray.toml" "$work/session.sqlite")
    kill "$runner_pid" 2>/dev/null || true
    cr cr-report "$work/session.sqlite" --show-diff --surviving-only > "$work/survivors.txt" || true
    cr cr-report "$work/session.sqlite" | tail -4
    echo "surviving mutants: $work/survivors.txt"
}

run_preset() {  # GROUP...: the named groups of the core preset in the order given (all when none is named)
    local wanted=("$@") group entry name modules tests
    [[ ${#wanted[@]} -gt 0 ]] || for entry in "${CORE_GROUPS[@]}"; do wanted+=("${entry%%|*}"); done
    for group in "${wanted[@]}"; do
        for entry in "${CORE_GROUPS[@]}"; do
            IFS='|' read -r name modules tests <<< "$entry"
            [[ "$name" == "$group" ]] || continue
            echo "== $name: $modules"
            mkdir -p "$base"
            exec 9> "$base/$name.lock"  # two presets started over the same directory share out the groups
            flock -n 9 || { echo "$name: another run has it; skipped"; continue 2; }
            [[ -f "$base/$name/session.sqlite" ]] || init_run "$base/$name" "$modules" "$tests"
            exec_run "$base/$name"
            continue 2
        done
        echo "no group '$group' in the core preset (see --list)" >&2; exit 2
    done
}

case "${1:-}" in
    --preset)
        [[ "${2:-}" == "core" ]] || { echo "usage: $0 --preset core [GROUP ...] (see --list)" >&2; exit 2; }
        shift 2; run_preset "$@" ;;
    --list)
        for entry in "${CORE_GROUPS[@]}"; do IFS='|' read -r name modules tests <<< "$entry"
            printf '%s\n  modules: %s\n  tests:   %s\n' "$name" "$modules" "$tests"; done ;;
    --resume)
        exec_run "$base" ;;
    *)
        modules=()
        while [[ $# -gt 0 && "$1" != "--" ]]; do modules+=("$1"); shift; done
        [[ "${1:-}" == "--" && ${#modules[@]} -gt 0 ]] || {
            echo "usage: $0 --preset core [GROUP ...] | $0 MODULE... -- PYTEST-ARGS... | $0 --resume" >&2
            exit 2; }
        shift
        init_run "$base" "${modules[*]}" "$*"
        exec_run "$base" ;;
esac
