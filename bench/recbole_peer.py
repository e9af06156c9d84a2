"""RecBole SASRec's training throughput, run with RecBole's own virtualenv's python (not jaxrec's).

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 runs/peers/recbole-venv/bin/python bench/recbole_peer.py \
        --data-path runs/peers/data --dataset ml-100k --steps 30 --warmup 3

Started by ``python -m bench.train_throughput --peers DIR``, which makes the venv and the atomic
``DIR/data/ml-100k/ml-100k.inter`` file. Builds RecBole's config, dataset, dataloaders, SASRec and
Trainer as ``run_recbole`` does, then runs the body of ``Trainer._train_epoch`` batch by batch
(to device, zero_grad, calculate_loss, loss.item(), backward, optimizer step) over as many epochs
as needed: ``--warmup`` batches untimed, then ``--steps`` timed. Counts per batch: targets = rows
(RecBole's sequential loader makes one example per target: a prefix and the item after it) and
positions = non-padding entries of ``item_id_list``. Prints one ``BENCH_RESULT {json}`` line.

Imports only RecBole, torch and the standard library: jaxrec is not installed in that venv.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
import warnings

RESULT_PREFIX = "BENCH_RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-path", required=True, help="folder holding DATASET/DATASET.inter")
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--steps", type=int, default=30, help="timed training batches")
    ap.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--inner", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return ap.parse_args(argv)


def build(args: argparse.Namespace):
    """(config, train dataloader, model, trainer), as RecBole's run_recbole builds them."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    use_gpu = args.device == "cuda"
    if args.device == "auto":
        import torch

        use_gpu = torch.cuda.is_available()
    config_dict = {
        "data_path": os.path.abspath(args.data_path),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "RATING_FIELD": "rating",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "hidden_size": args.hidden,
        "n_layers": args.layers,
        "n_heads": args.heads,
        "inner_size": args.inner,
        "hidden_dropout_prob": args.dropout,
        "attn_dropout_prob": args.dropout,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        # RecBole's default for sequential models, made explicit: leave-one-out per user.
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "train_batch_size": args.batch_size,
        "learning_rate": args.lr,
        "epochs": 1,
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": use_gpu,
        "show_progress": False,
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "checkpoint_dir": os.path.abspath("saved"),
        "worker": 0,
    }
    config = Config(model="SASRec", dataset=args.dataset, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    logging.getLogger().setLevel(logging.WARNING)
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    return config, train_data, model, trainer


def batches(train_data):
    """Training batches forever, a new shuffled epoch after each one."""
    while True:
        n = 0
        for interaction in train_data:
            n += 1
            yield interaction
        if n == 0:
            raise RuntimeError("the RecBole training dataloader is empty")


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    import recbole
    import torch

    args = parse_args(argv)
    # RecBole's Config also reads ``--key=value`` pairs from sys.argv: give it none of ours.
    sys.argv = sys.argv[:1]
    warnings.filterwarnings("ignore", category=FutureWarning)  # RecBole vs pandas 2.x
    if args.steps < 1 or args.warmup < 1:
        raise SystemExit("--steps and --warmup must be >= 1")
    t_start = time.perf_counter()
    config, train_data, model, trainer = build(args)
    device = config["device"]
    item_list = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    optimizer = trainer.optimizer
    t_setup = time.perf_counter()
    stream = batches(train_data)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run(n: int) -> dict:
        rows = positions = padded = 0
        loss_value = float("nan")
        model.train()
        for _ in range(n):
            interaction = next(stream).to(device)
            items = interaction[item_list]
            rows += int(items.shape[0])
            positions += int((items > 0).sum().item())
            padded += int(items.numel())
            optimizer.zero_grad()
            loss = model.calculate_loss(interaction)
            loss_value = loss.item()  # as Trainer._train_epoch (and its NaN check) does
            if not np.isfinite(loss_value):
                raise RuntimeError(f"non-finite RecBole loss {loss_value}")
            loss.backward()
            optimizer.step()
        sync()
        return {"rows": rows, "positions": positions, "padded": padded, "loss": loss_value}

    t0 = time.perf_counter()
    run(args.warmup)
    t1 = time.perf_counter()
    timed = run(args.steps)
    t2 = time.perf_counter()
    seconds = t2 - t1
    device_peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    result = {
        "steps": args.steps,
        "warmup": args.warmup,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "width": args.hidden,
        "loss_type": "full softmax (CE)",
        "train_examples": len(train_data.dataset),
        "items": int(train_data.dataset.item_num),
        "batches_per_epoch": len(train_data),
        "seconds": seconds,
        "steps_per_s": args.steps / seconds,
        "targets_per_s": timed["rows"] / seconds,
        "positions_per_s": timed["positions"] / seconds,
        "padded_positions_per_s": timed["padded"] / seconds,
        "targets_per_step": timed["rows"] / args.steps,
        "positions_per_step": timed["positions"] / args.steps,
        "final_loss": timed["loss"],
        "data_s": t_setup - t_start,
        "setup_s": t0 - t_setup,
        "warmup_s": t1 - t0,
        "device_peak_bytes": device_peak,
        "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "backend": device.type,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "recbole": recbole.__version__,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
