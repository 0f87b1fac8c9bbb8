// Sparsity counting on stored bits and N:M conformance.

import Testing

@testable import Formats
@testable import Surgery

@Suite struct SparsityTests {
  @Test func negativeZeroIsZero() throws {
    let t = try Tensor(name: "w", shape: [2, 4], float32: [0, -0.0, 1, -1, 0, 2, 0, .leastNonzeroMagnitude])
    #expect(Sparsity.count(t) == SparsityStats(elements: 8, zeros: 4))
  }

  @Test(arguments: [DType.f32, .f16, .bf16, .f64, .f8e4m3, .f8e5m2])
  func zerosAreCountedInEveryFloatDtype(dtype: DType) throws {
    let t = try Tensor(name: "w", shape: [3, 4], float32: [0, 1, -0.0, 2, 3, 0, 0, 0, 1, 1, 1, -0.0], as: dtype)
    #expect(Sparsity.count(t)?.zeros == 6)
  }

  @Test func integerZeros() throws {
    let t = try Tensor(name: "i", dtype: .i32, shape: [3], data: [0, 0, 0, 0x80, 0, 0, 0, 0, 1, 0, 0, 0])
    #expect(Sparsity.count(t)?.zeros == 1)  // 0x80000000 is a negative integer, not a zero
  }

  @Test func subByteTypesHaveNoCount() throws {
    let t = try Tensor(name: "q", dtype: .f4, shape: [4], data: [0, 0])
    #expect(Sparsity.count(t) == nil)
  }

  @Test func twoFourConformance() throws {
    let conforming = try Tensor(name: "w", shape: [2, 8], float32: [
      0, 0, 1, 1, 1, 0, 0, 1,
      0, 5, 0, 0, 0, 0, 0, 0,
    ])
    let stats = try #require(Sparsity.check(conforming, pattern: try NMPattern(parsing: "2:4")))
    #expect(stats.conforms)
    #expect(stats.groups == 4)
    let broken = try Tensor(name: "w", shape: [2, 8], float32: [
      0, 0, 1, 1, 1, 0, 1, 1,
      0, 5, 0, 0, 0, 0, 0, 0,
    ])
    let b = try #require(Sparsity.check(broken, pattern: try NMPattern(parsing: "2:4")))
    #expect(b.violations == 1)
    #expect(!b.conforms)
  }

  @Test func groupsRunAlongTheLastDimension() throws {
    // Rows of 4 with 2 zeros each conform; the same data read as columns would not.
    let t = try Tensor(name: "w", shape: [2, 4], float32: [0, 0, 1, 1, 0, 0, 1, 1])
    #expect(Sparsity.check(t, pattern: try NMPattern(n: 2, m: 4))?.conforms == true)
    let wide = try Tensor(name: "w", shape: [1, 8], float32: [0, 1, 0, 1, 0, 1, 0, 1])
    #expect(Sparsity.check(wide, pattern: try NMPattern(n: 4, m: 8))?.conforms == true)
    #expect(Sparsity.check(wide, pattern: try NMPattern(n: 3, m: 4))?.violations == 2)
  }

  @Test func shapesThatDoNotDivideAndLowRanks() throws {
    let t = try Tensor(name: "w", shape: [2, 6], float32: [Float](repeating: 0, count: 12))
    let stats = try #require(Sparsity.check(t, pattern: try NMPattern(n: 2, m: 4)))
    #expect(!stats.shapeFits)
    #expect(!stats.conforms)
    let vector = try Tensor(name: "b", shape: [4], float32: [0, 0, 0, 0])
    #expect(Sparsity.check(vector, pattern: try NMPattern(n: 2, m: 4)) == nil)
  }

  @Test func patternParsing() throws {
    #expect(try NMPattern(parsing: "2:4") == NMPattern(n: 2, m: 4))
    for bad in ["2", "5:4", "a:b", "2:0", "-1:4", "2:4:8"] {
      #expect(throws: SurgeryError.invalidPattern(bad)) { _ = try NMPattern(parsing: bad) }
    }
  }
}
