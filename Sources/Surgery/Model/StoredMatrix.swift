// A (rows × cols) matrix left in the checkpoint in its stored dtype (the embedding and the LM head of a
// streamed model: 0.5–1 GB each in BF16 for Llama-3's 128256-token vocabulary, twice that as f32). Rows
// are widened to f32 only when used: gathered one token at a time for the embedding, or a chunk of
// vocabulary rows at a time for the logits, whose mapped pages are then dropped again.

import Formats

public final class StoredMatrix {
  public let name: String
  public let rows: Int
  public let cols: Int
  let reader: any CheckpointReader
  let tensor: Tensor
  let rowBytes: Int
  /// Vocabulary rows widened per chunk of the LM head (about 32 MB of f32).
  public let chunkRows: Int
  private var scratch: UnsafeMutablePointer<Float>?

  init(_ reader: any CheckpointReader, name: String) throws(FormatError) {
    let tensor = try reader.tensor(name)
    guard tensor.shape.count == 2, tensor.dtype.convertsToFloat32, tensor.dtype.bits % 8 == 0 else {
      throw .unsupportedConversion(from: tensor.dtype, to: .f32)
    }
    self.name = name
    self.reader = reader
    self.tensor = tensor
    rows = tensor.shape[0]
    cols = tensor.shape[1]
    rowBytes = cols * tensor.dtype.bits / 8
    chunkRows = Self.chunkRows(rows: rows, cols: cols)
  }

  /// Rows widened at most per chunk: about 32 MB of f32.
  static func chunkRows(rows: Int, cols: Int) -> Int { max(1, min(rows, (32 << 20) / max(1, cols * 4))) }

  deinit { scratch?.deallocate() }

  /// out[n, :] = row tokens[n] (N rows of cols floats). The table's mapped pages are dropped after: the
  /// kernel maps pages around each faulted row (fault-around, 64 KB), so a few thousand scattered rows
  /// would otherwise keep most of the table resident.
  func gather(tokens: UnsafePointer<Int32>, N: Int, into out: UnsafeMutablePointer<Float>) throws(FormatError) {
    let (dtype, rowBytes, cols) = (tensor.dtype, rowBytes, cols)
    try tensor.withUnsafeBytes { (bytes) throws(FormatError) in
      for n in 0..<N {
        try Float32Conversion.widen(dtype, from: bytes.baseAddress! + Int(tokens[n]) * rowBytes, to: out + n * cols, count: cols)
      }
    }
    reader.release(name)
  }

  /// Rows `range` widened into a scratch buffer of `chunkRows × cols` floats owned by the matrix, handed
  /// to `body`; their mapped pages are released afterwards.
  func withRows<R>(_ range: Range<Int>, _ body: (UnsafePointer<Float>) -> R) throws(FormatError) -> R {
    precondition(range.count <= chunkRows)
    let buffer = scratch ?? UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * cols)
    scratch = buffer
    let (dtype, rowBytes, cols) = (tensor.dtype, rowBytes, cols)
    try tensor.withUnsafeBytes { (bytes) throws(FormatError) in
      try Float32Conversion.widen(dtype, from: bytes.baseAddress! + range.lowerBound * rowBytes, to: buffer, count: range.count * cols)
    }
    reader.release(name, bytes: (range.lowerBound * rowBytes)..<(range.upperBound * rowBytes))
    return body(buffer)
  }

  /// Bytes of f32 scratch this matrix allocates when the head runs.
  public var scratchBytes: Int { chunkRows * cols * 4 }
}
