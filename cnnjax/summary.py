"""Keras-style model summaries: layer table, parameter counts, FLOPs and memory per image.

`summarize(model, (H, W, C))` traces any flax.linen model abstractly (`jax.eval_shape` and
`jax.make_jaxpr`: shapes only, nothing is computed or allocated), so it is instant even for
VGG-16 at 224x224 on a laptop CPU. `format_summary` turns the result into the table that
`launch.py --mode=summary` prints.

What is a row. Every call of a *leaf* module (a module that calls no other module during that
call) is one row, in execution order: `nn.Conv`, `nn.ConvTranspose`, `nn.Dense`,
`nn.BatchNorm`, `nn.Dropout`, or any custom module with no submodules. Rows are found with
`nn.intercept_methods` around every module method (leaf and composite), so the row path is the
module path ("stage1/block0/conv1"). Composite modules (blocks, stages, the model itself) get
no row: their work is in their leaves. Functional code - `nn.max_pool`, `nn.avg_pool`,
activations, reshapes, residual additions - is a plain function, not a module, so it cannot be
intercepted and gets no row: a pooling layer shows up only through the next row's (smaller)
input. A module called twice (shared weights) gives two rows; its parameters are counted on the
first.

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

Memory. Activation memory per image = sum over rows of output elements x `dtype_bytes` (float32
by default): the feature maps a forward pass produces in its layers, not XLA's peak (which
fuses and frees buffers). Pooling and activation outputs have no row and are not in the sum;
Dropout outputs are. Parameter memory = bytes of every variable (parameters and BatchNorm
statistics) at its own dtype. KB, MB, GB are 10^3, 10^6, 10^9 bytes.

Why not `flax.linen.tabulate`: its FLOP column compiles every module and asks XLA's cost
analysis (slow on CPU, convolutions missing on GPU), and it reports no activation memory.
"""

import collections
import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.extend.core as jex
import jax.numpy as jnp

# The batch size the model is traced with. Not 1, so that a batch axis is told apart from a
# genuine size-1 axis when shapes are reported per image.
_TRACE_BATCH = 2

# Variable collections that are not model state: sown intermediates are outputs.
_NOT_STATE = ("intermediates",)


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One leaf-module call of the forward pass, all numbers per image.

    Attributes:
        path: module path, "/"-joined ("stage1/block0/conv1"); "" for a model that is itself
            a single leaf module.
        type_name: module class name ("Conv"), with ".method" for a method other than
            `__call__`.
        output_shapes: shape of each output array without the batch axis, e.g. ((28, 28, 8),).
        trainable_params: elements of this layer's trainable variables ('params').
        non_trainable_params: elements of its other variables (BatchNorm 'batch_stats').
        macs: multiply-accumulates of this call for one image.
    """

    path: str
    type_name: str
    output_shapes: tuple[tuple[int, ...], ...]
    trainable_params: int
    non_trainable_params: int
    macs: int

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

    calls: list[_Call] = []
    # Named scopes are what ties jaxpr equations to modules; force them on even when the user
    # switched Flax's profiling names off.
    with nn.override_named_call(True), nn.intercept_methods(_leaf_recorder(calls)):
        closed = jax.make_jaxpr(
            lambda v, x: model.apply(v, x, rngs={"dropout": rngs["dropout"]}, **call_kwargs)
        )(variables, x)
    scope_macs: dict[str, int] = collections.defaultdict(int)
    _count_jaxpr_macs(closed.jaxpr, "", 1, scope_macs)

    trainable = {"params"} | ({"batch_stats"} if batch_stats_trainable else set())
    rows, claimed, seen_paths = [], set(), set()
    for call in calls:
        analytic = _analytic_macs(call, variables.get("params", {}))
        scopes = [s for s in scope_macs if s == call.scope or s.startswith(call.scope + "/")]
        jaxpr_macs = sum(scope_macs[s] for s in scopes if s not in claimed)
        claimed.update(scopes)
        first = call.path not in seen_paths
        seen_paths.add(call.path)
        n_train, n_other = _count_params(variables, call.path, trainable) if first else (0, 0)
        rows.append(
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

    n_train, n_other = _count_params(variables, (), trainable)
    return ModelSummary(
        model_name=type(model).__name__,
        input_shape=input_shape,
        rows=tuple(rows),
        trainable_params=n_train,
        non_trainable_params=n_other,
        macs=sum(r.macs for r in rows) + outside,
        macs_outside_layers=outside,
        activation_bytes=sum(r.output_elements for r in rows) * dtype_bytes,
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


def _leaf_recorder(calls: list[_Call]):
    """An `nn.intercept_methods` interceptor appending every leaf-module call to `calls`."""
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
        try:
            y = next_fun(*args, **kwargs)
        finally:
            scope = "/".join(entry[0] for entry in stack)
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
        return y

    return interceptor


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
        n = sum(leaf.size for leaf in jax.tree.leaves(_subtree(tree, path)))
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
