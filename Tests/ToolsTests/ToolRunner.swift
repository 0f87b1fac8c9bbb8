// Runs the built executables (found beside the test bundle) the way a user's shell script would.

import Foundation
import Testing

struct ToolResult {
  var status: Int32
  var stdout: String
  var stderr: String
}

enum Tools {
  /// The products directory: the test bundle lives in it, next to the executables.
  static let binDirectory: String = {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    var dir = bundle.deletingLastPathComponent()
    while !FileManager.default.isExecutableFile(atPath: dir.appendingPathComponent("espalier").path), dir.path != "/" {
      dir.deleteLastPathComponent()
    }
    return dir.path
  }()

  static let fixtures: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.appendingPathComponent("fixtures").path
  }()

  static func run(_ tool: String, _ arguments: [String], environment: [String: String]? = nil) throws -> ToolResult {
    try runExecutable(binDirectory + "/" + tool, arguments, environment: environment)
  }

  /// Runs any executable by path (a system tool such as xmllint or chromium).
  static func runExecutable(_ path: String, _ arguments: [String], environment: [String: String]? = nil) throws -> ToolResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read both pipes before waiting so a large output cannot block the child.
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ToolResult(
      status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
      stderr: String(decoding: errData, as: UTF8.self))
  }
}
