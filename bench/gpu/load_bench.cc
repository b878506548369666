// Model load benchmark (issue 23: "a 15 GB GGUF ready in <= 10 s"): a GGUF opened, read, converted, uploaded and
// finalized into a ready CUDA decoder, by the fast path (load_cuda_weights) and the reference path (read_cuda_weights
// -> set_weight_f32), timed per phase. The model is synthesized at --model if absent (default: the
// DeepSeek-R1-Distill-Qwen-7B shape, f16: about 15.2 GB). Runs are a list of path:cache pairs; "cold" drops the file
// from the page cache first (posix_fadvise DONTNEED: what the kernel agrees to drop, so the run reports the resident
// fraction it found, from mincore). After each run, one 8-token prefill: its logits must be bit-identical across
// runs (logits_equal). One JSON object on stdout (and in --out).
// Builds with the engine, kernel and runtime libraries alone (no server dependencies).
//
// Usage: citadel_load_bench --model /tmp/r1-7b-f16.gguf [--preset deepseek-r1-distill-qwen-7b] [--dtype f16]
//          [--format bf16] [--runs fast:warm,reference:warm,fast:warm,fast:cold] [--threads 0] [--staging-mb 64]
//          [--n-staging 3] [--commit SHA] [--out result.json]
#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "model/config.h"
#include "model/synth.h"
#include "runtime/cuda_decoder.h"
#include "runtime/cuda_loader.h"

using namespace citadel;

namespace {

[[noreturn]] void die(const std::string& m) {
  std::fprintf(stderr, "load_bench: %s\n", m.c_str());
  std::exit(1);
}
void check(const Status& s, const char* what) {
  if (!s.ok()) die(std::string(what) + ": " + s.to_string());
}

// Fraction of the file's pages in the page cache (mincore over a fresh mapping); -1 when it cannot tell.
double resident_fraction(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st {};
  fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size), page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* p = size ? mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
  close(fd);
  if (p == MAP_FAILED) return -1;
  std::vector<unsigned char> v((size + page - 1) / page);
  double f = -1;
  if (mincore(p, size, v.data()) == 0) {
    size_t n = 0;
    for (unsigned char c : v) n += c & 1;
    f = static_cast<double>(n) / static_cast<double>(v.size());
  }
  munmap(p, size);
  return f;
}

void drop_from_cache(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open " + path);
  fdatasync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

struct Args {
  std::string model, preset = "deepseek-r1-distill-qwen-7b", dtype = "f16", format = "bf16", commit, out;
  std::string runs = "fast:warm,reference:warm,fast:warm,fast:cold";
  int threads = 0, n_staging = 3;
  int64_t staging_mb = 64;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) die("missing value after " + k);
    const std::string v = argv[++i];
    if (k == "--model") a.model = v;
    else if (k == "--preset") a.preset = v;
    else if (k == "--dtype") a.dtype = v;
    else if (k == "--format") a.format = v;
    else if (k == "--runs") a.runs = v;
    else if (k == "--threads") a.threads = std::atoi(v.c_str());
    else if (k == "--staging-mb") a.staging_mb = std::atoll(v.c_str());
    else if (k == "--n-staging") a.n_staging = std::atoi(v.c_str());
    else if (k == "--commit") a.commit = v;
    else if (k == "--out") a.out = v;
    else die("unknown option " + k);
  }
  if (a.model.empty()) die("--model PATH is required");
  return a;
}

std::vector<std::pair<std::string, std::string>> parse_runs(const std::string& s) {
  std::vector<std::pair<std::string, std::string>> r;
  size_t b = 0;
  while (b <= s.size()) {
    const size_t e = std::min(s.find(',', b), s.size());
    const std::string item = s.substr(b, e - b);
    const size_t c = item.find(':');
    const std::string path = item.substr(0, c), cache = c == std::string::npos ? "warm" : item.substr(c + 1);
    if ((path != "fast" && path != "reference") || (cache != "warm" && cache != "cold"))
      die("--runs: '" + item + "' is not fast|reference:warm|cold");
    r.emplace_back(path, cache);
    b = e + 1;
  }
  return r;
}

// One load to a ready decoder; returns the JSON object of the run and the logits of an 8-token prefill.
std::string run_once(const Args& a, const std::string& path, const std::string& cache, std::vector<float>* logits) {
  if (cache == "cold") drop_from_cache(a.model);
  const double resident = resident_fraction(a.model);
  const auto t0 = std::chrono::steady_clock::now();
  auto store = open_model_file(a.model);
  check(store.status(), "open");
  auto mc = model_config_from(**store);
  check(mc.status(), "config");
  const auto t1 = std::chrono::steady_clock::now();
  runtime::CudaDecoderOptions opt;
  auto fmt = runtime::parse_cuda_weight_format(a.format);
  check(fmt.status(), "--format");
  opt.format = *fmt;
  opt.max_seq_len = 4096, opt.kv_blocks = 512, opt.verbose = false, opt.gemm_autotune = false;
  auto dec = runtime::CudaDecoder::create(*mc, opt);
  check(dec.status(), "decoder");
  const auto t2 = std::chrono::steady_clock::now();
  runtime::CudaLoadOptions lo;
  lo.reference = path == "reference";
  lo.threads = a.threads, lo.n_staging = a.n_staging, lo.staging_bytes = a.staging_mb << 20;
  runtime::CudaLoadStats s;
  check(runtime::load_cuda_weights(**store, *mc, dec->get(), lo, &s), "load");
  const auto t3 = std::chrono::steady_clock::now();
  check((*dec)->finalize(), "finalize");
  (*dec)->synchronize();
  const auto t4 = std::chrono::steady_clock::now();
  runtime::CudaStep st;
  for (int i = 0; i < 8; ++i) st.tokens.push_back((i * 7919 + 13) % static_cast<int>(mc->n_vocab)), st.positions.push_back(i);
  st.query_start = {0, 8}, st.seq_lens = {8};
  st.block_tables.assign(static_cast<size_t>((*dec)->max_blocks_per_seq()), 0);
  std::vector<int32_t> ids;
  check((*dec)->step(st, &ids, logits), "step");
  const double total = seconds_between(t0, t4);
  const double gb = static_cast<double>((*store)->file_size()) / 1e9;
  char buf[1024];
  std::snprintf(buf, sizeof(buf),
                "{\"path\": \"%s\", \"cache\": \"%s\", \"resident_before\": %.3f, \"open_s\": %.3f, "
                "\"create_s\": %.3f, \"load_s\": %.3f, \"finalize_s\": %.3f, \"total_s\": %.3f, \"file_gbps\": %.2f, "
                "\"fast\": {\"setup_s\": %.3f, \"fill_s\": %.3f, \"wait_s\": %.3f, \"drain_s\": %.3f, "
                "\"staged_gb\": %.3f, \"batches\": %d, \"threads\": %d}}",
                path.c_str(), cache.c_str(), resident, seconds_between(t0, t1), seconds_between(t1, t2),
                seconds_between(t2, t3), seconds_between(t3, t4), total, gb / total, s.setup_s, s.fill_s, s.wait_s,
                s.drain_s, static_cast<double>(s.staged_bytes) / 1e9, s.batches, s.threads);
  std::fprintf(stderr, "%s\n", buf);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  const auto runs = parse_runs(a.runs);
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&prop, dev) != cudaSuccess) die("no CUDA device");
  double synth_s = 0;
  if (!std::filesystem::exists(a.model)) {
    SynthOptions o;
    o.preset = a.preset, o.dtype = a.dtype, o.seed = 1, o.out = a.model;
    std::fprintf(stderr, "load_bench: writing %s (%s, %s)...\n", a.model.c_str(), a.preset.c_str(), a.dtype.c_str());
    const double t = now_seconds();
    check(write_synth(o), "synth");
    synth_s = now_seconds() - t;
  }
  const double t_init = now_seconds();
  cudaFree(nullptr);  // the CUDA context, outside the timed runs (serve creates it before loading too)
  const double init_s = now_seconds() - t_init;
  std::string rows;
  std::vector<float> first, logits;
  bool equal = true;
  for (const auto& [path, cache] : runs) {
    rows += (rows.empty() ? "\n    " : ",\n    ") + run_once(a, path, cache, &logits);
    if (first.empty()) first = logits;
    else equal = equal && logits.size() == first.size() &&
                 std::memcmp(logits.data(), first.data(), first.size() * sizeof(float)) == 0;
  }
  char head[1024];
  std::snprintf(head, sizeof(head),
                "{\n  \"bench\": \"model_load\", \"device\": \"%s\", \"commit\": \"%s\", \"model\": \"%s\", "
                "\"preset\": \"%s\", \"dtype\": \"%s\", \"format\": \"%s\", \"file_gb\": %.3f, \"host_threads\": %u, "
                "\"synth_s\": %.1f, \"cuda_init_s\": %.3f, \"logits_equal\": %s,\n  \"runs\": [",
                prop.name, a.commit.c_str(), a.model.c_str(), a.preset.c_str(), a.dtype.c_str(), a.format.c_str(),
                static_cast<double>(std::filesystem::file_size(a.model)) / 1e9, std::thread::hardware_concurrency(),
                synth_s, init_s, equal ? "true" : "false");
  const std::string json = std::string(head) + rows + "\n  ]\n}\n";
  std::fputs(json.c_str(), stdout);
  if (!a.out.empty()) {
    FILE* f = std::fopen(a.out.c_str(), "w");
    if (!f) die("cannot write " + a.out);
    std::fputs(json.c_str(), f);
    std::fclose(f);
  }
  return equal ? 0 : 2;
}
