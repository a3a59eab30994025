"""The `fastcnn` command (also `python -m fastcnn`): bench, summary, info, predict,
train-digits."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastcnn",
                                     description="fastcnn command line")
    sub = parser.add_subparsers(dest="command", required=True)
    from fastcnn._bench import cli
    cli.add_arguments(sub.add_parser("bench", help="measure fastcnn side by side with rivals"))
    s = sub.add_parser("summary", help="per-layer table of a reference network or an .onnx file")
    s.add_argument("network", help="lenet5, resnet18, mobilenet_v2, groupnorm_cnn, or a path "
                                   "to an .onnx file")
    s.add_argument("--input-shape", help="e.g. 1,3,224,224 (default: the network's own)")
    sub.add_parser("info", help="print fastcnn.show_config()")
    from fastcnn.dask import _cli as predict_cli
    predict_cli.add_arguments(sub.add_parser(
        "predict", help="run an ONNX model over a file of images on a Dask cluster"))
    from fastcnn import _experiment
    _experiment.add_arguments(sub.add_parser(
        "train-digits", help="train a LeNet-5-style net on the 8x8 digits with and without "
                             "batch norm; plot and save both runs"))
    args = parser.parse_args(argv)
    if args.command == "bench":
        cli.run(args)
    elif args.command == "summary":
        return _summary(args)
    elif args.command == "predict":
        return predict_cli.run(args)
    elif args.command == "train-digits":
        return _experiment.run(args)
    elif args.command == "info":
        import fastcnn
        fastcnn.show_config()
    return 0


def _summary(args):
    import fastcnn
    from fastcnn import models
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            sys.exit(f"fastcnn summary: --input-shape must be comma-separated ints, got "
                     f"{args.input_shape!r}")
    try:
        if args.network.endswith(".onnx"):
            from fastcnn import onnx as fonnx
            model = fonnx.load(args.network)
            port = model.inputs[0]
            if shape and port.shape is not None and len(shape) != len(port.shape):
                want = ",".join("?" if d is None else str(d) for d in port.shape)
                raise ValueError(f"--input-shape has {len(shape)} sizes, the model's input "
                                 f"{port.name!r} has {len(port.shape)} ({want})")
            fastcnn.summary(model, shape or _onnx_input_shape(model))
            return 0
        if args.network not in models.REFERENCE_NETWORKS:
            sys.exit(f"fastcnn summary: unknown network {args.network!r}; choose from "
                     f"{', '.join(models.REFERENCE_NETWORKS)} or give an .onnx file")
        ctor, sample = models.REFERENCE_NETWORKS[args.network]
        fastcnn.summary(ctor(), shape or (1,) + sample)
    except (ValueError, TypeError, OSError) as exc:
        sys.exit(f"fastcnn summary: {exc}")
    return 0


def _onnx_input_shape(model):
    """The model's first input shape, an open batch axis taken as 1; other open
    axes need --input-shape."""
    port = model.inputs[0]
    if port.shape is None:
        raise ValueError(f"input {port.name!r} has no declared shape; give --input-shape")
    dims = [1 if d is None and i == 0 else d for i, d in enumerate(port.shape)]
    if None in dims:
        want = ",".join("?" if d is None else str(d) for d in port.shape)
        raise ValueError(f"input {port.name!r} has open dimensions ({want}); give "
                         f"--input-shape with every size, e.g. --input-shape "
                         f"{','.join('1' if d is None and i == 0 else str(d or 224) for i, d in enumerate(port.shape))}")
    return tuple(dims)


if __name__ == "__main__":
    sys.exit(main())
