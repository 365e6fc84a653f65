"""How batches reach the jitted step: on device (dataset uploaded once) or streamed (grain).

Both feeds give the step the same examples for the same (seed, epoch, step) and are compiled
once; the loop only calls `feed.run(state, sums, step, n)` (n steps, within one epoch) and
`evaluator(state)`.

- `DeviceTrainFeed`: the uint8 training set (images and the task's targets) lives on the
  devices; one fused jitted function cuts the batch from the epoch's permutation, augments it
  jointly with its targets (pad-crop, flip) and trains. With `steps_per_execution` = k > 1 a
  second one runs k of those steps per call.
- `StreamTrainFeed`: records are read, decoded and augmented on the host by grain threads;
  each process reads its own slice; the jitted function normalizes and trains. Classification
  only: other tasks need the dataset in memory (`Task.requires_device_feed`).

What is trained and measured comes from the run's task (`cnnjax.tasks`); without one,
classification.
"""

import concurrent.futures

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax import memory, parallel, tasks
from cnnjax.core import metrics
from cnnjax.data import pipeline, streaming, transforms
from cnnjax.data.records import Records
from cnnjax.errors import UserError
from cnnjax.train import steps

TRAIN_STREAM = 1  # fold_in tag of the training RNG (dropout, on-device augmentation).


def _train_sources(data):
    return (
        Records.of_arrays(data.train_images, data.train_labels)
        if data.in_memory
        else data.train_source
    )


def _test_source(data):
    return (
        Records.of_arrays(data.test_images, data.test_labels)
        if data.in_memory
        else data.test_source
    )


def _mean_pixel(mean) -> np.ndarray:
    """The dataset's mean colour as uint8: what cutout paints (0 after normalization)."""
    return np.round(np.asarray(mean) * 255).astype(np.uint8)


def _task(config, data, task):
    return task if task is not None else tasks.get_task(config, data)


def steps_per_execution(config) -> int:
    """`config.steps_per_execution`: training steps per device call (1 when unset)."""
    return max(1, int(config.get("steps_per_execution", 1)))


def _track_nonfinite(bad, batch_sums, step):
    """`bad` (the first step whose loss was not finite, 0 for none), or `step` (1-based, the
    step just taken) when there was none before and this step's loss is not finite."""
    fresh = (bad == 0) & ~jnp.isfinite(batch_sums["loss_sum"])
    return jnp.where(fresh, step.astype(bad.dtype), bad)


class _TrainFeed:
    """What the loop calls: `step` runs one training step, `run` several in a row.

    Each compiled step also carries one device scalar: the first step whose loss was not
    finite. The loop checks losses only at log steps (a host sync each); this names the exact
    step when one was not finite."""

    per_call = 1  # Steps one device call can run (`run` with n == per_call uses it).
    mesh = None
    _bad = None

    def _nonfinite(self):
        if self._bad is None:  # A global (replicated) scalar, on every process.
            zero = jax.jit(
                lambda: jnp.zeros((), jnp.int32), out_shardings=parallel.replicated(self.mesh)
            )
            self._bad = zero()
        return self._bad

    def first_nonfinite_step(self) -> int:
        """The first training step (1-based) whose loss was not finite; 0 if none was."""
        return 0 if self._bad is None else int(jax.device_get(self._bad))

    def _require_memory(self, compiled, state) -> None:
        """Before a compiled step first runs: `memory.OutOfMemoryError` (one line) when XLA's
        plan for it (temporaries, outputs) cannot fit beside what the devices hold, and beside
        the copy of the state a checkpoint saves from while the next steps run. XLA would abort
        the process on the failed allocation (std::bad_alloc), past any handler."""
        fix = memory.fix_for(self.config)
        also = [("a checkpoint's copy of the state", memory.tree_bytes(state))]
        for program in compiled:
            memory.require_compiled(
                program, self.mesh.local_devices, "the training step", fix, also=also, ready=state
            )

    def step(self, state, sums, step: int):
        raise NotImplementedError

    def run(self, state, sums, step: int, n: int):
        """Training steps step, ..., step + n - 1 (all in one epoch): one device call when n is
        `per_call` > 1, else n single steps."""
        for s in range(step, step + n):
            state, sums = self.step(state, sums, s)
        return state, sums


class DeviceTrainFeed(_TrainFeed):
    def __init__(self, config, data, mesh, state_shardings, task=None):
        self.config, self.data, self.mesh = config, data, mesh
        self.task = _task(config, data, task)
        self.state_shardings = state_shardings
        self.n = len(data.train_labels)
        self.batch_size = int(config.batch_size)
        self.steps_per_epoch = self.n // self.batch_size
        # k steps per call, never across an epoch's end (the permutation changes there).
        self.per_call = min(steps_per_execution(config), max(1, self.steps_per_epoch))
        self.arrays = parallel.replicate(data.arrays("train", self.task.target_keys), mesh)
        self._fn, self._many = None, None
        self._perm, self._perm_epoch = None, None
        self.freeze_pattern = ""

    def _jitted(self, n: int = 1):
        """The fused step, or (n > 1) n of them in one `lax.scan` over consecutive batches."""
        cfg, bs, task = self.config, self.batch_size, self.task
        train_step = steps.make_train_step(task, freeze_pattern=self.freeze_pattern)
        base_rng = jax.random.fold_in(jax.random.key(cfg.seed), TRAIN_STREAM)
        batch_sharding = parallel.data_sharded(self.mesh)
        mean, std = self.data.mean, self.data.std

        def fused(state, sums, bad, arrays, perm, step_in_epoch):
            batch = pipeline.take_batch(arrays, perm, step_in_epoch, bs)
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
            aug_rng, step_rng = jax.random.split(jax.random.fold_in(base_rng, state.step))
            batch = task.augment(batch, aug_rng, fill=_mean_pixel(mean))
            batch["image"] = pipeline.normalize(batch["image"], mean, std)
            state, batch_sums = train_step(state, batch, step_rng)
            bad = _track_nonfinite(bad, batch_sums, state.step)
            return state, metrics.add(sums, batch_sums), bad

        def fused_many(state, sums, bad, arrays, perm, first_step_in_epoch):
            def body(carry, i):
                return fused(*carry, arrays, perm, first_step_in_epoch + i), None

            # Unrolled: inside an XLA:CPU while loop the same step ran 4.6-5.6x slower
            # (docs/decisions.md); unrolled, each step is the single step's program.
            offsets = jnp.arange(n, dtype=jnp.int32)
            return jax.lax.scan(body, (state, sums, bad), offsets, unroll=n)[0]

        repl = parallel.replicated(self.mesh)
        return jax.jit(
            fused if n == 1 else fused_many,
            in_shardings=(self.state_shardings, repl, repl, repl, repl, repl),
            out_shardings=(self.state_shardings, repl, repl),
            donate_argnums=(0, 1, 2),
        )

    def _permutation(self, epoch: int):
        if epoch != self._perm_epoch:
            perm = pipeline.epoch_permutation(np.int32(self.config.seed), epoch, self.n)
            self._perm = jax.device_put(perm, parallel.replicated(self.mesh))
            self._perm_epoch = epoch
        return self._perm

    def compile(self, state, sums) -> None:
        """Compiles the fused step (and the k-step call) once; calls then refuse other shapes
        instead of retracing. The two compile side by side: XLA releases the GIL."""
        args = (state, sums, self._nonfinite(), self.arrays, self._permutation(0), np.int32(0))
        sizes = [1] if self.per_call == 1 else [1, self.per_call]
        lowered = [self._jitted(n).lower(*args) for n in sizes]
        with concurrent.futures.ThreadPoolExecutor(len(lowered)) as pool:
            compiled = list(pool.map(lambda low: low.compile(), lowered))
        self._require_memory(compiled, state)
        self._fn, self._many = compiled[0], (compiled[1] if len(compiled) > 1 else None)

    def step(self, state, sums, step: int):
        epoch, i = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        state, sums, self._bad = self._fn(state, sums, self._bad, self.arrays, perm, np.int32(i))
        return state, sums

    def run(self, state, sums, step: int, n: int):
        if n != self.per_call or self._many is None:
            return super().run(state, sums, step, n)
        epoch, first = divmod(step, self.steps_per_epoch)
        if first + n > self.steps_per_epoch:
            raise ValueError(f"steps {step}..{step + n - 1} cross the end of epoch {epoch}")
        perm = self._permutation(epoch)
        state, sums, self._bad = self._many(
            state, sums, self._bad, self.arrays, perm, np.int32(first)
        )
        return state, sums

    def set_phase(self, state_shardings, freeze_pattern: str) -> None:
        """The next `compile` builds the step for a new training phase (see experiment.Phase)."""
        self.state_shardings, self.freeze_pattern = state_shardings, freeze_pattern
        self._fn, self._many = None, None

    def close(self) -> None:
        pass


class StreamTrainFeed(_TrainFeed):
    """One host batch per device call (`steps_per_execution` does not apply: the batches come
    from the host one at a time)."""

    def __init__(self, config, data, mesh, state_shardings, task=None):
        self.config, self.data, self.mesh = config, data, mesh
        self.task = _task(config, data, task)
        self.state_shardings = state_shardings
        self.batch_size = int(config.batch_size)
        self.stream = streaming.IndexedStream(
            _train_sources(data),
            global_batch=self.batch_size,
            seed=int(config.seed),
            transform=transforms.make_train_transform(
                config.augment, int(config.data.image_size), fill=_mean_pixel(data.mean)
            ),
            num_threads=int(config.data.get("num_threads", 16)),
        )
        self.steps_per_epoch = self.stream.steps_per_epoch
        self.sharding = parallel.data_sharded(mesh)
        self._fn, self._iter, self._next = None, None, None
        self.freeze_pattern = ""

    def _jitted(self):
        cfg = self.config
        train_step = steps.make_train_step(self.task, freeze_pattern=self.freeze_pattern)
        base_rng = jax.random.fold_in(jax.random.key(cfg.seed), TRAIN_STREAM)
        mean, std = self.data.mean, self.data.std

        def fused(state, sums, bad, batch):
            step_rng = jax.random.split(jax.random.fold_in(base_rng, state.step))[1]
            x = pipeline.normalize(batch["image"], mean, std)
            state, batch_sums = train_step(state, {"image": x, "label": batch["label"]}, step_rng)
            bad = _track_nonfinite(bad, batch_sums, state.step)
            return state, metrics.add(sums, batch_sums), bad

        repl = parallel.replicated(self.mesh)
        return jax.jit(
            fused,
            in_shardings=(self.state_shardings, repl, repl, self.sharding),
            out_shardings=(self.state_shardings, repl, repl),
            donate_argnums=(0, 1, 2),
        )

    def compile(self, state, sums) -> None:
        shape = (self.batch_size, *self.data.image_shape)
        batch = {
            "image": jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=self.sharding),
            "label": jax.ShapeDtypeStruct((self.batch_size,), jnp.int32, sharding=self.sharding),
        }
        self._fn = self._jitted().lower(state, sums, self._nonfinite(), batch).compile()
        self._require_memory([self._fn], state)

    def step(self, state, sums, step: int):
        if self._iter is None or step != self._next:
            self._iter = self.stream.batches(step)
        got, host = next(self._iter)
        assert got == step, (got, step)
        self._next = step + 1
        batch = streaming.to_global(host, self.sharding)
        state, sums, self._bad = self._fn(state, sums, self._bad, batch)
        return state, sums

    def set_phase(self, state_shardings, freeze_pattern: str) -> None:
        """The next `compile` builds the step for a new training phase (see experiment.Phase)."""
        self.state_shardings, self.freeze_pattern, self._fn = state_shardings, freeze_pattern, None

    def close(self) -> None:
        self._iter = None


def _for_eval(state):
    """The state without its optimizer state: evaluation does not need it, and its structure
    then stays the same across training phases (one compiled evaluation per run)."""
    return state.replace(opt_state=None, tx=None)


def _eval_batch_size(config, num_devices: int) -> int:
    bs = int(config.eval_batch_size) if int(config.eval_batch_size) > 0 else int(config.batch_size)
    return -(-bs // num_devices) * num_devices


def _make_batch_sums(config, data, mesh, task):
    eval_step = steps.make_eval_step(task, flip_tta=bool(config.augment.get("test_flip", False)))
    batch_sharding = parallel.data_sharded(mesh)

    def batch_sums(state, batch):
        """batch: uint8 "image", the task's targets and "weight" (0: padding)."""
        batch = {**batch, "image": pipeline.normalize(batch["image"], data.mean, data.std)}
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return eval_step(state, batch)

    return batch_sums


class DeviceEvaluator:
    """The whole padded test split on device, evaluated by one jitted `lax.scan`."""

    def __init__(self, config, data, mesh, state_shardings, task=None):
        task = _task(config, data, task)
        bs = _eval_batch_size(config, mesh.devices.size)
        padded = pipeline.pad_for_eval(data.arrays("test", task.target_keys), bs)
        self.arrays = parallel.replicate(padded, mesh)
        batch_sums = _make_batch_sums(config, data, mesh, task)

        def evaluate(state, arrays):
            first = jax.eval_shape(batch_sums, state, jax.tree.map(lambda a: a[0], arrays))
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
            body = lambda sums, batch: (metrics.add(sums, batch_sums(state, batch)), None)
            return jax.lax.scan(body, zeros, arrays)[0]

        repl = parallel.replicated(mesh)
        self._jit = jax.jit(evaluate, in_shardings=(repl, repl), out_shardings=repl)
        self._fn = None
        self._devices, self._checked = mesh.local_devices, False
        size = int(config.data.get("image_size", 0) or 0)
        self._fix = memory.fix(("eval_batch_size", bs), ("data.image_size", size))

    def compile(self, state) -> None:
        self._fn = self._jit.lower(_for_eval(state), self.arrays).compile()

    def abstract_sums(self, state):
        """Shapes and dtypes of what `__call__` returns (traced, not compiled)."""
        return self._jit.eval_shape(_for_eval(state), self.arrays)

    def __call__(self, state) -> dict:
        """Summed metrics over the test split, on the host."""
        if self._fn is not None and not self._checked:  # Before the first run: see feeds'.
            memory.require_compiled(
                self._fn, self._devices, "the evaluation", self._fix, ready=state
            )
            self._checked = True
        fn = self._fn or self._jit
        return jax.device_get(fn(_for_eval(state), self.arrays))


class StreamEvaluator:
    """Test batches read and decoded on the host (center crop), padded and masked at the end."""

    def __init__(self, config, data, mesh, state_shardings, task=None):
        self.mesh = mesh
        self.batch_size = _eval_batch_size(config, mesh.devices.size)
        self.source = _test_source(data)
        self.transform = transforms.make_eval_transform(config.augment, int(config.data.image_size))
        self.image_shape = data.image_shape
        self.sharding = parallel.data_sharded(mesh)
        self.num_threads = int(config.data.get("num_threads", 16))
        batch_sums = _make_batch_sums(config, data, mesh, _task(config, data, task))
        repl = parallel.replicated(mesh)

        def accumulate(sums, state, batch):
            return metrics.add(sums, batch_sums(state, batch))

        self._batch_sums = jax.jit(
            batch_sums, in_shardings=(repl, self.sharding), out_shardings=repl
        )
        self._accumulate = jax.jit(accumulate, out_shardings=repl, donate_argnums=0)

    def compile(self, state) -> None:
        del state  # Compiled on first use: evaluation runs rarely and shapes never change.

    def abstract_sums(self, state):
        """Shapes and dtypes of what `__call__` returns (traced, not compiled)."""
        batch = {
            "image": jax.ShapeDtypeStruct((self.batch_size, *self.image_shape), np.uint8),
            "label": jax.ShapeDtypeStruct((self.batch_size,), np.int32),
            "weight": jax.ShapeDtypeStruct((self.batch_size,), np.float32),
        }
        return self._batch_sums.eval_shape(_for_eval(state), batch)

    def _local_batches(self):
        import grain

        n = len(self.source)
        pc, pi = jax.process_count(), jax.process_index()
        local = self.batch_size // pc
        num_batches = max(1, -(-n // self.batch_size))
        idx = np.arange(num_batches * self.batch_size).reshape(num_batches, pc, local)[:, pi]

        def example(i):
            i = int(i)
            if i < n:
                # A record's own weight wins: 0 for a stand-in for an unreadable file.
                return {"weight": np.float32(1.0), **self.transform(self.source[i])}
            blank = np.zeros(self.image_shape, np.uint8)
            return {"image": blank, "label": np.int32(0), "weight": np.float32(0.0)}

        ds = grain.MapDataset.source(idx.reshape(-1)).map(example).batch(local)
        yield from ds.to_iter_dataset(
            grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=2 * local)
        )

    def __call__(self, state) -> dict:
        sums, state = None, _for_eval(state)
        for host in self._local_batches():
            b = streaming.to_global(host, self.sharding)
            if sums is None:
                sums = self._batch_sums(state, b)
            else:
                sums = self._accumulate(sums, state, b)
        return jax.device_get(sums)


def require_memory(config, data, mesh, task, mode: str, abstract_state=None) -> None:
    """`memory.OutOfMemoryError` (one line) before anything is uploaded, when what each device
    will hold cannot fit: with the on-device feed the training set and the padded test set
    (and that test set's host copy while it uploads), the training state (`abstract_state`,
    when given) and one batch of input images at the compute dtype."""
    from cnnjax.train.experiment import compute_dtype

    bs, num_devices = int(config.batch_size), mesh.devices.size
    size = int(config.data.get("image_size", 0) or 0)
    smaller = [("batch_size", bs), ("data.image_size", size)]
    per_device, host = [], []
    if mode == "device":
        keys = task.target_keys
        train = sum(a.nbytes for a in data.arrays("train", keys).values())
        eval_bs = _eval_batch_size(config, num_devices)
        padded = -(-data.num_test // eval_bs) * eval_bs
        # Per padded example: its arrays' row bytes and the float32 "weight" pad_for_eval adds.
        row = sum(a.nbytes // max(1, len(a)) for a in data.arrays("test", keys).values()) + 4
        per_device += [("the training set", train), ("the padded test set", padded * row)]
        host.append(("the padded test set's host copy", padded * row))
        if padded >= 2 * data.num_test:  # Mostly padding: the evaluation batch is the cause.
            smaller.insert(1, ("eval_batch_size", eval_bs))
    if abstract_state is not None:
        per_device.append(("the training state", memory.tree_bytes(abstract_state)))
    per_image = int(np.prod(data.image_shape)) * jnp.dtype(compute_dtype(config.dtype)).itemsize
    local = bs // num_devices
    per_device.append((f"a batch of {local} input images", local * per_image))
    fix = memory.fix(*smaller, stream=mode == "device")
    memory.require_on_devices(per_device, mesh.local_devices, fix, host_needs=host)


def make_feeds(config, data, mesh, state_shardings, task=None, abstract_state=None):
    """(train feed, evaluator) for `config.data.feeding`: "device", "stream" or "auto"
    (on device when the dataset is in memory, streamed otherwise). task: the run's
    `cnnjax.tasks.Task` (default: from `config.task`). abstract_state: the training state's
    shapes, counted with the dataset before it is uploaded (`require_memory`)."""
    task = _task(config, data, task)
    mode = config.data.get("feeding", "auto")
    in_memory = data.in_memory
    if mode == "auto":
        mode = "device" if in_memory else "stream"
    if mode == "stream" and task.requires_device_feed:
        raise UserError(
            f"task={task.name!r} trains from the on-device feed only: its targets are "
            "augmented with the images inside the jitted step. Use --config.data.feeding=device "
            "(or auto) with a dataset that fits in memory (set --config.data.image_size)."
        )
    if mode == "device" and not in_memory:
        raise UserError(
            f"{data.name} is streamed from disk; --config.data.feeding=device needs "
            "a dataset that fits in memory. Use feeding=stream or auto."
        )
    require_memory(config, data, mesh, task, mode, abstract_state)
    if mode == "device":
        return (
            DeviceTrainFeed(config, data, mesh, state_shardings, task),
            DeviceEvaluator(config, data, mesh, state_shardings, task),
        )
    return (
        StreamTrainFeed(config, data, mesh, state_shardings, task),
        StreamEvaluator(config, data, mesh, state_shardings, task),
    )
