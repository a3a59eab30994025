"""`fastcnn train-digits`: what batch normalization does to training.

Trains the same LeNet-5-style network twice on scikit-learn's bundled 8x8
handwritten digits (offline; scikit-learn is an optional dependency), once
without and once with batch normalization after each convolution and hidden
linear layer, from the same seed, with the same optimizer, learning rate and
batches. Writes the training-loss and validation-accuracy curves of both runs
to a PNG (with matplotlib installed) and every number to JSON, then saves the
batch-norm model, loads it back, compiles it for inference and checks the
compiled model's validation accuracy against the eager one's.
"""
import json
import os
import sys
import time

import numpy as np

__all__ = ["add_arguments", "run", "digits_net", "load_digits"]


def add_arguments(p):
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (both runs)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="digits-bn", help="folder for the PNG, JSON and model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def digits_net(batch_norm, dtype=np.float32):
    """LeNet-5's layout for 1x8x8 inputs: two 3x3 conv + max-pool stages
    (6 and 16 channels), then 120 -> 84 -> 10 linear layers; batch norm
    after each convolution and hidden linear layer when asked."""
    from fastcnn import nn

    def stage(cin, cout):
        layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm, dtype=dtype)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout, dtype=dtype))
        return layers + [nn.ReLU(), nn.MaxPool2d(2)]

    def hidden(fin, fout):
        layers = [nn.Linear(fin, fout, bias=not batch_norm, dtype=dtype)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(fout, dtype=dtype))
        return layers + [nn.ReLU()]

    return nn.Sequential(*stage(1, 6), *stage(6, 16), nn.Flatten(), *hidden(64, 120),
                         *hidden(120, 84), nn.Linear(84, 10, dtype=dtype))


def load_digits(seed):
    """(x_train, y_train, x_val, y_val): 8x8 digits scaled to [0, 1], a fixed
    stratified 80 / 20 split."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise SystemExit("fastcnn train-digits: needs scikit-learn for its bundled digits data "
                         "set (pip install scikit-learn)") from None
    data = sk_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = int(round(0.8 * idx.size))
        train.extend(idx[:cut])
        val.extend(idx[cut:])
    train, val = np.array(sorted(train)), np.array(sorted(val))
    return x[train], y[train], x[val], y[val]


class _Progress:
    def __init__(self, total, label, quiet):
        self.total, self.label, self.quiet, self.done = total, label, quiet, 0
        self.start = time.perf_counter()

    def step(self, note=""):
        self.done += 1
        now = time.perf_counter()
        if self.quiet or (self.done < self.total and now - getattr(self, "shown", 0) < 0.25):
            return
        self.shown = now
        width = 30
        filled = width * self.done // self.total
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(f"\r{self.label:>10} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{self.done}/{self.total} {rate:5.1f} it/s {note}")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def accuracy(model, x, y, batch=512):
    import fastcnn
    with fastcnn.no_grad():
        pred = np.concatenate([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == y).mean())


def train(batch_norm, data, args):
    import fastcnn
    from fastcnn import nn, optim
    x_train, y_train, x_val, y_val = data
    fastcnn.manual_seed(args.seed)
    model = digits_net(batch_norm)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    criterion = nn.CrossEntropyLoss()
    order = np.random.default_rng(args.seed + 1)
    steps = -(-len(x_train) // args.batch_size)
    losses, val_acc, seconds = [], [], 0.0
    bar = _Progress(args.epochs * steps, "with BN" if batch_norm else "without", args.quiet)
    for _ in range(args.epochs):
        perm = order.permutation(len(x_train))
        model.train()
        t0 = time.perf_counter()
        for i in range(0, len(x_train), args.batch_size):
            idx = perm[i:i + args.batch_size]
            opt.zero_grad()
            loss = float(criterion(model(x_train[idx]), y_train[idx]))
            model.backward(criterion.backward(), input_grad=False)
            opt.step()
            losses.append(loss)
            bar.step(f"loss {loss:.3f}")
        seconds += time.perf_counter() - t0
        model.eval()
        val_acc.append(accuracy(model, x_val, y_val))
    return model, {"train_loss": losses, "val_accuracy": val_acc, "train_seconds": seconds,
                   "steps_per_epoch": steps}


def _epochs_to(acc, level):
    return next((i + 1 for i, a in enumerate(acc) if a >= level), None)


def _plot(results, path, args):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results.items():
        steps = r["steps_per_epoch"]
        loss = np.array(r["train_loss"])
        smooth = np.convolve(loss, np.ones(steps) / steps, mode="valid")
        a.plot(np.arange(len(loss)) / steps, loss, alpha=0.25)
        a.plot((np.arange(len(smooth)) + steps - 1) / steps, smooth,
               label=f"{name} (mean over an epoch)", color=a.lines[-1].get_color())
        b.plot(np.arange(1, len(r["val_accuracy"]) + 1), r["val_accuracy"], marker="o",
               label=name)
    a.set(xlabel="epoch", ylabel="training loss", yscale="log",
          title="Training loss (cross-entropy)")
    b.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
    a.legend()
    b.legend()
    fig.suptitle(f"LeNet-5-style net on the 8x8 digits, SGD lr={args.lr} "
                 f"momentum={args.momentum}, batch {args.batch_size}, seed {args.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(args):
    import fastcnn
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        raise SystemExit("fastcnn train-digits: --epochs and --batch-size must be >= 1 and "
                         "--lr > 0")
    data = load_digits(args.seed)
    os.makedirs(args.out, exist_ok=True)
    results, models = {}, {}
    for name, bn in (("without batch norm", False), ("with batch norm", True)):
        models[name], results[name] = train(bn, data, args)
    # the trained model saved, loaded into a fresh one, compiled, evaluated
    bn_model = models["with batch norm"].eval()
    weights = os.path.join(args.out, "digits_bn.npz")
    fastcnn.save(bn_model.state_dict(), weights)
    reloaded = digits_net(True)
    reloaded.load_state_dict(fastcnn.load(weights))
    reloaded.eval()
    x_val, y_val = data[2], data[3]
    plan = fastcnn.compile(reloaded, (len(x_val),) + x_val.shape[1:])
    eager = accuracy(bn_model, x_val, y_val)
    compiled = float((plan(x_val).argmax(1) == y_val).mean())
    summary = {
        "data": {"train": int(len(data[0])), "validation": int(len(x_val))},
        "settings": {k: getattr(args, k) for k in ("epochs", "lr", "momentum", "batch_size",
                                                   "seed")},
        "runs": results,
        "reloaded_model": {"file": weights, "eager_val_accuracy": eager,
                           "compiled_val_accuracy": compiled},
    }
    with open(os.path.join(args.out, "digits_bn.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    png = os.path.join(args.out, "digits_bn.png")
    plotted = _plot(results, png, args)
    print(f"{'':22}{'last-epoch loss':>16}{'val acc':>9}{'best':>8}{'epochs to 95%':>15}"
          f"{'train s':>9}")
    for name, r in results.items():
        epoch_loss = float(np.mean(r["train_loss"][-r["steps_per_epoch"]:]))
        acc = r["val_accuracy"]
        print(f"{name:22}{epoch_loss:16.4f}{acc[-1]:9.4f}{max(acc):8.4f}"
              f"{str(_epochs_to(acc, 0.95) or '-'):>15}{r['train_seconds']:9.1f}")
    print(f"reloaded + compiled model: validation accuracy {compiled:.4f} "
          f"(eager {eager:.4f})")
    print(f"wrote {os.path.join(args.out, 'digits_bn.json')}"
          + (f" and {png}" if plotted else " (no PNG: pip install matplotlib)"))
    return 0 if abs(compiled - eager) < 1e-9 else 1
