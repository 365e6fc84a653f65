#!/usr/bin/env bash
# Every GPU measurement of benchmarks/RESULTS.md, in three parts that each fit one device call
# (10 minutes), every command under its own time limit so one stuck command cannot eat the
# session's device time.
#
# On the dev box, first:
#   ../shared/tools/device-wheels .venv/bin/python     # then copy the needed wheels to .whl-gpu
#   python benchmarks/pack_folder.py pack /path/to/CIFAR-10-images .data/cifar10_jpeg.npz
# Then, as three device commands (carry .whl-gpu and .data):
#   bash benchmarks/gpu_session.sh step    # the flagship step: cnnjax, autotune, profile, torch
#   bash benchmarks/gpu_session.sh e2e     # resnet18_cifar end to end: cold, warm, eval at end
#   bash benchmarks/gpu_session.sh more    # other families, separable convs, steps per call
# (no argument runs all three, for a machine without the per-call limit). Everything goes under
# $OUT (or ./gpu_out): summary.txt, logs, the end-to-end runs' metrics.jsonl, the step's trace.
set -u
part=${1:-all}
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if [ -d .whl-gpu ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl-gpu/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
quiet() { grep -vE "cuda_timer|Delay kernel"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__)" | tee -a "$OUT/device.txt"

data=/tmp/cifar10
if [[ $part == all || $part == e2e ]] && [ -f .data/cifar10_jpeg.npz ] && [ ! -d $data/train ]; then
  python3 benchmarks/pack_folder.py unpack .data/cifar10_jpeg.npz $data &
fi

if [[ $part == all || $part == step ]]; then
echo "== train step, cnnjax" | tee -a "$OUT/summary.txt"
timeout 300 python3 launch.py --experiment=resnet18_cifar --mode=benchmark --compilation_cache=off \
  --config.data.name=synthetic --config.benchmark.steps=100 2>&1 | quiet | tail -11 | tee -a "$OUT/summary.txt"

# Compile time is most of a cold end-to-end run. Autotuning level 0 was unusable (session 2);
# level 1 keeps the search but skips initializing buffers and checking each candidate (XLA: "0 =
# off; 1 = on; 2 = on+init; 3 = on+init+reinit; 4 = on+init+reinit+check", 4 the default).
echo "== train step, cnnjax, XLA_FLAGS=--xla_gpu_autotune_level=1" | tee -a "$OUT/summary.txt"
XLA_FLAGS=--xla_gpu_autotune_level=1 timeout 300 python3 launch.py --experiment=resnet18_cifar \
  --mode=benchmark --compilation_cache=off --config.data.name=synthetic --config.benchmark.steps=100 \
  --config.benchmark.loop_steps=0 2>&1 | quiet | grep -E "images/s  |compile  " | tee -a "$OUT/summary.txt"

# Where the 6.8 ms of the flagship step go (issue 6's last 7%): device busy share and the top
# kernels. The trace is copied into $OUT (it is a few MB) for ui.perfetto.dev.
echo "== train step profile, resnet18_cifar, batch 512" | tee -a "$OUT/summary.txt"
timeout 300 python3 benchmarks/profile_step.py --experiment=resnet18_cifar --steps=20 --top=30 \
  --out=/tmp/r18_profile 2>&1 | quiet | grep -E "^device busy|^\|" | tee -a "$OUT/summary.txt"
cp "$(find /tmp/r18_profile -name perfetto_trace.json.gz | head -1)" "$OUT/r18_step_trace.json.gz" 2>/dev/null

echo "== train step, PyTorch eager and torch.compile" | tee -a "$OUT/summary.txt"
timeout 200 python3 benchmarks/torch_reference.py --batch=512 --steps=100 2>&1 | grep '^{' | tee -a "$OUT/summary.txt"
fi

if [[ $part == all || $part == more ]]; then

# Depthwise convolutions are slow in XLA on GPU (jax#23713, jax#13800): measured on their own.
echo "== regular vs depthwise-separable convolutions, and the ImageNet-size families" | tee -a "$OUT/summary.txt"
timeout 240 python3 benchmarks/train_step.py --models=vgg_blocks,separable_vgg_blocks \
  --batch=512 --image_size=32 --steps=50 2>&1 | grep '^|' | tee -a "$OUT/summary.txt"
timeout 400 python3 benchmarks/train_step.py --models=resnet50,xception,mobilenet_v1 \
  --batch=128 --image_size=224 --num_classes=1000 --steps=20 2>&1 | grep '^|' | tee -a "$OUT/summary.txt"

# Host-bound small models: k training steps per device call (config.steps_per_execution).
echo "== quickstart (LeNet-5, batch 64): 1 vs 8 steps per device call" | tee -a "$OUT/summary.txt"
for k in 1 8; do
  timeout 120 python3 launch.py --experiment=quickstart --mode=benchmark --compilation_cache=off \
    --config.benchmark.steps=400 --config.benchmark.loop_steps=400 --config.steps_per_execution=$k \
    2>&1 | quiet | grep -E "images/s  |ms/step|compile  |loop  " | tee -a "$OUT/summary.txt"
done

fi

if [[ $part == all || $part == e2e ]]; then
wait  # The JPEGs unpacked.
if [ -d $data/train ]; then
  rm -rf /tmp/xla_cache $data/.cnnjax_cache  # Cold: no compiled steps, no decoded images.
  for run in cold warm; do
    # cold: empty compilation cache, images decoded from JPEG; warm: both caches filled.
    echo "== end to end, $run" | tee -a "$OUT/summary.txt"
    rm -rf /tmp/r18
    /usr/bin/time -f "WALL %e s" timeout 240 python3 launch.py --experiment=resnet18_cifar \
      --workdir=/tmp/r18 --config.data.name=folder:$data --compilation_cache=/tmp/xla_cache \
      > "$OUT/e2e_$run.log" 2>&1
    quiet < "$OUT/e2e_$run.log" | grep -E "compiled in|^done|WALL" | tee -a "$OUT/summary.txt"
    cp /tmp/r18/metrics.jsonl "$OUT/metrics_$run.jsonl" 2>/dev/null
  done
  # What the 29 per-epoch evaluations and checkpoints cost: the warm run again, evaluating
  # (and so checkpointing) only at the end.
  echo "== end to end, warm, evaluation only at the end" | tee -a "$OUT/summary.txt"
  rm -rf /tmp/r18
  /usr/bin/time -f "WALL %e s" timeout 240 python3 launch.py --experiment=resnet18_cifar \
    --workdir=/tmp/r18 --config.data.name=folder:$data --compilation_cache=/tmp/xla_cache \
    --config.eval_every_steps=0 --config.checkpoint_every_steps=0 > "$OUT/e2e_final_eval.log" 2>&1
  quiet < "$OUT/e2e_final_eval.log" | grep -E "compiled in|^done|WALL" | tee -a "$OUT/summary.txt"
fi
fi
