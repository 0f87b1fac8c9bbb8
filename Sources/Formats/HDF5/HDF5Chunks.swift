// Checks a chunked dataset's stored chunks before libhdf5 reads it. libhdf5 accepts a gzip chunk that
// inflates to fewer bytes than the chunk holds and hands back the rest of its buffer uninitialised, so
// every chunk is taken raw (H5Dread_chunk) and its filter pipeline undone here, in reverse: Fletcher-32
// (its 4-byte sum dropped; libhdf5 verifies it when it reads), deflate (inflated with zlib into exactly
// the chunk's size: shorter or longer is an error), shuffle (undone, size kept). Any other filter is
// refused by name. Every chunk the dataspace needs must be stored: a dataset declared large with no data
// behind it is refused before its buffer is allocated.

import CHDF5
import CZlib

struct HDF5Filter {
  var id: H5Z_filter_t
  var name: String
}

enum HDF5Chunks {
  static let deflate: H5Z_filter_t = 1, shuffle: H5Z_filter_t = 2, fletcher32: H5Z_filter_t = 3

  /// The dataset's filter pipeline in forward (write) order.
  static func filters(_ dcpl: hid_t) -> [HDF5Filter] {
    let count = max(0, Int(H5Pget_nfilters(dcpl)))
    return (0..<count).map { i in
      var flags: UInt32 = 0, elements = 8, config: UInt32 = 0
      var values = [UInt32](repeating: 0, count: 8)
      var name = [CChar](repeating: 0, count: 64)
      let id = H5Pget_filter2(dcpl, UInt32(i), &flags, &elements, &values, name.count, &name, &config)
      return HDF5Filter(id: id, name: String(cString: name))
    }
  }

  /// Checks the filters are ones Espalier can check and libhdf5 has, that every chunk is stored, and that
  /// each chunk undoes to exactly its size. `elementSize` is the stored type's size (for shuffle).
  static func check(
    _ dataset: hid_t, dcpl: hid_t, shape: [Int], elementSize: Int, name: String, file: String, fileSize: Int
  ) throws(FormatError) {
    func fail(_ reason: String) -> FormatError { .hdf5(file: file, reason: "dataset `\(name)`: \(reason)") }
    guard H5Pget_layout(dcpl) == H5D_CHUNKED, !shape.isEmpty else { return }
    let pipeline = filters(dcpl)
    for f in pipeline {
      guard [deflate, shuffle, fletcher32].contains(f.id) else {
        throw fail("uses filter \(f.id) (\(f.name.isEmpty ? "unnamed" : f.name)), which Espalier does not read (gzip, shuffle and fletcher32 only)")
      }
      guard H5Zfilter_avail(f.id) > 0 else { throw fail("needs filter \(f.id) (\(f.name)), which this libhdf5 does not have (a missing filter)") }
    }
    var chunkDims = [hsize_t](repeating: 0, count: shape.count)
    guard H5Pget_chunk(dcpl, Int32(shape.count), &chunkDims) == Int32(shape.count), chunkDims.allSatisfy({ $0 > 0 }) else {
      throw fail("has no valid chunk shape")
    }
    var expected = 1, chunkBytes = elementSize
    for (d, c) in zip(shape, chunkDims) {
      let c = Int(clamping: c)
      guard case (let e, false) = expected.multipliedReportingOverflow(by: (d + c - 1) / c),
        case (let b, false) = chunkBytes.multipliedReportingOverflow(by: c)
      else { throw fail("chunk sizes overflow") }
      (expected, chunkBytes) = (e, b)
    }
    if shape.contains(0) { return }
    // libhdf5 1.10 wants the dataset's own dataspace here (H5S_ALL is accepted only from 1.12).
    guard let space = H5ID(H5Dget_space(dataset), H5Sclose) else { throw fail("has no dataspace") }
    var stored: hsize_t = 0
    guard H5Dget_num_chunks(dataset, space.id, &stored) >= 0 else { throw fail("cannot count its chunks") }
    guard Int(stored) == expected else {
      throw fail("stores \(stored) of its \(expected) chunks (a weight must be written whole; refused before allocating it)")
    }
    guard !pipeline.isEmpty else { return }
    try MemoryLimit.check(chunkBytes, file: file, what: "a chunk of dataset `\(name)`")
    var offset = [hsize_t](repeating: 0, count: shape.count)
    for index in 0..<stored {
      var mask: UInt32 = 0, address: haddr_t = 0, size: hsize_t = 0
      guard H5Dget_chunk_info(dataset, space.id, index, &offset, &mask, &address, &size) >= 0 else {
        throw fail("cannot locate chunk \(index)")
      }
      guard Int(size) <= fileSize else { throw fail("chunk \(index) claims \(size) bytes, more than the file holds") }
      var raw = [UInt8](repeating: 0, count: max(Int(size), 1))
      var filterMask: UInt32 = 0
      guard H5Dread_chunk(dataset, espalier_H5P_DEFAULT(), offset, &filterMask, &raw) >= 0 else {
        throw fail("cannot read chunk \(index) raw")
      }
      raw.removeLast(raw.count - Int(size))
      for (i, f) in pipeline.enumerated().reversed() where filterMask & (1 << UInt32(i)) == 0 {
        switch f.id {
        case fletcher32:
          guard raw.count >= 4 else { throw fail("chunk \(index) is too short for its Fletcher-32 checksum") }
          raw.removeLast(4)
        case deflate:
          raw = try inflate(raw, size: chunkBytes) { (reason) in fail("chunk \(index): \(reason)") }
        default:
          raw = unshuffle(raw, elementSize: elementSize)
        }
      }
      guard raw.count == chunkBytes else {
        throw fail("chunk \(index) holds \(raw.count) bytes after its filters, the chunk needs \(chunkBytes)")
      }
    }
  }

  /// Inflates a zlib stream that must give exactly `size` bytes.
  static func inflate(_ input: [UInt8], size: Int, _ fail: (String) -> FormatError) throws(FormatError) -> [UInt8] {
    var output = [UInt8](repeating: 0, count: size + 1)  // one spare byte: a longer stream shows as size + 1
    var length = uLongf(output.count)
    let status = input.withUnsafeBufferPointer { i in
      output.withUnsafeMutableBufferPointer { o in uncompress(o.baseAddress, &length, i.baseAddress, uLong(i.count)) }
    }
    switch status {
    case Z_OK:
      guard Int(length) == size else {
        throw fail(Int(length) < size ? "gzip inflates to \(length) bytes, short of the chunk's \(size) (a truncated or forged chunk)" : "gzip inflates past the chunk's \(size) bytes")
      }
      output.removeLast()
      return output
    case Z_BUF_ERROR:
      throw fail(Int(length) >= size ? "gzip inflates past the chunk's \(size) bytes" : "the gzip stream ends early (corrupt chunk)")
    case Z_DATA_ERROR: throw fail("the gzip stream is corrupt (zlib: data error)")
    default: throw fail("zlib error \(status)")
    }
  }

  /// HDF5's shuffle undone: byte k of every element was stored in plane k.
  static func unshuffle(_ input: [UInt8], elementSize: Int) -> [UInt8] {
    guard elementSize > 1, input.count >= elementSize else { return input }
    let n = input.count / elementSize
    var output = input
    for e in 0..<n { for k in 0..<elementSize { output[e * elementSize + k] = input[k * n + e] } }
    return output
  }
}
