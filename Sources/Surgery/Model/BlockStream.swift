// The frozen base of a model too large for memory: its blocks stay in the checkpoint (mapped, in their
// stored dtype) and the engine widens block l into one f32 workspace when it reaches it, dropping the
// block's mapped pages afterwards (they return from the page cache, or disk, the next time). Every block
// of a Llama model has the same tensors and shapes, so the workspace has one slot per block tensor and
// the model's parameter layout maps the tensors of every block onto those slots: a layer built over
// block l's weight reads the right values exactly while block l is loaded.

import Formats

public final class BlockStream {
  let reader: any CheckpointReader
  /// Tensor names of block 0 without the "model.layers.0." prefix, with their workspace slot (offset, count).
  let slots: [(suffix: String, offset: Int, count: Int)]
  let workspace: UnsafeMutablePointer<Float>
  /// The block whose weights are in the workspace.
  public private(set) var loaded: Int?
  /// Blocks widened so far (a measure of streaming traffic: a layer-major pass reads each block once).
  public private(set) var loads = 0
  /// Keep each block's mapped pages after widening (when the stored model fits the budget, re-reading
  /// from resident pages is cheaper than from the page cache).
  public var keepPages = false

  init(reader: any CheckpointReader, slots: [(suffix: String, offset: Int, count: Int)], workspace: UnsafeMutablePointer<Float>) {
    self.reader = reader
    self.slots = slots
    self.workspace = workspace
  }

  /// Widens block `l` into the workspace unless it is there already.
  func load(_ l: Int) throws(FormatError) {
    guard loaded != l else { return }
    loaded = nil
    for slot in slots {
      let name = "model.layers.\(l)." + slot.suffix
      let tensor = try reader.tensor(name)
      try tensor.withUnsafeBytes { (b) throws(FormatError) in
        try Float32Conversion.widen(tensor.dtype, from: b.baseAddress!, to: workspace + slot.offset, count: slot.count)
      }
      if !keepPages { reader.release(name) }
    }
    loaded = l
    loads += 1
  }

  /// Forgets the loaded block (after the workspace was changed by something other than `load`).
  func invalidate() { loaded = nil }

  /// Floats in one block's workspace.
  public var blockFloats: Int { slots.reduce(0) { $0 + $1.count } }
}
