"""The mixed-feedback sequence transformer (Flax NNX).

Shapes: B batch, L positions, D width, H heads, K = D / H per head, V catalog rows.

Each input token is item embedding + feedback-type embedding + position embedding; pre-norm
transformer blocks turn the sequence into one query vector per position, and a query's score for
an item is its dot product with that item's output embedding. Causal (SASRec) attention by
default. Parameters carry logical axis names (:data:`LOGICAL_AXES`) that ``config.mesh.rules``
maps onto the mesh (by default embedding rows and MLP/attention hidden units over ``model``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.checks import boolean, positive_int
from jaxrec.random_bits import RANDOM_BITS, random_bits
from jaxrec.sharding import AXIS_RULES, as_axis_rules

# Logical axis names of the parameters: item rows, the model width, and the attention / MLP
# hidden width. ``axis_rules`` (config.mesh.rules, jaxrec.sharding.AXIS_RULES by default) map
# them onto the mesh's axes, so the model never names a mesh axis (MaxText's pattern).
VOCAB, EMBED, HIDDEN = "vocab", "embed", "hidden"
LOGICAL_AXES = (VOCAB, EMBED, HIDDEN)
AxisRules = tuple[tuple[str, str | None], ...]
FEEDBACK_GATES = ("none", "sigmoid", "signed")
ITEM_BIAS_INITS = ("zeros", "positive_rate")  # model.item_bias_init (applied by the trainer)
# model.appeal_taste's weight and ridge where validation cannot choose them (no pairs): what
# the item_appeal_taste baseline chose on the quickstart's validation windows.
TASTE_GAMMA, TASTE_RIDGE = 2.0, 3.0


def validate_model_config(cfg: Any) -> None:
    """Raises ValueError naming the first bad ``config.model`` field (``cfg``: that section):
    sizes, dropout and mask rates, the width's split over heads, the bias init, the switches."""
    for name in ("width", "depth", "heads", "mlp_ratio"):
        positive_int(cfg[name], f"model.{name}")
    if not 0.0 < float(cfg.mask_prob) < 1.0:
        raise ValueError(f"config.model.mask_prob: must be in (0, 1), got {cfg.mask_prob}")
    if not 0.0 <= float(cfg.dropout) < 1.0:
        raise ValueError(f"config.model.dropout: must be in [0, 1), got {cfg.dropout}")
    if cfg.random_bits not in RANDOM_BITS:
        raise ValueError(f"config.model.random_bits: one of {RANDOM_BITS}, got {cfg.random_bits!r}")
    if cfg.width % cfg.heads:
        raise ValueError(
            f"config.model.width: {cfg.width} is not divisible by config.model.heads ({cfg.heads})"
        )
    if cfg.item_bias_init not in ITEM_BIAS_INITS:
        raise ValueError(
            f"config.model.item_bias_init: one of {ITEM_BIAS_INITS}, got {cfg.item_bias_init!r}"
        )
    positive_int(cfg.appeal_width, "model.appeal_width", 0)
    for name in (
        "appeal_head",
        "appeal_personal",
        "appeal_repeats",
        "catalog_repeats",
        "appeal_pool",
        "appeal_taste",
    ):
        boolean(cfg[name], f"model.{name}")
    positive_int(cfg.taste_rank, "model.taste_rank")


def _sharded(init, names: tuple[str | None, ...], rules: AxisRules):
    """``init`` with logical axis names, resolved through ``rules`` wherever flax places it."""
    return nnx.with_partitioning(init, names, sharding_rules=rules)


def _dense(
    din: int, dout: int, names: tuple[str | None, str | None], rules: AxisRules, rngs, dtype
) -> nnx.Linear:
    return nnx.Linear(
        din,
        dout,
        dtype=dtype,  # computation
        param_dtype=jnp.float32,  # master weights
        rngs=rngs,
        kernel_init=_sharded(nnx.initializers.xavier_uniform(), names, rules),
        bias_init=_sharded(nnx.initializers.zeros_init(), names[1:], rules),
    )


@jax.custom_vjp
def move_rows(x_PxD: jax.Array, to_Q: jax.Array, back_P: jax.Array) -> jax.Array:
    """``[Q, D]``: row ``to_Q[q]`` of ``x_PxD`` (zeros where -1), for a one-to-one map whose
    inverse is ``back_P``. The gradient is the inverse gather, not the scatter-add XLA would
    emit for a general gather (slow on CPU)."""
    return jnp.where((to_Q >= 0)[:, None], x_PxD[jnp.maximum(to_Q, 0)], 0.0)


def _move_rows_fwd(x_PxD, to_Q, back_P):
    return move_rows(x_PxD, to_Q, back_P), (to_Q, back_P)


def _move_rows_bwd(res, g_QxD):
    to_Q, back_P = res
    return move_rows(g_QxD, back_P, to_Q), None, None


move_rows.defvjp(_move_rows_fwd, _move_rows_bwd)


class Dropout(nnx.Module):
    """Inverted dropout whose keep mask reads 16-bit halves of random 32-bit words.

    ``jax.random.bernoulli`` spends a 32-bit threefry word and a float conversion per element;
    halves cost about half as much on CPU, and words from ``random_bits.hash_bits``
    (``bits="hash"``) far less again (``python -m bench.micro``; docs/throughput.md).
    The rate is rounded to a multiple of 1/65536 and the kept values are
    scaled by the exact keep probability, so the output's mean is the input's.
    """

    def __init__(self, rate: float, bits: str = "hash"):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"config.model.dropout: must be in [0, 1), got {rate}")
        self.threshold = round(rate * 65536)
        self.scale = 65536 / (65536 - self.threshold)
        self.bits = bits

    def __call__(self, x, *, deterministic: bool, rngs: nnx.Rngs | None):
        if deterministic or self.threshold == 0:
            return x
        n = x.size
        words = random_bits(rngs.dropout(), ((n + 1) // 2,), self.bits)
        halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:n]
        keep = halves.reshape(x.shape) >= self.threshold
        return jnp.where(keep, x * jnp.asarray(self.scale, x.dtype), jnp.zeros((), x.dtype))


class Block(nnx.Module):
    """Pre-norm self-attention + MLP block."""

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: int,
        dropout: float,
        dtype,
        rngs: nnx.Rngs,
        rules: AxisRules,
        bits: str = "hash",
    ):
        if width % heads:
            raise ValueError(
                f"config.model.width ({width}) must be divisible by config.model.heads ({heads})"
            )
        self.heads = heads
        # Statistics in float32 always; output in ``dtype`` (else bf16 inputs would be promoted
        # to float32 by the float32 scale and bias).
        self.norm1 = nnx.LayerNorm(width, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.qkv = _dense(width, 3 * width, (EMBED, HIDDEN), rules, rngs, dtype)
        self.out = _dense(width, width, (HIDDEN, EMBED), rules, rngs, dtype)
        self.norm2 = nnx.LayerNorm(width, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.mlp_in = _dense(width, mlp_ratio * width, (EMBED, HIDDEN), rules, rngs, dtype)
        self.mlp_out = _dense(mlp_ratio * width, width, (HIDDEN, EMBED), rules, rngs, dtype)
        self.dropout = Dropout(dropout, bits)

    def __call__(
        self,
        x_BxLxD,
        mask_Bx1xLxL,
        rngs: nnx.Rngs | None,
        deterministic: bool,
        bias_BxHxLxL: jax.Array | None = None,
    ):
        b, length, d = x_BxLxD.shape
        h_BxLxD = self.norm1(x_BxLxD)
        qkv_BxLx3xHxK = self.qkv(h_BxLxD).reshape(b, length, 3, self.heads, d // self.heads)
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (qkv_BxLx3xHxK[:, :, i] for i in range(3))
        if bias_BxHxLxL is not None:
            bias_BxHxLxL = bias_BxHxLxL.astype(q_BxLxHxK.dtype)
        att_BxLxHxK = jax.nn.dot_product_attention(
            q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, bias=bias_BxHxLxL, mask=mask_Bx1xLxL
        )
        att_BxLxD = self.out(att_BxLxHxK.reshape(b, length, d))
        x_BxLxD = x_BxLxD + self.dropout(att_BxLxD, deterministic=deterministic, rngs=rngs)
        h_BxLxD = self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x_BxLxD))))
        return x_BxLxD + self.dropout(h_BxLxD, deterministic=deterministic, rngs=rngs)


class SequenceModel(nnx.Module):
    """Transformer over (item, feedback-type) tokens; item 0 and feedback 0 are padding."""

    def __init__(
        self,
        cfg: Any,
        num_items: int,
        num_feedback_types: int,
        max_len: int,
        rngs: nnx.Rngs,
        context_bias: bool = False,
        axis_rules: AxisRules | None = None,
    ):
        rules = AXIS_RULES if axis_rules is None else as_axis_rules(axis_rules)
        width = int(cfg.width)
        self.width = width
        self.max_len = max_len
        self.num_items = num_items
        # Rows padded to a multiple of the vocabulary multiple, so the table splits evenly over
        # the ``model`` axis (and tiles well on TPU); the padding rows are never scored.
        multiple = int(cfg.vocab_multiple)
        rows = -(-(num_items + 2) // multiple) * multiple
        self.causal = bool(cfg.causal)
        # Cloze (BERT4Rec) mode hides tokens behind a [MASK] item and feedback type.
        self.mask_item = num_items + 1
        self.mask_feedback = num_feedback_types + 1
        # Mixed precision: ``dtype`` (e.g. bfloat16) is the dtype of the activations inside the
        # transformer; every parameter stays float32 (the optimizer's master weights), and the
        # final norm, the query vectors and the loss are float32.
        self.dtype = jnp.dtype(cfg.dtype)
        emb = nnx.initializers.normal(stddev=0.02)
        self.item_embed = nnx.Embed(
            rows, width, rngs=rngs, embedding_init=_sharded(emb, (VOCAB, EMBED), rules)
        )
        self.feedback_embed = nnx.Embed(
            num_feedback_types + 2,
            width,
            rngs=rngs,
            embedding_init=_sharded(emb, (None, EMBED), rules),
        )
        self.pos_embed = nnx.Embed(
            max_len, width, rngs=rngs, embedding_init=_sharded(emb, (None, EMBED), rules)
        )
        self.output_embed = nnx.data(None)
        if not cfg.shared_embeddings:
            self.output_embed = nnx.Embed(
                rows,
                width,
                rngs=rngs,
                embedding_init=_sharded(emb, (VOCAB, EMBED), rules),
            )
        # Optional learned per-item output bias: an item's score is q . e_i + b_i, so item
        # quality (how often an item is liked once played) need not be squeezed into the dot
        # product. Stored as a [rows, 1] table; queries get a constant 1 appended to match.
        self.item_bias = nnx.data(None)
        if cfg.item_bias:
            self.item_bias = nnx.Embed(
                rows,
                1,
                rngs=rngs,
                embedding_init=_sharded(nnx.initializers.zeros_init(), (VOCAB, None), rules),
            )
        self.blocks = nnx.List(
            [
                Block(
                    width,
                    int(cfg.heads),
                    int(cfg.mlp_ratio),
                    float(cfg.dropout),
                    self.dtype,
                    rngs,
                    rules,
                    cfg.random_bits,
                )
                for _ in range(int(cfg.depth))
            ]
        )
        self.final_norm = nnx.LayerNorm(width, dtype=jnp.float32, rngs=rngs)
        # Optional appeal head: a second reading of the same hidden state that scores how much
        # the listener will like an item *once it is played*, a_i + q_a . e_i + c (see
        # :meth:`appeal_query`). The catalog score ranks what to play (exposure x appeal); the
        # appeal score orders the items of one station's window, the paper's pairwise accuracy.
        self.appeal_proj = nnx.data(None)
        self.appeal_bias = nnx.data(None)
        # appeal_personal=False keeps only a_i + c: item appeal, read apart from the
        # listener's overall mood c (how much they skip), without a per-listener item term.
        # The listener x item term reads the output item embeddings (appeal_width = 0: the
        # catalog task regularises them) or item vectors of its own (appeal_width = A > 0).
        self.appeal_personal = bool(cfg.appeal_personal)
        self.appeal_embed = nnx.data(None)
        if cfg.appeal_head:
            own = int(cfg.appeal_width) if self.appeal_personal else 0
            query_width = (own or width) if self.appeal_personal else 0
            self.appeal_proj = _dense(
                width, query_width + 1, (EMBED, None), rules, rngs, jnp.float32
            )
            # Zero projection: the head starts exactly at its fitted item (and repeat) terms,
            # not at them plus a random listener term; the gradient still reaches it.
            kernel = self.appeal_proj.kernel
            kernel[...] = jnp.zeros_like(kernel[...])
            self.appeal_bias = nnx.Embed(
                rows,
                1,
                rngs=rngs,
                embedding_init=_sharded(nnx.initializers.zeros_init(), (VOCAB, None), rules),
            )
            if own:
                self.appeal_embed = nnx.Embed(
                    rows,
                    own,
                    rngs=rngs,
                    embedding_init=_sharded(emb, (VOCAB, EMBED), rules),
                )
        # Optional repeat term of the appeal head: what the listener did the earlier times the
        # same item was played (music repeats: many test pairs hold an item heard before;
        # docs/losses.md, "The appeal head"). A dot product cannot tell "this very song"
        # from "a similar one", so the head reads the history directly: per feedback type t,
        # w_t log(1 + n_t(i)) for the n_t(i) earlier reactions of type t to item i, plus u_t for
        # the type of the newest one. 2 x (T + 2) weights shared by all items, started at 0.
        self.appeal_repeat = nnx.data(None)
        if cfg.appeal_head and cfg.appeal_repeats:
            self.appeal_repeat = nnx.Param(jnp.zeros((2, num_feedback_types + 2), jnp.float32))
        # Optional repeat term of the catalog score, the same form with weights of its own: a
        # thumbs-down on a song lowers that song's score directly, which a dot product with a
        # summary of the history cannot do for one song without moving its neighbours. Trained
        # with the catalog loss, the history's items competing as extra candidates (batch_loss.py).
        self.catalog_repeat = nnx.data(None)
        if cfg.catalog_repeats:
            self.catalog_repeat = nnx.Param(jnp.zeros((2, num_feedback_types + 2), jnp.float32))
        # Optional reaction pool of the appeal head: per feedback type t, a weight v_t times the
        # mean output embedding of the history's songs that got t; song i's appeal gains
        # e_i . sum_t v_t mean_j e_j, i.e. how near it lies to what the listener liked and
        # rejected (item-kNN over reactions). The embeddings are read with the gradient
        # stopped: only the T + 2 weights, started at 0, learn from the appeal loss, so the
        # term cannot overfit the way a free listener x item term does at small data.
        self.appeal_pool = nnx.data(None)
        if cfg.appeal_head and cfg.appeal_pool:
            self.appeal_pool = nnx.Param(jnp.zeros((num_feedback_types + 2,), jnp.float32))
        # Optional taste term of the appeal head: at each slot, the listener's taste beta is a
        # ridge regression of the history's reaction codes (less each item's offset) on fixed
        # item factors, and song i's appeal gains q_i . beta (the item_appeal_taste baseline's
        # form). Factors, offsets and codes are set from a fit of the training part
        # (jaxrec.assembly) and read with the gradient stopped; the scale gamma and the ridge
        # (log lambda) are chosen on validation; the ridge stays there, gamma learns only if
        # optim.appeal_taste_lr_multiplier says so (by default it does not: the factors were
        # fitted on the training windows).
        self.taste_table = nnx.data(None)  # [rows, R + 1]: factors, then the item offset
        self.taste_codes = nnx.data(None)  # [T + 2]: the code of each feedback token
        self.appeal_taste = nnx.data(None)  # (gamma, log lambda)
        if cfg.appeal_head and cfg.appeal_taste:
            rank = int(cfg.taste_rank)
            self.taste_table = nnx.Param(jnp.zeros((rows, rank + 1), jnp.float32))
            self.taste_codes = nnx.Param(jnp.zeros((num_feedback_types + 2,), jnp.float32))
            start = [TASTE_GAMMA, np.log(TASTE_RIDGE)]
            self.appeal_taste = nnx.Param(jnp.array(start, jnp.float32))
        self.embed_dropout = Dropout(float(cfg.dropout), cfg.random_bits)
        # Listener sequences (data.sequence = "listener"): each layer and head adds a learned
        # logit to the attention paid to tokens of the query's own context (station), so one
        # row can weigh what the listener does on this station against what they do elsewhere.
        # Started at 1 (a mild preference for the own station); no contexts given: no bias,
        # the same as one context for the whole row.
        self.context_bias = nnx.data(None)
        if context_bias:
            self.context_bias = nnx.Param(jnp.ones((int(cfg.depth), int(cfg.heads)), jnp.float32))
        # Optional learnable per-type gate on the item part of a token: how much a song heard
        # with each feedback type says about the listener. ``sigmoid`` (or True): in (0, 1),
        # initialised open (sigmoid(2) = 0.88). ``"signed"``: tanh gate in (-1, 1), initialised
        # at tanh(0.5) = 0.46, so a disliked song can count *against* its neighbours: with
        # shared input/output embeddings the query can then hold sum_h gate_h e_h, an
        # item-item model with negative feedback.
        gate = {False: "none", True: "sigmoid"}.get(cfg.feedback_gate)
        gate = gate or cfg.feedback_gate
        if gate not in FEEDBACK_GATES:
            raise ValueError(
                f"config.model.feedback_gate: one of {list(FEEDBACK_GATES)}, got {gate!r}"
            )
        self.gate_fn = jnp.tanh if gate == "signed" else jax.nn.sigmoid
        self.feedback_gate = nnx.data(None)
        if gate != "none":
            init = 0.5 if gate == "signed" else 2.0
            self.feedback_gate = nnx.Param(jnp.full((num_feedback_types + 2,), init, jnp.float32))

    def __call__(
        self,
        items_BxL: jax.Array,
        feedback_BxL: jax.Array,
        *,
        context_BxL: jax.Array | None = None,
        query_context_B: jax.Array | None = None,
        rngs: nnx.Rngs | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Query vectors ``[B, L, D]`` (``D + 1`` with an item bias, whose query component is
        1): position t summarises tokens <= t (causal mode)."""
        hidden_BxLxD = self.encode(
            items_BxL,
            feedback_BxL,
            context_BxL=context_BxL,
            query_context_B=query_context_B,
            rngs=rngs,
            deterministic=deterministic,
        )
        return self.catalog_query(hidden_BxLxD)

    @property
    def has_appeal_head(self) -> bool:
        return self.appeal_proj is not None

    def encode(
        self,
        items_BxL: jax.Array,
        feedback_BxL: jax.Array,
        *,
        context_BxL: jax.Array | None = None,
        query_context_B: jax.Array | None = None,
        pack_src_RxL: jax.Array | None = None,
        unpack_BxL: jax.Array | None = None,
        rngs: nnx.Rngs | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """The final-normed hidden states ``[B, L, D]`` (float32) both heads read.

        With ``pack_src_RxL`` (and ``unpack_BxL``) the rows are encoded packed: packed slot
        (r, s) holds the token at flat index ``pack_src_RxL[r, s] = b * L + l`` (-1: padding),
        attends only to the earlier tokens of the same example b, and is embedded at the
        position it has in the unpacked row. The result is the packed ``[R, L, D]`` (what the
        training step's loss reads), or, with ``unpack_BxL`` (the packed slot of each (b, l);
        -1: padding, whose hidden state is 0), moved back to ``[B, L, D]``. Same hidden state
        as unpacked for every real token.

        ``context_BxL`` (context id + 1 of each token; listener sequences) sets the context
        bias: each slot's query belongs to its own token's context, or for the newest slot to
        ``query_context_B`` (the context being scored) when given. Ignored by a model without
        a context bias.
        """
        length = items_BxL.shape[1]
        slot_BxL = jnp.arange(length)[None]
        segment = None
        if pack_src_RxL is not None:
            real_RxL = pack_src_RxL >= 0
            src_RxL = jnp.maximum(pack_src_RxL, 0)
            items_BxL = jnp.where(real_RxL, items_BxL.reshape(-1)[src_RxL], 0)
            feedback_BxL = jnp.where(real_RxL, feedback_BxL.reshape(-1)[src_RxL], 0)
            if context_BxL is not None:
                context_BxL = jnp.where(real_RxL, context_BxL.reshape(-1)[src_RxL], 0)
            slot_BxL = src_RxL % length
            segment = jnp.where(real_RxL, src_RxL // length + 1, 0)
        x = self.item_embed(items_BxL)
        if self.feedback_gate is not None:
            x = x * self.gate_fn(self.feedback_gate[...][feedback_BxL])[..., None]
        x = x + self.feedback_embed(feedback_BxL)
        # Positions count from the right: the newest slot is always max_len - 1, so a batch cut
        # to its last ``length`` slots (length buckets) embeds every token as the full one does.
        x = x + self.pos_embed(slot_BxL + (self.max_len - length))
        x = self.embed_dropout(x.astype(self.dtype), deterministic=deterministic, rngs=rngs)
        valid_BxL = items_BxL > 0
        mask = valid_BxL[:, None, None, :]
        if segment is not None:  # block-diagonal: a token never sees another example
            mask = mask & (segment[:, :, None] == segment[:, None, :])[:, None]
        if self.causal:
            mask = mask & jnp.tril(jnp.ones((length, length), bool))[None, None]
        # Every query may see itself, so padded rows never attend to nothing (no NaNs).
        mask = mask | jnp.eye(length, dtype=bool)[None, None]
        same_BxLxL = None
        if self.context_bias is not None and context_BxL is not None:
            context_BxL = jnp.asarray(context_BxL)
            query_BxL = context_BxL
            if query_context_B is not None:
                query_BxL = query_BxL.at[:, -1].set(query_context_B)
            same_BxLxL = (query_BxL[:, :, None] == context_BxL[:, None, :]).astype(jnp.float32)
        for i, block in enumerate(self.blocks):
            bias = None
            if same_BxLxL is not None:
                bias = same_BxLxL[:, None] * self.context_bias[...][i][None, :, None, None]
            x = block(x, mask, rngs, deterministic, bias)
        hidden = self.final_norm(x).astype(jnp.float32)
        # More channels, read by appeal_query only: the appeal pool's, then the taste term's.
        if self.appeal_pool is not None:
            pool = self.pooled_reactions(self.appeal_pool[...], items_BxL, feedback_BxL, segment)
            hidden = jnp.concatenate([hidden, pool], axis=-1)
        if self.appeal_taste is not None:
            taste = self.history_taste(items_BxL, feedback_BxL, segment)
            hidden = jnp.concatenate([hidden, taste], axis=-1)
        if unpack_BxL is None:
            return hidden
        d = hidden.shape[-1]
        flat = move_rows(hidden.reshape(-1, d), unpack_BxL.reshape(-1), pack_src_RxL.reshape(-1))
        return flat.reshape(*unpack_BxL.shape, d)

    def pooled_reactions(
        self,
        weights_T: jax.Array,
        items_BxL: jax.Array,
        feedback_BxL: jax.Array,
        segment_BxL: jax.Array | None = None,
    ) -> jax.Array:
        """``[B, L, D]``: at each slot, sum_t w_t x the mean pool vector (:meth:`pool_table`)
        of the tokens of type t it reads (causal; its own segment's only when ``segment_BxL``
        is given). The vectors are unit length, so the term is a weighted mean cosine."""
        length = items_BxL.shape[1]
        onehot_BxLxT = jax.nn.one_hot(feedback_BxL, weights_T.shape[0]) * (items_BxL > 0)[..., None]
        reads_BxQxL = jnp.tril(jnp.ones((length, length)))[None]
        if segment_BxL is not None:
            reads_BxQxL = reads_BxQxL * (segment_BxL[:, :, None] == segment_BxL[:, None, :])
        counts_BxQxT = jnp.einsum("bql,blt->bqt", reads_BxQxL, onehot_BxLxT)
        per_type_BxQxT = weights_T / jnp.maximum(counts_BxQxT, 1.0)
        coef_BxQxL = reads_BxQxL * jnp.einsum("bqt,blt->bql", per_type_BxQxT, onehot_BxLxT)
        # Only the history's rows are normalised, not the whole catalog, at every step.
        emb_BxLxD = self.pool_table(self._output_table()(items_BxL))
        return jnp.einsum("bql,bld->bqd", coef_BxQxL, emb_BxLxD)

    def history_taste(
        self, items_BxL: jax.Array, feedback_BxL: jax.Array, segment_BxL: jax.Array | None = None
    ) -> jax.Array:
        """``[B, L, R]``: gamma x the taste beta each slot reads (causal; its own segment's
        only when ``segment_BxL`` is given): the ridge regression (lambda; the intercept, the
        listener's mood, unpenalised) of the tokens' codes less their items' offsets on their
        items' factors."""
        table = jax.lax.stop_gradient(self.taste_table[...])
        codes = jax.lax.stop_gradient(self.taste_codes[...])
        # The ridge is fixed at its validation choice (no gradient through the solve).
        gamma, log_lam = self.appeal_taste[...][0], jax.lax.stop_gradient(self.appeal_taste[...][1])
        length, rank = items_BxL.shape[1], table.shape[1] - 1
        real_BxL = (items_BxL > 0).astype(jnp.float32)
        rows_BxLxA = table[items_BxL]
        x_BxLxA = jnp.concatenate([rows_BxLxA[..., :rank], jnp.ones_like(real_BxL)[..., None]], -1)
        x_BxLxA = x_BxLxA * real_BxL[..., None]
        code_BxL = (codes[feedback_BxL] - rows_BxLxA[..., rank]) * real_BxL
        # Running sums over the slots; a packed slot takes off what came before its segment.
        gram = jnp.cumsum(x_BxLxA[..., :, None] * x_BxLxA[..., None, :], axis=1)
        rhs = jnp.cumsum(x_BxLxA * code_BxL[..., None], axis=1)
        if segment_BxL is not None:
            slot_L = jnp.arange(length)
            first_BxL = jnp.concatenate(
                [
                    jnp.ones_like(segment_BxL[:, :1], bool),
                    segment_BxL[:, 1:] != segment_BxL[:, :-1],
                ],
                axis=1,
            )
            start_BxL = jax.lax.cummax(jnp.where(first_BxL, slot_L, 0), axis=1)
            before = start_BxL - 1  # the slot before the segment (-1: none)
            take = jnp.maximum(before, 0)
            rows = jnp.arange(items_BxL.shape[0])[:, None]
            keep = (before >= 0).astype(jnp.float32)
            gram = gram - gram[rows, take] * keep[..., None, None]
            rhs = rhs - rhs[rows, take] * keep[..., None]
        ridge_A = jnp.concatenate([jnp.full((rank,), jnp.exp(log_lam)), jnp.full((1,), 1e-3)])
        beta = jnp.linalg.solve(gram + jnp.diag(ridge_A), rhs[..., None])[..., 0]
        return gamma * beta[..., :rank]

    def _output_table(self) -> nnx.Embed:
        return self.output_embed if self.output_embed is not None else self.item_embed

    def pool_table(self, rows_NxD: jax.Array | None = None) -> jax.Array:
        """The appeal pool's item vectors: the unit output embeddings (of ``rows_NxD`` when
        given, else of the whole table), read with the gradient stopped (learned vectors of
        its own overfitted the training windows, docs/results/README.md)."""
        if rows_NxD is None:
            rows_NxD = self._output_table().embedding[...]
        return jax.lax.stop_gradient(_unit(rows_NxD.astype(jnp.float32)))

    def catalog_query(self, hidden_BxLxD: jax.Array) -> jax.Array:
        """Catalog queries: the hidden state, with a constant 1 appended for the item bias."""
        hidden_BxLxD = hidden_BxLxD[..., : self.width]  # without the appeal pool's channels
        if self.item_bias is None:
            return hidden_BxLxD
        ones = jnp.ones((*hidden_BxLxD.shape[:-1], 1), hidden_BxLxD.dtype)
        return jnp.concatenate([hidden_BxLxD, ones], axis=-1)

    def appeal_query(self, hidden_BxLxD: jax.Array) -> jax.Array:
        """Appeal queries ``[..., A + 2]``: (q_a, 1, c) against :meth:`appeal_table`'s rows
        (f_i, a_i, 1), so the score is q_a . f_i + a_i + c (A = 0 without the personal term).
        The per-query offset c does not change the order of items; it lets the head be a
        calibrated like-probability. With the appeal pool and the taste term, their channels of
        the hidden state lead, against the pool's item vectors and the item factors:
        (p, t, q_a, 1, c) . (e_i, g_i, f_i, a_i, 1)."""
        proj = self.appeal_proj(hidden_BxLxD[..., : self.width])
        ones = jnp.ones((*proj.shape[:-1], 1), proj.dtype)
        # The pool's and the taste term's channels (encode) lead, as their rows do in the table.
        parts = [hidden_BxLxD[..., self.width :], proj[..., :-1], ones, proj[..., -1:]]
        return jnp.concatenate(parts, axis=-1)

    def appeal_table(self) -> jax.Array:
        """Appeal rows ``[V + 1, A + 2]``: the item vectors, the appeal bias, 1; with the appeal
        pool and the taste term, the pool's unit item vectors (:meth:`pool_table`), then the
        item factors, lead."""
        bias = self.appeal_bias.embedding[: self.num_items + 1]
        parts = [bias, jnp.ones_like(bias)]
        table = self._output_table()
        output_VxD = table.embedding[: self.num_items + 1].astype(bias.dtype)
        if self.appeal_embed is not None:
            parts.insert(0, self.appeal_embed.embedding[: self.num_items + 1])
        elif self.appeal_personal:
            parts.insert(0, output_VxD)
        if self.appeal_taste is not None:
            rank = self.taste_table.shape[1] - 1
            table = jax.lax.stop_gradient(self.taste_table[...])
            parts.insert(0, table[: self.num_items + 1, :rank])
        if self.appeal_pool is not None:
            parts.insert(0, self.pool_table()[: self.num_items + 1])
        return jnp.concatenate(parts, axis=1)

    def repeat_scores(
        self,
        items_BxL: jax.Array,
        feedback_BxL: jax.Array,
        candidates_BxQxC: jax.Array,
        segment_BxL: jax.Array | None = None,
    ) -> jax.Array | None:
        """The appeal head's repeat term ``[B, Q, C]`` of candidates against the history tokens
        (None without ``model.appeal_repeats``). With Q = L (training) query q reads the tokens
        at slots <= q, of its own segment when ``segment_BxL`` is given (packed rows); with
        Q = 1 (evaluation, serving) it reads the whole history."""
        if self.appeal_repeat is None:
            return None
        return repeat_term(
            self.appeal_repeat[...], items_BxL, feedback_BxL, candidates_BxQxC, segment_BxL
        )

    def catalog_repeat_scores(
        self,
        items_BxL: jax.Array,
        feedback_BxL: jax.Array,
        candidates_BxQxC: jax.Array,
        segment_BxL: jax.Array | None = None,
        appended_type: int | None = None,
    ) -> jax.Array | None:
        """The catalog score's repeat term ``[B, Q, C]`` (None without
        ``model.catalog_repeats``); slots and ``appended_type`` as in :func:`repeat_term`."""
        if self.catalog_repeat is None:
            return None
        return repeat_term(
            self.catalog_repeat[...],
            items_BxL,
            feedback_BxL,
            candidates_BxQxC,
            segment_BxL,
            appended_type,
        )

    def item_table(self) -> jax.Array:
        """Output item embeddings ``[V + 1, D]`` (row 0 is padding, never recommended); with an
        item bias, ``[V + 1, D + 1]`` whose last column is the bias."""
        table = self._output_table()
        table = table.embedding[: self.num_items + 1]
        if self.item_bias is not None:
            bias = self.item_bias.embedding[: self.num_items + 1].astype(table.dtype)
            table = jnp.concatenate([table, bias], axis=1)
        return table

    def feedback_table(self) -> jax.Array:
        """Learned feedback-type embeddings ``[T + 1, D]`` (row 0 is padding), for analysis."""
        return self.feedback_embed.embedding[: self.mask_feedback]


def _unit(x_NxD: jax.Array) -> jax.Array:
    """Rows scaled to unit length (the padding row, 0, stays 0)."""
    return x_NxD * jax.lax.rsqrt(jnp.maximum(jnp.sum(x_NxD * x_NxD, -1, keepdims=True), 1e-12))


def repeat_term(
    weights_2xT: jax.Array,
    items_BxL: jax.Array,
    feedback_BxL: jax.Array,
    candidates_BxQxC: jax.Array,
    segment_BxL: jax.Array | None = None,
    appended_type: int | None = None,
) -> jax.Array:
    """``[B, Q, C]``: per feedback type t, w_t log(1 + n_t(c)) for the n_t(c) reactions of type
    t to candidate c among the history tokens a query reads, plus u_t for the type of the newest
    one (``weights_2xT`` = (w, u)). With Q = L query q reads the slots <= q (of its own segment
    when ``segment_BxL`` is given); with Q = 1 the whole history.

    ``appended_type`` (a feedback token, type index + 1): the counterfactual term, as if the
    query had just reacted to each candidate with that type (one more reaction, the newest);
    only that type's two weights get a gradient from it."""
    b, q, _ = candidates_BxQxC.shape
    length = items_BxL.shape[1]
    match_BxQxCxL = (candidates_BxQxC[..., None] == items_BxL[:, None, None, :]) & (items_BxL > 0)[
        :, None, None, :
    ]
    if q > 1:  # causal: a position knows only the reactions up to itself
        match_BxQxCxL &= jnp.tril(jnp.ones((q, length), bool))[None, :, None, :]
    if segment_BxL is not None:  # packed: only its own example's reactions
        match_BxQxCxL &= (segment_BxL[:, :q, None] == segment_BxL[:, None, :])[:, :, None, :]
    types = weights_2xT.shape[1]
    onehot_BxLxT = jax.nn.one_hot(jnp.clip(feedback_BxL, 0, types - 1), types)
    counts_BxQxCxT = jnp.einsum("bqcl,blt->bqct", match_BxQxCxL.astype(jnp.float32), onehot_BxLxT)
    slot_L = jnp.arange(length)
    newest_BxQxC = jnp.max(jnp.where(match_BxQxCxL, slot_L, -1), axis=-1)
    is_newest_BxQxCxL = match_BxQxCxL & (slot_L == newest_BxQxC[..., None])
    last_BxQxCxT = jnp.einsum("bqcl,blt->bqct", is_newest_BxQxCxL.astype(jnp.float32), onehot_BxLxT)
    if appended_type is not None:
        appended_T = jax.nn.one_hot(appended_type, types)
        counts_BxQxCxT = counts_BxQxCxT + appended_T
        last_BxQxCxT = jnp.broadcast_to(appended_T, last_BxQxCxT.shape)
        weights_2xT = jnp.where(appended_T > 0, weights_2xT, jax.lax.stop_gradient(weights_2xT))
    return jnp.log1p(counts_BxQxCxT) @ weights_2xT[0] + last_BxQxCxT @ weights_2xT[1]
