#!/usr/bin/env bash
# Step logic of the modelguard GitHub Action (action.yml at the repository root).
#
# Inputs arrive as environment variables (never spliced into the script text, so
# a path or argument cannot inject shell code):
#   INPUT_PATHS        paths to scan; one per line, or whitespace-separated on one line
#   INPUT_FAIL_ON      info|low|medium|high|critical|never ('' = config or high)
#   INPUT_CONFIG       policy file ('' = the workspace's pyproject.toml, when present)
#   INPUT_LOCK_FILE    modelguard.lock to verify against ('' = no verification)
#   INPUT_LOCK_ROOT    folder the lock file describes ('' = the lock file's folder)
#   INPUT_EXTRA_ARGS   more `modelguard scan` arguments, shell-quoted
#   SARIF_DIR          where SARIF files go
#   MODELGUARD         the modelguard executable (the action's private venv)
#   MODELGUARD_PYTHON  that venv's Python (splits extra-args)
# Writes outputs (scan-sarif, verify-sarif, scan-exit-code, verify-exit-code,
# exit-code) to $GITHUB_OUTPUT and a summary to $GITHUB_STEP_SUMMARY. It exits 0
# whenever reports were written, so the SARIF upload still runs; the action's
# last step fails the job from exit-code.
set -uo pipefail

modelguard="${MODELGUARD:-modelguard}"
python="${MODELGUARD_PYTHON:-python3}"
# No progress bars in a log, huggingface_hub's included (flag > env > config > default).
export MODELGUARD_PROGRESS=0
summary="${GITHUB_STEP_SUMMARY:-/dev/null}"
outputs="${GITHUB_OUTPUT:-/dev/null}"
sarif_dir="${SARIF_DIR:-modelguard-sarif}"
mkdir -p "$sarif_dir"

# Paths: one per line when there are several lines, else split on whitespace.
paths=()
if [[ "${INPUT_PATHS:-}" == *$'\n'* ]]; then
    while IFS= read -r line; do
        line="${line#"${line%%[![:space:]]*}"}"
        line="${line%"${line##*[![:space:]]}"}"
        [[ -n "$line" ]] && paths+=("$line")
    done <<< "$INPUT_PATHS"
else
    read -r -a paths <<< "${INPUT_PATHS:-}"
fi
if [[ ${#paths[@]} -eq 0 ]]; then
    paths=(.)
fi

# Extra arguments: shell-quoted words, split by Python's shlex (no eval).
split_words='import shlex, sys; sys.stdout.write("".join(w + "\0" for w in shlex.split(sys.argv[1])))'
extra=()
if [[ -n "${INPUT_EXTRA_ARGS:-}" ]]; then
    if ! "$python" -c "$split_words" "$INPUT_EXTRA_ARGS" > /dev/null; then
        echo "::error title=modelguard::cannot parse extra-args: $INPUT_EXTRA_ARGS"
        exit 2
    fi
    mapfile -d '' extra < <("$python" -c "$split_words" "$INPUT_EXTRA_ARGS")
fi

policy=()
[[ -n "${INPUT_FAIL_ON:-}" ]] && policy+=(--fail-on "$INPUT_FAIL_ON")
# modelguard never takes policy from inside the tree it checks (a downloaded
# model folder must not choose its own verdict), so scanning "." would skip the
# repository's pyproject.toml. In this workflow the repository is the caller's
# own reviewed code: name its policy explicitly.
if [[ -n "${INPUT_CONFIG:-}" ]]; then
    policy+=(--config "$INPUT_CONFIG")
elif [[ -f pyproject.toml ]]; then
    policy+=(--config pyproject.toml)
fi

scan_sarif="$sarif_dir/modelguard-scan.sarif"
"$modelguard" scan "${paths[@]}" "${policy[@]}" "${extra[@]}" --no-progress \
    --format sarif --output "$scan_sarif"
scan_rc=$?
# The human-readable report for the job summary; the cache makes this rescan free.
scan_text=$("$modelguard" scan "${paths[@]}" "${policy[@]}" "${extra[@]}" --no-progress \
    --no-color --format text 2>&1)

verify_rc=0
verify_sarif=""
verify_text=""
if [[ -n "${INPUT_LOCK_FILE:-}" ]]; then
    lock_root="${INPUT_LOCK_ROOT:-}"
    [[ -z "$lock_root" ]] && lock_root=$(dirname -- "$INPUT_LOCK_FILE")
    verify_sarif="$sarif_dir/modelguard-verify.sarif"
    "$modelguard" verify "$lock_root" --lock "$INPUT_LOCK_FILE" "${policy[@]}" \
        --format sarif --output "$verify_sarif"
    verify_rc=$?
    verify_text=$("$modelguard" verify "$lock_root" --lock "$INPUT_LOCK_FILE" "${policy[@]}" \
        --format text 2>&1)
    [[ -f "$verify_sarif" ]] || verify_sarif=""
fi

# Overall: an error (2) outranks findings (1).
exit_code=0
for rc in "$scan_rc" "$verify_rc"; do
    if [[ "$rc" -ne 0 && ( "$exit_code" -eq 0 || "$rc" -eq 2 ) ]]; then
        exit_code=$rc
    fi
    if [[ "$rc" -gt 2 ]]; then exit_code=2; fi
done

[[ -f "$scan_sarif" ]] || scan_sarif=""
{
    echo "scan-sarif=$scan_sarif"
    echo "verify-sarif=$verify_sarif"
    echo "scan-exit-code=$scan_rc"
    echo "verify-exit-code=$verify_rc"
    echo "exit-code=$exit_code"
} >> "$outputs"

verdict_for() {
    case "$1" in
        0) echo "passed" ;;
        1) echo "failed: findings at or above the fail-on severity" ;;
        *) echo "error: modelguard could not complete (exit $1)" ;;
    esac
}
# GitHub caps a step summary at 1 MiB; keep each report well below it.
limit=200000
{
    echo "## modelguard"
    echo
    echo "**Scan** $(verdict_for "$scan_rc")"
    echo
    echo '```text'
    printf '%s\n' "${scan_text:0:$limit}"
    echo '```'
    if [[ -n "${INPUT_LOCK_FILE:-}" ]]; then
        echo
        echo "**Verify** (\`$INPUT_LOCK_FILE\`) $(verdict_for "$verify_rc")"
        echo
        echo '```text'
        printf '%s\n' "${verify_text:0:$limit}"
        echo '```'
    fi
} >> "$summary"

if [[ -z "$scan_sarif" ]]; then
    echo "::error title=modelguard::modelguard scan wrote no report (exit $scan_rc)"
    exit 2
fi
exit 0
