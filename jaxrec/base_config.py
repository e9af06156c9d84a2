"""Every field of a jaxrec config, with its default and a comment: the one place defaults live.

The shipped configs (configs/*.py) start from :func:`get_config` and change what they need;
:func:`complete` fills a config's missing fields from it and refuses a field it does not name
(a misspelling), so the code reads every field directly, without fallbacks. The defaults are
the quickstart's (configs/quickstart.py is this config as it is). :data:`ABSENT_MEANS` says what
a field absent from an older run's saved config.json meant when that run trained.
"""

from __future__ import annotations

import difflib
from typing import Any

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

from jaxrec.eval.names import BASELINES
from jaxrec.sharding import AXIS_RULES


def get_config() -> ConfigDict:
    c = ConfigDict()
    c.seed = 0

    c.data = ConfigDict()
    # "simulator"; an adapter reading raw files ("spotify-sessions", "mssd", "piki",
    # "movielens", "csv", "parquet"); or "prepared" (a `jaxrec data prepare` output directory).
    c.data.source = "simulator"
    c.data.path = ""
    c.data.options = ConfigDict()  # adapter options for real sources (see docs/data.md)
    c.data.split = "leave_last_out"  # or "temporal": one global time cut for all users
    c.data.window = 5  # events per test window (and per validation window)
    c.data.temporal_cut = (
        0.8,
        0.9,
    )  # temporal split: valid from this time quantile, test from that
    # What one row holds: "context" (one station's events) or "listener" (a listener's
    # events across all their stations in time order, each token marked with its station;
    # targets and scores stay within the station). Data without listener ids: "context".
    c.data.sequence = "context"
    c.data.max_len = 50  # L: input tokens per example
    # Batches cut to a few lengths (one compile each) instead of always max_len: "" off,
    # "25,50" lengths, or "auto" (quarters of max_len when they cut a quarter of the positions).
    c.data.length_buckets = ""
    # Several short examples packed into one row (attention kept within each): "auto" packs when
    # it saves rows, "on", "off" (docs/training.md).
    c.data.packing = "auto"
    c.data.max_explicit = 8  # M: explicit negatives kept per position
    c.data.negative_keep_fraction = 1.0  # < 1 drops that share of training negatives (seeded)
    c.data.max_context_positives = 512  # P: a context's liked items masked from its negatives
    # W > 0: the explicit contrast (loss.contrast_weight) pairs every positive of the next W
    # events with every explicit negative among them; 0: the positive vs its gap negatives.
    c.data.contrast_window = 5
    c.data.simulator = ConfigDict()
    s = c.data.simulator
    s.num_users = 3000
    s.num_items = 2000
    s.num_genres = 20
    s.latent_dim = 16
    s.contexts_per_user = 2
    s.events_per_context = (20, 60)
    s.feedback_proportions = ConfigDict(
        dict(thumbs_up=0.15, play=0.40, skip=0.35, thumbs_down=0.10)
    )
    s.noise = 0.5
    s.taste_weight = 2.0
    s.quality_weight = 0.5
    s.pickiness = 0.5
    s.station_focus = 0.8
    s.popularity_exponent = 0.8

    # Roles of each feedback type: input token, positive target, explicit negative target.
    c.feedback = ConfigDict()
    c.feedback.input = ("thumbs_up", "play", "skip", "thumbs_down")
    c.feedback.positive = ("thumbs_up", "play")
    c.feedback.negative = ("skip", "thumbs_down")
    # Types whose items the catalog loss learns to predict next; () means feedback.positive.
    # Evaluation still ranks the positives: e.g. learn from every rating, rank the liked ones.
    c.feedback.target = ()
    c.feedback.negative_weights = ConfigDict()  # e.g. {"thumbs_down": 2.0}; unnamed types: 1.0
    # How much each type says the listener likes the song, in [-1, 1], for the taste fit of
    # the item_appeal_taste baseline and model.appeal_taste, e.g. {"like": 1.0, "view": 0.2}.
    # Unnamed types: the radio vocabulary's (thumbs_up 1, play 0.33, skip -0.33, thumbs_down
    # -1), else +1 positive, -1 negative, 0 otherwise.
    c.feedback.codes = ConfigDict()

    c.model = ConfigDict()
    c.model.width = 64
    c.model.depth = 2
    c.model.heads = 2
    c.model.mlp_ratio = 4
    c.model.dropout = 0.1
    # Words behind the dropout masks: "hash" (two threefry words spread by an integer hash;
    # cheap) or "threefry" (jax.random.bits per word; runs before 2026-12-07 used it)
    c.model.random_bits = "hash"
    c.model.causal = True  # False: bidirectional cloze training (BERT4Rec)
    c.model.mask_prob = 0.2  # cloze mode: share of tokens hidden behind [MASK]
    # Learnable per-feedback-type gate on item embeddings: none | sigmoid | signed (tanh)
    c.model.feedback_gate = "none"
    c.model.shared_embeddings = True
    c.model.item_bias = False  # learned per-item output bias: score = q . e_i + b_i
    c.model.item_bias_init = "zeros"  # or "positive_rate": logit of the training positive rate
    # Appeal head: a second score, the like-probability of an item once played, trained by
    # loss.appeal_weight on the next data.contrast_window events; orders window pairs (eval).
    c.model.appeal_head = True
    # False: the head is a_i + c (+ repeats), no listener x item term. On the simulator that
    # term fitted the training windows and lost on validation after ~200 steps, in every
    # variant tried (docs/results/README.md, "The appeal head"): off.
    c.model.appeal_personal = False
    c.model.appeal_width = 0  # 0: the output item embeddings; A > 0: own item vectors, width A
    # The head also reads the listener's earlier reactions to the same item in the history
    # (a repeat term; ignored without the head).
    c.model.appeal_repeats = True
    # Per feedback type, a learned weight x the mean embedding of the history's songs with
    # that reaction, dotted with the song's: appeal from the songs near it (item-kNN; ignored
    # without the head).
    c.model.appeal_pool = True
    # And the listener's taste: a ridge regression of the history's reaction codes
    # (feedback.codes) on item factors fitted to every training listener's reactions, as the
    # item_appeal_taste baseline (ignored without the head). taste_rank: the factors' width.
    c.model.appeal_taste = True
    c.model.taste_rank = 16
    # The catalog score reads the listener's earlier reactions to the item itself, with weights
    # per feedback type learned by the catalog loss (a thumbs-down can sink that one song),
    # with the counterfactual term below teaching what a rejection does.
    c.model.catalog_repeats = True
    c.model.dtype = "float32"  # activations; "bfloat16" on GPU/TPU
    c.model.vocab_multiple = 128  # embedding rows padded to a multiple (even split over 'model')

    # The loss is a weighted sum of terms (docs/losses.md): a full softmax over the catalog, a
    # sampled softmax over in-batch targets, and a term over K random negatives; each softmax
    # also takes the position's explicit negatives; optional not-to-recommend term.
    c.loss = ConfigDict()
    # A full softmax over the catalog (the fused kernel streams it): on the quickstart and on
    # a held-out like/hate feed it ranks above the sampled softmax with 128 random negatives
    # (docs/results/README.md); for catalogs of millions, sampled_weight=1 instead.
    c.loss.full_softmax_weight = 1.0
    c.loss.in_batch_weight = 0.0
    c.loss.sampled_weight = 0.0
    c.loss.ntr_weight = 0.0  # not-to-recommend: -log(1 - p(item)) on explicit negatives
    # Explicit contrast: the positive against the position's explicit negatives alone (softmax
    # or pairwise), beside the catalog terms rather than diluted inside them.
    c.loss.contrast_weight = 0.0
    c.loss.contrast_type = "softmax"  # softmax | pairwise
    c.loss.appeal_weight = 1.0  # BCE of the appeal head on the next W events (liked / not)
    c.loss.ntr_on = "auto"  # which softmax's p: auto | full_softmax | in_batch | sampled
    # Counterfactual not-to-recommend (model.catalog_repeats): each positive, had the listener
    # just given it counterfactual_type, must fall; it trains that type's repeat weights only.
    c.loss.counterfactual_weight = 1.0
    c.loss.counterfactual_type = "thumbs_down"
    c.loss.type = "softmax"  # the random-negatives term: softmax | bce | gbce
    c.loss.num_random_negatives = 128  # K
    c.loss.sampler = "uniform"  # or "popularity" (training-target frequencies)
    c.loss.shared_negatives = True  # one set of K for the whole batch
    c.loss.hardest_of = 0  # N > K: draw N random negatives, keep the K scored highest
    c.loss.gbce_t = 0.75  # gSASRec calibration
    c.loss.random_bits = "hash"  # words behind the random negatives, as model.random_bits
    c.loss.explicit_negatives = True  # thumbs-down / skips of the position join the negatives
    c.loss.explicit_weight = 1.0
    c.loss.logq_correction = True  # subtract log Q of sampled / in-batch candidates
    c.loss.mask_context_positives = True  # a candidate liked in the same context is no negative
    c.loss.kernel = "chunked"  # dense | chunked (streaming, custom VJP) | pallas (GPU/TPU)
    c.loss.chunk_size = 1024
    c.loss.pallas_block_queries = 128
    c.loss.pallas_block_candidates = 512
    c.loss.pallas_interpret = False

    c.optim = ConfigDict()
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 100
    # After the warm-up: "cosine" decays to a tenth of the rate at the budget's end, "constant"
    # holds it (an open-ended run, early stopping alone ending it).
    c.optim.schedule = "cosine"
    c.optim.weight_decay = 0.01
    c.optim.bias_lr_multiplier = 1.0  # x learning rate for the catalog's per-item bias
    c.optim.appeal_bias_lr_multiplier = 1.0  # the same for the appeal head's (0: frozen)
    c.optim.appeal_repeat_lr_multiplier = 1.0  # and for its repeat weights
    # The taste term's weight: held where validation put it (0; its ridge always is). The item
    # factors were fitted on the training windows, so there the taste looks surer than it is;
    # learnt on them, the ridge fell from 3 to 0.45 and test pairs from 0.8035 to 0.7932
    # (quickstart, seed 0; docs/results/README.md).
    c.optim.appeal_taste_lr_multiplier = 0.0
    c.optim.appeal_pool_lr_multiplier = 10.0  # and for its pool weights (model.appeal_pool)
    # The catalog repeat term's 2 x (T + 2) weights: at the transformer's rate they could move
    # about 1 in a run (lr x steps), too little for a thumbs-down to sink a song.
    c.optim.catalog_repeat_lr_multiplier = 20.0
    c.optim.decay_embeddings = False  # weight decay on the embedding tables too
    c.optim.b2 = 0.98
    c.optim.grad_clip = 1.0

    c.train = ConfigDict()
    c.train.batch_size = 128
    # Budgets in passes over the training examples (an epoch: examples // batch_size steps), so
    # they follow the data; train.steps and train.eval_every count steps when these are 0.
    c.train.epochs = 13.0
    c.train.eval_every_epochs = 4.0
    c.train.max_minutes = 0.0  # wall-clock cap (0: none)
    c.train.steps = 600
    c.train.log_every = 100
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 2
    # Model selection on validation only: test the best-validation model ("best") or the last.
    c.train.select = "best"
    # Any metric of eval_test.json. The appeal head's pair order stays at its fitted start
    # (within 0.1 points on validation), so the checkpoint is chosen by the catalog ranking.
    c.train.select_metric = "ndcg@10"
    c.train.select_mode = "auto"  # max | min; auto: min for neg_hr@k, max for the others
    c.train.early_stop_patience = 0  # evals without improvement before stopping; 0: never
    # Steps with a NaN/Inf loss or gradient: up to this many leave the state unchanged and are
    # logged; the next one stops the run (the newest checkpoint predates it).
    c.train.skip_nonfinite_steps = 0
    c.train.grad_accum_steps = 1  # micro-batches per step (batch_size must be divisible)
    c.train.tensorboard = True  # scalars of metrics.jsonl also under WORKDIR/tensorboard/

    c.eval = ConfigDict()
    c.eval.batch_size = 512
    c.eval.k = 10
    c.eval.pair_score = "auto"  # pairwise accuracy from: auto (appeal if any) | catalog | appeal
    c.eval.filter_seen = False  # music repeats: a seen song may be the right next one
    # Fitted on the training part and scored on the same test windows at the end of every run.
    c.eval.baselines = BASELINES  # all eight (docs/baselines.md); () turns them off

    c.mesh = ConfigDict()
    c.mesh.shape = (-1, 1)  # (data, model); -1 takes all remaining devices
    # The model's logical axes onto the mesh's: item rows ("vocab") and the attention / MLP
    # hidden width ("hidden") split over "model", the model width ("embed") replicated.
    c.mesh.rules = AXIS_RULES

    # What `jaxrec export` serves; None: the run's feedback.negative types are excluded.
    c.serving = ConfigDict()
    c.serving.exclude_feedback = placeholder(tuple)

    # Experiment-specific fields (`jaxrec experiment`).
    c.experiment = ConfigDict()
    c.experiment.scaling_listeners = (3000, 30000, 100000)  # `scaling`: listeners per arm
    return c


# What a field absent from an older run's saved config.json meant when that run trained (the
# field came later, at a different default); any other absent field takes get_config()'s value.
ABSENT_MEANS: dict[str, Any] = {
    "train.epochs": 0.0,
    "train.eval_every_epochs": 0.0,
    "train.max_minutes": 0.0,
    "model.appeal_head": False,
    "model.appeal_personal": True,
    "model.appeal_repeats": False,
    "model.appeal_pool": False,
    "model.catalog_repeats": False,
    "optim.catalog_repeat_lr_multiplier": 1.0,
    "optim.schedule": "cosine",
    "optim.appeal_pool_lr_multiplier": 10.0,  # steps nothing without the pool
    "loss.full_softmax_weight": 0.0,
    "loss.sampled_weight": 1.0,
    "loss.appeal_weight": 0.0,
    "loss.counterfactual_weight": 0.0,
    "data.contrast_window": 0,
    "model.appeal_taste": False,
    "model.random_bits": "threefry",
    "loss.random_bits": "threefry",
}
# Groups whose keys are the user's own names (adapter options, feedback types), not fields.
FREE_FORM = (
    "data.options",
    "feedback.negative_weights",
    "feedback.codes",
    "data.simulator.feedback_proportions",
)


def complete(cfg: ConfigDict, *, saved: bool = False) -> ConfigDict:
    """Fills ``cfg``'s missing fields from :func:`get_config` (first from :data:`ABSENT_MEANS`
    when ``saved``, an older run's config.json), in place, and locks it; raises ValueError
    naming a field the base config does not have, with the nearest one it does."""
    base = get_config()
    with cfg.unlocked():
        if saved:
            for path, value in ABSENT_MEANS.items():
                *groups, key = path.split(".")
                node = cfg
                for g in groups:
                    node = node[g] if g in node else None
                    if node is None:
                        break
                if node is not None and key not in node:
                    node[key] = value
        _merge(cfg, base, "")
    cfg.lock()
    return cfg


def _merge(cfg: ConfigDict, base: ConfigDict, prefix: str) -> None:
    for key in list(cfg.keys()):
        path = f"{prefix}{key}"
        if key not in base:
            near = difflib.get_close_matches(key, list(base.keys()), n=1)
            hint = f"; did you mean config.{prefix}{near[0]}?" if near else ""
            raise ValueError(
                f"config.{path}: not a field of jaxrec's config (jaxrec/base_config.py names "
                f"every field){hint}"
            )
        if path in FREE_FORM or not isinstance(base[key], ConfigDict):
            continue
        if not isinstance(cfg[key], ConfigDict):
            raise ValueError(f"config.{path}: a group of fields, got {cfg[key]!r}")
        _merge(cfg[key], base[key], f"{path}.")
    for key in base.keys():
        if key not in cfg:
            cfg[key] = base[key]
