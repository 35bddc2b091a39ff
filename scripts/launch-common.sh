# launch-common.sh — what the run scripts (scripts/run-*.sh) share: the
# hostfile choice, the run directory (fresh or resumed), the report of
# slime flags quench does not have yet, and the final `quench launch`.
# Sourced by those scripts, never run on its own.
#
# Variables a run script sets before calling these:
#   QUENCH             the quench binary
#   NOT_YET_SUPPORTED  pairs: "slime flag [value...]" "one-line reason"
#
# Leaves out: anything a script's own arrays hold (the recipe itself).
# shellcheck shell=bash disable=SC2034 # HOSTFILE_ARGS, RUN_DIR_ARGS: read by the run scripts

# qn_report_not_yet_supported: one "not yet supported: FLAG (REASON)" line on
# stderr per pair of NOT_YET_SUPPORTED; nothing of it reaches quench, which
# would refuse it ("unknown flag --x", exit status 2).
qn_report_not_yet_supported() {
    local i
    for ((i = 0; i + 1 < ${#NOT_YET_SUPPORTED[@]}; i += 2)); do
        echo "not yet supported: ${NOT_YET_SUPPORTED[i]} (${NOT_YET_SUPPORTED[i + 1]})" >&2
    done
}

# qn_wants_dry_run ARGS...: true when ARGS (the script's own arguments) ask
# for a dry run.
qn_wants_dry_run() {
    local a
    for a in "$@"; do
        case $a in
        --dry-run | --dry-run=true | --dry-run=1) return 0 ;;
        esac
    done
    return 1
}

# qn_hostfile_args NODES GPUS_PER_NODE ARGS...: sets HOSTFILE_ARGS.
#   HOSTFILE set: --hostfile "$HOSTFILE".
#   unset, NODES 1, or under Slurm (SLURM_JOB_NODELIST set): nothing; the
#     launcher runs locally or on the Slurm allocation.
#   unset, --dry-run among ARGS: an example hostfile of NODES lines
#     "node<k> slots=GPUS_PER_NODE" in a temporary folder (removed when the
#     script ends), so that the plan of the whole cluster can be read
#     anywhere; a note on stderr says so.
#   unset otherwise: an error (status 2): a multi-node job needs its nodes.
QN_EXAMPLE_DIR=
qn_hostfile_args() {
    local nodes=$1 gpus=$2
    shift 2
    HOSTFILE_ARGS=()
    if [ -n "${HOSTFILE:-}" ]; then
        HOSTFILE_ARGS=(--hostfile "$HOSTFILE")
    elif [ "$nodes" -le 1 ] || [ -n "${SLURM_JOB_NODELIST:-}" ]; then
        :
    elif qn_wants_dry_run "$@"; then
        QN_EXAMPLE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/quench-hosts.XXXXXX")
        local k
        for ((k = 0; k < nodes; k++)); do echo "node$k slots=$gpus"; done \
            >"$QN_EXAMPLE_DIR/hostfile"
        echo "HOSTFILE unset: planning with an example hostfile of $nodes nodes" \
            "(node0..node$((nodes - 1)), slots=$gpus)" >&2
        HOSTFILE_ARGS=(--hostfile "$QN_EXAMPLE_DIR/hostfile")
    else
        echo "$(basename "$0"): set HOSTFILE to the job's $nodes nodes, one" \
            "'HOST slots=$gpus' line each, this machine first (or run under Slurm;" \
            "--dry-run plans with an example hostfile)" >&2
        exit 2
    fi
}

# qn_run_dir_args DIR: sets RUN_DIR_ARGS: --load DIR when DIR holds a
# launched job (its launch.json: the job resumes from its Redis state and
# last checkpoint, as slime's --load resumes from its --save folder), else
# --run-dir DIR (a fresh job).
qn_run_dir_args() {
    if [ -f "$1/launch.json" ]; then
        RUN_DIR_ARGS=(--load "$1")
    else
        RUN_DIR_ARGS=(--run-dir "$1")
    fi
}

# qn_launch ARGS...: runs `quench launch ARGS`. The launcher replaces the
# shell (so that signals reach it directly) unless an example hostfile has
# to be removed afterwards.
qn_launch() {
    if [ ! -x "$QUENCH" ]; then
        echo "$(basename "$0"): $QUENCH is not an executable (build it with" \
            "scripts/build.sh, or set QUENCH)" >&2
        exit 2
    fi
    if [ -z "$QN_EXAMPLE_DIR" ]; then
        exec "$QUENCH" launch "$@"
    fi
    local rc=0
    "$QUENCH" launch "$@" || rc=$?
    rm -rf "$QN_EXAMPLE_DIR"
    exit "$rc"
}
