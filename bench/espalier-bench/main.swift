// Benchmark driver (make bench). Each figure is a ratio against a baseline measured in the same run on
// the same bytes, so the numbers mean something on any machine:
//
//   convert-bf16 DIR   BF16 -> F32 widening of every tensor of a >= 1 GB safetensors file, against a
//                      memcpy of the same source bytes (both read through the same mmap), streaming
//                      (chunks into one cache-resident buffer, as conversions stream) and into a
//                      full-size destination.
//   make-shards DIR    writes a 16-shard >= 8 GB F32 checkpoint (2:4-sparse content) into DIR.
//   convert GGUF DIR   SmolLM2 Q4_1 GGUF -> F32 safetensors directory, then safetensors -> HDF5 -> safetensors,
//                      each in MB/s of output against a memcpy of the same number of bytes.
//   engine MODEL [B T] forward and forward+backward tokens/s of the Llama engine (default 4 × 256), as a
//                      fraction of OpenBLAS sgemm GFLOP/s measured in the same run; peak RSS of the process.
//   finetune-step MODEL METHOD TEXT [B T r]
//                      one training step (forward, backward, clip, AdamW) of METHOD adapters (lors, lora,
//                      sqft, spp) on every projection of MODEL at B × T (default 4 × 256), rank r (16), on
//                      windows of TEXT (real text: its peaky softmaxes are what make denormals matter):
//                      best of 3 after a warm-up, tokens/s, and the process's peak RSS (run one method per
//                      process so each RSS is its own).
//   sparse-checkpoint DENSE DIR
//                      a pruned BF16 checkpoint compressed in each layout (SparseCheckpointBench.swift).
//   make-llama SHAPE DIR TOKENIZER
//                      a random-weight BF16 checkpoint with the real shapes of llama-3.2-1b, llama-2-7b or
//                      llama-3-8b (ScaleCheckpoints.swift), for the scale table.
//   rss CMD ARGS...    runs a command, prints its wall time and peak RSS (wait4). Run it from a fresh
//                      process: Linux folds the parent's high-water RSS into an exec'd child's maxrss.
//
// Files are generated under DIR; bench/run.sh removes them afterwards.

import Formats
import Surgery


#if canImport(Glibc)
  import Glibc
#endif

func now() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func say(_ text: String) { print(text) }

func fixed(_ v: Double, _ digits: Int = 2) -> String {
  var scale = 1.0
  for _ in 0..<digits { scale *= 10 }
  let r = (v * scale).rounded() / scale
  return "\(r)"
}

/// Writes a safetensors checkpoint of `shards` files × `tensorsPerShard` tensors of `elements` each,
/// every tensor sharing one generated buffer (content: a 2:4 pattern of zeros and small values).
func makeCheckpoint(
  directory: String, dtype: DType, shards: Int, tensorsPerShard: Int, elements: Int
) throws -> Int {
  let info = TensorInfo(name: "t", dtype: dtype, shape: [elements / 4096, 4096])
  let bytes = info.byteCount!
  let storage = OwnedBytes(count: bytes)
  var values = [Float](repeating: 0, count: elements)
  var state: UInt32 = 1
  for i in 0..<elements where i % 4 >= 2 {
    state = state &* 1_664_525 &+ 1_013_904_223
    values[i] = Float(Int32(bitPattern: state) >> 8) / Float(1 << 23)
  }
  try values.withUnsafeBufferPointer { v in
    try Float32Conversion.narrow(dtype, from: v.baseAddress!, to: storage.pointer, count: elements)
  }
  let tensor = try Tensor(info: info, bytes: storage.bytes, owner: storage)
  var sources: [TensorSource] = []
  for s in 0..<shards {
    for t in 0..<tensorsPerShard {
      let name = "model.layers.\(s).block.\(t).weight"
      var i = info
      i.name = name
      sources.append(TensorSource(info: i) { tensor.renamed(name) })
    }
  }
  mkdir(directory, 0o755)
  try SafetensorsCheckpoint.write(sources, toDirectory: directory, maxShardSize: shards == 1 ? nil : bytes * tensorsPerShard)
  return bytes * shards * tensorsPerShard
}

func removeDirectory(_ path: String) {
  _ = system("rm -rf '\(path)'")
}

/// Best of `reps` timings of `body`.
func best(_ reps: Int, _ body: () throws -> Void) rethrows -> Double {
  var t = Double.infinity
  for _ in 0..<reps {
    let start = now()
    try body()
    t = min(t, now() - start)
  }
  return t
}

func benchConvert(directory: String) throws {
  let dir = directory + "/convert-bf16"
  // 64 tensors of 8 Mi BF16 elements (16 MiB each): 1.07 GB.
  let total = try makeCheckpoint(directory: dir, dtype: .bf16, shards: 1, tensorsPerShard: 64, elements: 8 << 20)
  let checkpoint = try SafetensorsCheckpoint(path: dir)
  let largest = checkpoint.entries.map(\.entry.dataRange.count).max()!
  let chunkElements = 2048  // 8 KiB of f32: stays in L1 (128 KiB chunks measured 2.5x slower)
  let copyBuffer = UnsafeMutableRawPointer.allocate(byteCount: largest, alignment: 64)
  let floatBuffer = UnsafeMutablePointer<Float>.allocate(capacity: largest / 2)
  let chunkBuffer = UnsafeMutableRawPointer.allocate(byteCount: chunkElements * 4, alignment: 64)
  defer {
    copyBuffer.deallocate()
    floatBuffer.deallocate()
    chunkBuffer.deallocate()
  }
  memset(copyBuffer, 1, largest)
  memset(floatBuffer, 1, largest * 2)
  // Warm the page cache so every pass reads the same cached bytes through the same page faults.
  for e in checkpoint.entries { _ = try Sparsity.count(checkpoint.tensor(e)) }
  var checksum: Float = 0  // one value of every chunk is read, so no pass can be optimised away

  func memcpyFull() throws {
    for e in checkpoint.entries {
      _ = try checkpoint.tensor(e).withUnsafeBytes { memcpy(copyBuffer, $0.baseAddress!, $0.count) }
      checksum += copyBuffer.load(as: Float.self)
      checkpoint.release(e)
    }
  }
  func convertFull() throws {
    for e in checkpoint.entries {
      try checkpoint.tensor(e).withUnsafeBytes { (b) throws(FormatError) in
        try Float32Conversion.widen(.bf16, from: b.baseAddress!, to: floatBuffer, count: b.count / 2)
      }
      checksum += floatBuffer[0]
      checkpoint.release(e)
    }
  }
  func memcpyStreaming() throws {
    for e in checkpoint.entries {
      let chunkBytes = chunkElements * 2  // the same elements per chunk as the conversion
      try checkpoint.tensor(e).withUnsafeBytes { b in
        var done = 0
        while done < b.count {
          let n = min(chunkBytes, b.count - done)
          memcpy(chunkBuffer, b.baseAddress! + done, n)
          checksum += chunkBuffer.load(as: Float.self)
          done += n
        }
      }
      checkpoint.release(e)
    }
  }
  func convertStreaming() throws {
    for e in checkpoint.entries {
      try checkpoint.tensor(e).withUnsafeBytes { (b) throws(FormatError) in
        try Float32Conversion.widenStreaming(.bf16, from: b.baseAddress!, count: b.count / 2, chunk: chunkElements) {
          checksum += $0[0]
        }
      }
      checkpoint.release(e)
    }
  }
  func convertAllocating() throws {
    for e in checkpoint.entries {
      checksum += try checkpoint.tensor(e).float32()[0]
      checkpoint.release(e)
    }
  }
  var times = [Double](repeating: .infinity, count: 5)
  for _ in 0..<5 {  // interleaved, best of five each
    times[0] = min(times[0], try best(1, memcpyStreaming))
    times[1] = min(times[1], try best(1, convertStreaming))
    times[2] = min(times[2], try best(1, memcpyFull))
    times[3] = min(times[3], try best(1, convertFull))
    times[4] = min(times[4], try best(1, convertAllocating))
  }
  let gb = Double(total) / 1e9
  func rate(_ t: Double) -> String { "\(fixed(t, 3)) s  \(fixed(gb / t)) GB/s of BF16 in" }
  say("convert-bf16: \(checkpoint.entries.count) BF16 tensors, \(fixed(gb, 3)) GB in, \(fixed(2 * gb, 3)) GB of f32 out"
    + " (checksum \(checksum))")
  say("  streaming, 8 KiB chunks:     memcpy \(rate(times[0]))")
  say("                              BF16->F32 \(rate(times[1]))  ratio to memcpy: \(fixed(times[0] / times[1], 3))")
  say("  full-size destination:      memcpy \(rate(times[2]))")
  say("                              BF16->F32 \(rate(times[3]))  ratio to memcpy: \(fixed(times[2] / times[3], 3))")
  say("  Tensor.float32() (allocates a fresh array per tensor): \(rate(times[4]))")
  removeDirectory(dir)
}

func makeShards(directory: String) throws {
  // 16 shards × 8 tensors × 16 Mi F32 elements (64 MiB): 8.59 GB.
  let start = now()
  let total = try makeCheckpoint(directory: directory, dtype: .f32, shards: 16, tensorsPerShard: 8, elements: 16 << 20)
  say("make-shards: wrote \(fixed(Double(total) / 1e9, 2)) GB in 16 shards to \(directory) (\(fixed(now() - start, 1)) s)")
}

func benchConvertFormats(gguf: String, directory: String) throws {
  let hf = directory + "/smollm2-f32"
  let h5 = directory + "/smollm2.h5"
  let back = directory + "/smollm2-back.safetensors"
  func run(_ input: String, _ output: String, _ dtype: DType?) throws -> (Double, Int) {
    var report: ConvertReport?
    let t = try best(2) {
      report = try Converter.convert(input: input, output: output, options: ConvertOptions(dtype: dtype, overwrite: true))
    }
    return (t, report!.bytesOut)
  }
  let (tGGUF, bytes) = try run(gguf, hf, .f32)
  let (tToH5, _) = try run(hf, h5, nil)
  let (tFromH5, _) = try run(h5, back, nil)
  // memcpy of the same number of bytes, between two pre-faulted buffers.
  let src = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
  let dst = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
  defer {
    src.deallocate()
    dst.deallocate()
  }
  // Varied content: a memcpy from memset memory can be folded into a memset by the optimiser.
  for i in 0..<(bytes / 8) { src.storeBytes(of: UInt64(i) &* 0x9E37_79B9_7F4A_7C15, toByteOffset: 8 * i, as: UInt64.self) }
  memset(dst, 2, bytes)
  var touched: UInt8 = 0  // read the copy back, so it cannot be optimised away
  let tCopy = best(3) {
    memcpy(dst, src, bytes)
    touched &+= dst.load(fromByteOffset: bytes / 2, as: UInt8.self)
  }
  let mb = Double(bytes) / 1e6
  func line(_ label: String, _ t: Double) -> String {
    "  \(label)\(fixed(t, 3)) s  \(fixed(mb / t, 0)) MB/s  (memcpy / this: \(fixed(tCopy / t, 3)))"
  }
  say("convert: SmolLM2-135M, \(fixed(mb, 1)) MB of F32 tensors out; best of 2 runs, page cache warm (\(touched))")
  say("  memcpy of \(fixed(mb, 1)) MB              \(fixed(tCopy, 3)) s  \(fixed(mb / tCopy, 0)) MB/s")
  say(line("GGUF Q4_1 -> F32 safetensors dir   ", tGGUF))
  say(line("safetensors -> HDF5                ", tToH5))
  say(line("HDF5 -> safetensors                ", tFromH5))
}

/// sgemm GFLOP/s on an n×n×n product with the current thread count (best of `reps`).
func sgemmGFLOPs(_ n: Int, reps: Int = 3) -> Double {
  let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
  var c = [Float](repeating: 0, count: n * n)
  let t = best(reps) { Gemm.sgemm(&c, a, b, m: n, n: n, k: n) }
  return 2 * Double(n * n * n) / t / 1e9
}

/// Matmul FLOPs of one token through the model (forward), and attention FLOPs at context T (causal).
func modelFLOPs(_ c: LlamaConfig, T: Int) -> (matmul: Double, attention: Double) {
  let perLayer = c.hiddenSize * c.qDim * 2 + c.hiddenSize * c.kvDim * 2 + 3 * c.hiddenSize * c.intermediateSize
  let matmul = 2 * Double(c.layers * perLayer + c.vocabSize * c.hiddenSize)
  // q·kᵀ and p·v over on average (T+1)/2 keys, per head.
  let attention = 2 * 2 * Double(c.layers * c.heads * c.headDim) * Double(T + 1) / 2
  return (matmul, attention)
}

func benchEngine(model path: String, B: Int, T: Int) throws {
  let load = now()
  let model = try LlamaModel.load(path, maxPositions: T)
  let loadSeconds = now() - load
  let runner = LlamaRunner(model: model, B: B, T: T)
  var state: UInt64 = 42
  let tokens = (0..<(B * T)).map { _ -> Int32 in
    state = state &* 6_364_136_223_846_793_005 &+ 1
    return Int32((state >> 33) % UInt64(model.config.vocabSize))
  }
  let targets = Array(tokens.dropFirst()) + [0]
  // The sgemm ceiling is the best of measurements before and after the model runs (the conservative
  // choice for the ratios: a noisy low sgemm figure would flatter the model).
  var gflops = sgemmGFLOPs(2048, reps: 5)
  try runner.forward(tokens: tokens, targets: targets)  // warm-up
  let tForward = try best(3) { try runner.forward(tokens: tokens, targets: targets) }
  let tTrain = try best(3) {
    try runner.forward(tokens: tokens, targets: targets, prepareBackward: true)
    try runner.backward()
  }
  gflops = max(gflops, sgemmGFLOPs(2048, reps: 5))
  let f = modelFLOPs(model.config, T: T)
  let n = Double(B * T)
  let forwardFLOPs = (f.matmul + f.attention) * n
  // Backward to the inputs only (frozen weights): one dX product per forward product, and attention
  // backward has twice the products of its forward. Recomputed norms and probabilities are not counted.
  let trainFLOPs = (2 * f.matmul + 3 * f.attention) * n
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  say("engine: \(path), B×T = \(B)×\(T), load \(fixed(loadSeconds, 2)) s, activations \(fixed(Double(runner.activationBytes) / 1e6, 0)) MB, weights \(fixed(Double(model.params.bytes) / 1e6, 0)) MB")
  say("  OpenBLAS sgemm 2048³, \(Gemm.threads) threads: \(fixed(gflops, 1)) GFLOP/s (best of 10, before and after)")
  say("  model FLOPs/token: forward \(fixed((f.matmul + f.attention) / 1e6, 1)) M, forward+backward \(fixed((2 * f.matmul + 3 * f.attention) / 1e6, 1)) M")
  say("  forward:          \(fixed(tForward, 3)) s/batch  \(fixed(n / tForward, 0)) tokens/s  \(fixed(forwardFLOPs / tForward / 1e9, 1)) GFLOP/s = \(fixed(forwardFLOPs / tForward / 1e9 / gflops, 3)) of sgemm")
  say("  forward+backward: \(fixed(tTrain, 3)) s/batch  \(fixed(n / tTrain, 0)) tokens/s  \(fixed(trainFLOPs / tTrain / 1e9, 1)) GFLOP/s = \(fixed(trainFLOPs / tTrain / 1e9 / gflops, 3)) of sgemm")
  say("  peak RSS \(fixed(Double(usage.ru_maxrss) / 1024, 0)) MB (target ≤ 1500 MB)")
}

func benchFinetuneStep(model path: String, method: AdapterMethod, text: String, B: Int, T: Int, rank: Int) throws {
  let model = try LlamaModel.load(path, maxPositions: T)
  let data = TrainingData(
    records: try Corpus.records(text), tokenizer: try Tokenizer.forCheckpoint(path), length: T,
    eos: Int32(model.config.eosTokenIDs.first ?? 0))
  let windows = Array(data.windows.prefix(8 * B))
  let rule: ScaleRule = method == .lors ? .rslora : .lora
  let adapters = try AdapterSet(model: model, method: method, rank: rank, scale: rule.scale(alpha: 16, rank: rank))
  adapters.initializeRandomly(seed: 1)
  // Non-zero output-side factors, so no product is skipped or trivially zero.
  for i in 0..<adapters.params.layout.totalCount where adapters.params.base[i] == 0 { adapters.params.base[i] = 1e-3 }
  let trainer = try Trainer(
    model: model, adapters: adapters, data: TrainingData(windows: windows), T: T,
    options: TrainingOptions(steps: 100, schedule: CosineSchedule(base: 1e-5, total: 100)))
  _ = try trainer.trainStep()  // warm-up
  var times: [Double] = []
  for _ in 0..<3 { times.append(try trainer.trainStep().seconds) }
  let t = times.min()!
  var mergeNote = ""
  if method == .lors {
    // What LoRS adds to a step: each layer's merged weight is recomputed twice (forward and backward).
    let layers = model.linears.flatMap { $0 }.compactMap { $0 as? LoRSLinear }
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: layers.map { $0.outFeatures * $0.inFeatures }.max()!)
    defer { buffer.deallocate() }
    let merge = best(3) { for layer in layers { layer.mergedWeight(into: buffer) } }
    mergeNote = ", merged-weight recompute \(fixed(2 * merge, 3)) s of the step"
  }
  var usage = rusage()
  getrusage(RUSAGE_SELF.rawValue, &usage)
  say("finetune-step \(method.rawValue): B×T = \(B)×\(T), rank \(rank), \(adapters.params.layout.totalCount) trainable, "
    + "step \(fixed(t, 3)) s (best of 3: \(times.map { fixed($0, 3) }.joined(separator: " "))), "
    + "\(fixed(Double(B * T) / t, 0)) tokens/s, peak RSS \(fixed(Double(usage.ru_maxrss) / 1024, 0)) MB\(mergeNote)")
}

/// Runs a command and reports wall time and peak RSS. Call from a fresh, small process.
func measureRSS(_ command: [String]) {
  var pid: pid_t = 0
  var argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
  let t0 = now()
  guard posix_spawnp(&pid, command[0], &actions, nil, &argv, environ) == 0 else {
    say("rss: cannot run \(command[0])")
    exit(1)
  }
  var status: Int32 = 0
  var usage = rusage()
  _ = wait4(pid, &status, 0, &usage)
  let seconds = now() - t0
  say("rss: `\(command.joined(separator: " "))`: exit \((status >> 8) & 0xFF), \(fixed(seconds, 2)) s, "
    + "peak RSS \(fixed(Double(usage.ru_maxrss) / 1024, 1)) MB")
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
  say("usage: espalier-bench convert-bf16 DIR | convert GGUF DIR | make-shards DIR | make-llama SHAPE DIR TOKENIZER | engine MODEL [B T] | finetune-step MODEL METHOD TEXT [B T r] | sparse-checkpoint DENSE DIR | generate MODEL PROMPT_FILE TOKENS | rss COMMAND [ARGS...]")
  exit(64)
}
do {
  switch arguments[1] {
  case "convert-bf16":
    mkdir(arguments[2], 0o755)
    try benchConvert(directory: arguments[2])
  case "make-shards": try makeShards(directory: arguments[2])
  case "make-llama" where arguments.count >= 5: try makeScaleCheckpoint(shape: arguments[2], directory: arguments[3], tokenizer: arguments[4])
  case "convert" where arguments.count >= 4:
    mkdir(arguments[3], 0o755)
    try benchConvertFormats(gguf: arguments[2], directory: arguments[3])
  case "rss": measureRSS(Array(arguments[2...]))
  case "sparse-checkpoint" where arguments.count >= 4:
    mkdir(arguments[3], 0o755)
    try benchSparseCheckpoint(dense: arguments[2], directory: arguments[3])
  case "finetune-step" where arguments.count >= 5:
    guard let method = AdapterMethod(rawValue: arguments[3]) else { throw SurgeryError.unsupported("method \(arguments[3])") }
    let B = arguments.count > 5 ? Int(arguments[5]) ?? 4 : 4
    let T = arguments.count > 6 ? Int(arguments[6]) ?? 256 : 256
    let r = arguments.count > 7 ? Int(arguments[7]) ?? 16 : 16
    try benchFinetuneStep(model: arguments[2], method: method, text: arguments[4], B: B, T: T, rank: r)
  case "generate" where arguments.count >= 5:
    try benchGenerate(model: arguments[2], promptFile: arguments[3], tokens: Int(arguments[4]) ?? 128)
  case "engine":
    let B = arguments.count > 3 ? Int(arguments[3]) ?? 4 : 4
    let T = arguments.count > 4 ? Int(arguments[4]) ?? 256 : 256
    try benchEngine(model: arguments[2], B: B, T: T)
  default:
    say("unknown benchmark \(arguments[1])")
    exit(64)
  }
} catch {
  say("benchmark failed: \(error)")
  exit(1)
}
