#!/usr/bin/env bash
# What srun runs on each node of a serving job (slurm/serve.sbatch ROLE ...):
# one vLLM replica per TP GPUs of this node. Each replica is watched: once it answers GET /v1/models (with the key)
# it is registered up in ENDPOINTS_DIR/ROLE.endpoints.json; when its process exits it is marked down, started
# again after RESTART_DELAY_S, and registered again once it answers. SIGTERM (scancel, requeue, time limit) stops
# every replica and marks it down. The sbatch script has already run `python -m autodata.endpoints init`, which
# makes the key file ENDPOINTS_DIR/ROLE.key (0600) and starts the endpoints file.
#   slurm/serve_node.sh ROLE MODEL ENDPOINTS_DIR [extra `vllm serve` arguments...]
# Everything else comes from the environment, with defaults, so it runs without SLURM or GPUs (tests/test_serve_scripts.py):
#   TP               GPUs per replica (tensor parallel); replicas on this node = GPUS / TP              (1)
#   GPUS             GPUs to use: SLURM_GPUS_ON_NODE, else the count of CUDA_VISIBLE_DEVICES, else nvidia-smi's
#   PORT_BASE        replica r listens on PORT_BASE + r                                                   (8000)
#   SERVE_HOST       the address vLLM binds, and the one in the registered URL. Default: this node's cluster
#                    address, the first non-loopback address its hostname resolves to (getent ahostsv4), else
#                    the first of `hostname -I`. SERVE_HOST=0.0.0.0 binds every interface (the URL keeps the
#                    cluster address); anyone who reaches the port still needs the key
#   VLLM_BIN         the vllm executable                                                                  (vllm)
#   PYTHON           a python with autodata installed                                          (.venv/bin/python)
#   READY_TIMEOUT_S  seconds a replica may take from start to answering GET /v1/models                   (3600)
#   READY_POLL_S     seconds between those checks                                                         (5)
#   RESTART_DELAY_S  pause before a replica that exited is started again                                 (30)
#   RESTART_LIMIT    a replica that exits this many times in a row without ever answering is given up     (3)
#   STOP_GRACE_S     seconds a replica has to exit after SIGTERM before it is killed                      (20)
#   LOG_DIR          one log per replica: LOG_DIR/ROLE.NODE.PORT.log                     (ENDPOINTS_DIR/logs)
#   REASONING_PARSER vLLM's --reasoning-parser for every replica (qwen3 for Qwen3/Qwen3.5): the reasoning comes back
#                    apart from the answer, and structured output applies after the reasoning; empty: none  (empty)
#   SKIP_MEMORY_CHECK=1  start vLLM even when the memory pre-flight refuses                                 (0)
# The memory pre-flight: before any replica starts, `$PYTHON -m autodata.hardware MODEL --tp TP -- ARGS` compares
# the weights (the *.safetensors of a local MODEL folder, else autodata/hardware.py's table of known checkpoints)
# with the memory of TP GPUs (nvidia-smi) x --gpu-memory-utilization (0.9), and when they cannot hold them this
# script exits 2 naming the fix (the FP8 checkpoint, more GPUs per replica, larger GPUs). Without nvidia-smi, or
# for a checkpoint of unknown size, nothing is checked.
# The key reaches vLLM as VLLM_API_KEY in its environment, which vLLM reads like --api-key: on the command line it
# would show in `ps` to every user of the node, and vLLM prints its non-default arguments into its log.
set -euo pipefail

ROLE=${1:?usage: serve_node.sh ROLE MODEL ENDPOINTS_DIR [vllm serve args...]}
MODEL=${2:?usage: serve_node.sh ROLE MODEL ENDPOINTS_DIR [vllm serve args...]}
DIR=${3:?usage: serve_node.sh ROLE MODEL ENDPOINTS_DIR [vllm serve args...]}
shift 3
EXTRA=("$@")
FILE="$DIR/$ROLE.endpoints.json"
KEY_FILE="$DIR/$ROLE.key"
TP=${TP:-1}
PORT_BASE=${PORT_BASE:-8000}
VLLM_BIN=${VLLM_BIN:-vllm}
PYTHON=${PYTHON:-.venv/bin/python}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-3600}
READY_POLL_S=${READY_POLL_S:-5}
RESTART_DELAY_S=${RESTART_DELAY_S:-30}
RESTART_LIMIT=${RESTART_LIMIT:-3}
STOP_GRACE_S=${STOP_GRACE_S:-20}
LOG_DIR=${LOG_DIR:-$DIR/logs}
REASONING_PARSER=${REASONING_PARSER:-}
SKIP_MEMORY_CHECK=${SKIP_MEMORY_CHECK:-0}
NODE=$(hostname -s 2>/dev/null || hostname)
NODE_ID=${SLURM_NODEID:-0}

say() { echo "[serve_node $ROLE node $NODE_ID ($NODE)] $*"; }
die() { say "$*" >&2; exit 2; }
endpoints() { "$PYTHON" -m autodata.endpoints "$@"; }

[[ -s $KEY_FILE ]] || die "no key file $KEY_FILE; the sbatch script makes it: $PYTHON -m autodata.endpoints init --file $FILE --role $ROLE --model $MODEL"
API_KEY=$(<"$KEY_FILE")

cluster_address() {
  local addr
  addr=$(getent ahostsv4 "$(hostname)" 2>/dev/null | awk '$1 !~ /^127\./ {print $1; exit}') || true
  if [[ -z $addr ]]; then
    addr=$(hostname -I 2>/dev/null | awk '{print $1}') || true
  fi
  echo "$addr"
}
BIND=${SERVE_HOST:-$(cluster_address)}
[[ -n $BIND ]] || die "found no cluster address for $NODE (getent ahostsv4, hostname -I); set SERVE_HOST=<this node's address>"
case $BIND in
  0.0.0.0 | :: | "[::]") ADVERTISE=$(cluster_address) ;;
  *) ADVERTISE=$BIND ;;
esac
[[ -n $ADVERTISE ]] || die "SERVE_HOST=$BIND binds every interface, but no cluster address was found for the URL; set SERVE_HOST to one address"

DEVICES=()
if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
  IFS=, read -ra DEVICES <<<"$CUDA_VISIBLE_DEVICES"
fi
if [[ -z ${GPUS:-} ]]; then
  if [[ -n ${SLURM_GPUS_ON_NODE:-} ]]; then
    GPUS=$SLURM_GPUS_ON_NODE
  elif ((${#DEVICES[@]})); then
    GPUS=${#DEVICES[@]}
  elif command -v nvidia-smi >/dev/null; then
    GPUS=$(nvidia-smi --list-gpus | wc -l)
  else
    die "cannot tell how many GPUs this node has (no SLURM_GPUS_ON_NODE, CUDA_VISIBLE_DEVICES or nvidia-smi); set GPUS=N"
  fi
fi
if ((${#DEVICES[@]} == 0)); then
  for ((g = 0; g < GPUS; g++)); do DEVICES+=("$g"); done
fi
((${#DEVICES[@]} >= GPUS)) || die "GPUS=$GPUS but CUDA_VISIBLE_DEVICES lists ${#DEVICES[@]} devices; lower GPUS"
REPLICAS=$((GPUS / TP))
((REPLICAS >= 1)) || die "TP=$TP needs $TP GPUs per replica, this node has $GPUS; lower TP or ask for more GPUs per node"
# Weights that TP GPUs cannot hold would fail only after minutes of loading, once per restart: refuse them now.
if [[ $SKIP_MEMORY_CHECK != 1 ]]; then
  "$PYTHON" -m autodata.hardware "$MODEL" --tp "$TP" -- "${EXTRA[@]}" \
    || die "not starting $MODEL: TP=$TP GPU(s) of this node cannot hold its weights (see above); apply a fix, or set SKIP_MEMORY_CHECK=1 to start it anyway"
fi
PARSER=()
if [[ -n $REASONING_PARSER ]]; then PARSER=(--reasoning-parser "$REASONING_PARSER"); fi
mkdir -p "$LOG_DIR"
# Its own process group, so a stop also reaches the TP workers vLLM starts (setsid is util-linux, on every node)
LAUNCH=()
if command -v setsid >/dev/null; then LAUNCH=(setsid); fi

# In each replica's subshell: PID is its vLLM process (the leader of its process group), WAITER the readiness
# check in flight.
PID=""
WAITER=""
stop_replica() {
  if [[ -n $WAITER ]]; then kill "$WAITER" 2>/dev/null || true; fi
  WAITER=""
  [[ -n $PID ]] || return 0
  kill -TERM -- "-$PID" 2>/dev/null || kill -TERM "$PID" 2>/dev/null || true
  for ((i = 0; i < STOP_GRACE_S * 10; i++)); do
    kill -0 -- "-$PID" 2>/dev/null || kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$PID" 2>/dev/null || kill -KILL "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}

# Start, wait, register, watch, mark down, restart: one replica's life, in a subshell of its own.
run_replica() {
  local index=$1 devices=$2 port=$3 url log failures=0 status
  url="http://$ADVERTISE:$port/v1"
  log="$LOG_DIR/$ROLE.$NODE.$port.log"
  # SLURM signals every process of the step, and the node's trap signals this one too: the first TERM does it all.
  trap 'trap "" TERM INT; say "replica $index: stopping"; stop_replica; endpoints deregister --file "$FILE" --url "$url" || true; exit 0' TERM INT
  while true; do
    say "replica $index: starting $MODEL on GPU(s) $devices, binding $BIND:$port; log in $log"
    # The key goes by environment only (see the top of this file).
    VLLM_API_KEY=$API_KEY CUDA_VISIBLE_DEVICES=$devices "${LAUNCH[@]}" "$VLLM_BIN" serve "$MODEL" --host "$BIND" --port "$port" \
      --tensor-parallel-size "$TP" "${PARSER[@]}" "${EXTRA[@]}" >>"$log" 2>&1 &
    PID=$!
    # In the background, so a SIGTERM is handled at once instead of after the check.
    endpoints wait --url "$url" --key-file "$KEY_FILE" --model "$MODEL" --pid "$PID" --timeout "$READY_TIMEOUT_S" \
      --interval "$READY_POLL_S" &
    WAITER=$!
    if wait "$WAITER"; then
      WAITER=""
      if endpoints register --file "$FILE" --role "$ROLE" --model "$MODEL" --url "$url" --node "$NODE"; then
        say "replica $index: up at $url"
      else
        say "replica $index: up at $url, but registering it in $FILE failed: clients will not see it" >&2
      fi
      failures=0
      wait "$PID" && status=0 || status=$?
      say "replica $index: exited with status $status; marking it down (log: $log)"
    else
      WAITER=""
      failures=$((failures + 1))
      say "replica $index: did not answer GET $url/models (attempt $failures of $RESTART_LIMIT; log: $log)"
    fi
    # Also ends what an exited server left behind (TP workers holding GPU memory).
    stop_replica
    endpoints deregister --file "$FILE" --url "$url" || say "replica $index: could not mark $url down in $FILE"
    if ((failures >= RESTART_LIMIT)); then
      say "replica $index: gave up after $failures starts without an answer; see $log"
      return 1
    fi
    sleep "$RESTART_DELAY_S" &
    wait $! || true
  done
}

say "serving $MODEL as $ROLE: $REPLICAS replica(s) of TP=$TP on GPUs ${DEVICES[*]:0:GPUS}, ports from $PORT_BASE, reasoning parser ${REASONING_PARSER:-none}, registering in $FILE"
WATCHERS=()
trap 'trap "" TERM INT; say "stopping all replicas"; kill -TERM "${WATCHERS[@]}" 2>/dev/null; wait; exit 143' TERM INT
for ((r = 0; r < REPLICAS; r++)); do
  devices=$(IFS=,; echo "${DEVICES[*]:r*TP:TP}")
  (run_replica "$r" "$devices" $((PORT_BASE + r))) &
  WATCHERS+=($!)
done
status=0
for watcher in "${WATCHERS[@]}"; do
  wait "$watcher" || status=1
done
say "every replica on this node has stopped"
exit "$status"
