// libFuzzer entry point for the tokenizer.json reader (Sources/Formats/Tokenizer). Built by fuzz/build.sh
// against the instrumented Formats module.
//
// Properties checked on every input:
//  1. JSONParser and Tokenizer(json:file:) never trap: they give a tokenizer or throw;
//  2. an accepted tokenizer encodes a short fixed text (every pre-tokenizer class, an added token) to
//     ids inside its vocab, and decodes those ids without trapping.

@testable import Formats

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizer(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
  let bytes = UnsafeRawBufferPointer(start: data, count: size)
  guard let json = try? JSONParser.parse(bytes) else { return 0 }
  guard let tokenizer = try? Tokenizer(json: json, file: "fuzz") else { return 0 }
  let ids = tokenizer.encode(fuzzSampleText)
  guard ids.allSatisfy({ $0 >= 0 && Int($0) < tokenizer.vocabSize }) else {
    propertyFailed("encoded ids \(ids) leave the vocab of \(tokenizer.vocabSize)")
  }
  _ = tokenizer.decode(ids)
  _ = tokenizer.decode(ids, skipSpecialTokens: true)
  return 0
}
