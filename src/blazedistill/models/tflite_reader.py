"""Read a .tflite flatbuffer into plain data: tensors, operators in execution order, float32 constants.

Float16 weights behind DEQUANTIZE ops and sparse weights behind DENSIFY ops are folded into dense float32
constants, so the operator list holds only the network's compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: operators a converted graph may contain (DEQUANTIZE / DENSIFY of constants are folded away)
SUPPORTED_OPS = (
    "ADD",
    "CONCATENATION",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "DEPTH_TO_SPACE",
    "MAX_POOL_2D",
    "PAD",
    "RELU",
    "RESHAPE",
    "RESIZE_BILINEAR",
)
_FOLDED_OPS = ("DEQUANTIZE", "DENSIFY")

_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"}
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


class TFLiteError(ValueError):
    """A file is not a readable .tflite model, or uses something this converter does not support."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class OpInfo:
    """One operator: its builtin name, tensor indices and options as a plain dict."""

    type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """The first subgraph of a .tflite file as plain data; constants are numpy arrays by tensor index."""

    source: str
    tensors: list[TensorInfo]
    operators: list[OpInfo]
    inputs: list[int]
    outputs: list[int]
    constants: dict[int, np.ndarray]


def _options(op, op_type: str) -> dict:
    """The builtin options of an operator as a plain dict with readable enum values."""
    import tflite

    table = op.BuiltinOptions()

    def load(cls):
        opts = cls()
        opts.Init(table.Bytes, table.Pos)
        return opts

    if op_type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        cls = tflite.Conv2DOptions if op_type == "CONV_2D" else tflite.DepthwiseConv2DOptions
        o = load(cls)
        d = {
            "padding": _PADDING[o.Padding()],
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor(), o.DilationWFactor()),
            "activation": _ACTIVATION[o.FusedActivationFunction()],
        }
        if op_type == "DEPTHWISE_CONV_2D":
            d["depth_multiplier"] = o.DepthMultiplier()
        return d
    if op_type == "MAX_POOL_2D":
        o = load(tflite.Pool2DOptions)
        return {
            "padding": _PADDING[o.Padding()],
            "stride": (o.StrideH(), o.StrideW()),
            "kernel": (o.FilterHeight(), o.FilterWidth()),
            "activation": _ACTIVATION[o.FusedActivationFunction()],
        }
    if op_type == "ADD":
        return {"activation": _ACTIVATION[load(tflite.AddOptions).FusedActivationFunction()] if table else "NONE"}
    if op_type == "CONCATENATION":
        o = load(tflite.ConcatenationOptions)
        return {"axis": o.Axis(), "activation": _ACTIVATION[o.FusedActivationFunction()]}
    if op_type == "RESIZE_BILINEAR":
        o = load(tflite.ResizeBilinearOptions)
        return {"align_corners": bool(o.AlignCorners()), "half_pixel_centers": bool(o.HalfPixelCenters())}
    if op_type == "DEPTH_TO_SPACE":
        return {"block_size": load(tflite.DepthToSpaceOptions).BlockSize()}
    if op_type == "RESHAPE" and table is not None:
        o = load(tflite.ReshapeOptions)
        return {"new_shape": tuple(int(v) for v in o.NewShapeAsNumpy())} if o.NewShapeLength() else {}
    return {}


def _index_vector(metadata, kind: str) -> np.ndarray:
    """array_segments / array_indices of a sparse dimension as an int64 array."""
    import tflite

    type_code = getattr(metadata, f"Array{kind}Type")()
    table = getattr(metadata, f"Array{kind}")()
    classes = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}
    if type_code not in classes or table is None:
        raise TFLiteError(f"sparse dimension without array_{kind.lower()}")
    vec = classes[type_code]()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int64)


def densify(
    values: np.ndarray,
    shape: tuple[int, ...],
    traversal_order: list[int],
    block_map: list[int],
    dim_metadata: list[dict],
) -> np.ndarray:
    """Expand TFLite's sparse storage (traversal order, blocks, DENSE / SPARSE_CSR levels) to a dense array.

    ``dim_metadata[i]`` describes traversal level i: ``{"format": "DENSE", "dense_size": n}`` or
    ``{"format": "SPARSE_CSR", "array_segments": [...], "array_indices": [...]}``.
    """
    rank = len(shape)
    levels = len(traversal_order)
    if levels != rank + len(block_map) or len(dim_metadata) != levels:
        raise TFLiteError("sparsity parameters do not match the tensor rank")
    # one row per stored value, built level by level in storage order: coordinates and CSR position
    coords = np.zeros((1, 0), dtype=np.int64)
    position = np.zeros(1, dtype=np.int64)
    for meta in dim_metadata:
        if meta["format"] == "DENSE":
            size = int(meta["dense_size"])
            idx = np.tile(np.arange(size, dtype=np.int64), len(position))
            coords = np.concatenate([np.repeat(coords, size, axis=0), idx[:, None]], axis=1)
            position = np.repeat(position, size) * size + idx
        else:
            segments = np.asarray(meta["array_segments"], dtype=np.int64)
            indices = np.asarray(meta["array_indices"], dtype=np.int64)
            counts = segments[position + 1] - segments[position]
            starts = np.repeat(segments[position], counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            position = starts + offsets
            coords = np.concatenate([np.repeat(coords, counts, axis=0), indices[position][:, None]], axis=1)
    if len(position) != values.size:
        raise TFLiteError(f"sparse tensor stores {values.size} values but its indices address {len(position)}")
    block_sizes = [int(dim_metadata[traversal_order.index(rank + j)]["dense_size"]) for j in range(len(block_map))]
    dense_index = np.zeros((len(position), rank), dtype=np.int64)
    for level in range(rank):
        dense_index[:, traversal_order[level]] = coords[:, level]
    for level in range(rank, levels):
        block = traversal_order[level] - rank
        dim = block_map[block]
        dense_index[:, dim] = dense_index[:, dim] * block_sizes[block] + coords[:, level]
    out = np.zeros(shape, dtype=values.dtype)
    out[tuple(dense_index.T)] = values.reshape(-1)
    return out


def _sparsity(tensor) -> dict:
    sp = tensor.Sparsity()
    dims = []
    for i in range(sp.DimMetadataLength()):
        m = sp.DimMetadata(i)
        if m.Format() == 0:
            dims.append({"format": "DENSE", "dense_size": m.DenseSize()})
        else:
            dims.append(
                {
                    "format": "SPARSE_CSR",
                    "array_segments": _index_vector(m, "Segments"),
                    "array_indices": _index_vector(m, "Indices"),
                }
            )
    return {
        "traversal_order": [int(v) for v in sp.TraversalOrderAsNumpy()] if sp.TraversalOrderLength() else [],
        "block_map": [int(v) for v in sp.BlockMapAsNumpy()] if sp.BlockMapLength() else [],
        "dim_metadata": dims,
    }


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse a .tflite file; fold constant DEQUANTIZE / DENSIFY; raise TFLiteError naming the file on failure."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TFLiteError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return _parse(data, str(path))
    except TFLiteError as e:
        raise TFLiteError(f"{path}: {e}") from None
    except Exception as e:  # a corrupt flatbuffer fails anywhere inside the generated accessors
        raise TFLiteError(f"{path}: not a readable .tflite model ({type(e).__name__}: {e})") from None


def _parse(data: bytes, source: str) -> TFLiteGraph:
    import tflite
    from tflite.utils import BUILTIN_OPCODE2NAME

    if len(data) < 8 or data[4:8] != b"TFL3":
        raise TFLiteError("not a .tflite model (no TFL3 file identifier)")
    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() < 1:
        raise TFLiteError("the model has no subgraph")
    graph = model.Subgraphs(0)

    tensors: list[TensorInfo] = []
    raw: dict[int, np.ndarray] = {}
    sparse: dict[int, dict] = {}
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        dtype = _DTYPES.get(t.Type())
        if dtype is None:
            raise TFLiteError(f"tensor {t.Name().decode()!r} has unsupported type code {t.Type()}")
        tensors.append(TensorInfo(t.Name().decode(), shape, dtype))
        buf = model.Buffers(t.Buffer())
        if buf.Offset() > 1:  # large models keep buffers after the flatbuffer
            blob = data[buf.Offset() : buf.Offset() + buf.Size()]
        elif buf.DataLength():
            blob = buf.DataAsNumpy().tobytes()
        else:
            continue
        values = np.frombuffer(blob, dtype=dtype).copy()
        if t.Sparsity() is not None:
            sparse[i] = _sparsity(t)
            raw[i] = values
        else:
            raw[i] = values.reshape(shape)

    constants: dict[int, np.ndarray] = {}
    for i, values in raw.items():
        if i not in sparse:
            constants[i] = values
    operators: list[OpInfo] = []
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        op_type = BUILTIN_OPCODE2NAME.get(builtin, f"builtin code {builtin}")
        if op_type == "CUSTOM":
            op_type = f"CUSTOM ({code.CustomCode().decode()})"
        inputs = tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else ()
        outputs = tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        if op_type in _FOLDED_OPS:
            src = inputs[0]
            if op_type == "DENSIFY" and src in sparse:
                s = sparse[src]
                constants[outputs[0]] = densify(raw[src], tensors[src].shape, **s)
                continue
            if op_type == "DEQUANTIZE" and src in constants:
                if tensors[src].dtype != "float16":
                    raise TFLiteError(f"DEQUANTIZE of {tensors[src].dtype} tensors is not supported")
                constants[outputs[0]] = constants[src].astype(np.float32)
                continue
            raise TFLiteError(f"operator {k} ({op_type}) on a non-constant tensor is not supported")
        if op_type not in SUPPORTED_OPS:
            raise TFLiteError(f"operator {k} ({op_type}) is not supported; supported: {', '.join(SUPPORTED_OPS)}")
        operators.append(OpInfo(op_type, inputs, outputs, _options(op, op_type)))

    for i in list(constants):
        if tensors[i].dtype == "float16":
            constants[i] = constants[i].astype(np.float32)
    return TFLiteGraph(
        source=source,
        tensors=tensors,
        operators=operators,
        inputs=[int(v) for v in graph.InputsAsNumpy()],
        outputs=[int(v) for v in graph.OutputsAsNumpy()],
        constants=constants,
    )
