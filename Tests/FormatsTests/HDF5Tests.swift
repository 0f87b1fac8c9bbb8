// The HDF5 reader against files h5py wrote (fixtures/make_hdf5_files.py): flat, chunked+gzip+shuffle,
// f16, bf16 as opaque and as uint16, Keras legacy and Keras 3 layouts, read back bit for bit; unsafe
// files refused; and safetensors -> HDF5 -> safetensors byte-identical per tensor.

import Foundation
import Testing

@testable import Formats

@Suite struct HDF5ReaderTests {
  static let goodFiles = ["flat.h5", "chunked_gzip.h5", "keras_legacy.h5", "keras3.weights.h5"]

  /// The little-endian bytes of a manifest entry's bit patterns.
  static func bytes(_ tensor: [String: Any]) -> [UInt8] {
    let width = tensor["bits_width"] as! Int
    return (tensor["bits"] as! [NSNumber]).flatMap { n -> [UInt8] in
      let v = n.int64Value
      return (0..<(width / 8)).map { UInt8(truncatingIfNeeded: v >> (8 * Int64($0))) }
    }
  }

  @Test(arguments: goodFiles)
  func readsWhatH5pyWrote(file: String) throws {
    let manifest = try #require((try Fixtures.json("hdf5/manifest.json"))["files"] as? [String: Any])
    let record = try #require(manifest[file] as? [String: Any])
    let checkpoint = try HDF5Checkpoint(path: Fixtures.path("hdf5/" + file))
    let weights = (record["tensors"] as! [[String: Any]]).filter { $0["role"] as? String != "optimizer" }
    #expect(checkpoint.infos.count == weights.count)
    for t in weights {
      let name = String((t["path"] as! String).dropFirst())
      let tensor = try checkpoint.tensor(name)
      #expect(tensor.dtype.rawValue == t["dtype"] as? String, "\(name)")
      #expect(tensor.shape == t["shape"] as? [Int], "\(name)")
      #expect(tensor.byteArray == Self.bytes(t), "\(name)")
    }
  }

  @Test func kerasLegacyTensorsComeInLayerOrder() throws {
    let record = try #require(((try Fixtures.json("hdf5/manifest.json"))["files"] as? [String: Any])?["keras_legacy.h5"] as? [String: Any])
    let layers = try #require(record["layer_names"] as? [String])
    let weightNames = try #require(record["weight_names"] as? [String: [String]])
    let expected = layers.flatMap { layer in (weightNames[layer] ?? []).map { "\(layer)/\($0)" } }
    let checkpoint = try HDF5Checkpoint(path: Fixtures.path("hdf5/keras_legacy.h5"))
    #expect(checkpoint.infos.map(\.name) == expected)
  }

  @Test func keras3OptimizerStateIsSkippedWithANote() throws {
    let checkpoint = try HDF5Checkpoint(path: Fixtures.path("hdf5/keras3.weights.h5"))
    #expect(!checkpoint.infos.contains { $0.name.hasPrefix("optimizer/") })
    #expect(checkpoint.notes.contains { $0.contains("optimizer") })
  }

  @Test(arguments: [
    ("bad_external_link.h5", "external link"), ("bad_soft_link.h5", "soft link"),
    ("bad_external_dataset.h5", "external files"), ("bad_virtual_dataset.h5", "virtual dataset"),
  ])
  func unsafeFilesAreRefused(file: String, reason: String) throws {
    let path = Fixtures.path("hdf5/" + file)
    do {
      _ = try HDF5Checkpoint(path: path)
      Issue.record("\(file) was accepted")
    } catch {
      guard case .hdf5(file: path, reason: let text) = error else {
        Issue.record("\(file): unexpected \(error)")
        return
      }
      #expect(text.contains(reason), "\(text)")
    }
  }

  @Test func notHDF5IsExplained() throws {
    let path = Fixtures.path("hdf5/not_hdf5.h5")
    #expect(throws: FormatError.notACheckpoint(path: path, reason: "named like HDF5 but does not start with the HDF5 signature")) {
      _ = try Checkpoint.open(path)
    }
  }

  /// safetensors -> HDF5 -> safetensors keeps every tensor's bytes, dtypes and shapes; and the h5py file
  /// with the same values reads to the same bytes.
  @Test func roundTripThroughHDF5IsByteIdentical() throws {
    let source = try SafetensorsCheckpoint(path: Fixtures.path("hdf5/roundtrip_source.safetensors"))
    let dir = try TemporaryDirectory()
    try HDF5Writer.write(source.sources, to: dir.file("out.h5"))
    #expect(dir.contents == ["out.h5"])
    let written = try HDF5Checkpoint(path: dir.file("out.h5"))
    try SafetensorsWriter.write(written.sources, to: dir.file("back.safetensors"))
    let back = try SafetensorsCheckpoint(path: dir.file("back.safetensors"))
    let h5py = try HDF5Checkpoint(path: Fixtures.path("hdf5/flat.h5"))
    for info in source.infos {
      let original = try source.tensor(info.name).byteArray
      #expect(try back.tensor(info.name).info == info)
      #expect(try back.tensor(info.name).byteArray == original, "\(info.name)")
      #expect(try h5py.tensor(info.name).byteArray == original, "\(info.name) from h5py")
    }
  }

  @Test func writerRefusesTypesHDF5CannotHoldAndLeavesNoFile() throws {
    let dir = try TemporaryDirectory()
    let f8 = try Tensor(name: "w", shape: [2], float32: [1, 2], as: .f8e4m3)
    #expect(throws: FormatError.self) { try HDF5Writer.write([TensorSource(f8)], to: dir.file("x.h5")) }
    #expect(dir.contents.isEmpty)
  }
}
