// A chunked dataset's bytes, read here rather than by H5Dread. libhdf5 1.10 accepts a gzip chunk that
// inflates to fewer bytes than the chunk holds, and an unfiltered chunk stored shorter than its size, and
// then copies the rest of its buffer into the tensor (heap bytes, different every run). So every chunk
// is taken raw (H5Dread_chunk) and its filter pipeline undone here, in reverse: Fletcher-32 (its sum
// checked and dropped), deflate (inflated with zlib into exactly the chunk's size: shorter or longer is
// an error), shuffle (undone, size kept); an unfiltered chunk must be stored at exactly its size. Any
// other filter is refused by name. Every chunk the dataspace needs must be stored, each once, at a
// chunk-aligned offset inside the shape: a dataset declared large with no data behind it is refused
// before its buffer is allocated, and every element of the tensor comes from exactly one chunk.

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
      return HDF5Filter(id: id, name: String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
  }

  /// A chunked dataset's grid: how many chunks cover its shape, the elements of one chunk, and how many
  /// chunks the file stores. Shared by the scan (a dataset must be stored whole before it is listed) and
  /// the read (each stored chunk is then checked).
  struct Grid {
    var needed: Int
    var chunkDims: [Int]
    var chunkElements: Int
    var stored: Int
    /// The dataset's own dataspace (libhdf5 1.10 wants it for the chunk queries; H5S_ALL only from 1.12).
    var space: H5ID

    /// Nil for a layout other than chunked, and for a dataset with no elements.
    init?(_ dataset: hid_t, dcpl: hid_t, shape: [Int], fail: (String) -> FormatError) throws(FormatError) {
      guard H5Pget_layout(dcpl) == H5D_CHUNKED, !shape.isEmpty else { return nil }
      var chunkDims = [hsize_t](repeating: 0, count: shape.count)
      guard H5Pget_chunk(dcpl, Int32(shape.count), &chunkDims) == Int32(shape.count), chunkDims.allSatisfy({ $0 > 0 }) else {
        throw fail("has no valid chunk shape")
      }
      var needed = 1, chunkElements = 1
      for (d, c) in zip(shape, chunkDims) {
        let c = Int(clamping: c)
        guard case (let n, false) = needed.multipliedReportingOverflow(by: (d + c - 1) / c),
          case (let e, false) = chunkElements.multipliedReportingOverflow(by: c)
        else { throw fail("chunk sizes overflow") }
        (needed, chunkElements) = (n, e)
      }
      if shape.contains(0) { return nil }
      guard let space = H5ID(H5Dget_space(dataset), H5Sclose) else { throw fail("has no dataspace") }
      var stored: hsize_t = 0
      guard H5Dget_num_chunks(dataset, space.id, &stored) >= 0 else { throw fail("cannot count its chunks") }
      (self.needed, self.chunkElements, self.stored, self.space) = (needed, chunkElements, Int(clamping: stored), space)
      self.chunkDims = chunkDims.map { Int(clamping: $0) }
    }

    /// The stored chunk count, when every chunk is stored; a weight missing chunks would read as fill
    /// values (a 4 GiB dataset with none stored is a tiny file), so it is refused before anything is sized.
    func requireWhole(_ fail: (String) -> FormatError) throws(FormatError) -> Int {
      guard stored == needed else { throw fail("stores \(stored) of its \(needed) chunks (a weight must be written whole)") }
      return stored
    }
  }

  /// Reads a chunked dataset into `output` (its row-major bytes, `shape` of `elementSize`-byte elements,
  /// in the file's byte order) from its raw chunks, checking each as the header above says. `output` is
  /// nil to check the chunks only.
  static func read(
    _ dataset: hid_t, dcpl: hid_t, shape: [Int], elementSize: Int, name: String, file: String, fileSize: Int,
    into output: UnsafeMutableRawPointer?
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
    guard let grid = try Grid(dataset, dcpl: dcpl, shape: shape, fail: fail) else { return }
    let stored = try grid.requireWhole(fail)
    guard case (let chunkBytes, false) = grid.chunkElements.multipliedReportingOverflow(by: elementSize) else {
      throw fail("chunk sizes overflow")
    }
    try MemoryLimit.check(chunkBytes, file: file, what: "a chunk of dataset `\(name)`")
    var offset = [hsize_t](repeating: 0, count: shape.count)
    var seen = Set<[hsize_t]>()
    for index in 0..<stored {
      try HDF5Library.watched("reading chunk \(index) of dataset `\(name)`", file: file) { () throws(FormatError) in
        try readChunk(index)
      }
    }

    func readChunk(_ index: Int) throws(FormatError) {
      var mask: UInt32 = 0, address: haddr_t = 0, size: hsize_t = 0
      guard H5Dget_chunk_info(dataset, grid.space.id, hsize_t(index), &offset, &mask, &address, &size) >= 0 else {
        throw fail("cannot locate chunk \(index)")
      }
      let origin = offset.map { Int(clamping: $0) }
      guard zip(zip(origin, grid.chunkDims), shape).allSatisfy({ $0.0 % $0.1 == 0 && $0.0 < $1 }) else {
        throw fail("chunk \(index) lies at \(origin), not at a chunk of the shape \(shape)")
      }
      guard seen.insert(offset).inserted else { throw fail("chunk \(index) is a second chunk at \(origin)") }
      // The chunk's bytes are read from the file at the address its index entry gives, never through
      // libhdf5 (H5Dread_chunk looks the chunk up again and can write more than the entry's size).
      // Addresses are file offsets: a file with a user block (its superblock past byte 0) is not
      // recognised as HDF5 in the first place (Checkpoint.open).
      guard address != haddr_t.max, case (let end, false) = Int(clamping: address).addingReportingOverflow(Int(clamping: size)),
        end <= fileSize
      else { throw fail("chunk \(index) lies outside the file (\(size) bytes at offset \(address))") }
      if pipeline.isEmpty && Int(size) != chunkBytes {
        throw fail("chunk \(index) stores \(size) bytes, an unfiltered chunk needs \(chunkBytes)")
      }
      var raw = try FileSystem.bytes(file, offset: Int(address), count: Int(size))
      let filterMask = mask
      for (i, f) in pipeline.enumerated().reversed() where filterMask & (1 << UInt32(i)) == 0 {
        switch f.id {
        case fletcher32:
          guard raw.count >= 4 else { throw fail("chunk \(index) is too short for its Fletcher-32 checksum") }
          let sum = raw.suffix(4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
          raw.removeLast(4)
          let computed = fletcher32Sum(raw)
          // libhdf5 also accepts the sum with its bytes reversed (what HDF5 1.6 wrote).
          guard sum == computed || sum == computed.byteSwapped else {
            throw fail("chunk \(index) fails its Fletcher-32 checksum: the file is corrupt")
          }
        case deflate:
          raw = try inflate(raw, size: chunkBytes) { (reason) in fail("chunk \(index): \(reason)") }
        default:
          raw = unshuffle(raw, elementSize: elementSize)
        }
      }
      guard raw.count == chunkBytes else {
        throw fail("chunk \(index) holds \(raw.count) bytes after its filters, the chunk needs \(chunkBytes)")
      }
      if let output { raw.withUnsafeBytes { place($0, at: origin, chunkDims: grid.chunkDims, shape: shape, elementSize: elementSize, into: output) } }
    }
  }

  /// Copies the part of a whole chunk (row-major, `chunkDims`) that lies inside `shape` to its place in
  /// the row-major `output`: one row of the last dimension at a time.
  static func place(
    _ chunk: UnsafeRawBufferPointer, at origin: [Int], chunkDims: [Int], shape: [Int], elementSize: Int,
    into output: UnsafeMutableRawPointer
  ) {
    let rank = shape.count
    let extent = (0..<rank).map { min(chunkDims[$0], shape[$0] - origin[$0]) }
    var inStride = [Int](repeating: 1, count: rank), outStride = [Int](repeating: 1, count: rank)
    for d in stride(from: rank - 2, through: 0, by: -1) {
      inStride[d] = inStride[d + 1] * chunkDims[d + 1]
      outStride[d] = outStride[d + 1] * shape[d + 1]
    }
    let rowBytes = extent[rank - 1] * elementSize
    let rows = extent.dropLast().reduce(1, *)
    var index = [Int](repeating: 0, count: rank)
    for _ in 0..<rows {
      var source = 0, target = 0
      for d in 0..<rank {
        source += index[d] * inStride[d]
        target += (origin[d] + index[d]) * outStride[d]
      }
      (output + target * elementSize).copyMemory(from: chunk.baseAddress! + source * elementSize, byteCount: rowBytes)
      var d = rank - 2
      while d >= 0 {
        index[d] += 1
        if index[d] < extent[d] { break }
        index[d] = 0
        d -= 1
      }
    }
  }

  /// HDF5's Fletcher-32 (H5_checksum_fletcher32): over big-endian 16-bit words (an odd last byte is the
  /// high byte of a word), both sums folded to 16 bits; the result is sum2 << 16 | sum1.
  static func fletcher32Sum(_ data: [UInt8]) -> UInt32 {
    var sum1: UInt32 = 0, sum2: UInt32 = 0
    var i = 0
    var words = data.count / 2
    while words > 0 {
      // 360 words keep both sums below 2^32 before they are folded.
      let block = min(words, 360)
      words -= block
      for _ in 0..<block {
        sum1 += UInt32(data[i]) << 8 | UInt32(data[i + 1])
        sum2 += sum1
        i += 2
      }
      sum1 = (sum1 & 0xffff) + (sum1 >> 16)
      sum2 = (sum2 & 0xffff) + (sum2 >> 16)
    }
    if data.count % 2 == 1 {
      sum1 += UInt32(data[i]) << 8
      sum2 += sum1
      sum1 = (sum1 & 0xffff) + (sum1 >> 16)
      sum2 = (sum2 & 0xffff) + (sum2 >> 16)
    }
    sum1 = (sum1 & 0xffff) + (sum1 >> 16)
    sum2 = (sum2 & 0xffff) + (sum2 >> 16)
    return sum2 << 16 | sum1
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
