// swift-tools-version:6.0
// Espalier: prune, fine-tune under the mask, and verify sparse LLM checkpoints.
// Layout: Formats (bytes) -> Surgery (math) -> Tools (thin executables). See ../shared/ARCHITECTURE.md.
import PackageDescription

let package = Package(
  name: "Espalier",
  products: [
    .library(name: "Formats", targets: ["Formats"]),
    .library(name: "Surgery", targets: ["Surgery"]),
    .executable(name: "espalier", targets: ["espalier"]),
    .executable(name: "espalier-inspect", targets: ["espalier-inspect"]),
    .executable(name: "espalier-convert", targets: ["espalier-convert"]),
    .executable(name: "espalier-eval", targets: ["espalier-eval"]),
    .executable(name: "espalier-prune", targets: ["espalier-prune"]),
    .executable(name: "espalier-finetune", targets: ["espalier-finetune"]),
    .executable(name: "espalier-merge", targets: ["espalier-merge"]),
    .executable(name: "espalier-verify", targets: ["espalier-verify"]),
    .executable(name: "espalier-generate", targets: ["espalier-generate"]),
    .executable(name: "espalier-report", targets: ["espalier-report"]),
    .executable(name: "espalier-bench", targets: ["espalier-bench"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
  ],
  targets: [
    // C libraries from Debian, wrapped as system-library targets (module.modulemap + shim.h).
    .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "CLAPACKE", pkgConfig: "lapacke", providers: [.apt(["liblapacke-dev"])]),
    .systemLibrary(name: "CHDF5", pkgConfig: "hdf5-serial", providers: [.apt(["libhdf5-dev"])]),
    .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
    .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
    // glibc's mallopt (part of libc: nothing to install).
    .systemLibrary(name: "CMalloc"),

    // Everything about bytes: dtypes, tensors, safetensors, checkpoints.
    .target(name: "Formats", dependencies: ["CHDF5", "CZstd", "CZlib"], exclude: ["README.md"]),
    // Everything about math on weights.
    .target(name: "Surgery", dependencies: ["Formats", "CBLAS", "CLAPACKE"], exclude: ["README.md"]),
    // Shared option groups, reports, exit codes and atomic output for the executables.
    .target(
      name: "ToolSupport",
      dependencies: ["Formats", "Surgery", "CMalloc", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      path: "Sources/Tools/ToolSupport"),

    .executableTarget(name: "espalier", path: "Sources/Tools/espalier"),
    .executableTarget(
      name: "espalier-inspect",
      dependencies: [
        "Formats", "Surgery", "ToolSupport",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/Tools/espalier-inspect"),
    .executableTarget(
      name: "espalier-convert",
      dependencies: ["Formats", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      path: "Sources/Tools/espalier-convert"),
    .executableTarget(
      name: "espalier-eval",
      dependencies: [
        "Formats", "Surgery", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/Tools/espalier-eval"),
    .executableTarget(
      name: "espalier-prune",
      dependencies: [
        "Formats", "Surgery", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/Tools/espalier-prune"),
    .executableTarget(
      name: "espalier-finetune",
      dependencies: [
        "Formats", "Surgery", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/Tools/espalier-finetune"),
    .executableTarget(
      name: "espalier-generate",
      dependencies: [
        "Formats", "Surgery", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/Tools/espalier-generate"),
    .executableTarget(
      name: "espalier-merge",
      dependencies: [
        "Formats", "Surgery", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/Tools/espalier-merge"),
    .executableTarget(
      name: "espalier-verify",
      dependencies: [
        "Formats", "Surgery", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/Tools/espalier-verify"),
    .executableTarget(
      name: "espalier-report",
      dependencies: [
        "Formats", "Surgery", "ToolSupport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      path: "Sources/Tools/espalier-report"),
    // Benchmark driver (make bench); not part of the tests.
    .executableTarget(
      name: "espalier-bench",
      dependencies: ["Formats", "Surgery", "ToolSupport"],
      path: "bench/espalier-bench"),

    .testTarget(name: "FormatsTests", dependencies: ["Formats"]),
    .testTarget(name: "SurgeryTests", dependencies: ["Surgery", "Formats"]),
    .testTarget(
      name: "ToolsTests",
      dependencies: ["Formats", "espalier", "espalier-inspect", "espalier-convert", "espalier-eval", "espalier-prune", "espalier-finetune", "espalier-merge", "espalier-verify",
        "espalier-generate", "espalier-report",
      ]),
  ],
  swiftLanguageModes: [.v6]
)
