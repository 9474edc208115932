"""`initialize`'s planner: every layer's role, and why, before any weight is touched.

Roles, in the order they are tried (the first that applies wins):

* `whiten`: the first `whiten` Conv2D layers (one group) the model holds;
* `head`: an output layer (read from the graph; in a subclassed model, the
  last kernel layer the pass reaches when its output is the model's);
* `residual_end`: the last kernel of a residual branch
  (`residual="zero_last"`); branches that end in a normalization have its
  gamma listed in `residual_ends` instead;
* `normalized`: a kernel whose one consumer is a normalization;
* `attention`: a self-attention layer (`attention="mimetic"`);
* `rest`: any other kernel layer.

Layers with weights no role covers are in `skipped` with the reason. The
rules that carry out each role are in `_rules.py`.
"""

import contextlib
import dataclasses

import keras

from keras_corrinit._core.backend import attention_projections, intercepted_call, sublayers
from keras_corrinit._core.graph import (
    has_graph,
    normalized_kernels,
    output_heads,
    reading_graphs,
    residual_branch_ends,
)
from keras_corrinit._core.layers import frozen_layers, kernel_slots, walk_layers
from keras_corrinit._core.model_pass import run_model, watching
from keras_corrinit.layerwise._lsuv import LayerEntries
from keras_corrinit.normalization._statistics import batch_normalizations

__all__ = ["InitializationPlan", "PlannedLayer", "make_plan", "whitened_layers"]

_REASONS = {
    "head": "an output layer: its output reaches the model's through activations, dropout, reshaping or pooling only",
    "residual_end": "the last kernel of a residual branch (residual='zero_last')",
    "normalized": "its one consumer is a normalization, which cancels its scale",
    "attention": "self-attention: MultiHeadAttention called on its query",
    "rest": "a kernel layer no other role covers",
}


@dataclasses.dataclass
class PlannedLayer:
    """One layer's role in `initialize`'s plan, and why it has it."""

    name: str
    layer_class: str
    role: str
    reason: str


@dataclasses.dataclass
class InitializationPlan(LayerEntries):
    """What `initialize` would do (`initialize(..., dry_run=True)`); nothing is touched.

    Attributes:
        layers: `PlannedLayer`s: kernel layers in model order, then attention
            layers and the normalizations that end residual branches.
        skipped: `{layer name: reason}` of layers with weights left alone.
        residual_ends: Names of the layers that end a residual branch and
            are set by the `residual` rule.
        heads: Names of the output layers found.
        normalization: Names of the BatchNormalization layers whose moving
            statistics would be set from the data.
        unread: `{layer name: why}` of Layer subclasses whose inside has no
            graph to read.
    """

    layers: list
    skipped: dict
    residual_ends: list
    heads: list
    normalization: list
    unread: dict

    _done = "planned"

    def __str__(self):
        rows = [f"| {e.name} | {e.layer_class} | {e.role} | {e.reason} |" for e in self]
        return "\n".join(["| layer | class | role | why |", "|---|---|---|---|", *rows])


@dataclasses.dataclass
class Plan:
    """The planner's result, by object: what `initialize` applies."""

    roles: dict  # id(layer) -> role, for the kernel layers and attention layers set
    layers: list  # the layers with a role, in the order their rules run
    whitened: list
    heads: list
    ends: list  # BranchEnds set to zero (their kernel, or their normalization's gamma)
    scaled_ends: list  # BranchEnds scaled at their merge (residual="scaled")
    normalized: set  # ids of kernels in front of a normalization
    normalizations: list  # BatchNormalization layers whose statistics are set
    skipped: dict
    names: dict
    unread: dict

    def public(self):
        """The plan as names and reasons (`InitializationPlan`)."""
        entries = []
        for layer in self.layers:
            role = self.roles[id(layer)]
            reason = _REASONS.get(role, "")
            if role == "whiten":
                position = self.whitened.index(layer) + 1
                reason = (
                    f"Conv2D {position} of the {len(self.whitened)} the data meets first (whiten={len(self.whitened)})"
                )
                if id(layer) in self.normalized:
                    reason += "; kept at its built norm: a normalization follows"
            elif role == "head" and not self._graph:
                reason = "the last kernel layer the pass reaches, and its output is the model's (no graph to read)"
            entries.append(PlannedLayer(self.names[id(layer)], type(layer).__name__, role, reason))
        for end in self.ends + self.scaled_ends:
            if end.kind == "gamma":
                rule = "its gamma at zero" if end in self.ends else "scaled to a share of its shortcut's variance"
                reason = f"the normalization that ends a residual branch: {rule}"
                entries.append(
                    PlannedLayer(self.names[id(end.layer)], type(end.layer).__name__, "residual_end", reason)
                )
        return InitializationPlan(
            entries,
            dict(self.skipped),
            [self.names[id(end.layer)] for end in self.ends + self.scaled_ends],
            [self.names[id(layer)] for layer in self.heads],
            [self.names[id(layer)] for layer in self.normalizations],
            dict(self.unread),
        )

    _graph: bool = True


class _LastReached:
    """A subclassed model's pass: which kernel layer the pass reaches last, and its output's shape."""

    def __init__(self):
        self.layer, self.shape = None, None

    def __call__(self, layer, inputs, forward):
        output = forward(inputs)
        self.layer, self.shape = layer, tuple(output.shape)
        return output


def _subclassed_heads(model, targets, batch):
    """A model without a readable graph: its head is the last kernel layer reached, if its output is the model's."""
    last = _LastReached()
    with watching(targets, last):
        output = run_model(model, batch)
    shapes = [tuple(o.shape) for o in keras.tree.flatten(output)]
    return [last.layer] if last.layer is not None and shapes == [last.shape] else []


def _may_change(end, model, target_ids, args):
    """Whether a residual branch's end may be set: a selected kernel layer, or a scale not frozen or excluded."""
    if end.kind == "kernel":
        return id(end.layer) in target_ids
    if not args["include_frozen"] and id(end.layer) in frozen_layers(model):
        return False
    return not (args["exclude"] and any(p.search(end.layer.name) for p in args["exclude"]))


_UNREAD = (
    "a Layer subclass: its call has no graph to read, so residual adds, heads and kernels in front of a "
    "normalization inside it get the rules for other layers"
)


def _unread_blocks(model, names):
    """`{name: why}` of the users' Layer subclasses holding kernel layers (their inside is not read as a graph)."""
    unread = {}
    for layer in walk_layers(model):
        if isinstance(layer, keras.Model) or not sublayers(layer):
            continue
        if any(kernel_slots(sub) for sub in walk_layers(layer)):
            unread[names[id(layer)]] = _UNREAD
    return unread


def _cross_attention(model, layers, batch):
    """Ids of the attention layers whose first call on `batch` attends to another sequence than its query.

    Read from the call's arguments (the value or key is not the query
    tensor itself), not from widths: cross-attention over a context of the
    query's width looks like self-attention by its shapes alone.
    """
    cross, seen = set(), set()

    def make(layer, original):
        def call(*args, **kwargs):
            if id(layer) not in seen:
                seen.add(id(layer))
                query = args[0] if args else kwargs.get("query")
                value = args[1] if len(args) > 1 else kwargs.get("value")
                key = args[2] if len(args) > 2 else kwargs.get("key")
                if value is not query or (key is not None and key is not query):
                    cross.add(id(layer))
            return original(*args, **kwargs)

        return call

    with contextlib.ExitStack() as stack:
        for layer in layers:
            stack.enter_context(intercepted_call(layer, lambda original, layer=layer: make(layer, original)))
        run_model(model, batch)
    return cross


def _attention_layers(model, skipped, names, args, batch=None):
    """The self-attention layers `attention="mimetic"` sets: those the selection skipped as having no rule.

    With `batch`, a pass tells self- from cross-attention by the call's
    arguments; without, by widths alone.
    """
    frozen = set() if args["include_frozen"] else frozen_layers(model)
    candidates = [
        layer
        for layer in walk_layers(model)
        if isinstance(layer, keras.layers.MultiHeadAttention) and names.get(id(layer)) in skipped and layer.built
    ]
    cross = _cross_attention(model, candidates, batch) if candidates and batch is not None else set()
    chosen = []
    for layer in candidates:
        name = names.get(id(layer))
        query, key, value, output = (tuple(p.kernel.shape) for p in attention_projections(layer))
        if id(layer) in frozen:
            skipped[name] = "frozen (trainable=False)"
        elif id(layer) in cross:
            skipped[name] = (
                "MultiHeadAttention called on a context other than its query (cross-attention): mimetic "
                "initialization is for self-attention"
            )
        elif not query[0] == key[0] == value[0] == output[-1]:
            skipped[name] = (
                f"MultiHeadAttention with query, key, value and output widths {query[0]}, {key[0]}, {value[0]}, "
                f"{output[-1]}: mimetic initialization needs one model dimension (self-attention)"
            )
        else:
            chosen.append(layer)
    return chosen


def whitened_layers(targets, whiten, model):
    """The first `whiten` one-group Conv2D layers of `model` (model order) that are among `targets`, and
    whether `targets` hold any: an excluded or frozen first convolution is not replaced by a later one."""
    convolutions = [
        layer
        for layer in walk_layers(model)
        if isinstance(layer, keras.layers.Conv2D) and kernel_slots(layer) and kernel_slots(layer)[0].kind == "conv"
    ]
    target_ids = {id(layer) for layer in targets}
    return [layer for layer in convolutions[:whiten] if id(layer) in target_ids], any(
        id(layer) in target_ids for layer in convolutions
    )


def _graph_roles(model, targets, first, args):
    """`(heads, branch ends, normalized kernels, graph)` read from the model's graph (or its pass)."""
    with reading_graphs():
        graph = has_graph(model)
        heads = output_heads(model) if graph else _subclassed_heads(model, targets, first)
        ends = residual_branch_ends(model) if args["residual"] != "keep" else []
        normalized = normalized_kernels(model) if args["normalized"] != "lsuv" and graph else []
    if args["residual"] == "zero_gamma":
        ends = [end for end in ends if end.kind == "gamma"]
    return heads, ends, normalized, graph


def make_plan(model, first, targets, skipped, names, whitened, args):
    """Every layer's role (`Plan`); `whitened`: the whitened layers the statistics pass reached."""
    skipped = dict(skipped)
    target_ids = {id(layer) for layer in targets}
    whitened_ids = {id(layer) for layer in whitened}
    heads, ends, normalized, graph = _graph_roles(model, targets, first, args)
    heads = [layer for layer in heads if id(layer) in target_ids and id(layer) not in whitened_ids]
    head_ids = {id(layer) for layer in heads}
    ends = [end for end in ends if _may_change(end, model, target_ids, args) and id(end.layer) not in head_ids]
    ends = [end for end in ends if id(end.layer) not in whitened_ids]
    scaled_ends = []
    if args["residual"] == "scaled":
        # Set like any other layer first, then scaled at their merge once every other weight is final.
        for end in ends:
            if end.merge is None:
                skipped.setdefault(
                    names[id(end.layer)], "residual branch end: its sum is an operation, not an Add layer"
                )
        # A branch beside a projection shortcut is set like any other layer: scaled down, the block would
        # start as its projection, and where no nonlinearity follows the sum (keras.io's Xception) the network
        # would start nearly linear (measured: 8.6 points below kept branches there, docs/evidence.md).
        scaled_ends = [end for end in ends if end.merge is not None and not end.projection]
        ends = []
    end_ids = {id(end.layer) for end in ends}
    normalized_ids = {id(layer) for layer in normalized} - head_ids - end_ids
    roles = {}
    for layer in targets:
        key = id(layer)
        if key in whitened_ids:
            roles[key] = "whiten"
        elif key in head_ids:
            roles[key] = "head"
        elif key in end_ids:
            roles[key] = "residual_end"
        elif key in normalized_ids:
            roles[key] = "normalized"
        else:
            roles[key] = "rest"
    attention = _attention_layers(model, skipped, names, args, first) if args["attention"] == "mimetic" else []
    for layer in attention:
        roles[id(layer)] = "attention"
        del skipped[names[id(layer)]]
    plan = Plan(
        roles=roles,
        layers=targets + attention,
        whitened=whitened,
        heads=heads,
        ends=ends,
        scaled_ends=scaled_ends,
        normalized=normalized_ids,
        normalizations=batch_normalizations(model) if args["statistics"] == "data" else [],
        skipped=skipped,
        names=names,
        unread=_unread_blocks(model, names),
    )
    plan._graph = graph
    return plan
