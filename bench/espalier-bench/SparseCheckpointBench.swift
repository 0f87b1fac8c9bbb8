// sparse-checkpoint DENSE DIR: a pruned checkpoint (stored BF16) compressed in each layout, against a plain
// dense copy of the same checkpoint in the same run: size of the projection weights (what pruning made
// sparse) and of the whole checkpoint against dense, compression and decompression MB/s (of dense bytes,
// output written to DIR), and verify MB/s on the dense and the compressed checkpoint.

import Formats
import Surgery

func benchSparseCheckpoint(dense: String, directory: String) throws {
  let reader = try SafetensorsCheckpoint(path: dense)
  let projections = Set(reader.infos.filter(Verifier.isProjection).map(\.name))
  let projectionBytes = reader.infos.filter { projections.contains($0.name) }.reduce(0) { $0 + ($1.byteCount ?? 0) }
  let total = reader.totalDataBytes
  let mb = Double(total) / 1e6
  let pattern = try NMPattern(parsing: "2:4")
  let twoFour = try Inspector.inspect(reader, pattern: pattern).tensors.filter { projections.contains($0.info.name) }.allSatisfy { $0.pattern?.conforms == true }
  say("sparse-checkpoint: \(dense): \(reader.infos.count) tensors, \(fixed(mb, 1)) MB, projections \(fixed(Double(projectionBytes) / 1e6, 1)) MB, 2:4: \(twoFour)")

  func timed(_ body: () throws -> Void) rethrows -> Double {
    var best = Double.infinity
    for _ in 0..<2 {
      let t0 = now()
      try body()
      best = min(best, now() - t0)
    }
    return best
  }
  var copy = ConvertOptions(overwrite: true)
  copy.maxShardSize = nil
  let copyTime = try timed { _ = try Converter.convert(input: dense, output: directory + "/copy", options: copy) }
  say("  dense copy (safetensors -> safetensors): \(fixed(copyTime, 3)) s = \(Int(mb / copyTime)) MB/s")
  var verify = VerifyOptions()
  verify.pattern = twoFour ? pattern : nil
  let verifyDense = try timed { _ = try Verifier.verify(model: Checkpoint.open(dense), base: nil, adapterDirectory: nil, options: verify) }
  let verifyBase = try timed { _ = try Verifier.verify(model: Checkpoint.open(dense), base: Checkpoint.open(directory + "/copy"), adapterDirectory: nil, options: verify) }
  say("  verify dense: \(Int(mb / verifyDense)) MB/s alone, \(Int(mb / verifyBase)) MB/s against its base (target >= 1000)")

  for format in SparseFormat.allCases {
    if format == .sparse24Bitmask && !twoFour { continue }
    let out = directory + "/" + format.rawValue
    var options = copy
    options.compression = CompressionOptions(format: format)
    let compress = try timed { _ = try Converter.convert(input: dense, output: out, options: options) }
    let stored = try SafetensorsCheckpoint(path: out)
    var projectionStored = 0
    for entry in stored.entries {
      let name = entry.info.name
      let owner = format == .espalier ? String(name.split(separator: "#").first ?? "")
        : (name.split(separator: ".").dropLast().joined(separator: ".") + ".weight")
      if projections.contains(owner) { projectionStored += entry.entry.dataRange.count }
    }
    let onDisk = stored.files.reduce(0) { $0 + FileSystem.size($1) }
    let decompress = try timed { _ = try Converter.convert(input: out, output: directory + "/back", options: copy) }
    let verifyCompressed = try timed { _ = try Verifier.verify(model: Checkpoint.open(out), base: nil, adapterDirectory: nil, options: verify) }
    say("  \(format.rawValue): projections \(fixed(Double(projectionStored) / Double(projectionBytes), 4)) of dense, "
      + "checkpoint \(fixed(Double(onDisk) / Double(total), 4)) (\(fixed(Double(onDisk) / 1e6, 1)) MB); "
      + "compress \(Int(mb / compress)) MB/s (\(fixed(compress / copyTime, 2)) x dense copy), "
      + "decompress \(Int(mb / decompress)) MB/s (\(fixed(decompress / copyTime, 2)) x), verify \(Int(mb / verifyCompressed)) MB/s")
    FileSystem.removeTree(out)
    FileSystem.removeTree(directory + "/back")
  }
  FileSystem.removeTree(directory + "/copy")
}
