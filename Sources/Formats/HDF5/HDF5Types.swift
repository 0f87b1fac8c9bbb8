// HDF5 element types and string attributes: how an HDF5 datatype maps to a DType and back.

import CHDF5

enum HDF5Types {
  /// The DType a dataset holds and the memory type to read it with.
  static func logicalType(
    _ type: hid_t, dtypeAttribute: String?, dataset: String, file: String
  ) throws(FormatError) -> (DType, H5ID) {
    let size = H5Tget_size(type)
    let cls = H5Tget_class(type)
    func native(_ id: hid_t) -> H5ID { H5ID(H5Tcopy(id), H5Tclose)! }
    func fail(_ what: String) -> FormatError {
      .hdf5(file: file, reason: "dataset `/\(dataset)` has \(what), which has no tensor dtype here")
    }
    if cls == H5T_FLOAT {
      switch size {
      case 4: return (.f32, native(espalier_H5T_NATIVE_FLOAT()))
      case 8: return (.f64, native(espalier_H5T_NATIVE_DOUBLE()))
      case 2:
        var spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0
        H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize)
        let ebias = H5Tget_ebias(type)
        if (spos, epos, esize, mpos, msize, ebias) == (15, 10, 5, 0, 10, 15) { return (.f16, try twoByteFloat(.f16)) }
        if (spos, epos, esize, mpos, msize, ebias) == (15, 7, 8, 0, 7, 127) { return (.bf16, try twoByteFloat(.bf16)) }
        throw fail("a 2-byte float with exponent \(esize) bits and bias \(ebias)")
      default: throw fail("a \(size)-byte float")
      }
    }
    if cls == H5T_INTEGER {
      let signed = H5Tget_sign(type) == H5T_SGN_2
      if size == 2 && !signed && dtypeAttribute == "bfloat16" { return (.bf16, native(espalier_H5T_NATIVE_UINT16())) }
      switch (size, signed) {
      case (1, true): return (.i8, native(espalier_H5T_NATIVE_INT8()))
      case (1, false): return (.u8, native(espalier_H5T_NATIVE_UINT8()))
      case (2, true): return (.i16, native(espalier_H5T_NATIVE_INT16()))
      case (2, false): return (.u16, native(espalier_H5T_NATIVE_UINT16()))
      case (4, true): return (.i32, native(espalier_H5T_NATIVE_INT32()))
      case (4, false): return (.u32, native(espalier_H5T_NATIVE_UINT32()))
      case (8, true): return (.i64, native(espalier_H5T_NATIVE_INT64()))
      case (8, false): return (.u64, native(espalier_H5T_NATIVE_UINT64()))
      default: throw fail("a \(size)-byte integer")
      }
    }
    if cls == H5T_OPAQUE && size == 2 && dtypeAttribute == "bfloat16" {
      // Keras 3 / ml_dtypes: raw little-endian bfloat16 bits in an opaque type; read them as they are.
      return (.bf16, native(type))
    }
    throw fail(cls == H5T_OPAQUE ? "an opaque \(size)-byte type without dtype=\"bfloat16\"" : "an unsupported type class")
  }

  /// How a dataset's stored bytes relate to the tensor's (little-endian, as the memory type): the same
  /// bytes, the same with each element's bytes reversed (a big-endian file type), or only through
  /// libhdf5's conversion (any other layout of the bits).
  enum StoredBytes { case asIs, swapped, converted }

  static func storedBytes(_ file: hid_t, as memory: hid_t) -> StoredBytes {
    let size = H5Tget_size(file), cls = H5Tget_class(file)
    guard cls == H5Tget_class(memory), size == H5Tget_size(memory) else { return .converted }
    if cls == H5T_OPAQUE { return .asIs }
    for t in [file, memory] { guard H5Tget_offset(t) == 0, H5Tget_precision(t) == 8 * size else { return .converted } }
    if cls == H5T_INTEGER && H5Tget_sign(file) != H5Tget_sign(memory) { return .converted }
    if cls == H5T_FLOAT {
      func layout(_ t: hid_t) -> [Int] {
        var spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0
        H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize)
        return [spos, epos, esize, mpos, msize, H5Tget_ebias(t), Int(H5Tget_norm(t).rawValue)]
      }
      guard layout(file) == layout(memory) else { return .converted }
    }
    let (order, wanted) = (H5Tget_order(file), H5Tget_order(memory))
    if order == wanted { return .asIs }
    return (order == H5T_ORDER_BE || order == H5T_ORDER_LE) && (wanted == H5T_ORDER_BE || wanted == H5T_ORDER_LE) ? .swapped : .converted
  }

  /// The little-endian 2-byte float type h5py builds for float16 (and its bfloat16 analogue): a copy of
  /// IEEE F32LE with the fields moved, the size set to 2 and the exponent bias set.
  static func twoByteFloat(_ dtype: DType) throws(FormatError) -> H5ID {
    guard let t = H5ID(H5Tcopy(espalier_H5T_IEEE_F32LE()), H5Tclose) else { throw .hdf5(file: "", reason: "H5Tcopy failed") }
    let (esize, msize, ebias) = dtype == .f16 ? (5, 10, 15) : (8, 7, 127)
    guard H5Tset_fields(t.id, 15, msize, esize, 0, msize) >= 0, H5Tset_size(t.id, 2) >= 0,
      H5Tset_ebias(t.id, ebias) >= 0
    else { throw .hdf5(file: "", reason: "cannot build the 2-byte float type for \(dtype)") }
    return t
  }

  /// The file type Espalier writes for a dtype: IEEE floats, little-endian integers, the h5py half type
  /// for F16, and a 2-byte opaque for BF16 (with the dtype attribute set by the writer).
  static func fileType(_ dtype: DType, tensor: String, file: String) throws(FormatError) -> H5ID {
    func copy(_ id: hid_t) -> H5ID { H5ID(H5Tcopy(id), H5Tclose)! }
    switch dtype {
    case .f32: return copy(espalier_H5T_IEEE_F32LE())
    case .f64: return copy(espalier_H5T_IEEE_F64LE())
    case .f16: return try twoByteFloat(.f16)
    case .bf16: return H5ID(H5Tcreate(H5T_OPAQUE, 2), H5Tclose)!
    case .i8: return copy(espalier_H5T_STD_I8LE())
    case .u8, .bool: return copy(espalier_H5T_STD_U8LE())
    case .i16: return copy(espalier_H5T_STD_I16LE())
    case .u16: return copy(espalier_H5T_STD_U16LE())
    case .i32: return copy(espalier_H5T_STD_I32LE())
    case .u32: return copy(espalier_H5T_STD_U32LE())
    case .i64: return copy(espalier_H5T_STD_I64LE())
    case .u64: return copy(espalier_H5T_STD_U64LE())
    default:
      throw .hdf5(file: file, reason: "tensor `\(tensor)` is \(dtype), which HDF5 output does not store; convert with --dtype f32|f16|bf16")
    }
  }
}

enum HDF5Attributes {
  /// A string attribute (variable-length or fixed-length, scalar or a one-element array).
  static func string(_ object: hid_t, _ name: String, file: String) -> String? { strings(object, name, file: file)?.first }

  /// A string or string-array attribute, as Keras' `layer_names`/`weight_names` (fixed-length bytes)
  /// or h5py's str attributes (variable-length UTF-8).
  static func strings(_ object: hid_t, _ name: String, file: String) -> [String]? {
    // Name lists are read in microseconds; a corrupt file that sends libhdf5 into a loop here ends the
    // process with exit 2 (HDF5Library.watched) instead of hanging it.
    // libhdf5 allocates a variable-length string at the length the file declares: capped, a forged
    // length fails the read (nil) instead of growing the process by gigabytes.
    HDF5Library.watched("reading attribute `\(name)`", file: file) {
      MemoryLimit.capped(headroom: 256 << 20) { read(object, name) }
    }
  }

  private static func read(_ object: hid_t, _ name: String) -> [String]? {
    guard H5Aexists(object, name) > 0,
      let attribute = H5ID(H5Aopen(object, name, espalier_H5P_DEFAULT()), H5Aclose),
      let type = H5ID(H5Aget_type(attribute.id), H5Tclose), H5Tget_class(type.id) == H5T_STRING,
      let space = H5ID(H5Aget_space(attribute.id), H5Sclose)
    else { return nil }
    let count = max(1, Int(H5Sget_simple_extent_npoints(space.id)))
    // Layer and weight name lists are small: a forged count or element size is not read at all.
    guard count <= 1 << 20, H5Tget_size(type.id) <= 1 << 16, count * max(1, H5Tget_size(type.id)) <= 16 << 20 else { return nil }
    if H5Tis_variable_str(type.id) > 0 {
      guard let memory = H5ID(H5Tcopy(espalier_H5T_C_S1()), H5Tclose) else { return nil }
      H5Tset_size(memory.id, espalier_H5T_VARIABLE())
      H5Tset_cset(memory.id, H5Tget_cset(type.id))
      var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
      guard H5Aread(attribute.id, memory.id, &pointers) >= 0 else { return nil }
      defer { for p in pointers where p != nil { H5free_memory(p) } }
      return pointers.map { $0.map { String(cString: $0) } ?? "" }
    }
    let size = H5Tget_size(type.id)
    var buffer = [UInt8](repeating: 0, count: size * count)
    guard H5Aread(attribute.id, type.id, &buffer) >= 0 else { return nil }
    return (0..<count).map { i in
      let bytes = buffer[(i * size)..<((i + 1) * size)]
      return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
  }

  /// Writes a scalar variable-length UTF-8 string attribute (as h5py writes a str).
  static func write(_ object: hid_t, _ name: String, _ value: String) -> Bool {
    guard let type = H5ID(H5Tcopy(espalier_H5T_C_S1()), H5Tclose),
      H5Tset_size(type.id, espalier_H5T_VARIABLE()) >= 0, H5Tset_cset(type.id, H5T_CSET_UTF8) >= 0,
      let space = H5ID(H5Screate(H5S_SCALAR), H5Sclose),
      let attribute = H5ID(H5Acreate2(object, name, type.id, space.id, espalier_H5P_DEFAULT(), espalier_H5P_DEFAULT()), H5Aclose)
    else { return false }
    return value.withCString { c in
      var pointer: UnsafePointer<CChar>? = c
      return H5Awrite(attribute.id, type.id, &pointer) >= 0
    }
  }
}
