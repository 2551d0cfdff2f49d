// The one reader of the widgets' binary arrays. Python's array traits (atlaswidgets/widgets/
// _common.py: Array, array_to_json) send each array as {view, dtype, shape}: `view` a DataView of
// its little-endian bytes in C order, `dtype` its numpy name, `shape` its numpy shape. Nothing on
// either side writes an array's type or shape anywhere else.

const TYPES = {
  float32: Float32Array,
  int32: Int32Array,
  uint32: Uint32Array,
  uint8: Uint8Array,
};

// {data, shape, dtype} of an array trait's value: `data` a typed array of the dtype over the
// elements in C order (element [i, j] of a 2-D array is data[i * shape[1] + j]). A missing value
// reads as an empty float32 array.
export function readArray(value) {
  if (!value || !value.view) return { data: new Float32Array(0), shape: [0], dtype: "float32" };
  const { view, dtype, shape } = value;
  const Type = TYPES[dtype];
  if (!Type) throw new Error(`atlaswidgets: an array of dtype ${dtype} cannot be read`);
  const size = shape.reduce((a, b) => a * b, 1);
  if (view.byteLength !== size * Type.BYTES_PER_ELEMENT) {
    throw new Error(`atlaswidgets: ${view.byteLength} bytes do not hold a ${dtype} array of shape [${shape}]`);
  }
  // A view over the message's own bytes (no copy) where they are aligned for the type, which the
  // comm's separate buffers are; a copy where they are not. Typed arrays read in the machine's
  // byte order, little-endian in every browser, like the bytes Python sends.
  const data = view.byteOffset % Type.BYTES_PER_ELEMENT === 0
    ? new Type(view.buffer, view.byteOffset, size)
    : new Type(view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength));
  return { data, shape: [...shape], dtype };
}
