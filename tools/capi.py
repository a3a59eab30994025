"""The C-API's function table, written once: this list generates the table's
declaration in include/fastcnn.h (C), in fastcnn/_capi.pyx (Cython), the
code that fills it (_publish) and the header's functions that call one entry
(WRAPPERS, with their documentation); fastcnn/kernels.pxd's declarations of
the header's public functions are generated from the header itself. Each between
"BEGIN GENERATED" and "END GENERATED" lines. Run `python tools/capi.py`
after changing the list or the header's functions; `--check` fails
when a generated block is not current (the test suite runs it).

The table is the ABI: append new entries at the end, and raise
FCNN_ABI_VERSION in fastcnn.h when an entry changes or goes away.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADER = ROOT / "include" / "fastcnn.h"
CAPI = ROOT / "fastcnn" / "_capi.pyx"
KERNELS = ROOT / "fastcnn" / "kernels.pxd"

PRECISIONS = (("f32", "float"), ("f64", "double"))


def _typed(name, ret, params):
    """Both precisions of an entry whose parameters say `real`."""
    return [(f"{name}_{suffix}", ret, [re.sub(r"\breal\b", real, p) for p in params])
            for suffix, real in PRECISIONS]


CONV = "const fcnn_conv_params *p"
POOL = "const fcnn_pool2d_params *p"

# (field, return type, parameters as C declares them), in table order; `real`
# entries come as _f32 and _f64 pairs.
TABLE = [
    ("version", "const char*", []),
    ("strerror", "const char*", ["fcnn_status status"]),
    ("set_num_threads", "fcnn_status", ["int n"]),
    ("get_num_threads", "int", []),
    ("conv_output_size", "fcnn_status", [CONV, "int64_t *out_size"]),
    ("conv_workspace_size", "fcnn_status", [CONV, "fcnn_dtype dtype", "int packed",
                                            "int num_threads", "size_t *bytes"]),
    *_typed("conv", "fcnn_status", [CONV, "int ndim", "const real *x", "const real *weight",
                                    "const real *bias", "real *y", "void *workspace",
                                    "size_t workspace_bytes"]),
    ("conv_packed_size", "fcnn_status", [CONV, "fcnn_dtype dtype", "size_t *bytes"]),
    *_typed("conv_pack", "fcnn_status", [CONV, "const real *weight", "void *packed",
                                         "size_t packed_bytes"]),
    *_typed("conv_packed", "fcnn_status", [CONV, "const real *x", "const void *packed",
                                           "size_t packed_bytes", "const real *bias", "real *y",
                                           "void *workspace", "size_t workspace_bytes"]),
    ("pool2d_output_size", "fcnn_status", [POOL, "int64_t *out_h", "int64_t *out_w"]),
    *_typed("max_pool2d", "fcnn_status", [POOL, "const real *x", "real *y",
                                          "int64_t *indices"]),
    *_typed("avg_pool2d", "fcnn_status", [POOL, "const real *x", "real *y"]),
    *_typed("adaptive_avg_pool2d", "fcnn_status",
            ["int64_t batch", "int64_t channels", "int64_t in_h", "int64_t in_w",
             "int64_t out_h", "int64_t out_w", "const real *x", "real *y"]),
    *_typed("batch_norm", "fcnn_status",
            ["int64_t batch", "int64_t channels", "int64_t spatial", "const real *x", "real *y",
             "const real *weight", "const real *bias", "real *running_mean",
             "real *running_var", "int training", "double momentum", "double eps",
             "int activation"]),
    *_typed("instance_norm", "fcnn_status",
            ["int64_t batch", "int64_t channels", "int64_t spatial", "const real *x", "real *y",
             "const real *weight", "const real *bias", "double eps", "int activation"]),
    *_typed("group_norm", "fcnn_status",
            ["int64_t batch", "int64_t channels", "int64_t spatial", "int64_t groups",
             "const real *x", "real *y", "const real *weight", "const real *bias", "double eps",
             "int activation"]),
    *_typed("layer_norm", "fcnn_status",
            ["int64_t outer", "int64_t inner", "const real *x", "real *y", "const real *weight",
             "const real *bias", "double eps", "int activation"]),
    *_typed("linear", "fcnn_status",
            ["int64_t rows", "int64_t in_features", "int64_t out_features", "const real *x",
             "const real *weight", "const real *bias", "real *y", "int activation"]),
    *_typed("activation", "fcnn_status", ["int activation", "int64_t n", "const real *x",
                                          "real *y", "double alpha", "double beta"]),
    *_typed("softmax", "fcnn_status", ["int64_t outer", "int64_t dim", "int64_t inner",
                                       "const real *x", "real *y", "int log"]),
    ("isa", "const char*", []),
]
FIELDS = {name: (ret, params) for name, ret, params in TABLE}

# The header's functions that call one table entry with their own arguments,
# section by section: (comment, [(public name, table field, fixed arguments)]).
# A field without _f32/_f64 that has them in the table gives both precisions.
WRAPPERS = [
    ("convolution", [
        ("""out_size[i] (3 values) = (in + 2 pad - dilation (kernel - 1) - 1) / stride + 1 for the
first p->ndim dimensions (the rest set to 1); FCNN_ERR_SHAPE when the kernel
is larger than the padded input or any size is invalid.""",
         [("fcnn_conv_output_size", "conv_output_size", {})]),
        ("""Bytes of workspace a convolution needs with num_threads threads (0: the
current setting), for unpacked weights (packed = 0, the plain calls) or for
weights packed by fcnn_conv_pack_* (packed = 1). May be 0. The convolution
functions never allocate: they use the caller's workspace.""",
         [("fcnn_conv_workspace_size", "conv_workspace_size", {})]),
        ("""y = act(conv(x, weight) + bias). ndim must be 1, 2 or 3 as the function's
name says (FCNN_ERR_ARG otherwise); bias may be NULL; y must not overlap x.
workspace: at least fcnn_conv_workspace_size(p, dtype, 0, 0) bytes for the
current thread count (FCNN_ERR_WORKSPACE otherwise; NULL when that is 0).""",
         [(f"fcnn_conv{d}d", "conv", {"ndim": str(d)}) for d in (1, 2, 3)]),
        ("""Weights packed once for repeated calls (what compiled plans do), in the
layout of the algorithm chosen for prepacked weights (e.g. Winograd's
transformed filters, or a plain copy for algorithms that read the weights
as they are). fcnn_conv_packed_size gives the bytes.""",
         [("fcnn_conv_packed_size", "conv_packed_size", {}),
          ("fcnn_conv_pack", "conv_pack", {})]),
        ("""y = act(conv(x, weight) + bias) with the weights packed by fcnn_conv_pack_*
for the same parameters (any ndim). workspace: fcnn_conv_workspace_size(p,
dtype, 1, 0) bytes.""",
         [("fcnn_conv_packed", "conv_packed", {})]),
    ]),
    ("pooling", [
        ("Output height and width of a 2-D pooling (FCNN_ERR_SHAPE if invalid).",
         [("fcnn_pool2d_output_size", "pool2d_output_size", {})]),
        ("""y = max pooling of x; indices (NULL, or an int64 array shaped as y) gets the
flat index within each (h, w) plane of every maximum, as PyTorch's.""",
         [("fcnn_max_pool2d", "max_pool2d", {})]),
        ("y = average pooling of x (count_include_pad, divisor_override as PyTorch).",
         [("fcnn_avg_pool2d", "avg_pool2d", {})]),
        ("""y (batch, channels, out_h, out_w) = adaptive average pooling of x (batch,
channels, in_h, in_w): window [floor(i in / out), ceil((i + 1) in / out)).""",
         [("fcnn_adaptive_avg_pool2d", "adaptive_avg_pool2d", {})]),
    ]),
    ("""normalization
x and y are (batch, channels, spatial) with spatial the product of the
trailing sizes (1 for (N, C) data); y may be x (in place). weight and bias
(per channel) may be NULL. activation: FCNN_ACT_NONE, _RELU, _RELU6, _SILU.
Statistics are accumulated in double.""", [
        ("""Batch norm. training = 0: y = (x - running_mean) / sqrt(running_var + eps)
scaled and shifted (both required). training = 1: normalizes with the
batch's statistics over (batch, spatial) (biased variance) and, when given,
updates running_mean and running_var in place with momentum and the
unbiased variance, as PyTorch (needs batch * spatial > 1).""",
         [("fcnn_batch_norm", "batch_norm", {})]),
        ("""Instance norm: each (sample, channel) plane over its spatial positions
(spatial > 1).""",
         [("fcnn_instance_norm", "instance_norm", {})]),
        ("""Group norm: each sample's groups of channels / groups channels over
(channels in group, spatial); groups must divide channels.""",
         [("fcnn_group_norm", "group_norm", {})]),
        ("""Layer norm: each of `outer` rows of `inner` values over the row, with an
element-wise weight and bias of `inner` values (or NULL).""",
         [("fcnn_layer_norm", "layer_norm", {})]),
    ]),
    ("linear, activations", [
        ("""y (rows, out_features) = act(x (rows, in_features) @ weight^T + bias), weight
(out_features, in_features) as torch.nn.Linear's; bias may be NULL.""",
         [("fcnn_linear", "linear", {})]),
        ("y[i] = act(x[i]) for n values; y may be x (in place).",
         [("fcnn_activation", "activation", {})]),
        ("""Softmax (log_softmax when log != 0) of x viewed as (outer, dim, inner) along
dim, into y (may be x): dim = channels and inner = H * W for NCHW channel
softmax, inner = 1 for rows.""",
         [("fcnn_softmax", "softmax", {})]),
    ]),
]

STAMP = "generated by tools/capi.py from its TABLE: do not edit"


def _wrap(head, items, tail, indent, width=95):
    """head + items joined by ", " + tail, wrapped under the opening parenthesis."""
    lines, line = [], head
    for k, item in enumerate(items):
        piece = item + (", " if k < len(items) - 1 else tail)
        if len(line) + len(piece.rstrip()) > width and line.strip() != head.strip():
            lines.append(line.rstrip())
            line = " " * indent + piece
        else:
            line += piece
    if not items:
        line += tail
    lines.append(line.rstrip())
    return lines


def _type(param):
    """A declared parameter's type, as the table's pointers spell it: "const real *x" ->
    "const real *"."""
    return re.sub(r"\s*\b\w+$", "", param).replace("*", " *").replace("  ", " ").strip()


def _c(t):
    return t.replace("*", " *").replace("  ", " ")


def header_block():
    out = ["/* The function table behind the API (fetched by import_fastcnn);",
           f" * {STAMP}. */", "typedef struct fcnn_api {", "    int abi_version;"]
    for name, ret, params in TABLE:
        head = f"    {_c(ret)}(*{name})(" if ret.endswith("*") else f"    {ret} (*{name})("
        out += _wrap(head, [_type(p) for p in params] or ["void"], ");", len(head))
    out.append("} fcnn_api;")
    return out


def _commented(text):
    """text as a C comment, one " * " line per line."""
    lines = text.splitlines()
    return [("/* " if k == 0 else " * ") + line + (" */" if k == len(lines) - 1 else "")
            for k, line in enumerate(lines)]


def wrappers_block():
    """The header's functions that pass their arguments to one table entry."""
    out = ["/* The functions below are generated by tools/capi.py from its WRAPPERS:",
           " * do not edit. */"]
    for section, groups in WRAPPERS:
        title, _, note = section.partition("\n")
        out += ["", f"/* {'-' * 60} {title} */"]
        if note:
            out += _commented(note)
        for doc, functions in groups:
            out += [""] + _commented(doc)
            for suffix in ("", *(suffix for suffix, _ in PRECISIONS)):
                for public, field, fixed in functions:
                    entry = f"{field}_{suffix}" if suffix else field
                    if entry not in FIELDS or (suffix and field in FIELDS):
                        continue
                    ret, params = FIELDS[entry]
                    mine = [q for q in params if q.split()[-1].lstrip("*") not in fixed]
                    args = [fixed.get(q.split()[-1].lstrip("*"), q.split()[-1].lstrip("*"))
                            for q in params]
                    name = f"{public}_{suffix}" if suffix else public
                    head = f"static inline {ret} {name}("
                    out += _wrap(head, mine or ["void"], ")", len(head))
                    call = "{ return FCNN_CALL("
                    out += _wrap(call, [entry] + args, "); }", len(call))
    return out


def cython_block():
    out = [f"    # the table of fastcnn.h, {STAMP}", "    ctypedef struct fcnn_api:",
           "        int abi_version"]
    for name, ret, params in TABLE:
        head = f"        {ret} (*{name})("
        out += _wrap(head, [_type(p).replace(" *", "*") for p in params],
                     ") noexcept nogil", len(head))
    return out


def publish_block():
    return [f"    # {STAMP}", "    _TABLE.abi_version = FCNN_ABI_VERSION"] + \
        [f"    _TABLE.{name} = _{name}" for name, _, _ in TABLE]


def _cython_param(param):
    """A C parameter as Cython declares it: "const float *x" -> "const float* x",
    "int64_t out_size[3]" -> "int64_t* out_size"."""
    param = " ".join(param.split())
    array = re.fullmatch(r"(.*\b)(\w+)\[\d*\]", param)
    if array:
        param = f"{array.group(1).strip()} *{array.group(2)}"
    head, _, name = param.rpartition(" ")
    stars = len(name) - len(name.lstrip("*"))
    return f"{head}{'*' * stars} {name.lstrip('*')}".replace(" *", "*")


def pxd_block():
    """The header's public functions (its static inline definitions), declared
    for Cython, a blank line between the header's sections; import_fastcnn is
    declared apart (it needs the GIL)."""
    out = ["    # the functions of fastcnn.h, generated by tools/capi.py from the header:",
           "    # do not edit"]
    new_section = False
    pattern = (r"/\* -{10,} .+? \*/"
               r"|static inline ([\w\s*]+?)\s*\b(fcnn_\w+)\(([^)]*)\)")
    for match in re.finditer(pattern, HEADER.read_text()):
        if match.group(1) is None:                 # a section's title
            new_section = len(out) > 1
            continue
        ret, name, params = match.groups()
        if new_section:
            out.append("")
            new_section = False
        ret = " ".join(ret.split()).replace(" *", "*")
        items = [] if params.strip() == "void" else [_cython_param(p) for p in params.split(",")]
        head = f"    {ret} {name}("
        out += _wrap(head, items, ")", len(head))
    return out


BLOCKS = [(HEADER, "/* BEGIN GENERATED: table */", "/* END GENERATED: table */", header_block),
          (HEADER, "/* BEGIN GENERATED: functions */", "/* END GENERATED: functions */",
           wrappers_block),
          (KERNELS, "    # BEGIN GENERATED: functions", "    # END GENERATED: functions",
           pxd_block),
          (CAPI, "    # BEGIN GENERATED: table", "    # END GENERATED: table", cython_block),
          (CAPI, "    # BEGIN GENERATED: publish", "    # END GENERATED: publish",
           publish_block)]


def render(text, begin, end, lines):
    start = text.index(begin + "\n") + len(begin) + 1
    stop = text.index(end + "\n", start)
    return text[:start] + "\n".join(lines) + "\n" + text[stop:]


def main(argv):
    check = "--check" in argv
    stale = []
    for path, begin, end, make in BLOCKS:
        text = path.read_text()
        new = render(text, begin, end, make())
        if new != text:
            stale.append(f"{path.relative_to(ROOT)} ({begin.strip()})")
            if not check:
                path.write_text(new)
    if check and stale:
        print("not current (run python tools/capi.py): " + "; ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
