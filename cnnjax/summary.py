"""Keras-style model summaries: layer table, parameter counts, FLOPs and memory per image.

`summarize(model, (H, W, C))` traces any flax.linen model abstractly (`jax.eval_shape` and
`jax.make_jaxpr`: shapes only, nothing is computed or allocated), so it is instant even for
VGG-16 at 224x224 on a laptop CPU. `format_summary` turns the result into the table that
`launch.py --mode=summary` prints.

What is a row. Two kinds, in execution order, as Keras' `model.summary()` lists its layers:

- Module rows. Every call of a *leaf* module (a module that calls no other module during that
  call): `nn.Conv`, `nn.ConvTranspose`, `nn.Dense`, `nn.BatchNorm`, `nn.Dropout`, or any custom
  module with no submodules. Rows are found with `nn.intercept_methods` around every module
  method (leaf and composite), so the row path is the module path ("stage1/block0/conv1").
  Composite modules (blocks, stages, the model itself) get no row: their work is in their
  leaves. A module called twice (shared weights) gives two rows; its parameters are counted on
  the first. BatchNorm's row has Keras' 4 x C parameters (2 x C of them non-trainable).
- Functional rows. Layers written as plain functions between modules get a row too, with 0
  parameters and 0 FLOPs, so that the shape arithmetic (30x30x64 -> 15x15x64 -> 14400) reads
  off the table. They are recognized in the traced jaxpr, not by name in the model code, so
  `nn.max_pool`, `cnnjax.ops.max_pool`, `layers.max_pool_2x2` (a reshape + max) and
  `x.reshape((n, -1))` are all seen. While tracing, every leaf call's outputs go through an
  identity primitive (`cnnjax_summary_row`), which tells where each module row's output appears
  in the jaxpr and which values are layer outputs; the equations outside every leaf module's
  named scope (jit and custom_jvp calls read inline) are then matched against:
  - MaxPooling2D, AveragePooling2D: `reduce_window_max`, `reduce_window_sum` divided by a
    constant (`nn.max_pool`, `nn.avg_pool`, `lax.reduce_window`), or a reshape into
    (N, H', kh, W', kw, C) windows reduced over kh and kw (`layers.max_pool_2x2`).
  - GlobalAveragePooling2D, GlobalMaxPooling2D: a mean or max of a layer output over all its
    spatial axes (`x.mean(axis=(1, 2))`, with `keepdims` too).
  - Flatten: a reshape (N, ...) -> (N, features) of an array of rank 3 or more.
  - Activation: a jax.nn activation that stays one named call in the jaxpr (relu, relu6, silu,
    elu, leaky_relu, softplus, ...), or `jnp.maximum(x, 0)`, sigmoid or tanh of a layer output;
    `jnp.minimum(relu(x), 6)` is one relu6 row. Keras folds `Conv2D(..., activation="relu")`
    into the Conv2D row; here every activation has its own row, like the `Activation` layers of
    Keras' ResNet50 summary: one row per op keeps the table honest about what ran where, and
    costs one short line. Activations that jax inlines as several primitives (gelu, softmax)
    get no row.
  - Add, Multiply, Concatenate: of two (or more) layer outputs - residual additions (ResNet,
    Xception), gates, Inception's branches. Arithmetic with anything else (biases, constants,
    normalization statistics) is not a layer.
  - ZeroPadding2D: `jnp.pad` with zeros of the spatial axes of a layer output (MobileNet).
  Other functional code - AlexNet's LRN, an adaptive average pool over uneven bins, einsums -
  gets no row; it shows in the next row's shape, and its FLOPs are still counted (below). A
  functional row's path is the module it ran in plus a Keras-style name numbered per module in
  execution order: "max_pool", "max_pool_1", "stage1_block1/relu_1"; `LayerRow.is_module` is
  False. Should a lifted transform reject the marking primitive, the model is traced again
  without it and the table has module rows only.

What is a FLOP. One multiply-accumulate (MAC) is one multiplication and one addition; forward
FLOPs = 2 x MACs (the fvcore/ptflops vocabulary). Papers disagree: the ResNet paper's
"3.8 x 10^9 FLOPs" for ResNet-50 are MACs in this vocabulary, so both numbers are printed. MACs
are counted analytically from shapes per image (never XLA's cost analysis, which on GPU misses
convolutions):

- convolution: out_h * out_w * out_c * (kh * kw * in_c / feature_group_count) MACs, with every
  output position counted (SAME padding zeros included); depthwise convolutions are the
  `feature_group_count = in_c` case. Read off the kernel, whose shape is
  (kh, kw, in_c / feature_group_count, out_c).
- transposed convolution: in_h * in_w * in_c * kh * kw * out_c MACs (each input pixel scatters
  one kernel; the zeros XLA inserts between input pixels are not counted).
- dense: in * out MACs per output vector.
- not counted: bias additions, BatchNorm, activations, pooling, residual additions, softmax.

Any other convolution or matrix product (a custom leaf module, `jnp.einsum`, functional code
between layers) is still counted: the forward pass is also traced to a jaxpr, and every
`conv_general_dilated` / `dot_general` outside the rows above is attributed to the leaf module
whose `jax.named_scope` it ran in (Flax names scopes after module paths), or else reported as
"outside any layer". Loop bodies under `lax.scan` count `length` times, `while_loop` bodies
once, `cond` its most expensive branch; but a conv/dense row inside `nn.scan` is one iteration
(CNNs here do not scan over layers).

Memory. Activation memory per image = sum over module rows of output elements x `dtype_bytes`
(float32 by default): the feature maps a forward pass produces in its layers, not XLA's peak
(which fuses and frees buffers). Functional rows are not in the sum, so the number means what
it meant before they had rows (and SPEC's worked check, 12 MB for one conv, still holds):
pooling and activation outputs are left out, Dropout outputs are in. Parameter memory = bytes
of every variable (parameters and BatchNorm statistics) at its own dtype. KB, MB, GB are 10^3,
10^6, 10^9 bytes.

Why not `flax.linen.tabulate`: its FLOP column compiles every module and asks XLA's cost
analysis (slow on CPU, convolutions missing on GPU), and it reports no activation memory.
"""

import collections
import dataclasses
import inspect
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.extend.core as jex
import jax.numpy as jnp
from jax.interpreters import ad, batching, mlir

from cnnjax.core.params import count_params

# The batch size the model is traced with. Not 1, so that a batch axis is told apart from a
# genuine size-1 axis when shapes are reported per image.
_TRACE_BATCH = 2

# Variable collections that are not model state: sown intermediates are outputs.
_NOT_STATE = ("intermediates",)


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One layer of the forward pass (a leaf-module call or a functional op), all per image.

    Attributes:
        path: module path, "/"-joined ("stage1/block0/conv1"); "" for a model that is itself
            a single leaf module. A functional row's path is the module it ran in plus a
            Keras-style name numbered in execution order ("stage1/block0/relu_1").
        type_name: module class name ("Conv"), with ".method" for a method other than
            `__call__`; for a functional row its Keras layer class ("MaxPooling2D").
        output_shapes: shape of each output array without the batch axis, e.g. ((28, 28, 8),).
        trainable_params: elements of this layer's trainable variables ('params').
        non_trainable_params: elements of its other variables (BatchNorm 'batch_stats').
        macs: multiply-accumulates of this call for one image.
        is_module: True for a leaf-module call; False for a row of functional code (pooling,
            flatten, activation, add, ...): no variables, 0 MACs, and not in the activation
            memory.
    """

    path: str
    type_name: str
    output_shapes: tuple[tuple[int, ...], ...]
    trainable_params: int
    non_trainable_params: int
    macs: int
    is_module: bool = True

    @property
    def params(self) -> int:
        """All variables of the layer, the Keras "Param #" (BatchNorm: 4 x C)."""
        return self.trainable_params + self.non_trainable_params

    @property
    def flops(self) -> int:
        """Forward FLOPs for one image: 2 x MACs."""
        return 2 * self.macs

    @property
    def output_elements(self) -> int:
        """Elements of all outputs for one image."""
        return sum(math.prod(s) for s in self.output_shapes)


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """Per-layer rows and totals for one image of shape `input_shape` (H, W, C).

    `macs` is the forward pass total: the rows' MACs plus `macs_outside_layers` (convolutions
    and matrix products in functional code between modules).
    """

    model_name: str
    input_shape: tuple[int, ...]
    rows: tuple[LayerRow, ...]
    trainable_params: int
    non_trainable_params: int
    macs: int
    macs_outside_layers: int
    activation_bytes: int
    param_bytes: int
    dtype_bytes: int

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    @property
    def flops(self) -> int:
        """Forward FLOPs per image: 2 x MACs."""
        return 2 * self.macs


def summarize(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    batch_stats_trainable: bool = False,
    dtype_bytes: int = 4,
) -> ModelSummary:
    """Summarizes `model` on one image of shape `input_shape`, without computing anything.

    Args:
        model: an unbound flax.linen module called as `model(x, train=False)` on NHWC input
            (or `model(x)` when its `__call__` takes no `train`, e.g. a bare `nn.Conv`).
        input_shape: one image, (H, W, C); the model is traced on (2, H, W, C) float32.
        batch_stats_trainable: count BatchNorm running statistics as trainable. Off by
            default: they are not trained by the optimizer (the Keras and torchvision
            convention used by SPEC.md's parameter counts).
        dtype_bytes: bytes per activation element for the activation memory (4: float32).

    Returns:
        A `ModelSummary`; every count in it is per image.
    """
    input_shape = tuple(int(d) for d in input_shape)
    x = jax.ShapeDtypeStruct((_TRACE_BATCH, *input_shape), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    call_kwargs = {"train": False} if _takes_train(model) else {}

    variables = jax.eval_shape(
        lambda x: model.init(rngs, jnp.zeros(x.shape, x.dtype), **call_kwargs), x
    )
    variables = {k: v for k, v in dict(variables).items() if k not in _NOT_STATE}

    def trace(mark: bool):
        calls: list[_Call] = []
        scopes: dict[str, tuple[str, ...]] = {}
        # Named scopes are what ties jaxpr equations to modules; force them on even when the
        # user switched Flax's profiling names off.
        with nn.override_named_call(True), nn.intercept_methods(_recorder(calls, scopes, mark)):
            closed = jax.make_jaxpr(
                lambda v, x: model.apply(v, x, rngs={"dropout": rngs["dropout"]}, **call_kwargs)
            )(variables, x)
        return closed, calls, scopes

    try:
        closed, calls, scopes = trace(mark=True)
        marked = True
    except Exception:  # a transform with no rule for the mark: module rows only
        closed, calls, scopes = trace(mark=False)
        marked = False
    scope_macs: dict[str, int] = collections.defaultdict(int)
    _count_jaxpr_macs(closed.jaxpr, "", 1, scope_macs)

    trainable = {"params"} | ({"batch_stats"} if batch_stats_trainable else set())
    module_rows, claimed, seen_paths = [], set(), set()
    for call in calls:
        analytic = _analytic_macs(call, variables.get("params", {}))
        scopes_ = [s for s in scope_macs if s == call.scope or s.startswith(call.scope + "/")]
        jaxpr_macs = sum(scope_macs[s] for s in scopes_ if s not in claimed)
        claimed.update(scopes_)
        first = call.path not in seen_paths
        seen_paths.add(call.path)
        n_train, n_other = _count_params(variables, call.path, trainable) if first else (0, 0)
        module_rows.append(
            LayerRow(
                path="/".join(call.path),
                type_name=call.type_name,
                output_shapes=call.output_shapes,
                trainable_params=n_train,
                non_trainable_params=n_other,
                macs=analytic if analytic is not None else jaxpr_macs // _TRACE_BATCH,
            )
        )
    outside = sum(m for s, m in scope_macs.items() if s not in claimed) // _TRACE_BATCH
    rows = module_rows
    if marked:
        try:
            rows = _with_functional_rows(closed, calls, scopes, module_rows)
        except Exception:  # the functional rows are never worth a failed summary
            rows = module_rows

    n_train, n_other = _count_params(variables, (), trainable)
    return ModelSummary(
        model_name=type(model).__name__,
        input_shape=input_shape,
        rows=tuple(rows),
        trainable_params=n_train,
        non_trainable_params=n_other,
        macs=sum(r.macs for r in rows) + outside,
        macs_outside_layers=outside,
        activation_bytes=sum(r.output_elements for r in rows if r.is_module) * dtype_bytes,
        param_bytes=sum(v.size * v.dtype.itemsize for v in jax.tree.leaves(variables)),
        dtype_bytes=dtype_bytes,
    )


def format_summary(summary: ModelSummary) -> str:
    """The Keras-style table and totals, as printed by `launch.py --mode=summary`."""
    header = ("Layer (type)", "Output shape", "Param #", "FLOPs")
    body = [
        (
            f"{r.path or r.type_name} ({r.type_name})",
            ", ".join(_shape(s) for s in r.output_shapes) or "-",
            f"{r.params:,}",
            f"{r.flops:,}",
        )
        for r in summary.rows
    ]
    if summary.macs_outside_layers:
        body.append(("(outside any layer)", "", "", f"{2 * summary.macs_outside_layers:,}"))
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]

    def line(cells: Sequence[str]) -> str:
        # Names and shapes read left to right, numbers line up on their last digit.
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "-" * len(line(header))
    s = summary
    out = [
        f'Model: "{s.model_name}"  input {_shape(s.input_shape)} per image; '
        "shapes exclude the batch axis",
        rule,
        line(header),
        "=" * len(rule),
        *(line(b) for b in body),
    ]
    dtype = {4: "float32", 2: "bfloat16/float16", 8: "float64"}.get(s.dtype_bytes)
    dtype = dtype or f"{s.dtype_bytes}-byte"
    out += [
        "=" * len(rule),
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        f"Total params: {s.total_params:,}",
        f"Forward FLOPs per image: {s.flops:,} ({_si(s.flops, 'FLOPs')}; "
        f"{s.macs:,} multiply-accumulates)",
        f"Activation memory per image: {_si(s.activation_bytes, 'B')} "
        f"({s.activation_bytes:,} bytes of {dtype} layer outputs)",
        f"Parameter memory: {_si(s.param_bytes, 'B')} ({s.param_bytes:,} bytes)",
        rule,
        "FLOPs = 2 x multiply-accumulates of convolutions and dense layers (bias, normalization,",
        "activations and pooling not counted). KB/MB/GB = 10^3/10^6/10^9 bytes.",
    ]
    return "\n".join(out)


@dataclasses.dataclass
class _Call:
    """A leaf-module call seen by the interceptor; `scope` is its jax.named_scope path."""

    path: tuple[str, ...]
    type_name: str
    module: nn.Module
    scope: str
    input_shape: tuple[int, ...] | None
    output_shapes: tuple[tuple[int, ...], ...]


def _recorder(calls: list[_Call], scopes: dict[str, tuple[str, ...]], mark: bool):
    """An `nn.intercept_methods` interceptor appending every leaf-module call to `calls`.

    `scopes` gets the jax.named_scope of every module method call (leaf or composite) -> its
    module path. With `mark`, every leaf call's array outputs go through `_ROW_MARK` (an
    identity) so that the jaxpr shows where, and on which values, each row's output appears.
    """
    # One entry per module method on the call stack: [scope name, whether it called a module].
    stack: list[list[Any]] = []

    def interceptor(next_fun, args, kwargs, context):
        # setup() is not a call of the layer; "<lambda>" and the like are the wrappers that
        # lifted transforms (nn.remat, nn.scan) run on a clone at the root path.
        if context.method_name == "setup" or not context.method_name.isidentifier():
            return next_fun(*args, **kwargs)
        module = context.module
        # The same name Flax gives the method's jax.named_scope (module/_derive_profiling_name).
        name = module.name or type(module).__name__
        suffix = "" if context.method_name == "__call__" else f".{context.method_name}"
        if stack:
            stack[-1][1] = True
        stack.append([name + suffix, False])
        scope = "/".join(entry[0] for entry in stack)
        scopes.setdefault(scope, tuple(module.path))
        try:
            y = next_fun(*args, **kwargs)
        finally:
            _, called_modules = stack.pop()
        if not called_modules:
            first = args[0] if args else None
            calls.append(
                _Call(
                    path=tuple(module.path),
                    type_name=type(module).__name__ + suffix,
                    module=module,
                    scope=scope,
                    input_shape=_per_image(first.shape) if hasattr(first, "shape") else None,
                    output_shapes=tuple(
                        _per_image(a.shape) for a in jax.tree.leaves(y) if hasattr(a, "shape")
                    ),
                )
            )
            if mark:
                y = _mark_outputs(y, len(calls) - 1)
        return y

    return interceptor


# ---------------------------------------------------------------------------------------------
# Rows for functional code: the leaf calls' outputs are marked in the jaxpr, and the equations
# between them (outside every leaf module's scope) are matched against the patterns below.

# The identity the leaf calls' outputs go through while tracing, `index` = the call's place in
# `calls`. Only ever traced by `summarize`; the rules make it harmless under jit, grad and vmap.
_ROW_MARK = jex.Primitive("cnnjax_summary_row")
_ROW_MARK.multiple_results = True
_ROW_MARK.def_impl(lambda *xs, index: list(xs))
_ROW_MARK.def_abstract_eval(lambda *avals, index: list(avals))
ad.primitive_jvps[_ROW_MARK] = lambda xs, ts, index: (_ROW_MARK.bind(*xs, index=index), list(ts))
batching.primitive_batchers[_ROW_MARK] = lambda xs, dims, index: (
    _ROW_MARK.bind(*xs, index=index),
    list(dims),
)
mlir.register_lowering(_ROW_MARK, lambda ctx, *xs, index: list(xs))

# Function calls whose body is read as if written inline (jnp.pad is a jit, nn.relu a
# custom_jvp, nn.remat a checkpoint).
_INLINE = {
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "checkpoint",
    "remat",
    "remat2",
}
# jax.nn activations that stay one named call (custom_jvp or jit) in the jaxpr; the others are
# inlined primitives, of which `_UNARY_ACTIVATIONS` and max(x, 0) are recognized.
_ACTIVATIONS = {
    "relu",
    "relu6",
    "silu",
    "swish",
    "gelu",
    "elu",
    "celu",
    "selu",
    "leaky_relu",
    "softplus",
    "sparse_plus",
    "squareplus",
    "soft_sign",
    "sigmoid",
    "log_sigmoid",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "hard_tanh",
    "mish",
    "softmax",
    "log_softmax",
}
_UNARY_ACTIVATIONS = {"logistic": "sigmoid", "tanh": "tanh"}
# Value-preserving ops: their output is the same row's output.
_ALIASES = {"convert_element_type", "copy", "copy_p", "reduce_precision", "optimization_barrier"}
# Pooling by reduction op: over windows (reduce_window_*), or over a reshape into windows.
_POOLS = {"max": ("max_pool", "MaxPooling"), "min": ("min_pool", "MinPooling")}
_POOLS["add"] = ("sum_pool", "SumPooling")
_WINDOW_POOLS = {"reduce_window_max": "max", "reduce_window_min": "min", "reduce_window_sum": "add"}
_REDUCE_POOLS = {"reduce_max": "max", "reduce_min": "min", "reduce_sum": "add"}


@dataclasses.dataclass
class _Eqn:
    """One equation of the jaxpr with every call-like equation inlined.

    Values are integer keys (unique across inlined bodies); `marks` are the leaf-call indices
    this equation marks, its own or those inside a loop or branch body it stands for.
    """

    prim: str
    params: Mapping[str, Any]
    ins: list[int]
    outs: list[int]
    scope: str
    marks: tuple[int, ...] = ()
    activation: str | None = None


@dataclasses.dataclass
class _FunctionalRow:
    """A functional row being built: `pos` is its equation's index, `prefix` the module path
    it ran in, `base` its name before numbering ("max_pool")."""

    pos: int
    prefix: tuple[str, ...]
    base: str
    type_name: str
    shape: tuple[int, ...]


class _Values:
    """Shapes, literal values and constness of the keys of the inlined jaxpr."""

    def __init__(self):
        self._keys = itertools.count()
        self.shapes: dict[int, tuple[int, ...]] = {}
        self.literals: dict[int, Any] = {}
        self.consts: set[int] = set()

    def new(self, atom: Any, const: bool = False) -> int:
        key = next(self._keys)
        self.shapes[key] = tuple(getattr(atom.aval, "shape", ()))
        if isinstance(atom, jex.Literal):
            self.literals[key] = atom.val
            const = True
        if const:
            self.consts.add(key)
        return key


def _read(env: dict, atom: Any, values: _Values) -> int:
    if isinstance(atom, jex.Literal):
        return values.new(atom)
    return env[atom]


def _inline_body(eqn: Any) -> Any:
    """The body of a call-like equation to read inline, or None."""
    if eqn.primitive.name not in _INLINE:
        return None
    subs = list(jex.jaxprs_in_params(eqn.params))
    if len(subs) != 1:
        return None
    sub = subs[0]
    if len(sub.invars) != len(eqn.invars) or len(sub.outvars) != len(eqn.outvars):
        return None
    return sub


def _marks_in(jaxpr: Any) -> list[int]:
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive is _ROW_MARK:
            found.append(eqn.params["index"])
        for sub in jex.jaxprs_in_params(eqn.params):
            found += _marks_in(sub)
    return found


def _inline(jaxpr: Any, env: dict, prefix: str, values: _Values, out: list[_Eqn]) -> None:
    """Appends the equations of `jaxpr` to `out`, call-like equations inlined."""
    for eqn in jaxpr.eqns:
        scope = "/".join(p for p in (prefix, str(eqn.source_info.name_stack)) if p)
        ins = [_read(env, v, values) for v in eqn.invars]
        name = eqn.primitive.name
        call_name = eqn.params.get("name") if name in _INLINE else None
        activation = call_name if call_name in _ACTIVATIONS else None
        body = None if activation else _inline_body(eqn)
        if body is not None:
            inner = dict(zip(body.invars, ins, strict=True))
            inner.update({v: values.new(v, const=True) for v in body.constvars})
            _inline(body, inner, scope, values, out)
            for outer, var in zip(eqn.outvars, body.outvars, strict=True):
                env[outer] = _read(inner, var, values)
            continue
        outs = []
        for v in eqn.outvars:
            outs.append(values.new(v))
            env[v] = outs[-1]
        if eqn.primitive is _ROW_MARK:
            marks = (eqn.params["index"],)
        else:
            marks = tuple(m for sub in jex.jaxprs_in_params(eqn.params) for m in _marks_in(sub))
        out.append(_Eqn(name, eqn.params, ins, outs, scope, marks, activation))


def _with_functional_rows(
    closed: Any,
    calls: list[_Call],
    scopes: Mapping[str, tuple[str, ...]],
    module_rows: list[LayerRow],
) -> list[LayerRow]:
    """`module_rows` (one per call) with the functional rows, all in execution order."""
    values = _Values()
    jaxpr = closed.jaxpr
    env = {v: values.new(v, const=True) for v in jaxpr.constvars}
    # The invars are the variables' leaves (weights: constants here), then the image batch.
    for i, v in enumerate(jaxpr.invars):
        env[v] = values.new(v, const=i < len(jaxpr.invars) - 1)
    eqns: list[_Eqn] = []
    _inline(jaxpr, env, "", values, eqns)

    leaf_scopes = {c.scope for c in calls}
    # key -> what it is the output of: a call index, "input", or a functional row.
    source: dict[int, Any] = {env[jaxpr.invars[-1]]: "input"} if jaxpr.invars else {}
    splits: dict[int, tuple[int, ...]] = {}  # key -> axes of windows split out by a reshape
    mark_pos: dict[int, int] = {}
    functional: list[_FunctionalRow] = []
    # A map reduced more than once (an uneven adaptive pool's bins) is not a global pool.
    reductions = collections.Counter(e.ins[0] for e in eqns if e.prim in _REDUCE_POOLS)

    for pos, e in enumerate(eqns):
        for index in e.marks:
            mark_pos.setdefault(index, pos)
        if e.prim == _ROW_MARK.name:
            source.update((k, e.marks[0]) for k in e.outs)
            continue
        if e.marks:
            continue
        if all(k in values.consts for k in e.ins):
            values.consts.update(e.outs)
            if e.prim == "convert_element_type" and e.ins[0] in values.literals:
                values.literals[e.outs[0]] = values.literals[e.ins[0]]
            continue
        parts = e.scope.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]
        if any(p in leaf_scopes for p in prefixes):
            continue  # inside a leaf module: its work is that module's row
        prefix = next((scopes[p] for p in prefixes if p in scopes), ())
        row = _match(e, values, source, splits, reductions[e.ins[0]] if e.ins else 0)
        if isinstance(row, tuple):
            row = _FunctionalRow(pos, prefix, *row, shape=())
            functional.append(row)
        if row is not None:
            source[e.outs[0]] = row
            if isinstance(row, _FunctionalRow):  # its output is the latest alias's shape
                row.shape = _per_image(values.shapes[e.outs[0]])

    keyed = []
    pos = len(eqns)
    for i in reversed(range(len(module_rows))):
        # A call whose output was never used (or whose trace a lifted transform threw away)
        # has no mark: it goes just before the next call that has one.
        pos = mark_pos.get(i, pos)
        keyed.append(((pos, 1, i), module_rows[i]))
    counts: dict[tuple[tuple[str, ...], str], int] = collections.defaultdict(int)
    for f in functional:
        n = counts[f.prefix, f.base]
        counts[f.prefix, f.base] += 1
        name = f.base if n == 0 else f"{f.base}_{n}"
        keyed.append(
            (
                (f.pos, 0, 0),
                LayerRow(
                    path="/".join((*f.prefix, name)),
                    type_name=f.type_name,
                    output_shapes=(f.shape,),
                    trainable_params=0,
                    non_trainable_params=0,
                    macs=0,
                    is_module=False,
                ),
            )
        )
    keyed.sort(key=lambda kr: kr[0])
    return [r for _, r in keyed]


def _match(
    e: _Eqn,
    values: _Values,
    source: dict[int, Any],
    splits: dict[int, tuple[int, ...]],
    reductions: int,
) -> Any:
    """What functional equation `e` is: (name, Keras type) for a new row; the `source` of an
    input whose output it still is (a dtype cast, avg pool's division, relu6's clip); or None.

    `source` says which inputs are outputs of rows (or the image), `splits` which are a
    reshape of a feature map into (N, H', kh, W', kw, C) windows (`layers.max_pool_2x2`);
    `reductions` is how many reductions read `e`'s first input.
    """
    shapes, consts, literals = values.shapes, values.consts, values.literals
    x = e.ins[0] if e.ins else None
    src = source.get(x)
    out_shape = shapes[e.outs[0]] if e.outs else ()
    in_shape = shapes.get(x, ())
    rank = len(in_shape)

    def literal(key, value):
        v = literals.get(key)
        return v is not None and getattr(v, "shape", ()) == () and v == value

    def pooled(kind, spatial):
        name, cls = kind
        return (name, f"{cls}{spatial}D")

    if e.activation is not None:
        return (e.activation, "Activation")
    if e.prim in _ALIASES and src is not None and out_shape == in_shape:
        return src
    if e.prim in _UNARY_ACTIVATIONS and src is not None:
        return (_UNARY_ACTIVATIONS[e.prim], "Activation")
    if e.prim in ("max", "min") and len(e.ins) == 2:
        (a, b) = e.ins if e.ins[0] in source else e.ins[::-1]
        row = source.get(a)
        if row is not None and shapes[a] == out_shape:
            if e.prim == "max" and literal(b, 0):
                return ("relu", "Activation")
            if e.prim == "min" and literal(b, 6) and getattr(row, "base", None) == "relu":
                row.base = "relu6"
                return row
    if (e.prim in _WINDOW_POOLS or e.prim == "reduce_window") and rank >= 3:
        dims = e.params.get("window_dimensions", ())
        if e.prim == "reduce_window":  # lax.reduce_window with a computation: read its op
            body = [q.primitive.name for sub in jex.jaxprs_in_params(e.params) for q in sub.eqns]
            op = body[0] if len(body) == 1 else None
        else:
            op = _WINDOW_POOLS[e.prim]
        if op in _POOLS and dims[0] == 1 and dims[-1] == 1:
            return pooled(_POOLS[op], rank - 2)
    if e.prim == "div" and isinstance(src, _FunctionalRow) and "sum_pool" in src.base:
        # A sum pool divided by a constant (window size, pixel count) is an average pool.
        if e.ins[1] in consts and out_shape == in_shape:
            src.base = src.base.replace("sum_pool", "avg_pool")
            src.type_name = src.type_name.replace("SumPooling", "AveragePooling")
            return src
    if e.prim in _REDUCE_POOLS:
        axes = tuple(e.params["axes"])
        if splits.get(x) == axes:
            return pooled(_POOLS[_REDUCE_POOLS[e.prim]], len(axes))
        global_axes = tuple(range(1, rank - 1))
        if src is not None and rank >= 3 and axes == global_axes and reductions == 1:
            name, cls = _POOLS[_REDUCE_POOLS[e.prim]]
            return pooled((f"global_{name}", f"Global{cls}"), len(axes))
    if e.prim in ("reshape", "broadcast_in_dim"):
        if isinstance(src, _FunctionalRow) and src.base.startswith("global_"):
            # keepdims=True: (N, C) -> (N, 1, 1, C) is still the pool's output.
            if [d for d in out_shape if d != 1] == [d for d in in_shape if d != 1]:
                return src
    if e.prim == "reshape":
        if rank >= 3 and len(out_shape) == 2 and out_shape[0] == in_shape[0] == _TRACE_BATCH:
            return ("flatten", "Flatten")
        n = len(out_shape)
        if (
            rank >= 3
            and n == 2 * rank - 2
            and (out_shape[0], out_shape[-1]) == (in_shape[0], in_shape[-1])
            and all(
                out_shape[2 * i + 1] * out_shape[2 * i + 2] == in_shape[i + 1]
                for i in range(rank - 2)
            )
        ):
            splits[e.outs[0]] = tuple(range(2, n - 1, 2))
        return None
    if e.prim in ("add", "mul") and len(e.ins) == 2 and all(k in source for k in e.ins):
        if shapes[e.ins[0]] == shapes[e.ins[1]] == out_shape or e.prim == "mul":
            return ("add", "Add") if e.prim == "add" else ("multiply", "Multiply")
    if e.prim == "concatenate" and len(e.ins) > 1 and all(k in source for k in e.ins):
        return ("concatenate", "Concatenate")
    if e.prim == "pad" and src is not None and literal(e.ins[1], 0):
        config = e.params["padding_config"]
        if all(c[2] == 0 for c in config) and config[0] == config[-1] == (0, 0, 0):
            return ("zero_padding", f"ZeroPadding{rank - 2}D")
    return None


def _mark_outputs(y: Any, index: int) -> Any:
    """`y` with its jax-array leaves passed through `_ROW_MARK` (as one equation)."""
    leaves, treedef = jax.tree.flatten(y)
    arrays = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array)]
    if not arrays:
        return y
    marked = _ROW_MARK.bind(*(leaves[i] for i in arrays), index=index)
    for i, leaf in zip(arrays, marked, strict=True):
        leaves[i] = leaf
    return jax.tree.unflatten(treedef, leaves)


def _analytic_macs(call: _Call, params: Mapping[str, Any]) -> int | None:
    """MACs per image of a convolution or dense layer from its shapes; None for other types.

    The kernel is read from the variables rather than the module's fields because its shape
    already folds in `feature_group_count` (depthwise: in_c / groups = 1).
    """
    if "." in call.type_name:  # a method other than __call__ (Embed.attend): no formula
        return None
    kernel = _subtree(params, call.path)
    kernel = kernel.get("kernel") if isinstance(kernel, Mapping) else None
    if kernel is None or len(call.output_shapes) != 1:
        return None
    out_elements = math.prod(call.output_shapes[0])
    k = kernel.shape
    module = call.module
    if isinstance(module, nn.ConvTranspose):
        # Input-based: each input element multiplies a kh x kw x out_c kernel slice.
        if call.input_shape is None:
            return None
        in_elements = math.prod(call.input_shape)
        return in_elements * math.prod(k) // call.input_shape[-1]
    if isinstance(module, nn.ConvLocal):
        # Unshared kernel (out_h, out_w, kh*kw*in_c, out_c): same MACs as a shared one.
        return out_elements * k[-2]
    if isinstance(module, nn.Conv):
        # k = (kh, kw, in_c / feature_group_count, out_c).
        return out_elements * math.prod(k[:-1])
    if isinstance(module, nn.Dense):
        return out_elements * k[0]
    return None


def _count_jaxpr_macs(jaxpr: Any, prefix: str, repeat: int, out: dict[str, int]) -> None:
    """Adds the MACs of every conv_general_dilated / dot_general in `jaxpr` to `out[scope]`.

    `scope` is the equation's jax.named_scope path; nested jaxprs (jit, remat, custom_jvp,
    scan) carry name stacks relative to the equation that holds them.
    """
    for eqn in jaxpr.eqns:
        scope = "/".join(p for p in (prefix, str(eqn.source_info.name_stack)) if p)
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            out[scope] += repeat * _conv_primitive_macs(eqn)
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            contracted = math.prod(lhs_shape[d] for d in lhs_contract)
            out[scope] += repeat * math.prod(eqn.outvars[0].aval.shape) * contracted
        if name == "cond":
            # Only one branch runs: count the most expensive.
            branches = []
            for branch in eqn.params["branches"]:
                counts: dict[str, int] = collections.defaultdict(int)
                _count_jaxpr_macs(branch.jaxpr, scope, repeat, counts)
                branches.append(counts)
            for scope_, macs in max(branches, key=lambda c: sum(c.values())).items():
                out[scope_] += macs
            continue
        inner_repeat = repeat * eqn.params["length"] if name == "scan" else repeat
        for sub in jex.jaxprs_in_params(eqn.params):
            _count_jaxpr_macs(sub, scope, inner_repeat, out)


def _conv_primitive_macs(eqn: Any) -> int:
    """MACs of one lax.conv_general_dilated, with the same conventions as `_analytic_macs`."""
    dn = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    if any(d > 1 for d in eqn.params["lhs_dilation"]):
        # A transposed convolution: count from the undilated input, as for nn.ConvTranspose.
        spatial = math.prod(lhs[d] for d in dn.lhs_spec[2:])
        return lhs[dn.lhs_spec[0]] * spatial * math.prod(rhs)
    # rhs = (out_c, in_c / groups, kh, kw) in rhs_spec order.
    taps = rhs[dn.rhs_spec[1]] * math.prod(rhs[d] for d in dn.rhs_spec[2:])
    return math.prod(out) * taps


def _count_params(
    variables: Mapping[str, Any], path: tuple[str, ...], trainable: set[str]
) -> tuple[int, int]:
    """(trainable, non-trainable) elements of the variables at `path` in every collection."""
    n_train = n_other = 0
    for collection, tree in variables.items():
        n = count_params(_subtree(tree, path))
        if collection in trainable:
            n_train += n
        else:
            n_other += n
    return n_train, n_other


def _subtree(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return {}
        tree = tree[key]
    return tree


def _per_image(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drops the traced batch axis; a shape without one is kept whole."""
    shape = tuple(int(d) for d in shape)
    return shape[1:] if shape and shape[0] == _TRACE_BATCH else shape


def _takes_train(model: nn.Module) -> bool:
    return "train" in inspect.signature(type(model).__call__).parameters


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _si(value: float, unit: str) -> str:
    """1_303_000 FLOPs -> '1.30 MFLOPs'; 12_000_000 B -> '12.00 MB' (powers of 10^3)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:,.0f} {unit}"
