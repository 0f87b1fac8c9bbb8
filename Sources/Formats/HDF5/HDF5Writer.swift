// Writes tensors as an HDF5 file: one contiguous dataset per tensor at the root, named by the tensor (a
// `/` in a name creates the groups on the way). BF16 is a 2-byte opaque with dtype="bfloat16", as Keras 3
// writes it. Timestamps are off, so the same tensors give the same bytes. The file is created under a
// temporary name and renamed when complete; tensors are loaded one at a time.

#if canImport(Glibc)
  import Glibc
#endif
import CHDF5

public enum HDF5Writer {
  public static func write(
    _ sources: [TensorSource], to path: String, progress: ((_ done: Int, _ total: Int) -> Void)? = nil
  ) throws(FormatError) {
    HDF5Library.quiet
    let slash = path.lastIndex(of: "/")
    let directory = slash.map { String(path[...$0]) } ?? ""
    let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
    let temporary = "\(directory).\(name).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
    do throws(FormatError) {
      try writeFile(sources, to: temporary, reportingAs: path, progress: progress)
      guard rename(temporary, path) == 0 else { throw .io(file: path, reason: "cannot rename into place: \(systemErrorText())") }
    } catch {
      unlink(temporary)
      throw error
    }
  }

  private static func writeFile(
    _ sources: [TensorSource], to temporary: String, reportingAs path: String,
    progress: ((Int, Int) -> Void)?
  ) throws(FormatError) {
    guard let file = H5ID(H5Fcreate(temporary, espalier_H5F_ACC_EXCL(), espalier_H5P_DEFAULT(), espalier_H5P_DEFAULT()), H5Fclose),
      let lcpl = H5ID(H5Pcreate(espalier_H5P_LINK_CREATE()), H5Pclose),
      let dcpl = H5ID(H5Pcreate(espalier_H5P_DATASET_CREATE()), H5Pclose),
      H5Pset_create_intermediate_group(lcpl.id, 1) >= 0, H5Pset_obj_track_times(dcpl.id, false) >= 0
    else { throw .io(file: path, reason: "cannot create the HDF5 file") }
    var seen = Set<String>()
    for (i, source) in sources.enumerated() {
      let info = source.info
      guard seen.insert(info.name).inserted else { throw .duplicateKey(file: path, key: info.name) }
      let tensor: Tensor
      do { tensor = try source.load() } catch let e as FormatError { throw e } catch {
        throw .io(file: path, reason: "tensor `\(info.name)`: \(error)")
      }
      guard tensor.info.dtype == info.dtype, tensor.shape == info.shape else { throw .tensorInvalidInfo(file: path, tensor: info.name) }
      let type = try HDF5Types.fileType(info.dtype, tensor: info.name, file: path)
      let dims = info.shape.map { hsize_t($0) }
      guard let space = H5ID(dims.isEmpty ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(dims.count), dims, nil), H5Sclose),
        let dataset = H5ID(H5Dcreate2(file.id, info.name, type.id, space.id, lcpl.id, dcpl.id, espalier_H5P_DEFAULT()), H5Dclose)
      else { throw .io(file: path, reason: "cannot create dataset `\(info.name)`") }
      let status = tensor.withUnsafeBytes { b in
        b.isEmpty ? 0 : H5Dwrite(dataset.id, type.id, espalier_H5S_ALL(), espalier_H5S_ALL(), espalier_H5P_DEFAULT(), b.baseAddress)
      }
      guard status >= 0 else { throw .io(file: path, reason: "cannot write dataset `\(info.name)`") }
      if info.dtype == .bf16 && !HDF5Attributes.write(dataset.id, "dtype", "bfloat16") {
        throw .io(file: path, reason: "cannot tag dataset `\(info.name)` as bfloat16")
      }
      source.release?()
      progress?(i + 1, sources.count)
    }
    guard H5Fflush(file.id, H5F_SCOPE_GLOBAL) >= 0 else { throw .io(file: path, reason: "cannot flush the HDF5 file") }
  }
}
